//! The askee node agent's library: the volunteer's identity and local state,
//! the signed client for the coordinator, and the plain-words rendering of
//! a capability manifest.

pub mod activity;
pub mod client;
pub mod home;
pub mod journal;
pub mod signal;
pub mod words;
