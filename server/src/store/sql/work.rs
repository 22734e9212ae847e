//! SQL implementation of [`CoordinatorStore`] for both backends.
//!
//! Row locks: PostgreSQL locks task rows with `FOR NO KEY UPDATE` (lease
//! candidates with `FOR NO KEY UPDATE SKIP LOCKED`, so concurrent servers never
//! wait on each other's candidates and never lease one replica twice; `NO KEY`
//! so foreign-key checks of inserts naming the row do not wait, see
//! `SqlStore::for_update`); SQLite write transactions are exclusive already.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use askee_core::coordinator::{NodeCounters, impossible_claim, reputation_metrics, verification_policy};
use askee_core::rules::{
    ByzantineEvidence, ByzantinePolicy, QuorumDecision, ReplicaResult, byzantine_node_excluded,
    consensus, node_reputation,
};
use askee_core::wire::v1::{NodeState, ReportStatus, TaskState, TaskStatement};

use super::{SqlStore, append_in, db, to_i64};
use crate::store::{
    AssignmentRecord, AssignmentState, AuditDraft, Backend, CoordinatorStore, Exclusion,
    LeaseChoice, LeaseQuery, Misbehaviour, NodeRecord, NodeStats, NonceClaim, ResultInput,
    ResultOutcome, StoreError, SweepReport, TaskRecord,
};

const NODE_COLUMNS: &str = "node_key, token_id, grant_id, token_expires_at, token_payload_json, \
     profile_json, cpu_cores, ram_mb, storage_gb, bandwidth_mbps, owner, network_prefix, state, \
     registered_at, last_heartbeat, heartbeats, assigned, completed, failed, agreed, wrong, \
     invalid_signatures, consensus_failures, streak, reputation_micros, exclusion_reason, \
     policy_violations, malicious_patterns";

const TASK_COLUMNS: &str = "task_id, operator, operator_key, statement_json, signature, \
     module_sha256, task_type, duration_hours, cpu_cores, ram_mb, storage_gb, bandwidth_mbps, f, \
     max_replicas, adaptive, known_digest, bootstrap, deadline, state, replicas_wanted, replicas_active, \
     replicas_total, results_received, trusted_node, accepted_digest, reason, audit_index, \
     created_ms, updated_ms";

const ASSIGNMENT_COLUMNS: &str = "assignment_id, task_id, node_key, state, leased_at, \
     lease_expires_at, status, result_digest, signature, exit_code, stdout, failure, verdict, \
     reported_at_ms";

