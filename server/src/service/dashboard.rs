//! The operator dashboard's read-only views: nodes, tasks, the discovery
//! queue, audit checkpoints and verified-task throughput.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::coordinator::fold_all_events;
use crate::service::error::ServiceResult;
use crate::state::AppState;

/// Most rows a list answers.
const ROWS: u32 = 500;
/// Throughput buckets: one minute each, the last hour.
const BUCKET_SECS: i64 = 60;
const BUCKETS: usize = 60;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DashboardNode {
    pub node_key: String,
    /// `active`, `offline`, `byzantine` or `revoked`.
    pub state: String,
    /// From 0 to 1.
    pub reputation: f64,
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
    pub registered_at: i64,
    pub last_heartbeat: i64,
    pub completed: u64,
    pub agreed: u64,
    pub wrong: u64,
    pub failed: u64,
    pub exclusion_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DashboardTask {
    pub task_id: String,
    pub task_type: String,
    /// `pending`, `verified`, `failed` or `cancelled`.
    pub state: String,
    /// Tolerated faulty replicas: `2f+1` replicas, an `f+1` quorum.
    pub f: u32,
    /// Identical results needed to accept (`f+1`).
    pub quorum: u32,
    pub max_replicas: u32,
    pub replicas_wanted: u32,
    pub replicas_active: u32,
    pub replicas_total: u32,
    pub results_received: u32,
    pub bootstrap: bool,
    pub accepted_digest: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DashboardDomain {
    pub domain: String,
    pub added_at: i64,
    pub next_check_at: i64,
    pub failures: i64,
    pub last_checked_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DashboardCheckpoint {
    pub size: u64,
    /// Hex Merkle root.
    pub root: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Throughput {
    pub bucket_seconds: i64,
    /// Start of the first bucket (unix milliseconds).
    pub since_ms: i64,
    /// Tasks verified per bucket, oldest first.
    pub verified: Vec<u32>,
}

/// Registered nodes, highest reputation first.
pub async fn nodes(state: &AppState) -> ServiceResult<Vec<DashboardNode>> {
    // Counters as of every report so far (reports append node events).
    fold_all_events(state).await?;
    let nodes = state.store.reputation_ledger(ROWS).await?;
    Ok(nodes
        .into_iter()
        .map(|n| DashboardNode {
            state: n.state.as_str().into(),
            reputation: f64::from(n.reputation_micros) / 1e6,
            cpu_cores: n.cpu_cores,
            ram_mb: n.ram_mb,
            storage_gb: n.storage_gb,
            bandwidth_mbps: n.bandwidth_mbps,
            registered_at: n.registered_at,
            last_heartbeat: n.last_heartbeat,
            completed: n.stats.completed,
            agreed: n.stats.agreed,
            wrong: n.stats.wrong,
            failed: n.stats.failed,
            exclusion_reason: n.exclusion_reason,
            node_key: n.node_key,
        })
        .collect())
}

/// The most recent tasks, newest first.
pub async fn tasks(state: &AppState) -> ServiceResult<Vec<DashboardTask>> {
    let tasks = state.store.dashboard().recent_tasks(ROWS).await?;
    Ok(tasks
        .into_iter()
        .map(|t| DashboardTask {
            quorum: t.f + 1,
            task_id: t.task_id,
            task_type: t.task_type,
            state: t.state,
            f: t.f,
            max_replicas: t.max_replicas,
            replicas_wanted: t.replicas_wanted,
            replicas_active: t.replicas_active,
            replicas_total: t.replicas_total,
            results_received: t.results_received,
            bootstrap: t.bootstrap,
            accepted_digest: t.accepted_digest,
            created_ms: t.created_ms,
            updated_ms: t.updated_ms,
        })
        .collect())
}

/// The discovery queue in check order.
pub async fn discovery_queue(state: &AppState) -> ServiceResult<Vec<DashboardDomain>> {
    let queue = state.store.dashboard().discovery_queue(ROWS).await?;
    Ok(queue
        .into_iter()
        .map(|d| DashboardDomain {
            domain: d.domain,
            added_at: d.added_at,
            next_check_at: d.next_check_at,
            failures: d.failures,
            last_checked_at: d.last_checked_at,
            last_outcome: d.last_outcome,
            last_reason: d.last_reason,
        })
        .collect())
}

/// Signed audit checkpoints, newest first.
pub async fn checkpoints(state: &AppState) -> ServiceResult<Vec<DashboardCheckpoint>> {
    let all = state.store.checkpoints().await?;
    Ok(all
        .into_iter()
        .rev()
        .take(ROWS as usize)
        .map(|c| DashboardCheckpoint {
            size: c.size,
            root: hex::encode(c.root),
            created_at_ms: c.created_at_ms,
        })
        .collect())
}

/// Counts `times` (unix ms) into `buckets` buckets of `bucket_ms` from `since_ms`.
pub fn bucket_counts(times: &[i64], since_ms: i64, bucket_ms: i64, buckets: usize) -> Vec<u32> {
    let mut out = vec![0u32; buckets];
    for &t in times {
        if t < since_ms || bucket_ms <= 0 {
            continue;
        }
        let i = ((t - since_ms) / bucket_ms) as usize;
        if let Some(slot) = out.get_mut(i) {
            *slot += 1;
        }
    }
    out
}

/// Tasks verified per minute over the last hour.
pub async fn throughput(state: &AppState) -> ServiceResult<Throughput> {
    let bucket_ms = BUCKET_SECS * 1000;
    // Whole buckets ending with the current one.
    let now_ms = state.clock.now_ms();
    let since_ms = (now_ms.div_euclid(bucket_ms) + 1 - BUCKETS as i64) * bucket_ms;
    let times = state.store.dashboard().verified_times(since_ms).await?;
    Ok(Throughput {
        bucket_seconds: BUCKET_SECS,
        since_ms,
        verified: bucket_counts(&times, since_ms, bucket_ms, BUCKETS),
    })
}

#[cfg(test)]
mod tests {
    use super::bucket_counts;

    #[test]
    fn counts_fall_into_their_minute() {
        let since = 1_000_000;
        let times = [
            since - 1,
            since,
            since + 59_999,
            since + 60_000,
            since + 120_000 * 10,
        ];
        assert_eq!(bucket_counts(&times, since, 60_000, 3), vec![2, 1, 0]);
    }
}
