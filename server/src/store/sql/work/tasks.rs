//! Tasks and their replicas as records: creation, reads, cancellation.

use std::collections::BTreeSet;

use sqlx::AnyConnection;

use askee_core::wire::v1::TaskState;

use super::rows::{
    ASSIGNMENT_COLUMNS, TASK_COLUMNS, assignment_from, load_assignments, load_task,
    save_task_progress,
};
use crate::store::sql::{SqlStore, append_in, db, to_i64};
use crate::store::{AssignmentRecord, AuditDraft, StoreError, TaskRecord};

/// Columns a new task's `VALUES` row binds, in bind order.
const NEW_TASK_BINDS: usize = 22;

/// One `VALUES` row of a new task, its placeholders from `$22k+1`: pending,
/// nothing leased, nothing decided.
fn new_task_row(k: usize) -> String {
    let p = |c: usize| format!("${}", NEW_TASK_BINDS * k + c);
    format!(
        "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, \
         {}, {}, {}, 0, 0, 0, NULL, NULL, NULL, NULL, {}, {})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8),
        p(9),
        p(10),
        p(11),
        p(12),
        p(13),
        p(14),
        p(15),
        p(16),
        p(22),
        p(17),
        p(18),
        p(19),
        p(20),
        p(21)
    )
}

/// Inserts one chunk of tasks; returns the ids that were new (`RETURNING`:
/// a task already stored, or twice in the chunk, is not).
async fn insert_tasks(
    conn: &mut AnyConnection,
    chunk: &[TaskRecord],
    op: &'static str,
) -> Result<Vec<String>, StoreError> {
    let values: Vec<String> = (0..chunk.len()).map(new_task_row).collect();
    let sql = format!(
        "INSERT INTO tasks ({TASK_COLUMNS}) VALUES {} \
         ON CONFLICT (task_id) DO NOTHING RETURNING task_id",
        values.join(", ")
    );
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    for t in chunk {
        q = q
            .bind(&t.task_id)
            .bind(&t.operator)
            .bind(&t.operator_key)
            .bind(&t.statement_json)
            .bind(&t.signature)
            .bind(&t.module_sha256)
            .bind(&t.task_type)
            .bind(i64::from(t.duration_hours))
            .bind(i64::from(t.cpu_cores))
            .bind(to_i64(t.ram_mb))
            .bind(to_i64(t.storage_gb))
            .bind(to_i64(t.bandwidth_mbps))
            .bind(i64::from(t.f))
            .bind(i64::from(t.max_replicas))
            .bind(i64::from(t.adaptive))
            .bind(&t.known_digest)
            .bind(t.deadline)
            .bind(TaskState::Pending.as_str())
            .bind(i64::from(t.replicas_wanted))
            .bind(t.created_ms)
            .bind(t.updated_ms)
            .bind(i64::from(t.bootstrap));
    }
    q.fetch_all(&mut *conn).await.map_err(db(op))
}

/// `CoordinatorStore::create_tasks`.
pub(super) async fn create_tasks(
    store: &SqlStore,
    tasks: &[TaskRecord],
    audits: Vec<AuditDraft>,
) -> Result<Vec<bool>, StoreError> {
    const OP: &str = "create tasks";
    let backend = store.backend;
    let mut w = store.begin_write(OP).await?;
    let result = async {
        // One statement per 100 tasks.
        let mut inserted: BTreeSet<String> = BTreeSet::new();
        for chunk in tasks.chunks(100) {
            inserted.extend(insert_tasks(w.conn(), chunk, OP).await?);
        }
        let mut created = Vec::with_capacity(tasks.len());
        let mut drafts = Vec::new();
        for (t, draft) in tasks.iter().zip(audits) {
            // The first of duplicates in the batch is the one created.
            let new = inserted.remove(&t.task_id);
            created.push(new);
            if new {
                drafts.push(draft);
            }
        }
        append_in(w.conn(), backend, drafts).await?;
        Ok(created)
    }
    .await;
    w.finish(result).await
}

/// `CoordinatorStore::task`.
pub(super) async fn task(
    store: &SqlStore,
    task_id: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    let mut conn = store.pool.acquire().await.map_err(db("read task"))?;
    load_task(&mut conn, task_id, "", "read task").await
}

/// `CoordinatorStore::assignments_of_task`.
pub(super) async fn assignments_of_task(
    store: &SqlStore,
    task_id: &str,
) -> Result<Vec<AssignmentRecord>, StoreError> {
    let mut conn = store.pool.acquire().await.map_err(db("read assignments"))?;
    load_assignments(&mut conn, task_id, "read assignments").await
}

/// `CoordinatorStore::assignment`.
pub(super) async fn assignment(
    store: &SqlStore,
    assignment_id: &str,
) -> Result<Option<AssignmentRecord>, StoreError> {
    const OP: &str = "read assignment";
    let row = sqlx::query(&format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE assignment_id = $1"
    ))
    .bind(assignment_id)
    .fetch_optional(&store.pool)
    .await
    .map_err(db(OP))?;
    row.map(|r| assignment_from(&r, OP)).transpose()
}

/// `CoordinatorStore::cancel_task`.
pub(super) async fn cancel_task(
    store: &SqlStore,
    task_id: &str,
    operator: &str,
    now_ms: i64,
    audit: AuditDraft,
) -> Result<TaskRecord, StoreError> {
    const OP: &str = "cancel task";
    let lock = store.for_update();
    let backend = store.backend;
    let mut w = store.begin_write(OP).await?;
    let result = async {
        let mut task = load_task(w.conn(), task_id, lock, OP)
            .await?
            .filter(|t| t.operator == operator)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("task {task_id}"),
            })?;
        if task.state.is_final() {
            return Err(StoreError::Conflict {
                what: format!("task {task_id} is already {}", task.state.as_str()),
            });
        }
        task.state = TaskState::Cancelled;
        task.reason = Some(format!("cancelled by operator {operator}"));
        abandon_leases(w.conn(), task_id, OP).await?;
        let idx = append_in(w.conn(), backend, vec![audit]).await?;
        task.audit_index = idx.first().copied();
        save_task_progress(w.conn(), &task, now_ms, OP).await?;
        Ok(task)
    }
    .await;
    w.finish(result).await
}

/// A decided task's leases still live are abandoned (their nodes learn it at
/// their next heartbeat).
pub(super) async fn abandon_leases(
    conn: &mut AnyConnection,
    task_id: &str,
    op: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE assignments SET state = 'abandoned' WHERE task_id = $1 AND state = 'leased'",
    )
    .bind(task_id)
    .execute(&mut *conn)
    .await
    .map_err(db(op))?;
    Ok(())
}
