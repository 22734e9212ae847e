//! A result batch's working set: its tasks (locked) and all their
//! assignments, changed in memory and written back once at the end, with
//! what the transaction defers to its end (node events, audit entries).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::AnyConnection;

use super::rows::{
    ASSIGNMENT_COLUMNS, TASK_COLUMNS, assignment_from, placeholders, save_tasks, task_from,
    value_rows,
};
use crate::store::sql::{append_in, db, to_i64};
use crate::store::{AssignmentRecord, AuditDraft, Backend, StoreError, TaskRecord};
use crate::verdict::{NodeEvent, event_runs};

/// Names one assignment of the batch; ordered by task first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct AssignmentKey {
    pub task_id: String,
    pub assignment_id: String,
}

impl AssignmentKey {
    pub fn of(a: &AssignmentRecord) -> Self {
        Self {
            task_id: a.task_id.clone(),
            assignment_id: a.assignment_id.clone(),
        }
    }
}

/// An audit entry and the task it decides (which gets its index).
pub(super) struct TaskAudit {
    pub task_id: String,
    pub draft: AuditDraft,
}

/// The batch's records and what changed.
#[derive(Default)]
pub(super) struct ResultBatch {
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Each task's assignments, by task id.
    pub assignments: BTreeMap<String, Vec<AssignmentRecord>>,
    pub changes: Changes,
    /// Reporters' states (`nodes.state`) read in this batch: a node's results
    /// stop counting once it is excluded.
    pub reporter_states: BTreeMap<String, Option<String>>,
}

/// What the batch changed and what it defers to its end: counter changes as
/// node events, audit entries.
#[derive(Default)]
pub(super) struct Changes {
    pub tasks: BTreeSet<String>,
    pub assignments: BTreeSet<AssignmentKey>,
    pub events: Vec<NodeEvent>,
    pub audits: Vec<TaskAudit>,
}

impl ResultBatch {
    /// Loads (and on PostgreSQL locks, in task order) the batch's tasks and
    /// reads all their assignments: two statements for the whole batch.
    /// The task locks serialise every writer that changes an assignment's
    /// state (reports, leases, the sweeper); heartbeats only extend leases.
    pub async fn load(
        &mut self,
        conn: &mut AnyConnection,
        task_ids: &[&str],
        lock: &str,
        op: &'static str,
    ) -> Result<(), StoreError> {
        if task_ids.is_empty() {
            return Ok(());
        }
        let ids = placeholders(1, task_ids.len());
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({ids}) ORDER BY task_id{lock}"
        );
        let mut q = sqlx::query(&sql);
        for id in task_ids {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *conn).await.map_err(db(op))? {
            let t = task_from(&r, op)?;
            self.tasks.insert(t.task_id.clone(), t);
        }
        let sql = format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE task_id IN ({ids}) \
             ORDER BY leased_at, assignment_id"
        );
        let mut q = sqlx::query(&sql);
        for id in task_ids {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *conn).await.map_err(db(op))? {
            let a = assignment_from(&r, op)?;
            self.assignments
                .entry(a.task_id.clone())
                .or_default()
                .push(a);
        }
        Ok(())
    }

    /// Writes everything back, in the order the locks allow: assignments,
    /// node events, audit entries, tasks.
    pub async fn write_back(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
        now_ms: i64,
        op: &'static str,
    ) -> Result<(), StoreError> {
        self.flush_assignments(conn, op).await?;
        // Counter changes as node events: no other node's row is locked.
        insert_events(conn, &self.changes.events, op).await?;
        // Audit entries after every new row lock (on PostgreSQL the audit
        // table lock must be the last lock taken); the task rows written
        // after it are locked by this transaction already, so nothing waits
        // while the audit lock is held.
        let audits = std::mem::take(&mut self.changes.audits);
        if !audits.is_empty() {
            let (tasks, drafts): (Vec<String>, Vec<AuditDraft>) =
                audits.into_iter().map(|a| (a.task_id, a.draft)).unzip();
            let indices = append_in(conn, backend, drafts).await?;
            for (task_id, idx) in tasks.into_iter().zip(indices) {
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    t.audit_index = Some(idx);
                }
            }
        }
        self.flush_tasks(conn, now_ms, op).await
    }

    /// Writes the changed assignments back: one statement per 50.
    async fn flush_assignments(
        &mut self,
        conn: &mut AnyConnection,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.changes.assignments);
        let changed: Vec<&AssignmentRecord> = dirty
            .iter()
            .filter_map(|key| {
                self.assignments
                    .get(&key.task_id)
                    .and_then(|v| v.iter().find(|a| a.assignment_id == key.assignment_id))
            })
            .collect();
        for chunk in changed.chunks(50) {
            // `VALUES` columns are column1… on both SQLite and PostgreSQL.
            let sql = format!(
                "UPDATE assignments SET state = v.column2, status = v.column3, \
                 result_digest = v.column4, signature = v.column5, exit_code = v.column6, \
                 stdout = v.column7, failure = v.column8, verdict = v.column9, \
                 reported_at_ms = v.column10 FROM (VALUES {}) AS v \
                 WHERE assignments.assignment_id = v.column1",
                value_rows(chunk.len(), 10)
            );
            let mut q = sqlx::query(&sql);
            for a in chunk {
                q = q
                    .bind(&a.assignment_id)
                    .bind(a.state.as_str())
                    .bind(a.status.map(|s| s.as_str()))
                    .bind(&a.result_digest)
                    .bind(&a.signature)
                    .bind(a.exit_code.map(i64::from))
                    .bind(&a.stdout)
                    .bind(&a.failure)
                    .bind(&a.verdict)
                    .bind(a.reported_at_ms);
            }
            q.execute(&mut *conn).await.map_err(db(op))?;
        }
        Ok(())
    }

    /// Writes the changed tasks back ([`save_tasks`]).
    async fn flush_tasks(
        &mut self,
        conn: &mut AnyConnection,
        now_ms: i64,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.changes.tasks);
        let changed: Vec<&TaskRecord> = dirty.iter().filter_map(|id| self.tasks.get(id)).collect();
        save_tasks(conn, &changed, now_ms, op).await
    }
}

/// Stores node events as runs ([`event_runs`]), one statement per 150 runs.
async fn insert_events(
    conn: &mut AnyConnection,
    events: &[NodeEvent],
    op: &'static str,
) -> Result<(), StoreError> {
    for chunk in event_runs(events).chunks(150) {
        let sql = format!(
            "INSERT INTO node_events (node_key, kind, created_ms, times) VALUES {}",
            value_rows(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for run in chunk {
            q = q
                .bind(run.node_key)
                .bind(run.kind.as_str())
                .bind(run.at_ms)
                .bind(to_i64(run.times));
        }
        q.execute(&mut *conn).await.map_err(db(op))?;
    }
    Ok(())
}
