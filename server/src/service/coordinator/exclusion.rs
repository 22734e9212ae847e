//! Byzantine exclusion as the services see it: a node's pending events
//! (results, heartbeats) are folded into its record by the store, which
//! evaluates exclusion; misbehaviour is counted as evidence; every new
//! exclusion revokes the node's consent token through the consent engine.

use crate::service::consent::{self, Revoker};
use crate::service::error::ServiceResult;
use crate::state::AppState;
use crate::store::{Exclusion, Misbehaviour, StoreError};

/// Misbehaviour to count against a node, with a word for the log.
#[derive(Debug, Clone, Copy)]
pub struct Misconduct {
    pub kind: Misbehaviour,
    pub what: &'static str,
}

/// Folds one node's pending events into its record (exclusion evaluated, a
/// new one revoked).
pub async fn fold_node_events(state: &AppState, node_key: &str) -> ServiceResult<()> {
    let excluded = state
        .store
        .fold_node(
            node_key,
            state.clock.now_ms(),
            state.config.heartbeat_interval.as_secs(),
            state.config.byzantine_policy,
        )
        .await?;
    revoke_excluded(state, excluded.as_slice()).await;
    Ok(())
}

/// Folds every node's pending events (ledger, dashboard).
pub async fn fold_all_events(state: &AppState) -> Result<(), StoreError> {
    fold_events_older_than(state, i64::MAX).await
}

/// Folds the pending events of nodes with an event from before `before_ms`
/// and revokes new exclusions.
pub(super) async fn fold_events_older_than(
    state: &AppState,
    before_ms: i64,
) -> Result<(), StoreError> {
    let excluded = state
        .store
        .fold_pending(
            10_000,
            before_ms,
            state.clock.now_ms(),
            state.config.heartbeat_interval.as_secs(),
            state.config.byzantine_policy,
        )
        .await?;
    revoke_excluded(state, &excluded).await;
    Ok(())
}

/// Revokes the tokens of newly excluded nodes through the consent engine.
pub(super) async fn revoke_excluded(state: &AppState, excluded: &[Exclusion]) {
    for e in excluded {
        state.metrics.count("askee_nodes_excluded_total");
        tracing::warn!(node = %e.node_key, reason = %e.reason, "node excluded as byzantine");
        if let Err(err) = consent::revoke(
            state,
            &e.token_id,
            Revoker::System,
            &format!("node excluded as byzantine: {}", e.reason),
        )
        .await
        {
            tracing::error!(node = %e.node_key, error = %err.detail, "revoking an excluded node's token failed; the sweeper retries");
        }
    }
}

/// Counts a node's misbehaviour as Byzantine evidence and, when that
/// excludes it, revokes its token.
pub(super) async fn misbehaved(
    state: &AppState,
    node_key: &str,
    m: Misconduct,
) -> ServiceResult<()> {
    let excluded = state
        .store
        .record_misbehaviour(
            node_key,
            m.kind,
            m.what,
            state.clock.now_ms(),
            state.config.heartbeat_interval.as_secs(),
            state.config.byzantine_policy,
        )
        .await?;
    revoke_excluded(state, excluded.as_slice()).await;
    Ok(())
}
