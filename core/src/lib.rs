//! Protocol types, token and signature formats, and pure rules for askee.
//!
//! This crate does no I/O and has no async runtime: every function takes plain
//! data (including the current time) and returns a value or a decision, so
//! that it can be tested exhaustively and reused by the server, the agent and
//! the formal-spec checks alike.

pub mod audit;
pub mod b64;
pub mod coordinator;
pub mod idle;
pub mod merkle;
pub mod note;
pub mod portal;
pub mod release;
pub mod rules;
pub mod signal;
pub mod signing;
pub mod token;
pub mod validate;
pub mod wire;

pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
