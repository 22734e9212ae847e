//! Rows of the coordinator's tables: column lists, mapping to records,
//! loading one record, writing tasks' progress back.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use askee_core::wire::v1::{NodeState, ReportStatus, TaskState};

use crate::store::sql::{db, to_i64};
use crate::store::{
    AssignmentRecord, AssignmentState, Backend, NodeRecord, NodeStats, StoreError, TaskRecord,
};

pub(super) const NODE_COLUMNS: &str = "node_key, token_id, grant_id, token_expires_at, token_payload_json, \
     profile_json, cpu_cores, ram_mb, storage_gb, bandwidth_mbps, owner, network_prefix, state, \
     registered_at, last_heartbeat, heartbeats, assigned, completed, failed, agreed, wrong, \
     invalid_signatures, consensus_failures, streak, reputation_micros, exclusion_reason, \
     policy_violations, malicious_patterns";

pub(super) const TASK_COLUMNS: &str = "task_id, operator, operator_key, statement_json, signature, \
     module_sha256, task_type, duration_hours, cpu_cores, ram_mb, storage_gb, bandwidth_mbps, f, \
     max_replicas, adaptive, known_digest, bootstrap, deadline, state, replicas_wanted, replicas_active, \
     replicas_total, results_received, trusted_node, accepted_digest, reason, audit_index, \
     created_ms, updated_ms";

pub(super) const ASSIGNMENT_COLUMNS: &str = "assignment_id, task_id, node_key, state, leased_at, \
     lease_expires_at, status, result_digest, signature, exit_code, stdout, failure, verdict, \
     reported_at_ms";

pub(super) fn corrupt(what: String, detail: String) -> StoreError {
    StoreError::Corrupt { what, detail }
}

/// A stored count as `u64`; a negative one reads as 0.
pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A stored count as `u32`; one out of range reads as 0.
pub(super) fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

pub(super) fn node_from(row: &AnyRow, op: &'static str) -> Result<NodeRecord, StoreError> {
    let int = |c: &str| -> Result<i64, StoreError> { row.try_get::<i64, _>(c).map_err(db(op)) };
    let count = |c: &str| int(c).map(u64_of);
    let node_key: String = row.try_get("node_key").map_err(db(op))?;
    let state: String = row.try_get("state").map_err(db(op))?;
    let state = NodeState::parse(&state)
        .ok_or_else(|| corrupt(format!("node {node_key}"), format!("state {state:?}")))?;
    Ok(NodeRecord {
        token_id: row.try_get("token_id").map_err(db(op))?,
        grant_id: row.try_get("grant_id").map_err(db(op))?,
        token_expires_at: int("token_expires_at")?,
        token_payload_json: row.try_get("token_payload_json").map_err(db(op))?,
        profile_json: row.try_get("profile_json").map_err(db(op))?,
        cpu_cores: u32_of(int("cpu_cores")?),
        ram_mb: count("ram_mb")?,
        storage_gb: count("storage_gb")?,
        bandwidth_mbps: count("bandwidth_mbps")?,
        owner: row.try_get("owner").map_err(db(op))?,
        network_prefix: row.try_get("network_prefix").map_err(db(op))?,
        state,
        registered_at: int("registered_at")?,
        last_heartbeat: int("last_heartbeat")?,
        stats: NodeStats {
            heartbeats: count("heartbeats")?,
            assigned: count("assigned")?,
            completed: count("completed")?,
            failed: count("failed")?,
            agreed: count("agreed")?,
            wrong: count("wrong")?,
            invalid_signatures: count("invalid_signatures")?,
            policy_violations: count("policy_violations")?,
            malicious_patterns: count("malicious_patterns")?,
            consensus_failures: count("consensus_failures")?,
            streak: count("streak")?,
        },
        reputation_micros: u32_of(int("reputation_micros")?),
        exclusion_reason: row.try_get("exclusion_reason").map_err(db(op))?,
        node_key,
    })
}

pub(super) fn task_from(row: &AnyRow, op: &'static str) -> Result<TaskRecord, StoreError> {
    let int = |c: &str| -> Result<i64, StoreError> { row.try_get::<i64, _>(c).map_err(db(op)) };
    let small = |c: &str| int(c).map(u32_of);
    let text = |c: &str| -> Result<String, StoreError> { row.try_get(c).map_err(db(op)) };
    let maybe = |c: &str| -> Result<Option<String>, StoreError> { row.try_get(c).map_err(db(op)) };
    let task_id = text("task_id")?;
    let state = text("state")?;
    let state = TaskState::parse(&state)
        .ok_or_else(|| corrupt(format!("task {task_id}"), format!("state {state:?}")))?;
    let audit_index: Option<i64> = row.try_get("audit_index").map_err(db(op))?;
    Ok(TaskRecord {
        operator: text("operator")?,
        operator_key: text("operator_key")?,
        statement_json: text("statement_json")?,
        signature: text("signature")?,
        module_sha256: text("module_sha256")?,
        task_type: text("task_type")?,
        duration_hours: small("duration_hours")?,
        cpu_cores: small("cpu_cores")?,
        ram_mb: u64_of(int("ram_mb")?),
        storage_gb: u64_of(int("storage_gb")?),
        bandwidth_mbps: u64_of(int("bandwidth_mbps")?),
        f: small("f")?,
        max_replicas: small("max_replicas")?,
        adaptive: int("adaptive")? != 0,
        known_digest: maybe("known_digest")?,
        bootstrap: int("bootstrap")? != 0,
        deadline: int("deadline")?,
        state,
        replicas_wanted: small("replicas_wanted")?,
        replicas_active: small("replicas_active")?,
        replicas_total: small("replicas_total")?,
        results_received: small("results_received")?,
        trusted_node: maybe("trusted_node")?,
        accepted_digest: maybe("accepted_digest")?,
        reason: maybe("reason")?,
        audit_index: audit_index.map(u64_of),
        created_ms: int("created_ms")?,
        updated_ms: int("updated_ms")?,
        task_id,
    })
}

