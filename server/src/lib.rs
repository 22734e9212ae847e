//! askee's control plane: the consent engine, revocation, the audit log and
//! (later) the task coordinator, served over HTTP by axum from a SQL store.

pub mod store;