fn corrupt(what: String, detail: String) -> StoreError {
    StoreError::Corrupt { what, detail }
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn node_from(row: &AnyRow, op: &'static str) -> Result<NodeRecord, StoreError> {
    let g = |c: &str| -> Result<i64, StoreError> { row.try_get::<i64, _>(c).map_err(db(op)) };
    let node_key: String = row.try_get("node_key").map_err(db(op))?;
    let state: String = row.try_get("state").map_err(db(op))?;
    let state = NodeState::parse(&state)
        .ok_or_else(|| corrupt(format!("node {node_key}"), format!("state {state:?}")))?;
    Ok(NodeRecord {
        token_id: row.try_get("token_id").map_err(db(op))?,
        grant_id: row.try_get("grant_id").map_err(db(op))?,
        token_expires_at: g("token_expires_at")?,
        token_payload_json: row.try_get("token_payload_json").map_err(db(op))?,
        profile_json: row.try_get("profile_json").map_err(db(op))?,
        cpu_cores: u32_of(g("cpu_cores")?),
        ram_mb: u(g("ram_mb")?),
        storage_gb: u(g("storage_gb")?),
        bandwidth_mbps: u(g("bandwidth_mbps")?),
        owner: row.try_get("owner").map_err(db(op))?,
        network_prefix: row.try_get("network_prefix").map_err(db(op))?,
        state,
        registered_at: g("registered_at")?,
        last_heartbeat: g("last_heartbeat")?,
        stats: NodeStats {
            heartbeats: u(g("heartbeats")?),
            assigned: u(g("assigned")?),
            completed: u(g("completed")?),
            failed: u(g("failed")?),
            agreed: u(g("agreed")?),
            wrong: u(g("wrong")?),
            invalid_signatures: u(g("invalid_signatures")?),
            policy_violations: u(g("policy_violations")?),
            malicious_patterns: u(g("malicious_patterns")?),
            consensus_failures: u(g("consensus_failures")?),
            streak: u(g("streak")?),
        },
        reputation_micros: u32_of(g("reputation_micros")?),
        exclusion_reason: row.try_get("exclusion_reason").map_err(db(op))?,
        node_key,
    })
}

fn task_from(row: &AnyRow, op: &'static str) -> Result<TaskRecord, StoreError> {
    let g = |c: &str| -> Result<i64, StoreError> { row.try_get::<i64, _>(c).map_err(db(op)) };
    let task_id: String = row.try_get("task_id").map_err(db(op))?;
    let state: String = row.try_get("state").map_err(db(op))?;
    let state = TaskState::parse(&state)
        .ok_or_else(|| corrupt(format!("task {task_id}"), format!("state {state:?}")))?;
    let audit_index: Option<i64> = row.try_get("audit_index").map_err(db(op))?;
    Ok(TaskRecord {
        operator: row.try_get("operator").map_err(db(op))?,
        operator_key: row.try_get("operator_key").map_err(db(op))?,
        statement_json: row.try_get("statement_json").map_err(db(op))?,
        signature: row.try_get("signature").map_err(db(op))?,
        module_sha256: row.try_get("module_sha256").map_err(db(op))?,
        task_type: row.try_get("task_type").map_err(db(op))?,
        duration_hours: u32_of(g("duration_hours")?),
        cpu_cores: u32_of(g("cpu_cores")?),
        ram_mb: u(g("ram_mb")?),
        storage_gb: u(g("storage_gb")?),
        bandwidth_mbps: u(g("bandwidth_mbps")?),
        f: u32_of(g("f")?),
        max_replicas: u32_of(g("max_replicas")?),
        adaptive: g("adaptive")? != 0,
        known_digest: row.try_get("known_digest").map_err(db(op))?,
        bootstrap: g("bootstrap")? != 0,
        deadline: g("deadline")?,
        state,
        replicas_wanted: u32_of(g("replicas_wanted")?),
        replicas_active: u32_of(g("replicas_active")?),
        replicas_total: u32_of(g("replicas_total")?),
        results_received: u32_of(g("results_received")?),
        trusted_node: row.try_get("trusted_node").map_err(db(op))?,
        accepted_digest: row.try_get("accepted_digest").map_err(db(op))?,
        reason: row.try_get("reason").map_err(db(op))?,
        audit_index: audit_index.map(u),
        created_ms: g("created_ms")?,
        updated_ms: g("updated_ms")?,
        task_id,
    })
}

fn assignment_from(row: &AnyRow, op: &'static str) -> Result<AssignmentRecord, StoreError> {
    let id: String = row.try_get("assignment_id").map_err(db(op))?;
    let state: String = row.try_get("state").map_err(db(op))?;
    let state = AssignmentState::parse(&state)
        .ok_or_else(|| corrupt(format!("assignment {id}"), format!("state {state:?}")))?;
    let status: Option<String> = row.try_get("status").map_err(db(op))?;
    let status = match status.as_deref() {
        None => None,
        Some("completed") => Some(ReportStatus::Completed),
        Some("failed") => Some(ReportStatus::Failed),
        Some(other) => {
            return Err(corrupt(
                format!("assignment {id}"),
                format!("status {other:?}"),
            ));
        }
    };
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

async fn load_node(
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

async fn load_task(
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

async fn load_assignments(
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

/// Writes a node's counters back, recomputes its reputation and excludes it
/// when the evidence says so. Returns the exclusion when it is new.
async fn save_node_stats(
    conn: &mut AnyConnection,
    node: &NodeRecord,
    now: i64,
    now_ms: i64,
    heartbeat_interval: u64,
    policy: &ByzantinePolicy,
    op: &'static str,
) -> Result<Option<Exclusion>, StoreError> {
    let s = &node.stats;
    let evidence = ByzantineEvidence {
        wrong_results: s.wrong.min(u64::from(u32::MAX)) as u32,
        invalid_signatures: s.invalid_signatures.min(u64::from(u32::MAX)) as u32,
        policy_violations: s.policy_violations.min(u64::from(u32::MAX)) as u32,
        consensus_failures: s.consensus_failures.min(u64::from(u32::MAX)) as u32,
        malicious_patterns: s.malicious_patterns.min(u64::from(u32::MAX)) as u32,
    };
    let already = node.state == NodeState::Byzantine;
    let exclusion = byzantine_node_excluded(already, &evidence, policy);
    let (state, reputation, reason) = match &exclusion {
        Some(e) => {
            let reason = if already {
                node.exclusion_reason.clone()
            } else {
                Some(format!(
                    "{:?} (wrong results {}, invalid signatures {}, policy violations {}, failed quorums {})",
                    e.causes,
                    s.wrong,
                    s.invalid_signatures,
                    s.policy_violations,
                    s.consensus_failures
                ))
            };
            (NodeState::Byzantine, 0, reason)
        }
        None => {
            let counters = NodeCounters {
                assigned: s.assigned,
                completed: s.completed,
                agreed: s.agreed,
                wrong: s.wrong,
                heartbeats: s.heartbeats,
                age_seconds: u(now - node.registered_at),
                heartbeat_interval,
                active: node.state == NodeState::Active,
            };
            let rep = node_reputation(&reputation_metrics(&counters))
                .map(|r| r.micros())
                .unwrap_or(0);
            (node.state, rep, node.exclusion_reason.clone())
        }
    };
    sqlx::query(
        "UPDATE nodes SET assigned = $2, completed = $3, failed = $4, agreed = $5, wrong = $6, \
         invalid_signatures = $7, consensus_failures = $8, streak = $9, reputation_micros = $10, \
         state = $11, exclusion_reason = $12, policy_violations = $13, malicious_patterns = $14 \
         WHERE node_key = $1",
    )
    .bind(&node.node_key)
    .bind(to_i64(s.assigned))
    .bind(to_i64(s.completed))
    .bind(to_i64(s.failed))
    .bind(to_i64(s.agreed))
    .bind(to_i64(s.wrong))
    .bind(to_i64(s.invalid_signatures))
    .bind(to_i64(s.consensus_failures))
    .bind(to_i64(s.streak))
    .bind(i64::from(reputation))
    .bind(state.as_str())
    .bind(&reason)
    .bind(to_i64(s.policy_violations))
    .bind(to_i64(s.malicious_patterns))
    .execute(&mut *conn)
    .await
    .map_err(db(op))?;
    if exclusion.is_some() && !already {
        let reason = reason.unwrap_or_default();
        // Its outstanding leases go back to the pool at the next sweep (which
        // locks task before assignment, like every other path).
        append_in(
            conn,
            backend_of_conn(conn),
            vec![AuditDraft {
                timestamp_ms: now_ms,
                kind: "node.byzantine".into(),
                subject: node.node_key.clone(),
                data: serde_json::json!({
                    "reason": reason,
                    "token_id": node.token_id,
                    "grant_id": node.grant_id,
                    "wrong_results": s.wrong,
                    "invalid_signatures": s.invalid_signatures,
                    "policy_violations": s.policy_violations,
                    "malicious_patterns": s.malicious_patterns,
                    "consensus_failures": s.consensus_failures,
                }),
            }],
        )
        .await?;
        return Ok(Some(Exclusion {
            node_key: node.node_key.clone(),
            token_id: node.token_id.clone(),
            reason,
        }));
    }
    Ok(None)
}

fn backend_of_conn(conn: &AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("postgres")
        || conn.backend_name().eq_ignore_ascii_case("postgresql")
    {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// Puts one live lease back: the replica no longer counts for its task.
async fn expire_assignment(
    conn: &mut AnyConnection,
    a_id: &str,
    task_id: &str,
    node_key: &str,
    op: &'static str,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE assignments SET state = 'expired' WHERE assignment_id = $1 AND state = 'leased'",
    )
    .bind(a_id)
    .execute(&mut *conn)
    .await
    .map_err(db(op))?
    .rows_affected();
    if changed == 1 {
        // An adaptive single replica that is lost falls back to full
        // replication.
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

impl SqlStore {
    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR NO KEY UPDATE SKIP LOCKED",
        }
    }
}

async fn save_task_progress(
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
async fn save_tasks(
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

/// A result batch's working set: the batch's tasks (locked) and all their
/// assignments, changed in memory and written back once at the end, plus
/// what the transaction defers to its end: counter changes as node events
/// (node, kind, time) and audit entries with the task each decides.
#[derive(Default)]
struct ReportCtx {
    tasks: BTreeMap<String, TaskRecord>,
    assignments: BTreeMap<String, Vec<AssignmentRecord>>,
    dirty_tasks: BTreeSet<String>,
    /// (task id, assignment id) of changed assignments.
    dirty_assignments: BTreeSet<(String, String)>,
    events: Vec<(String, &'static str, i64)>,
    audits: Vec<(String, AuditDraft)>,
    /// Reporter states read in this batch (a node's results stop counting
    /// once it is excluded).
    states: BTreeMap<String, Option<String>>,
}

impl ReportCtx {
    /// Loads (and on PostgreSQL locks, in task order) the batch's tasks and
    /// reads all their assignments: two statements for the whole batch.
    /// The task locks serialise every writer that changes an assignment's
    /// state (reports, leases, the sweeper); heartbeats only extend leases.
    async fn load(
        &mut self,
        conn: &mut AnyConnection,
        task_ids: &[&str],
        lock: &str,
        op: &'static str,
    ) -> Result<(), StoreError> {
        if task_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = (0..task_ids.len()).map(|k| format!("${}", k + 1)).collect();
        let ids = ids.join(", ");
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

    /// Writes the changed assignments back: one statement per 50.
    async fn flush_assignments(
        &mut self,
        conn: &mut AnyConnection,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.dirty_assignments);
        let changed: Vec<&AssignmentRecord> = dirty
            .iter()
            .filter_map(|(task_id, a_id)| {
                self.assignments
                    .get(task_id)
                    .and_then(|v| v.iter().find(|a| &a.assignment_id == a_id))
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
        let dirty = std::mem::take(&mut self.dirty_tasks);
        let changed: Vec<&TaskRecord> = dirty.iter().filter_map(|id| self.tasks.get(id)).collect();
        save_tasks(conn, &changed, now_ms, op).await
    }
}

/// `rows` rows of `cols` placeholders for a multi-row `VALUES` list, numbered
/// from `$1` row by row: `($1, $2), ($3, $4)`.
fn value_rows(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let p: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node's consecutive events of one kind, stored as one row.
#[derive(Debug, PartialEq, Eq)]
struct EventRun<'a> {
    node_key: &'a str,
    kind: &'static str,
    /// The last event's time.
    at_ms: i64,
    times: u64,
}

/// `events` (node, kind, time) in order, as runs: each node's sequence of kinds
/// is kept exactly (so a `wrong` resets the streak where it fell), with
/// consecutive events of one kind merged. Runs come in the order of their first
/// event, so every node's runs are in order.
fn event_runs<'a>(events: &'a [(String, &'static str, i64)]) -> Vec<EventRun<'a>> {
    let mut runs: Vec<EventRun<'a>> = Vec::new();
    // Each node's latest run, by index into `runs`.
    let mut latest: BTreeMap<&str, usize> = BTreeMap::new();
    for (node_key, kind, at_ms) in events {
        match latest.get(node_key.as_str()) {
            Some(&i) if runs[i].kind == *kind => {
                runs[i].times += 1;
                runs[i].at_ms = *at_ms;
            }
            _ => {
                latest.insert(node_key, runs.len());
                runs.push(EventRun {
                    node_key,
                    kind,
                    at_ms: *at_ms,
                    times: 1,
                });
            }
        }
    }
    runs
}

/// The quorum step for one task of a result batch, on the working set.
fn decide(
    task: &mut TaskRecord,
    assignments: &mut [AssignmentRecord],
    ctx_events: &mut Vec<(String, &'static str, i64)>,
    audits: &mut Vec<(String, AuditDraft)>,
    dirty: &mut BTreeSet<(String, String)>,
    now_ms: i64,
) {
    let reported: Vec<usize> = (0..assignments.len())
        .filter(|&i| {
            assignments[i].state == AssignmentState::Reported
                && assignments[i].status == Some(ReportStatus::Completed)
        })
        .collect();
    // Results judged wrong against a known answer never count.
    let counted: Vec<usize> = reported
        .iter()
        .copied()
        .filter(|&i| assignments[i].verdict.as_deref() != Some("wrong"))
        .collect();
    let known_wrong = (reported.len() - counted.len()) as u32;
    let digests: Vec<[u8; 32]> = counted
        .iter()
        .map(|&i| {
            hex::decode(assignments[i].result_digest.as_deref().unwrap_or_default())
                .ok()
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 32])
        })
        .collect();
    let results: Vec<ReplicaResult<'_>> = counted
        .iter()
        .zip(&digests)
        .map(|(&i, d)| ReplicaResult {
            node_id: &assignments[i].node_key,
            digest: *d,
        })
        .collect();
    let policy = verification_policy(task.f, task.max_replicas, task.trusted_node.is_some());
    let assigned = task.replicas_wanted.saturating_sub(known_wrong);
    let decision = consensus(&policy, assigned, &results);
    let evidence = |assignments: &[AssignmentRecord]| -> Vec<serde_json::Value> {
        reported
            .iter()
            .map(|&i| {
                let a = &assignments[i];
                serde_json::json!({
                    "assignment_id": a.assignment_id,
                    "node_id": a.node_key,
                    "result_digest": a.result_digest,
                    "signature": a.signature,
                })
            })
            .collect()
    };
    let mut fail_reason = None;
    match decision {
        QuorumDecision::Waiting { .. } => {}
        QuorumDecision::AddReplicas { count } => {
            let cap = task.max_replicas.max(policy.min_replicas());
            let wanted = (task.replicas_wanted + count).min(cap + known_wrong);
            // The cap bounds the results a task may gather; a replica whose
            // lease was lost never answered, so it does not use the cap up
            // (issue 5: a task with lost replicas failed short of quorum).
            let lost = assignments
                .iter()
                .filter(|a| a.state == AssignmentState::Expired)
                .count() as u32;
            let spent = task.replicas_total.saturating_sub(lost);
            if wanted > task.replicas_wanted && spent < cap + known_wrong {
                task.replicas_wanted = wanted;
            } else {
                fail_reason = Some(format!(
                    "no quorum of {} agreeing results within {} replicas",
                    policy.threshold(),
                    cap
                ));
            }
        }
        QuorumDecision::Failed {
            distinct_digests,
            best_agreement,
            conflicting,
        } => {
            fail_reason = Some(if conflicting {
                format!(
                    "conflicting quorums: {distinct_digests} digests, more than f = {} byzantine replicas",
                    task.f
                )
            } else {
                format!(
                    "no quorum: best agreement {best_agreement} of {} needed, {distinct_digests} distinct digests",
                    policy.threshold()
                )
            });
        }
        QuorumDecision::Accepted { digest, agreeing } => {
            let accepted = hex::encode(digest);
            let evidence = evidence(assignments);
            // A trusted single result is checked against a known answer when
            // there is one (spot check); a mismatch is already excluded above.
            for a in assignments.iter_mut() {
                let unjudged = a.state == AssignmentState::Reported
                    && a.status == Some(ReportStatus::Completed)
                    && a.verdict.is_none();
                if unjudged {
                    let ok = a.result_digest.as_deref() == Some(accepted.as_str());
                    let verdict = if ok { "agreed" } else { "wrong" };
                    a.verdict = Some(verdict.into());
                    ctx_events.push((a.node_key.clone(), verdict, now_ms));
                    dirty.insert((a.task_id.clone(), a.assignment_id.clone()));
                } else if a.state == AssignmentState::Leased {
                    a.state = AssignmentState::Abandoned;
                    dirty.insert((a.task_id.clone(), a.assignment_id.clone()));
                }
            }
            audits.push((
                task.task_id.clone(),
                AuditDraft {
                    timestamp_ms: now_ms,
                    kind: "task.verified".into(),
                    subject: task.task_id.clone(),
                    data: serde_json::json!({
                        "digest": accepted,
                        "agreeing": agreeing,
                        "f": policy.f,
                        "replicas": reported.len(),
                        "evidence": evidence,
                    }),
                },
            ));
            task.state = TaskState::Verified;
            task.accepted_digest = Some(accepted);
        }
    }
    if let Some(reason) = fail_reason {
        for &i in &reported {
            ctx_events.push((assignments[i].node_key.clone(), "consensus_failure", now_ms));
        }
        let evidence = evidence(assignments);
        audits.push((
            task.task_id.clone(),
            AuditDraft {
                timestamp_ms: now_ms,
                kind: "task.failed".into(),
                subject: task.task_id.clone(),
                data: serde_json::json!({
                    "reason": reason,
                    "evidence": evidence,
                }),
            },
        ));
        for a in assignments.iter_mut() {
            if a.state == AssignmentState::Leased {
                a.state = AssignmentState::Abandoned;
                dirty.insert((a.task_id.clone(), a.assignment_id.clone()));
            }
        }
        task.state = TaskState::Failed;
        task.reason = Some(reason);
    }
}

/// One result of a batch, on the working set. `NotFound`,
/// `ForeignAssignment` and `ImpossibleClaim` are returned before anything
/// changes.
async fn record_one(
    conn: &mut AnyConnection,
    input: &ResultInput,
    ctx: &mut ReportCtx,
    op: &'static str,
) -> Result<ResultOutcome, StoreError> {
    let now_ms = input.now_ms;
    let Some(task_state) = ctx.tasks.get(&input.task_id).map(|t| t.state) else {
        return Err(StoreError::NotFound {
            what: format!("task {}", input.task_id),
        });
    };
    let position = ctx.assignments.get(&input.task_id).and_then(|v| {
        v.iter()
            .position(|a| a.assignment_id == input.assignment_id)
    });
    let Some(position) = position else {
        // Not among the task's replicas: another task's (a policy
        // violation) or unknown.
        let exists: Option<String> =
            sqlx::query_scalar("SELECT assignment_id FROM assignments WHERE assignment_id = $1")
                .bind(&input.assignment_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db(op))?;
        return Err(match exists {
            Some(_) => StoreError::ForeignAssignment {
                assignment_id: input.assignment_id.clone(),
                task_id: input.task_id.clone(),
            },
            None => StoreError::NotFound {
                what: format!("assignment {}", input.assignment_id),
            },
        });
    };
    let a = ctx.assignments[&input.task_id][position].clone();
    if a.node_key != input.node_key {
        return Err(StoreError::ForeignAssignment {
            assignment_id: input.assignment_id.clone(),
            task_id: input.task_id.clone(),
        });
    }
    let task = &ctx.tasks[&input.task_id];
    // Every stored statement was validated at submission, and one that
    // cannot be read is never leased, so no replica of it reaches here.
    let fuel_limit = serde_json::from_str::<TaskStatement>(&task.statement_json)
        .ok()
        .map(|st| st.limits.fuel);
    if let Some(claim) = fuel_limit.and_then(|limit| impossible_claim(limit, input.fuel_consumed)) {
        return Err(StoreError::ImpossibleClaim {
            assignment_id: input.assignment_id.clone(),
            claim,
        });
    }
    let not_recorded = ResultOutcome {
        recorded: false,
        task_state,
    };
    if matches!(a.state, AssignmentState::Reported | AssignmentState::Failed)
        || task_state.is_final()
        || a.state == AssignmentState::Abandoned
    {
        return Ok(not_recorded);
    }
    let state = match ctx.states.get(&input.node_key) {
        Some(s) => s.clone(),
        None => {
            let s: Option<String> =
                sqlx::query_scalar("SELECT state FROM nodes WHERE node_key = $1")
                    .bind(&input.node_key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db(op))?;
            ctx.states.insert(input.node_key.clone(), s.clone());
            s
        }
    };
    let key = (input.task_id.clone(), input.assignment_id.clone());
    let ReportCtx {
        tasks,
        assignments,
        dirty_tasks,
        dirty_assignments,
        events,
        audits,
        ..
    } = ctx;
    let task = tasks.get_mut(&input.task_id).expect("loaded above");
    let all = assignments.get_mut(&input.task_id).expect("found above");
    if state.as_deref() == Some(NodeState::Byzantine.as_str()) {
        // An excluded node's results never count; its replica goes back
        // (an adaptive single replica falls back to full replication).
        if a.state == AssignmentState::Leased {
            all[position].state = AssignmentState::Expired;
            dirty_assignments.insert(key);
            task.replicas_active = task.replicas_active.saturating_sub(1);
            if task.trusted_node.as_deref() == Some(a.node_key.as_str()) {
                task.trusted_node = None;
                task.replicas_wanted = 2 * task.f + 1;
            }
            dirty_tasks.insert(input.task_id.clone());
        }
        return Ok(not_recorded);
    }
    let was_live = a.state == AssignmentState::Leased;
    dirty_assignments.insert(key);
    dirty_tasks.insert(input.task_id.clone());
    let mine = &mut all[position];
    mine.signature = Some(input.signature.clone());
    mine.reported_at_ms = Some(now_ms);
    match input.status {
        ReportStatus::Failed => {
            mine.state = AssignmentState::Failed;
            mine.status = Some(ReportStatus::Failed);
            mine.failure = Some(input.failure.clone());
            if was_live {
                task.replicas_active = task.replicas_active.saturating_sub(1);
            }
            if task.trusted_node.as_deref() == Some(input.node_key.as_str()) {
                task.trusted_node = None;
                task.replicas_wanted = 2 * task.f + 1;
            }
            events.push((input.node_key.clone(), "failed", now_ms));
        }
        ReportStatus::Completed => {
            mine.state = AssignmentState::Reported;
            mine.status = Some(ReportStatus::Completed);
            mine.result_digest = Some(input.result_digest.clone());
            mine.exit_code = Some(input.exit_code);
            mine.stdout = Some(input.stdout.clone());
            if !was_live {
                // A late result after the lease expired still counts.
                task.replicas_active += 1;
            }
            task.results_received += 1;
            events.push((input.node_key.clone(), "completed", now_ms));
            if let Some(known) = task.known_digest.clone() {
                let ok = known == input.result_digest;
                let verdict = if ok { "agreed" } else { "wrong" };
                mine.verdict = Some(verdict.into());
                events.push((input.node_key.clone(), verdict, now_ms));
                if !ok {
                    // A wrong answer to a known question never counts;
                    // another replica takes its place.
                    task.replicas_active = task.replicas_active.saturating_sub(1);
                    if task.trusted_node.is_some() {
                        task.trusted_node = None;
                        task.replicas_wanted = 2 * task.f + 1;
                    }
                }
            }
            decide(task, all, events, audits, dirty_assignments, now_ms);
        }
    }
    Ok(ResultOutcome {
        recorded: true,
        task_state: task.state,
    })
}

/// Folds a node's pending events (and `extra` misbehaviour) into its row,
/// under the row's lock: counters in event order (a wrong verdict resets the
/// streak), reputation recomputed, exclusion evaluated. The events are taken
/// with `DELETE … RETURNING`, so what is folded is exactly what is removed,
/// even with reports committing meanwhile.
#[allow(clippy::too_many_arguments)]
async fn fold_in(
    conn: &mut AnyConnection,
    node_key: &str,
    lock: &str,
    now_ms: i64,
    heartbeat_interval: u64,
    policy: &ByzantinePolicy,
    extra: Option<Misbehaviour>,
    op: &'static str,
) -> Result<Option<Exclusion>, StoreError> {
    let Some(mut node) = load_node(conn, node_key, lock, op).await? else {
        return Ok(None);
    };
    let rows =
        sqlx::query("DELETE FROM node_events WHERE node_key = $1 RETURNING event_id, kind, times")
            .bind(node_key)
            .fetch_all(&mut *conn)
            .await
            .map_err(db(op))?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get("event_id").map_err(db(op))?;
        let kind: String = r.try_get("kind").map_err(db(op))?;
        let times: i64 = r.try_get("times").map_err(db(op))?;
        events.push((id, kind, u(times)));
    }
    events.sort();
    let s = &mut node.stats;
    for (id, kind, n) in &events {
        let n = *n;
        match kind.as_str() {
            "completed" => s.completed += n,
            "failed" => s.failed += n,
            "agreed" => {
                s.agreed += n;
                s.streak += n;
            }
            "wrong" => {
                s.wrong += n;
                s.streak = 0;
            }
            "consensus_failure" => s.consensus_failures += n,
            other => {
                return Err(corrupt(
                    format!("node event {id}"),
                    format!("unknown kind {other:?}"),
                ));
            }
        }
    }
    match extra {
        Some(Misbehaviour::InvalidSignature) => s.invalid_signatures += 1,
        Some(Misbehaviour::PolicyViolation) => s.policy_violations += 1,
        Some(Misbehaviour::MaliciousPattern) => s.malicious_patterns += 1,
        None if events.is_empty() => return Ok(None),
        None => {}
    }
    save_node_stats(
        conn,
        &node,
        now_ms.div_euclid(1000),
        now_ms,
        heartbeat_interval,
        policy,
        op,
    )
    .await
}

#[async_trait]
impl CoordinatorStore for SqlStore {
    async fn create_challenge(
        &self,
        challenge: &str,
        node_key: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        const OP: &str = "create challenge";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            sqlx::query(
                "INSERT INTO node_challenges (challenge, node_key, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(challenge)
            .bind(node_key)
            .bind(expires_at)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn take_challenge(
        &self,
        challenge: &str,
        node_key: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "take challenge";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            sqlx::query("DELETE FROM node_challenges WHERE expires_at < $1")
                .bind(now)
                .execute(w.conn())
                .await
                .map_err(db(OP))?;
            let n = sqlx::query(
                "DELETE FROM node_challenges WHERE challenge = $1 AND node_key = $2 AND expires_at >= $3",
            )
            .bind(challenge)
            .bind(node_key)
            .bind(now)
            .execute(w.conn())
            .await
            .map_err(db(OP))?
            .rows_affected();
            Ok(n == 1)
        }
        .await;
        w.finish(result).await
    }

    async fn register_node(&self, n: &NodeRecord, audit: AuditDraft) -> Result<(), StoreError> {
        const OP: &str = "register node";
        let lock = self.for_update();
        let backend = self.backend;
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let existing = load_node(w.conn(), &n.node_key, lock, OP).await?;
            match existing {
                Some(e) if e.state == NodeState::Byzantine => {
                    return Err(StoreError::Conflict {
                        what: format!(
                            "node {} was excluded as byzantine: {}",
                            n.node_key,
                            e.exclusion_reason.unwrap_or_default()
                        ),
                    });
                }
                Some(_) => {
                    sqlx::query(
                        "UPDATE nodes SET token_id = $2, grant_id = $3, token_expires_at = $4, \
                         token_payload_json = $5, profile_json = $6, cpu_cores = $7, ram_mb = $8, \
                         storage_gb = $9, bandwidth_mbps = $10, owner = $11, network_prefix = $12, \
                         state = 'active', last_heartbeat = $13, heartbeats = heartbeats + 1 \
                         WHERE node_key = $1",
                    )
                    .bind(&n.node_key)
                    .bind(&n.token_id)
                    .bind(&n.grant_id)
                    .bind(n.token_expires_at)
                    .bind(&n.token_payload_json)
                    .bind(&n.profile_json)
                    .bind(i64::from(n.cpu_cores))
                    .bind(to_i64(n.ram_mb))
                    .bind(to_i64(n.storage_gb))
                    .bind(to_i64(n.bandwidth_mbps))
                    .bind(&n.owner)
                    .bind(&n.network_prefix)
                    .bind(n.last_heartbeat)
                    .execute(w.conn())
                    .await
                    .map_err(db(OP))?;
                }
                None => {
                    sqlx::query(&format!(
                        "INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                         $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, 0, 0, 0, 0, 0, 0, 0, $17, NULL, 0, 0)"
                    ))
                    .bind(&n.node_key)
                    .bind(&n.token_id)
                    .bind(&n.grant_id)
                    .bind(n.token_expires_at)
                    .bind(&n.token_payload_json)
                    .bind(&n.profile_json)
                    .bind(i64::from(n.cpu_cores))
                    .bind(to_i64(n.ram_mb))
                    .bind(to_i64(n.storage_gb))
                    .bind(to_i64(n.bandwidth_mbps))
                    .bind(&n.owner)
                    .bind(&n.network_prefix)
                    .bind(NodeState::Active.as_str())
                    .bind(n.registered_at)
                    .bind(n.last_heartbeat)
                    .bind(1i64)
                    .bind(i64::from(n.reputation_micros))
                    .execute(w.conn())
                    .await
                    .map_err(db(OP))?;
                }
            }
            append_in(w.conn(), backend, vec![audit]).await?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn node(&self, node_key: &str) -> Result<Option<NodeRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db("read node"))?;
        load_node(&mut conn, node_key, "", "read node").await
    }

    async fn heartbeat(
        &self,
        node_key: &str,
        now: i64,
        running: &[String],
        lease_expires_at: i64,
    ) -> Result<(NodeState, Vec<String>), StoreError> {
        const OP: &str = "heartbeat";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            // Assignment rows before the node row: reports lock assignment
            // before node, so this order cannot deadlock with them.
            // In (task, assignment) order, the order result batches lock
            // assignment rows in, so the two never wait on each other in a
            // cycle.
            let tasks: BTreeMap<String, String> = sqlx::query(
                "SELECT assignment_id, task_id FROM assignments WHERE node_key = $1 \
                 AND state = 'leased'",
            )
            .bind(node_key)
            .fetch_all(w.conn())
            .await
            .map_err(db(OP))?
            .iter()
            .filter_map(|r| {
                Some((
                    r.try_get::<String, _>("assignment_id").ok()?,
                    r.try_get::<String, _>("task_id").ok()?,
                ))
            })
            .collect();
            let mut ordered: Vec<&String> = running.iter().collect();
            ordered.sort_by_key(|id| (tasks.get(*id), *id));
            let mut live_ids = Vec::new();
            for id in ordered {
                let live = sqlx::query(
                    "UPDATE assignments SET lease_expires_at = $3 WHERE assignment_id = $1 \
                         AND node_key = $2 AND state = 'leased' AND EXISTS (SELECT 1 FROM tasks t \
                         WHERE t.task_id = assignments.task_id AND t.state = 'pending')",
                )
                .bind(id)
                .bind(node_key)
                .bind(lease_expires_at)
                .execute(w.conn())
                .await
                .map_err(db(OP))?
                .rows_affected()
                    == 1;
                if live {
                    live_ids.push(id.clone());
                }
            }
            sqlx::query(
                "UPDATE nodes SET last_heartbeat = $2, heartbeats = heartbeats + 1, \
                 state = CASE WHEN state = 'offline' THEN 'active' ELSE state END \
                 WHERE node_key = $1",
            )
            .bind(node_key)
            .bind(now)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            let node = load_node(w.conn(), node_key, "", OP)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("node {node_key}"),
                })?;
            let abandon = if node.state == NodeState::Active {
                running
                    .iter()
                    .filter(|id| !live_ids.contains(id))
                    .cloned()
                    .collect()
            } else {
                running.to_vec()
            };
            Ok((node.state, abandon))
        }
        .await;
        w.finish(result).await
    }

    async fn add_operator_key(
        &self,
        operator: &str,
        public_key: &str,
        now: i64,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        const OP: &str = "add operator key";
        let backend = self.backend;
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT operator FROM operator_keys WHERE public_key = $1")
                    .bind(public_key)
                    .fetch_optional(w.conn())
                    .await
                    .map_err(db(OP))?;
            match existing {
                Some(owner) if owner == operator => return Ok(()),
                Some(_) => {
                    return Err(StoreError::Conflict {
                        what: "the key is registered to another operator".into(),
                    });
                }
                None => {}
            }
            sqlx::query(
                "INSERT INTO operator_keys (public_key, operator, created_at) VALUES ($1, $2, $3)",
            )
            .bind(public_key)
            .bind(operator)
            .bind(now)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            append_in(w.conn(), backend, vec![audit]).await?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn operator_of_key(&self, public_key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT operator FROM operator_keys WHERE public_key = $1")
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read operator key"))
    }

    async fn put_module(
        &self,
        sha256: &str,
        bytes: &[u8],
        operator: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "store module";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let n = sqlx::query(
                "INSERT INTO modules (sha256, bytes, size_bytes, operator, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(sha256)
            .bind(bytes.to_vec())
            .bind(bytes.len() as i64)
            .bind(operator)
            .bind(now)
            .execute(w.conn())
            .await
            .map_err(db(OP))?
            .rows_affected();
            Ok(n == 1)
        }
        .await;
        w.finish(result).await
    }

    async fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT bytes FROM modules WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read module"))
    }

    async fn module_size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size_bytes FROM modules WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("read module size"))?;
        Ok(size.map(u))
    }

    async fn create_tasks(
        &self,
        tasks: &[TaskRecord],
        audits: Vec<AuditDraft>,
    ) -> Result<Vec<bool>, StoreError> {
        const OP: &str = "create tasks";
        let backend = self.backend;
        let mut w = self.begin_write(OP).await?;
        let result =
            async {
                // One statement per 100 tasks; `RETURNING` names the rows that
                // were new (a task already stored, or twice in the batch, is not).
                let mut inserted: BTreeSet<String> = BTreeSet::new();
                for chunk in tasks.chunks(100) {
                    let values: Vec<String> = (0..chunk.len())
                    .map(|k| {
                        let p = |c: usize| format!("${}", 22 * k + c);
                        format!(
                            "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, \
                             {}, {}, {}, 0, 0, 0, NULL, NULL, NULL, NULL, {}, {})",
                            p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9), p(10), p(11),
                            p(12), p(13), p(14), p(15), p(16), p(22), p(17), p(18), p(19), p(20),
                            p(21)
                        )
                    })
                    .collect();
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
                    inserted.extend(q.fetch_all(w.conn()).await.map_err(db(OP))?);
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

    async fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db("read task"))?;
        load_task(&mut conn, task_id, "", "read task").await
    }

    async fn assignments_of_task(
        &self,
        task_id: &str,
    ) -> Result<Vec<AssignmentRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db("read assignments"))?;
        load_assignments(&mut conn, task_id, "read assignments").await
    }

    async fn lease(
        &self,
        q: LeaseQuery<'_>,
    ) -> Result<Vec<(AssignmentRecord, TaskRecord)>, StoreError> {
        const OP: &str = "lease work";
        if q.max_tasks == 0 || q.task_types.is_empty() {
            return Ok(Vec::new());
        }
        let skip_locked = self.skip_locked();
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let types: Vec<String> = (0..q.task_types.len())
                .map(|i| format!("${}", i + 4))
                .collect();
            let challenge = if q.challenges_only {
                " AND t.bootstrap = 1"
            } else {
                " AND t.bootstrap = 0"
            };
            let n = q.task_types.len();
            let sql = format!(
                "SELECT {cols} FROM tasks t WHERE t.state = 'pending' \
                 AND t.replicas_active < t.replicas_wanted AND t.deadline > $2{challenge} \
                 AND t.task_type IN ({types}) AND NOT EXISTS (SELECT 1 FROM assignments a \
                 WHERE a.task_id = t.task_id AND a.node_key = $1) \
                 AND (t.created_ms > ${after_ms} OR (t.created_ms = ${after_ms} AND t.task_id > ${after_id})) \
                 ORDER BY t.created_ms, t.task_id LIMIT $3",
                cols = TASK_COLUMNS
                    .split(", ")
                    .map(|c| format!("t.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", "),
                types = types.join(", "),
                after_ms = n + 4,
                after_id = n + 5,
            );
            // The window of takeable candidates ranked for diversity. Pages
            // go on past candidates this node may not take (too big, wrong
            // reputation floor, ...): a fixed window of the oldest tasks let
            // a few ineligible ones at the head of the queue starve the node
            // of eligible work behind them (issue 5).
            let window = i64::from(q.max_tasks) * 2 + 2;
            let mut cursor: (i64, String) = (i64::MIN, String::new());
            let mut ranked = Vec::new();
            loop {
                let mut query = sqlx::query(&sql)
                    .bind(q.node_key)
                    .bind(q.now)
                    .bind(window);
                for t in q.task_types {
                    query = query.bind(t);
                }
                let rows = query
                    .bind(cursor.0)
                    .bind(&cursor.1)
                    .fetch_all(w.conn())
                    .await
                    .map_err(db(OP))?;
                let last_page = (rows.len() as i64) < window;
                let mut page = Vec::with_capacity(rows.len());
                for r in &rows {
                    let t = task_from(r, OP)?;
                    cursor = (t.created_ms, t.task_id.clone());
                    let choice = (q.choose)(&t);
                    if choice != LeaseChoice::Skip {
                        page.push((t, choice));
                    }
                }
                // Sybil diversity: prefer tasks whose other replicas run
                // under another owner (strongly) and another network prefix;
                // one query for the page.
                let shared: Vec<&str> = page
                    .iter()
                    .filter(|(t, _)| t.replicas_total > 0)
                    .map(|(t, _)| t.task_id.as_str())
                    .collect();
                let mut scores: BTreeMap<String, i64> = BTreeMap::new();
                if !shared.is_empty() {
                    let ids: Vec<String> =
                        (0..shared.len()).map(|k| format!("${}", k + 3)).collect();
                    let sql = format!(
                        // Only the task ids filter rows, so the planner
                        // goes by the (task_id, node_key) index; a filter
                        // on state let stale statistics pick a scan of
                        // every live assignment.
                        "SELECT a.task_id, \
                         COALESCE(SUM(CASE WHEN a.state IN ('leased', 'reported') \
                         AND n.owner = $1 THEN 1 ELSE 0 END), 0) AS same_owner, \
                         COALESCE(SUM(CASE WHEN a.state IN ('leased', 'reported') \
                         AND n.network_prefix = $2 THEN 1 ELSE 0 END), 0) AS same_net \
                         FROM assignments a JOIN nodes n ON n.node_key = a.node_key \
                         WHERE a.task_id IN ({}) GROUP BY a.task_id",
                        ids.join(", ")
                    );
                    let mut query = sqlx::query(&sql).bind(q.owner).bind(q.network_prefix);
                    for id in &shared {
                        query = query.bind(*id);
                    }
                    for r in query.fetch_all(w.conn()).await.map_err(db(OP))? {
                        let id: String = r.try_get("task_id").map_err(db(OP))?;
                        let same_owner: i64 = r.try_get("same_owner").map_err(db(OP))?;
                        let same_net: i64 = r.try_get("same_net").map_err(db(OP))?;
                        scores.insert(id, 2 * same_owner.min(1) + same_net.min(1));
                    }
                }
                for (t, choice) in page {
                    let score = scores.get(&t.task_id).copied().unwrap_or(0);
                    ranked.push((score, t, choice));
                }
                if last_page || ranked.len() as i64 >= window {
                    break;
                }
            }
            // Stable: queue order within one diversity class.
            ranked.sort_by_key(|(score, _, _)| *score);
            // Candidates were read without locks; each one taken is locked
            // now (PostgreSQL: `SKIP LOCKED`, so a task another server is
            // leasing or a report is deciding is passed over, never waited
            // on, and rounds cannot deadlock) and checked again, so only the
            // tasks taken are locked, and only from here to commit. In rounds:
            // for each candidate passed over the next in rank order is tried,
            // until the node has `max_tasks` or the window is used up (one
            // round took about half: every leaser looks at the oldest tasks,
            // which reports are deciding meanwhile).
            let mut queue: std::collections::VecDeque<TaskRecord> =
                ranked.into_iter().map(|(_, t, _)| t).collect();
            let mut out = Vec::new();
            let mut shared = Vec::new();
            while out.len() < q.max_tasks as usize && !queue.is_empty() {
                let want = (q.max_tasks as usize - out.len()).min(queue.len());
                let picked: Vec<TaskRecord> = queue.drain(..want).collect();
                let ids: Vec<String> =
                    (0..picked.len()).map(|k| format!("${}", k + 2)).collect();
                let lock_sql = format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({}) AND state = 'pending' \
                     AND replicas_active < replicas_wanted AND NOT EXISTS (SELECT 1 FROM assignments a \
                     WHERE a.task_id = tasks.task_id AND a.node_key = $1) ORDER BY task_id{skip_locked}",
                    ids.join(", ")
                );
                let mut query = sqlx::query(&lock_sql).bind(q.node_key);
                for t in &picked {
                    query = query.bind(&t.task_id);
                }
                let mut locked: BTreeMap<String, TaskRecord> = BTreeMap::new();
                for r in query.fetch_all(w.conn()).await.map_err(db(OP))? {
                    let t = task_from(&r, OP)?;
                    locked.insert(t.task_id.clone(), t);
                }
                // Ranked order; the choice is made again on the locked row.
                for candidate in picked {
                    let Some(mut t) = locked.remove(&candidate.task_id) else {
                        continue;
                    };
                    let choice = (q.choose)(&t);
                    if choice == LeaseChoice::Skip {
                        continue;
                    }
                    let alone = choice == LeaseChoice::TakeAlone && t.replicas_total == 0;
                    t.replicas_active += 1;
                    t.replicas_total += 1;
                    if alone {
                        t.replicas_wanted = 1;
                        t.trusted_node = Some(q.node_key.to_owned());
                        sqlx::query(
                            "UPDATE tasks SET replicas_active = $2, replicas_total = $3, \
                             replicas_wanted = $4, trusted_node = $5 WHERE task_id = $1",
                        )
                        .bind(&t.task_id)
                        .bind(i64::from(t.replicas_active))
                        .bind(i64::from(t.replicas_total))
                        .bind(i64::from(t.replicas_wanted))
                        .bind(&t.trusted_node)
                        .execute(w.conn())
                        .await
                        .map_err(db(OP))?;
                    } else {
                        shared.push(t.task_id.clone());
                    }
                    out.push((
                        AssignmentRecord {
                            assignment_id: (q.new_id)(),
                            task_id: t.task_id.clone(),
                            node_key: q.node_key.to_owned(),
                            state: AssignmentState::Leased,
                            leased_at: q.now,
                            lease_expires_at: q.lease_expires_at,
                            status: None,
                            result_digest: None,
                            signature: None,
                            exit_code: None,
                            stdout: None,
                            failure: None,
                            verdict: None,
                            reported_at_ms: None,
                        },
                        t,
                    ));
                }
            }
            if out.is_empty() {
                return Ok(out);
            }
            // One statement each for the replicas' rows and the counts of
            // the tasks shared with other replicas.
            if !shared.is_empty() {
                let ids: Vec<String> = (0..shared.len()).map(|k| format!("${}", k + 1)).collect();
                let sql = format!(
                    "UPDATE tasks SET replicas_active = replicas_active + 1, \
                     replicas_total = replicas_total + 1 WHERE task_id IN ({})",
                    ids.join(", ")
                );
                let mut query = sqlx::query(&sql);
                for id in &shared {
                    query = query.bind(id);
                }
                query.execute(w.conn()).await.map_err(db(OP))?;
            }
            if !out.is_empty() {
                let values: Vec<String> = (0..out.len())
                    .map(|k| {
                        format!(
                            "(${}, ${}, $1, 'leased', $2, $3)",
                            2 * k + 4,
                            2 * k + 5
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO assignments (assignment_id, task_id, node_key, state, leased_at, \
                     lease_expires_at) VALUES {}",
                    values.join(", ")
                );
                let mut query = sqlx::query(&sql)
                    .bind(q.node_key)
                    .bind(q.now)
                    .bind(q.lease_expires_at);
                for (a, _) in &out {
                    query = query.bind(&a.assignment_id).bind(&a.task_id);
                }
                query.execute(w.conn()).await.map_err(db(OP))?;
            }
            if !out.is_empty() {
                sqlx::query("UPDATE nodes SET assigned = assigned + $2 WHERE node_key = $1")
                    .bind(q.node_key)
                    .bind(out.len() as i64)
                    .execute(w.conn())
                    .await
                    .map_err(db(OP))?;
            }
            Ok(out)
        }
        .await;
        w.finish(result).await
    }

    async fn assignment(
        &self,
        assignment_id: &str,
    ) -> Result<Option<AssignmentRecord>, StoreError> {
        const OP: &str = "read assignment";
        let row = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE assignment_id = $1"
        ))
        .bind(assignment_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(OP))?;
        row.map(|r| assignment_from(&r, OP)).transpose()
    }

    async fn record_results(
        &self,
        nonce: Option<&NonceClaim>,
        inputs: Vec<ResultInput>,
    ) -> Result<Vec<Result<ResultOutcome, StoreError>>, StoreError> {
        const OP: &str = "record results";
        let lock = self.for_update();
        let backend = self.backend;
        // Task order: concurrent batches lock task rows (and then their
        // assignment rows) in one global order, so they cannot deadlock.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by(|&x, &y| {
            (&inputs[x].task_id, &inputs[x].assignment_id)
                .cmp(&(&inputs[y].task_id, &inputs[y].assignment_id))
        });
        let mut w = self.begin_write(OP).await?;
        let result = async {
            if let Some(n) = nonce {
                // The request's nonce commits with its work: a replay finds
                // it and stores nothing. (Expired nonces are cleared by the
                // other signed requests, not here: that delete would make
                // concurrent batches wait on each other's row locks.)
                let inserted = sqlx::query(
                    "INSERT INTO nonces (node_key, nonce, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (node_key, nonce) DO NOTHING",
                )
                .bind(&n.node_key)
                .bind(&n.nonce)
                .bind(n.expires_at)
                .execute(w.conn())
                .await
                .map_err(db(OP))?
                .rows_affected();
                if inserted != 1 {
                    return Err(StoreError::ReplayedNonce {
                        node_key: n.node_key.clone(),
                        nonce: n.nonce.clone(),
                    });
                }
            }
            let mut ctx = ReportCtx::default();
            let mut task_ids: Vec<&str> = inputs.iter().map(|i| i.task_id.as_str()).collect();
            task_ids.sort_unstable();
            task_ids.dedup();
            ctx.load(w.conn(), &task_ids, lock, OP).await?;
            let mut outcomes: Vec<Option<Result<ResultOutcome, StoreError>>> =
                (0..inputs.len()).map(|_| None).collect();
            for &i in &order {
                let outcome = match record_one(w.conn(), &inputs[i], &mut ctx, OP).await {
                    Ok(o) => Ok(o),
                    // Found before anything changed: the item's own
                    // outcome, the rest of the batch goes on.
                    Err(
                        e @ (StoreError::NotFound { .. }
                        | StoreError::ForeignAssignment { .. }
                        | StoreError::ImpossibleClaim { .. }),
                    ) => Err(e),
                    Err(e) => return Err(e),
                };
                outcomes[i] = Some(outcome);
            }
            let now_ms = inputs.first().map_or(0, |i| i.now_ms);
            ctx.flush_assignments(w.conn(), OP).await?;
            // Counter changes as node events: no other node's row is locked.
            for chunk in event_runs(&ctx.events).chunks(150) {
                let sql = format!(
                    "INSERT INTO node_events (node_key, kind, created_ms, times) VALUES {}",
                    value_rows(chunk.len(), 4)
                );
                let mut q = sqlx::query(&sql);
                for run in chunk {
                    q = q
                        .bind(run.node_key)
                        .bind(run.kind)
                        .bind(run.at_ms)
                        .bind(to_i64(run.times));
                }
                q.execute(w.conn()).await.map_err(db(OP))?;
            }
            // Audit entries after every new row lock (on PostgreSQL the
            // audit table lock must be the last lock taken); the task rows
            // written after it are locked by this transaction already, so
            // nothing waits while the audit lock is held.
            let audits = std::mem::take(&mut ctx.audits);
            if !audits.is_empty() {
                let (tasks, drafts): (Vec<String>, Vec<AuditDraft>) = audits.into_iter().unzip();
                let indices = append_in(w.conn(), backend, drafts).await?;
                for (task_id, idx) in tasks.into_iter().zip(indices) {
                    if let Some(t) = ctx.tasks.get_mut(&task_id) {
                        t.audit_index = Some(idx);
                    }
                }
            }
            ctx.flush_tasks(w.conn(), now_ms, OP).await?;
            Ok(outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| {
                        Err(StoreError::Corrupt {
                            what: "result batch".into(),
                            detail: "an item was not processed".into(),
                        })
                    })
                })
                .collect())
        }
        .await;
        w.finish(result).await
    }

    async fn fold_node(
        &self,
        node_key: &str,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Option<Exclusion>, StoreError> {
        const OP: &str = "fold node events";
        let pending: Option<i64> =
            sqlx::query_scalar("SELECT event_id FROM node_events WHERE node_key = $1 LIMIT 1")
                .bind(node_key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db(OP))?;
        if pending.is_none() {
            return Ok(None);
        }
        let lock = self.for_update();
        let mut w = self.begin_write(OP).await?;
        let result = fold_in(
            w.conn(),
            node_key,
            lock,
            now_ms,
            heartbeat_interval,
            &policy,
            None,
            OP,
        )
        .await;
        w.finish(result).await
    }

    async fn fold_pending(
        &self,
        limit: u32,
        before_ms: i64,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Vec<Exclusion>, StoreError> {
        const OP: &str = "fold pending node events";
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT node_key FROM node_events WHERE created_ms < $2 LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        let mut excluded = Vec::new();
        for key in keys {
            if let Some(e) = self
                .fold_node(&key, now_ms, heartbeat_interval, policy)
                .await?
            {
                excluded.push(e);
            }
        }
        Ok(excluded)
    }

    async fn record_misbehaviour(
        &self,
        node_key: &str,
        kind: Misbehaviour,
        what: &str,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Option<Exclusion>, StoreError> {
        const OP: &str = "record misbehaviour";
        let lock = self.for_update();
        let mut w = self.begin_write(OP).await?;
        let result = async {
            tracing::warn!(node = node_key, ?kind, what, "node misbehaved");
            fold_in(
                w.conn(),
                node_key,
                lock,
                now_ms,
                heartbeat_interval,
                &policy,
                Some(kind),
                OP,
            )
            .await
        }
        .await;
        w.finish(result).await
    }

    async fn cancel_task(
        &self,
        task_id: &str,
        operator: &str,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<TaskRecord, StoreError> {
        const OP: &str = "cancel task";
        let lock = self.for_update();
        let backend = self.backend;
        let mut w = self.begin_write(OP).await?;
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
            sqlx::query(
                "UPDATE assignments SET state = 'abandoned' WHERE task_id = $1 AND state = 'leased'",
            )
            .bind(task_id)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            let idx = append_in(w.conn(), backend, vec![audit]).await?;
            task.audit_index = idx.first().copied();
            save_task_progress(w.conn(), &task, now_ms, OP).await?;
            Ok(task)
        }
        .await;
        w.finish(result).await
    }

    async fn sweep(
        &self,
        now: i64,
        offline_before: i64,
        now_ms: i64,
    ) -> Result<SweepReport, StoreError> {
        const OP: &str = "sweep";
        let lock = self.for_update();
        let backend = self.backend;
        let mut report = SweepReport::default();
        // Silent nodes go offline (handleNodeFailure); their leases are
        // put back below.
        let mut w = self.begin_write(OP).await?;
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
        report.nodes_offline = w.finish(result).await?;
        // Overdue leases, and every lease of a node that is no longer
        // active. One transaction per replica, task row first.
        loop {
            let rows = sqlx::query(
                "SELECT assignment_id, task_id, node_key FROM assignments WHERE state = 'leased' \
                 AND (lease_expires_at < $1 OR node_key IN (SELECT node_key FROM nodes \
                 WHERE state <> 'active')) LIMIT 500",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(db(OP))?;
            let mut n = 0u64;
            for r in &rows {
                let a: String = r.try_get("assignment_id").map_err(db(OP))?;
                let t: String = r.try_get("task_id").map_err(db(OP))?;
                let k: String = r.try_get("node_key").map_err(db(OP))?;
                let mut w = self.begin_write(OP).await?;
                let result = async {
                    load_task(w.conn(), &t, lock, OP).await?;
                    expire_assignment(w.conn(), &a, &t, &k, OP).await
                }
                .await;
                if w.finish(result).await? {
                    n += 1;
                }
            }
            report.leases_expired += n;
            if rows.len() < 500 || n == 0 {
                break;
            }
        }
        // Deadlines.
        let overdue: Vec<String> = sqlx::query_scalar(
            "SELECT task_id FROM tasks WHERE state = 'pending' AND deadline < $1 LIMIT 1000",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        for task_id in overdue {
            let mut w = self.begin_write(OP).await?;
            let result = async {
                let Some(mut task) = load_task(w.conn(), &task_id, lock, OP).await? else {
                    return Ok(0);
                };
                if task.state.is_final() {
                    return Ok(0);
                }
                task.state = TaskState::Failed;
                task.reason = Some(format!("deadline {} passed without a quorum", task.deadline));
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
                sqlx::query(
                    "UPDATE assignments SET state = 'abandoned' WHERE task_id = $1 AND state = 'leased'",
                )
                .bind(&task_id)
                .execute(w.conn())
                .await
                .map_err(db(OP))?;
                save_task_progress(w.conn(), &task, now_ms, OP).await?;
                Ok(1)
            }
            .await;
            report.tasks_failed += w.finish(result).await?;
        }
        Ok(report)
    }

    async fn reputation_ledger(&self, limit: u32) -> Result<Vec<NodeRecord>, StoreError> {
        const OP: &str = "read reputation ledger";
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes ORDER BY reputation_micros DESC, node_key LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter().map(|r| node_from(r, OP)).collect()
    }

    async fn excluded_unrevoked(&self) -> Result<Vec<Exclusion>, StoreError> {
        const OP: &str = "read unrevoked exclusions";
        let rows = sqlx::query(
            "SELECT n.node_key, n.token_id, n.exclusion_reason FROM nodes n \
             JOIN grants g ON g.grant_id = n.grant_id \
             WHERE n.state = 'byzantine' AND g.revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                Ok(Exclusion {
                    node_key: r.try_get("node_key").map_err(db(OP))?,
                    token_id: r.try_get("token_id").map_err(db(OP))?,
                    reason: r
                        .try_get::<Option<String>, _>("exclusion_reason")
                        .map_err(db(OP))?
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(node: &str, kind: &'static str, at: i64) -> (String, &'static str, i64) {
        (node.to_owned(), kind, at)
    }

    #[test]
    fn value_rows_number_placeholders_row_by_row() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
    }

    #[test]
    fn event_runs_merge_a_nodes_consecutive_kinds_and_keep_its_order() {
        let events = vec![
            ev("a", "completed", 1),
            ev("b", "agreed", 2),
            ev("a", "completed", 3),
            ev("a", "agreed", 4),
            ev("b", "agreed", 5),
            ev("a", "wrong", 6),
            ev("a", "agreed", 7),
            ev("a", "agreed", 8),
        ];
        let runs: Vec<(&str, &str, i64, u64)> = event_runs(&events)
            .into_iter()
            .map(|r| (r.node_key, r.kind, r.at_ms, r.times))
            .collect();
        assert_eq!(
            runs,
            vec![
                ("a", "completed", 3, 2),
                ("b", "agreed", 5, 2),
                ("a", "agreed", 4, 1),
                ("a", "wrong", 6, 1),
                ("a", "agreed", 8, 2),
            ]
        );
        // Every event is counted once.
        let total: u64 = event_runs(&events).iter().map(|r| r.times).sum();
        assert_eq!(total, events.len() as u64);
    }
}
