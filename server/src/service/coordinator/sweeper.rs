//! The sweeper: puts expired leases and silent nodes' work back, fails
//! tasks past their deadline, folds the events of nodes that stopped asking
//! and retries revocations an earlier crash left undone.

use super::exclusion::{fold_events_older_than, revoke_excluded};
use crate::state::AppState;
use crate::store::{StoreError, SweepReport};

/// One sweep: expired leases, silent nodes, deadlines, and revocations an
/// earlier crash may have left undone.
pub async fn sweep_once(state: &AppState) -> Result<SweepReport, StoreError> {
    let now = state.clock.now();
    let offline_before = now - 3 * state.config.heartbeat_interval.as_secs() as i64;
    let report = state
        .store
        .sweep(now, offline_before, state.clock.now_ms())
        .await?;
    // Nodes that lease fold their own events first; the sweeper folds those
    // of nodes that stopped asking (events older than a heartbeat interval),
    // so their counters, reputation and any exclusion still follow.
    let interval_ms =
        i64::try_from(state.config.heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
    fold_events_older_than(state, state.clock.now_ms().saturating_sub(interval_ms)).await?;
    let pending = state.store.excluded_unrevoked().await?;
    revoke_excluded(state, &pending).await;
    Ok(report)
}

/// Runs [`sweep_once`] every `sweep_interval` (every server process does;
/// each step is conditional, so concurrent sweepers agree).
pub fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep_once(&state).await {
                Ok(r) if r != Default::default() => {
                    tracing::info!(?r, "coordinator sweep put work back")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "coordinator sweep failed"),
            }
        }
    })
}
