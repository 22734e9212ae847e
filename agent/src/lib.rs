//! The askee node agent's library: the volunteer's identity and local state,
//! the signed client for the coordinator, the plain-words rendering of a
//! capability manifest, idle detection and yielding, the system profile and
//! the local audit journal.

pub mod activity;
pub mod client;
pub mod config;
pub mod exec;
pub mod home;
pub mod idle;
pub mod interference;
pub mod journal;
pub mod portal;
pub mod profile;
pub mod runner;
pub mod signal;
pub mod update;
pub mod words;
pub mod yielder;
