//! The askee node agent's library: the volunteer's identity and local state,
//! the signed client for the coordinator, the plain-words rendering of what
//! the volunteer reads, idle detection and yielding, the daemon, the
//! self-update, the system profile and the local audit journal.
//! `commands` holds one function per subcommand; the binary only parses
//! arguments and dispatches.

pub mod activity;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod describe;
pub mod exec;
pub mod home;
pub mod idle;
pub mod interference;
pub mod journal;
pub mod portal;
mod private_file;
pub mod profile;
pub mod runner;
pub mod signal;
pub mod update;
pub mod yielder;