fn report_status(id: &str, status: Option<String>) -> Result<Option<ReportStatus>, StoreError> {
    match status.as_deref() {
        None => Ok(None),
        Some("completed") => Ok(Some(ReportStatus::Completed)),
        Some("failed") => Ok(Some(ReportStatus::Failed)),
        Some(other) => Err(corrupt(
            format!("assignment {id}"),
            format!("status {other:?}"),
        )),
    }
}

pub(super) fn assignment_from(
    row: &AnyRow,
    op: &'static str,
) -> Result<AssignmentRecord, StoreError> {
    let id: String = row.try_get("assignment_id").map_err(db(op))?;
    let state: String = row.try_get("state").map_err(db(op))?;
    let state = AssignmentState::parse(&state)
        .ok_or_else(|| corrupt(format!("assignment {id}"), format!("state {state:?}")))?;
    let status = report_status(&id, row.try_get("status").map_err(db(op))?)?;
    let exit_code: Option<i64> = row.try_get("exit_code").map_err(db(op))?;
    Ok(AssignmentRecord {
        task_id: row.try_get("task_id").map_err(db(op))?,
        node_key: row.try_get("node_key").map_err(db(op))?,
        state,
        leased_at: row.try_get("leased_at").map_err(db(op))?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(db(op))?,
        status,
        result_digest: row.try_get("result_digest").map_err(db(op))?,
        signature: row.try_get("signature").map_err(db(op))?,
        exit_code: exit_code.map(|c| c as i32),
        stdout: row.try_get("stdout").map_err(db(op))?,
        failure: row.try_get("failure").map_err(db(op))?,
        verdict: row.try_get("verdict").map_err(db(op))?,
        reported_at_ms: row.try_get("reported_at_ms").map_err(db(op))?,
        assignment_id: id,
    })
}

/// One node, `lock` appended to the select (a row lock or nothing).
pub(super) async fn load_node(
    conn: &mut AnyConnection,
    node_key: &str,
    lock: &str,
    op: &'static str,
) -> Result<Option<NodeRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE node_key = $1{lock}"
    ))
    .bind(node_key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(op))?;
    row.map(|r| node_from(&r, op)).transpose()
}

/// One task, `lock` appended to the select (a row lock or nothing).
pub(super) async fn load_task(
    conn: &mut AnyConnection,
    task_id: &str,
    lock: &str,
    op: &'static str,
) -> Result<Option<TaskRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1{lock}"
    ))
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(op))?;
    row.map(|r| task_from(&r, op)).transpose()
}

pub(super) async fn load_assignments(
    conn: &mut AnyConnection,
    task_id: &str,
    op: &'static str,
) -> Result<Vec<AssignmentRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE task_id = $1 \
         ORDER BY leased_at, assignment_id"
    ))
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db(op))?;
    rows.iter().map(|r| assignment_from(r, op)).collect()
}

/// The backend a connection talks to (for the audit table lock).
pub(super) fn backend_of_conn(conn: &AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("postgres")
        || conn.backend_name().eq_ignore_ascii_case("postgresql")
    {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// `count` placeholders `$first`, `$first+1`, … separated by commas, for an
/// `IN (…)` list.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|k| format!("${k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` rows of `cols` placeholders for a multi-row `VALUES` list, numbered
/// from `$1` row by row: `($1, $2), ($3, $4)`.
pub(super) fn value_rows(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let p: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn save_task_progress(
    conn: &mut AnyConnection,
    t: &TaskRecord,
    now_ms: i64,
    op: &'static str,
) -> Result<(), StoreError> {
    save_tasks(conn, &[t], now_ms, op).await
}

/// Writes tasks' progress back, one statement per 50 tasks (one per task
/// measured 18,000 statements for 6,000 tasks, the most frequent statement of
/// a run).
pub(super) async fn save_tasks(
    conn: &mut AnyConnection,
    tasks: &[&TaskRecord],
    now_ms: i64,
    op: &'static str,
) -> Result<(), StoreError> {
    for chunk in tasks.chunks(50) {
        // `VALUES` columns are column1… on both SQLite and PostgreSQL.
        let sql = format!(
            "UPDATE tasks SET state = v.column2, replicas_wanted = v.column3, \
             replicas_active = v.column4, results_received = v.column5, \
             trusted_node = v.column6, accepted_digest = v.column7, reason = v.column8, \
             audit_index = v.column9, updated_ms = ${} FROM (VALUES {}) AS v \
             WHERE tasks.task_id = v.column1",
            9 * chunk.len() + 1,
            value_rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q
                .bind(&t.task_id)
                .bind(t.state.as_str())
                .bind(i64::from(t.replicas_wanted))
                .bind(i64::from(t.replicas_active))
                .bind(i64::from(t.results_received))
                .bind(&t.trusted_node)
                .bind(&t.accepted_digest)
                .bind(&t.reason)
                .bind(t.audit_index.map(to_i64));
        }
        q.bind(now_ms).execute(&mut *conn).await.map_err(db(op))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_placeholders_row_by_row() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
    }

    #[test]
    fn placeholders_count_from_the_first() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(placeholders(1, 1), "$1");
    }

    #[test]
    fn negative_counts_read_as_zero() {
        assert_eq!(u64_of(-1), 0);
        assert_eq!(u64_of(7), 7);
        assert_eq!(u32_of(i64::MAX), 0);
        assert_eq!(u32_of(7), 7);
    }
}
