//! The services: what the server does, with no knowledge of HTTP (no router
//! or request types, no status codes). Each takes the shared [`AppState`]
//! and fails with a [`ServiceError`](error::ServiceError), whose kind
//! `http::problem` maps to a status and a problem document. Services use
//! the store.
//!
//! Sibling services call each other one way only: `coordinator`, `portal`
//! and `discovery` call `consent` (grants, revocation, audit drafts);
//! `dashboard` calls `coordinator` (to fold pending node events); `consent`,
//! `audit`, `auth` and `error` call no other service.

pub mod audit;
pub mod auth;
pub mod consent;
pub mod coordinator;
pub mod dashboard;
pub mod discovery;
pub mod error;
pub mod portal;

use askee_core::wire::v1::CoordinatorInfo;

use crate::state::AppState;
use error::ServiceResult;

/// Ready when the store answers.
pub async fn ready(state: &AppState) -> ServiceResult<()> {
    state.store.ping().await?;
    Ok(())
}

/// The coordinator's description at `/.well-known/askee-coordinator`.
pub fn coordinator_info(state: &AppState) -> CoordinatorInfo {
    let c = &state.config;
    let base = c.public_url.trim_end_matches('/');
    CoordinatorInfo {
        name: c.operator_name.clone(),
        contact: c.operator_contact.clone(),
        api_base: format!("{base}/v1"),
        key_ids: state.keys.key_ids(),
        task_types: c.task_types.clone(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        revocation_list_uri: format!("{base}/v1/revocations"),
    }
}
