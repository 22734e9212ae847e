//! The task coordinator: node attestation and heartbeats
//! ([`registration`]), work leases decided by `core::rules` ([`lease`]),
//! result reports recorded with the `2f+1`/`f+1` quorum ([`results`]), the
//! operator's modules, keys and tasks ([`tasks`]), the reputation ledger
//! ([`ledger`]), Byzantine exclusion with token revocation through the
//! consent engine ([`exclusion`]) and the sweeper that puts expired leases
//! and silent nodes' work back ([`sweeper`]).

use askee_core::b64;
use rand::RngCore as _;

use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{NodeRecord, StoreError};

pub mod exclusion;
pub mod lease;
pub mod ledger;
pub mod registration;
pub mod results;
pub mod sweeper;
pub mod tasks;

pub use exclusion::fold_all_events;
pub use sweeper::{spawn_sweeper, sweep_once};

fn random_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    b64::encode(bytes)
}

/// A store conflict with its own words as the detail.
fn store_conflict(e: StoreError) -> ServiceError {
    match e {
        StoreError::Conflict { what } => ServiceError::conflict(what),
        other => other.into(),
    }
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The record of a registered node; refused when it never registered.
async fn registered(state: &AppState, node_key: &str) -> ServiceResult<NodeRecord> {
    state.store.node(node_key).await?.ok_or_else(|| {
        ServiceError::new(
            ErrorKind::Forbidden,
            "not-registered",
            "the node is not registered",
            "register with POST /v1/nodes/register first",
        )
        .with_reason("not_registered")
    })
}
