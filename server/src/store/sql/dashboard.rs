//! [`DashboardStore`] over the same SQL pool: plain reads, no transactions.

use async_trait::async_trait;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{SqlStore, db};
use crate::store::StoreError;
use crate::store::dashboard::{
    DashboardStore, NodeAssignment, QueuedDomain, SubjectAuditEntry, TaskSummary,
};

fn u32_of(row: &AnyRow, col: &str, op: &'static str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col).map_err(db(op))?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

#[async_trait]
impl DashboardStore for SqlStore {
    async fn recent_tasks(&self, limit: u32) -> Result<Vec<TaskSummary>, StoreError> {
        const OP: &str = "read recent tasks";
        let rows = sqlx::query(
            "SELECT task_id, task_type, state, f, max_replicas, replicas_wanted, replicas_active, \
             replicas_total, results_received, bootstrap, accepted_digest, created_ms, updated_ms \
             FROM tasks ORDER BY created_ms DESC, task_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                Ok(TaskSummary {
                    task_id: r.try_get("task_id").map_err(db(OP))?,
                    task_type: r.try_get("task_type").map_err(db(OP))?,
                    state: r.try_get("state").map_err(db(OP))?,
                    f: u32_of(r, "f", OP)?,
                    max_replicas: u32_of(r, "max_replicas", OP)?,
                    replicas_wanted: u32_of(r, "replicas_wanted", OP)?,
                    replicas_active: u32_of(r, "replicas_active", OP)?,
                    replicas_total: u32_of(r, "replicas_total", OP)?,
                    results_received: u32_of(r, "results_received", OP)?,
                    bootstrap: r.try_get::<i64, _>("bootstrap").map_err(db(OP))? != 0,
                    accepted_digest: r.try_get("accepted_digest").map_err(db(OP))?,
                    created_ms: r.try_get("created_ms").map_err(db(OP))?,
                    updated_ms: r.try_get("updated_ms").map_err(db(OP))?,
                })
            })
            .collect()
    }

    async fn verified_times(&self, since_ms: i64) -> Result<Vec<i64>, StoreError> {
        const OP: &str = "read verification times";
        sqlx::query_scalar(
            "SELECT updated_ms FROM tasks WHERE state = 'verified' AND updated_ms >= $1 \
             ORDER BY updated_ms",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))
    }

    async fn discovery_queue(&self, limit: u32) -> Result<Vec<QueuedDomain>, StoreError> {
        const OP: &str = "read discovery queue";
        let rows = sqlx::query(
            "SELECT domain, added_at, next_check_at, failures, last_checked_at, last_outcome, \
             last_reason FROM discovery_domains ORDER BY next_check_at, domain LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                Ok(QueuedDomain {
                    domain: r.try_get("domain").map_err(db(OP))?,
                    added_at: r.try_get("added_at").map_err(db(OP))?,
                    next_check_at: r.try_get("next_check_at").map_err(db(OP))?,
                    failures: r.try_get("failures").map_err(db(OP))?,
                    last_checked_at: r.try_get("last_checked_at").map_err(db(OP))?,
                    last_outcome: r.try_get("last_outcome").map_err(db(OP))?,
                    last_reason: r.try_get("last_reason").map_err(db(OP))?,
                })
            })
            .collect()
    }

    async fn assignments_of_node(
        &self,
        node_key: &str,
        limit: u32,
    ) -> Result<Vec<NodeAssignment>, StoreError> {
        const OP: &str = "read assignments of node";
        let rows = sqlx::query(
            "SELECT a.assignment_id, a.task_id, t.task_type, a.state, a.verdict, a.leased_at, \
             a.reported_at_ms FROM assignments a JOIN tasks t ON t.task_id = a.task_id \
             WHERE a.node_key = $1 ORDER BY a.leased_at DESC, a.assignment_id LIMIT $2",
        )
        .bind(node_key)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                Ok(NodeAssignment {
                    assignment_id: r.try_get("assignment_id").map_err(db(OP))?,
                    task_id: r.try_get("task_id").map_err(db(OP))?,
                    task_type: r.try_get("task_type").map_err(db(OP))?,
                    state: r.try_get("state").map_err(db(OP))?,
                    verdict: r.try_get("verdict").map_err(db(OP))?,
                    leased_at: r.try_get("leased_at").map_err(db(OP))?,
                    reported_at_ms: r.try_get("reported_at_ms").map_err(db(OP))?,
                })
            })
            .collect()
    }

    async fn audit_of_subject(
        &self,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<SubjectAuditEntry>, StoreError> {
        const OP: &str = "read audit entries of subject";
        let rows = sqlx::query(
            "SELECT idx, timestamp_ms, kind, body FROM audit_entries WHERE subject = $1 \
             ORDER BY idx DESC LIMIT $2",
        )
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                let idx: i64 = r.try_get("idx").map_err(db(OP))?;
                Ok(SubjectAuditEntry {
                    index: idx.max(0) as u64,
                    timestamp_ms: r.try_get("timestamp_ms").map_err(db(OP))?,
                    kind: r.try_get("kind").map_err(db(OP))?,
                    body: r.try_get("body").map_err(db(OP))?,
                })
            })
            .collect()
    }
}
