//! The sweeper's work: silent nodes offline, overdue leases back to the pool,
//! tasks past their deadline failed.

use sqlx::{AnyConnection, Row};

use askee_core::wire::v1::TaskState;

use super::rows::{load_task, save_task_progress};
use super::tasks::abandon_leases;
use crate::store::sql::{SqlStore, append_in, db};
use crate::store::{AuditDraft, StoreError, SweepReport};

/// Leases read per round (the `LIMIT` of the select in [`expire_leases`]).
const LEASE_ROUND: usize = 500;

/// `CoordinatorStore::sweep`.
pub(super) async fn sweep(
    store: &SqlStore,
    now: i64,
    offline_before: i64,
    now_ms: i64,
) -> Result<SweepReport, StoreError> {
    Ok(SweepReport {
        // Silent nodes go offline (handleNodeFailure); their leases are put
        // back next.
        nodes_offline: mark_silent_offline(store, offline_before).await?,
        leases_expired: expire_leases(store, now).await?,
        tasks_failed: fail_overdue(store, now, now_ms).await?,
    })
}

async fn mark_silent_offline(store: &SqlStore, offline_before: i64) -> Result<u64, StoreError> {
    const OP: &str = "sweep";
    let mut w = store.begin_write(OP).await?;
    let result = async {
        Ok(sqlx::query(
            "UPDATE nodes SET state = 'offline' WHERE state = 'active' AND last_heartbeat < $1",
        )
        .bind(offline_before)
        .execute(w.conn())
        .await
        .map_err(db(OP))?
        .rows_affected())
    }
    .await;
    w.finish(result).await
}

/// Overdue leases, and every lease of a node that is no longer active. One
/// transaction per replica, task row first.
async fn expire_leases(store: &SqlStore, now: i64) -> Result<u64, StoreError> {
    const OP: &str = "sweep";
    let lock = store.for_update();
    let mut expired = 0;
    loop {
        let rows = sqlx::query(
            "SELECT assignment_id, task_id, node_key FROM assignments WHERE state = 'leased' \
             AND (lease_expires_at < $1 OR node_key IN (SELECT node_key FROM nodes \
             WHERE state <> 'active')) LIMIT 500",
        )
        .bind(now)
        .fetch_all(&store.pool)
        .await
        .map_err(db(OP))?;
        let mut n = 0u64;
        for r in &rows {
            let assignment_id: String = r.try_get("assignment_id").map_err(db(OP))?;
            let task_id: String = r.try_get("task_id").map_err(db(OP))?;
            let node_key: String = r.try_get("node_key").map_err(db(OP))?;
            let mut w = store.begin_write(OP).await?;
            let result = async {
                load_task(w.conn(), &task_id, lock, OP).await?;
                expire_assignment(w.conn(), &assignment_id, &task_id, &node_key, OP).await
            }
            .await;
            if w.finish(result).await? {
                n += 1;
            }
        }
        expired += n;
        if rows.len() < LEASE_ROUND || n == 0 {
            return Ok(expired);
        }
    }
}

/// Puts one live lease back: the replica no longer counts for its task.
async fn expire_assignment(
    conn: &mut AnyConnection,
    assignment_id: &str,
    task_id: &str,
    node_key: &str,
    op: &'static str,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE assignments SET state = 'expired' WHERE assignment_id = $1 AND state = 'leased'",
    )
    .bind(assignment_id)
    .execute(&mut *conn)
    .await
    .map_err(db(op))?
    .rows_affected();
    if changed == 1 {
        // An adaptive single replica that is lost falls back to full
        // replication (`verdict::quorum::full_replication`).
        sqlx::query(
            "UPDATE tasks SET replicas_active = replicas_active - 1, \
             replicas_wanted = CASE WHEN trusted_node = $2 THEN 2 * f + 1 ELSE replicas_wanted END, \
             trusted_node = CASE WHEN trusted_node = $2 THEN NULL ELSE trusted_node END \
             WHERE task_id = $1",
        )
        .bind(task_id)
        .bind(node_key)
        .execute(&mut *conn)
        .await
        .map_err(db(op))?;
    }
    Ok(changed == 1)
}

/// Pending tasks past their deadline fail, one transaction each.
async fn fail_overdue(store: &SqlStore, now: i64, now_ms: i64) -> Result<u64, StoreError> {
    const OP: &str = "sweep";
    let lock = store.for_update();
    let backend = store.backend;
    let overdue: Vec<String> = sqlx::query_scalar(
        "SELECT task_id FROM tasks WHERE state = 'pending' AND deadline < $1 LIMIT 1000",
    )
    .bind(now)
    .fetch_all(&store.pool)
    .await
    .map_err(db(OP))?;
    let mut failed = 0;
    for task_id in overdue {
        let mut w = store.begin_write(OP).await?;
        let result = async {
            let Some(mut task) = load_task(w.conn(), &task_id, lock, OP).await? else {
                return Ok(0);
            };
            if task.state.is_final() {
                return Ok(0);
            }
            task.state = TaskState::Failed;
            task.reason = Some(format!(
                "deadline {} passed without a quorum",
                task.deadline
            ));
            let idx = append_in(
                w.conn(),
                backend,
                vec![AuditDraft {
                    timestamp_ms: now_ms,
                    kind: "task.failed".into(),
                    subject: task_id.clone(),
                    data: serde_json::json!({"reason": task.reason}),
                }],
            )
            .await?;
            task.audit_index = idx.first().copied();
            abandon_leases(w.conn(), &task_id, OP).await?;
            save_task_progress(w.conn(), &task, now_ms, OP).await?;
            Ok(1)
        }
        .await;
        failed += w.finish(result).await?;
    }
    Ok(failed)
}
