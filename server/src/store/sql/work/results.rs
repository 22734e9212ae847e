//! Recording result batches: each report applied to the batch's working set,
//! the quorum asked (`verdict::quorum`), its verdict applied, everything
//! written back once.

use sqlx::AnyConnection;

use askee_core::coordinator::impossible_claim;
use askee_core::wire::v1::{NodeState, ReportStatus, TaskState, TaskStatement};

use super::batch::{AssignmentKey, Changes, ResultBatch, TaskAudit};
use crate::store::sql::{SqlStore, db};
use crate::store::{
    AssignmentRecord, AssignmentState, AuditDraft, NonceClaim, ResultInput, ResultOutcome,
    StoreError, TaskRecord,
};
use crate::verdict::quorum::{apply_quorum, full_replication};
use crate::verdict::{
    Judgement, NodeEvent, NodeEventKind, QuorumTask, QuorumVerdict, Replica, ReplicaStanding,
};

const OP: &str = "record results";

/// `CoordinatorStore::record_results`.
pub(super) async fn record_results(
    store: &SqlStore,
    nonce: Option<&NonceClaim>,
    inputs: Vec<ResultInput>,
) -> Result<Vec<Result<ResultOutcome, StoreError>>, StoreError> {
    let lock = store.for_update();
    let backend = store.backend;
    // Task order: concurrent batches lock task rows (and then their
    // assignment rows) in one global order, so they cannot deadlock.
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by(|&x, &y| {
        (&inputs[x].task_id, &inputs[x].assignment_id)
            .cmp(&(&inputs[y].task_id, &inputs[y].assignment_id))
    });
    let mut w = store.begin_write(OP).await?;
    let result = async {
        if let Some(n) = nonce {
            consume_nonce(w.conn(), n).await?;
        }
        let mut batch = ResultBatch::default();
        let mut task_ids: Vec<&str> = inputs.iter().map(|i| i.task_id.as_str()).collect();
        task_ids.sort_unstable();
        task_ids.dedup();
        batch.load(w.conn(), &task_ids, lock, OP).await?;
        let mut outcomes: Vec<Option<Result<ResultOutcome, StoreError>>> =
            (0..inputs.len()).map(|_| None).collect();
        for &i in &order {
            let outcome = match record_one(w.conn(), &inputs[i], &mut batch).await {
                Ok(o) => Ok(o),
                // Found before anything changed: the item's own outcome, the
                // rest of the batch goes on.
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
        batch.write_back(w.conn(), backend, now_ms, OP).await?;
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

/// The request's nonce commits with its work: a replay finds it and stores
/// nothing. (Expired nonces are cleared by the other signed requests, not
/// here: that delete would make concurrent batches wait on each other's row
/// locks.)
async fn consume_nonce(conn: &mut AnyConnection, n: &NonceClaim) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO nonces (node_key, nonce, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (node_key, nonce) DO NOTHING",
    )
    .bind(&n.node_key)
    .bind(&n.nonce)
    .bind(n.expires_at)
    .execute(&mut *conn)
    .await
    .map_err(db(OP))?
    .rows_affected();
    if inserted != 1 {
        return Err(StoreError::ReplayedNonce {
            node_key: n.node_key.clone(),
            nonce: n.nonce.clone(),
        });
    }
    Ok(())
}

/// One result of a batch, on the working set. `NotFound`,
/// `ForeignAssignment` and `ImpossibleClaim` are returned before anything
/// changes.
async fn record_one(
    conn: &mut AnyConnection,
    input: &ResultInput,
    batch: &mut ResultBatch,
) -> Result<ResultOutcome, StoreError> {
    let (task_state, position) = locate(conn, input, batch).await?;
    let replica = &batch.assignments[&input.task_id][position];
    if replica.node_key != input.node_key {
        return Err(StoreError::ForeignAssignment {
            assignment_id: input.assignment_id.clone(),
            task_id: input.task_id.clone(),
        });
    }
    check_claim(&batch.tasks[&input.task_id], input)?;
    let not_recorded = ResultOutcome {
        recorded: false,
        task_state,
    };
    let answered = matches!(
        replica.state,
        AssignmentState::Reported | AssignmentState::Failed | AssignmentState::Abandoned
    );
    if answered || task_state.is_final() {
        return Ok(not_recorded);
    }
    let reporter = reporter_state(conn, batch, &input.node_key).await?;
    let ResultBatch {
        tasks,
        assignments,
        changes,
        ..
    } = batch;
    let task = tasks.get_mut(&input.task_id).expect("located above");
    let all = assignments.get_mut(&input.task_id).expect("located above");
    if reporter.as_deref() == Some(NodeState::Byzantine.as_str()) {
        drop_excluded_replica(task, &mut all[position], changes);
        return Ok(not_recorded);
    }
    apply_report(task, all, position, input, changes);
    Ok(ResultOutcome {
        recorded: true,
        task_state: task.state,
    })
}

/// The reported task's state and the reported replica's index among its
/// assignments.
async fn locate(
    conn: &mut AnyConnection,
    input: &ResultInput,
    batch: &ResultBatch,
) -> Result<(TaskState, usize), StoreError> {
    let Some(task_state) = batch.tasks.get(&input.task_id).map(|t| t.state) else {
        return Err(StoreError::NotFound {
            what: format!("task {}", input.task_id),
        });
    };
    let position = batch.assignments.get(&input.task_id).and_then(|v| {
        v.iter()
            .position(|a| a.assignment_id == input.assignment_id)
    });
    if let Some(position) = position {
        return Ok((task_state, position));
    }
    // Not among the task's replicas: another task's (a policy violation) or
    // unknown.
    let exists: Option<String> =
        sqlx::query_scalar("SELECT assignment_id FROM assignments WHERE assignment_id = $1")
            .bind(&input.assignment_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(OP))?;
    Err(match exists {
        Some(_) => StoreError::ForeignAssignment {
            assignment_id: input.assignment_id.clone(),
            task_id: input.task_id.clone(),
        },
        None => StoreError::NotFound {
            what: format!("assignment {}", input.assignment_id),
        },
    })
}

/// More fuel than the task allows is a claim no honest agent makes. Every
/// stored statement was validated at submission, and one that cannot be read
/// is never leased, so no replica of it reaches here.
fn check_claim(task: &TaskRecord, input: &ResultInput) -> Result<(), StoreError> {
    let fuel_limit = serde_json::from_str::<TaskStatement>(&task.statement_json)
        .ok()
        .map(|statement| statement.limits.fuel);
    match fuel_limit.and_then(|limit| impossible_claim(limit, input.fuel_consumed)) {
        Some(claim) => Err(StoreError::ImpossibleClaim {
            assignment_id: input.assignment_id.clone(),
            claim,
        }),
        None => Ok(()),
    }
}

/// The reporter's `nodes.state`, read once per batch.
async fn reporter_state(
    conn: &mut AnyConnection,
    batch: &mut ResultBatch,
    node_key: &str,
) -> Result<Option<String>, StoreError> {
    if let Some(state) = batch.reporter_states.get(node_key) {
        return Ok(state.clone());
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM nodes WHERE node_key = $1")
        .bind(node_key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(OP))?;
    batch
        .reporter_states
        .insert(node_key.to_owned(), state.clone());
    Ok(state)
}

/// An adaptive single replica that fails or is lost: the task falls back to
/// full replication.
fn untrust(task: &mut TaskRecord) {
    task.trusted_node = None;
    task.replicas_wanted = full_replication(task.f);
}

/// An excluded node's results never count; its live replica goes back.
fn drop_excluded_replica(
    task: &mut TaskRecord,
    replica: &mut AssignmentRecord,
    changes: &mut Changes,
) {
    if replica.state != AssignmentState::Leased {
        return;
    }
    replica.state = AssignmentState::Expired;
    changes.assignments.insert(AssignmentKey::of(replica));
    task.replicas_active = task.replicas_active.saturating_sub(1);
    if task.trusted_node.as_deref() == Some(replica.node_key.as_str()) {
        untrust(task);
    }
    changes.tasks.insert(task.task_id.clone());
}

/// Records a report on the reporter's replica; a completed result is judged
/// against a known answer when there is one, then the quorum is asked.
fn apply_report(
    task: &mut TaskRecord,
    all: &mut [AssignmentRecord],
    position: usize,
    input: &ResultInput,
    changes: &mut Changes,
) {
    let now_ms = input.now_ms;
    let mine = &mut all[position];
    let was_live = mine.state == AssignmentState::Leased;
    changes.assignments.insert(AssignmentKey::of(mine));
    changes.tasks.insert(task.task_id.clone());
    mine.signature = Some(input.signature.clone());
    mine.reported_at_ms = Some(now_ms);
    let event = |kind| NodeEvent::new(&input.node_key, kind, now_ms);
    match input.status {
        ReportStatus::Failed => {
            mine.state = AssignmentState::Failed;
            mine.status = Some(ReportStatus::Failed);
            mine.failure = Some(input.failure.clone());
            if was_live {
                task.replicas_active = task.replicas_active.saturating_sub(1);
            }
            if task.trusted_node.as_deref() == Some(input.node_key.as_str()) {
                untrust(task);
            }
            changes.events.push(event(NodeEventKind::Failed));
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
            changes.events.push(event(NodeEventKind::Completed));
            if let Some(known) = task.known_digest.as_deref() {
                let judgement = Judgement::of(known, Some(&input.result_digest));
                mine.verdict = Some(judgement.as_str().into());
                changes.events.push(event(judgement.into()));
                if judgement == Judgement::Wrong {
                    // A wrong answer to a known question never counts;
                    // another replica takes its place.
                    task.replicas_active = task.replicas_active.saturating_sub(1);
                    if task.trusted_node.is_some() {
                        untrust(task);
                    }
                }
            }
            apply_quorum_verdict(task, all, changes, now_ms);
        }
    }
}

/// Where a stored replica stands for the quorum.
fn replica_of(a: &AssignmentRecord) -> Replica<'_> {
    let standing = match (a.state, a.status) {
        (AssignmentState::Leased, _) => ReplicaStanding::Live,
        (AssignmentState::Expired, _) => ReplicaStanding::Lost,
        (AssignmentState::Reported, Some(ReportStatus::Completed)) => ReplicaStanding::Completed {
            digest: a.result_digest.as_deref(),
            judgement: a.verdict.as_deref().map(Judgement::from_stored),
        },
        _ => ReplicaStanding::Out,
    };
    Replica {
        node_key: &a.node_key,
        standing,
    }
}

/// The audit evidence of a decided task: every completed result, signed.
fn evidence(all: &[AssignmentRecord]) -> Vec<serde_json::Value> {
    all.iter()
        .filter(|a| {
            a.state == AssignmentState::Reported && a.status == Some(ReportStatus::Completed)
        })
        .map(|a| {
            serde_json::json!({
                "assignment_id": a.assignment_id,
                "node_id": a.node_key,
                "result_digest": a.result_digest,
                "signature": a.signature,
            })
        })
        .collect()
}

/// A decided task's leases still live are abandoned.
fn abandon_live(all: &mut [AssignmentRecord], changes: &mut Changes) {
    for a in all.iter_mut() {
        if a.state == AssignmentState::Leased {
            a.state = AssignmentState::Abandoned;
            changes.assignments.insert(AssignmentKey::of(a));
        }
    }
}

/// Asks the quorum about the task and applies its verdict to the working
/// set: judgements, node events, the audit entry, the task's new state.
fn apply_quorum_verdict(
    task: &mut TaskRecord,
    all: &mut [AssignmentRecord],
    changes: &mut Changes,
    now_ms: i64,
) {
    let quorum_task = QuorumTask {
        f: task.f,
        max_replicas: task.max_replicas,
        trusted_single: task.trusted_node.is_some(),
        replicas_wanted: task.replicas_wanted,
        replicas_total: task.replicas_total,
    };
    let replicas: Vec<Replica<'_>> = all.iter().map(replica_of).collect();
    let verdict = apply_quorum(&quorum_task, &replicas);
    let task_id = task.task_id.clone();
    let audit = |kind: &str, data| TaskAudit {
        task_id: task_id.clone(),
        draft: AuditDraft {
            timestamp_ms: now_ms,
            kind: kind.into(),
            subject: task_id.clone(),
            data,
        },
    };
    match verdict {
        QuorumVerdict::Waiting => {}
        QuorumVerdict::MoreReplicas { replicas_wanted } => task.replicas_wanted = replicas_wanted,
        QuorumVerdict::Accepted {
            digest,
            agreeing,
            f,
            judgements,
        } => {
            let evidence = evidence(all);
            for (i, judgement) in judgements {
                let a = &mut all[i];
                a.verdict = Some(judgement.as_str().into());
                changes
                    .events
                    .push(NodeEvent::new(&a.node_key, judgement.into(), now_ms));
                changes.assignments.insert(AssignmentKey::of(a));
            }
            abandon_live(all, changes);
            let data = serde_json::json!({
                "digest": digest,
                "agreeing": agreeing,
                "f": f,
                "replicas": evidence.len(),
                "evidence": evidence,
            });
            changes.audits.push(audit("task.verified", data));
            task.state = TaskState::Verified;
            task.accepted_digest = Some(digest);
        }
        QuorumVerdict::Failed { reason, blamed } => {
            for i in blamed {
                let failure = NodeEventKind::ConsensusFailure;
                changes
                    .events
                    .push(NodeEvent::new(&all[i].node_key, failure, now_ms));
            }
            let data = serde_json::json!({
                "reason": reason,
                "evidence": evidence(all),
            });
            changes.audits.push(audit("task.failed", data));
            abandon_live(all, changes);
            task.state = TaskState::Failed;
            task.reason = Some(reason);
        }
    }
}
