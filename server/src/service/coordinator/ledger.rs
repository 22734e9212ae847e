//! The reputation ledger: every node's counters, the rates derived from
//! them and its reputation, as of every report so far.

use askee_core::coordinator::{NodeCounters, reputation_metrics};
use askee_core::wire::v1::{NodeState, ReputationEntry, ReputationLedger};

use super::exclusion::fold_all_events;
use crate::service::error::ServiceResult;
use crate::state::AppState;
use crate::store::NodeRecord;

/// The ledger of at most `limit` nodes (clamped to 1..=10000, 100 when
/// absent).
pub async fn ledger(state: &AppState, limit: Option<u32>) -> ServiceResult<ReputationLedger> {
    let limit = limit.unwrap_or(100).clamp(1, 10_000);
    // Counters as of every report so far.
    fold_all_events(state).await?;
    let now = state.clock.now();
    let nodes = state.store.reputation_ledger(limit).await?;
    let interval = state.config.heartbeat_interval.as_secs();
    Ok(ReputationLedger {
        nodes: nodes.into_iter().map(|n| entry(n, now, interval)).collect(),
    })
}

fn entry(n: NodeRecord, now: i64, heartbeat_interval: u64) -> ReputationEntry {
    let m = reputation_metrics(&NodeCounters {
        assigned: n.stats.assigned,
        completed: n.stats.completed,
        agreed: n.stats.agreed,
        wrong: n.stats.wrong,
        heartbeats: n.stats.heartbeats,
        age_seconds: u64::try_from(now - n.registered_at).unwrap_or(0),
        heartbeat_interval,
        active: n.state == NodeState::Active,
    });
    ReputationEntry {
        node_id: n.node_key,
        state: n.state,
        reputation: f64::from(n.reputation_micros) / 1e6,
        completion_rate: m.completion_rate,
        accuracy_rate: m.accuracy_rate,
        uptime_rate: m.uptime_rate,
        participation_rate: m.participation_rate,
        assigned: n.stats.assigned,
        completed: n.stats.completed,
        agreed: n.stats.agreed,
        wrong: n.stats.wrong,
        streak: n.stats.streak,
        exclusion_reason: n.exclusion_reason,
    }
}
