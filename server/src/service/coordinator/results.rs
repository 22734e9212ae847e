//! Result reports: each is checked (fields, then the node's result
//! signature) and recorded by the store, which runs the quorum decision in
//! the same transaction. Refusals that only a dishonest node earns are
//! counted against it.

use askee_core::b64;
use askee_core::signing::verify_result;
use askee_core::validate::FieldError;
use askee_core::wire::v1::{
    MAX_RESULT_BATCH, ReportStatus, ResultAck, ResultReport, ResultStatement, TaskState,
};
use ed25519_dalek::VerifyingKey;

use super::exclusion::{Misconduct, misbehaved};
use super::{is_hex_digest, store_conflict};
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{Misbehaviour, NonceClaim, ResultInput, StoreError};

/// The node that signed a report and its key.
pub struct Reporter<'a> {
    pub node_key: &'a str,
    pub key: &'a VerifyingKey,
}

/// A refused result: the error, and the misbehaviour to count against the
/// node, if any.
struct Refusal {
    error: ServiceError,
    misconduct: Option<Misconduct>,
}

impl Refusal {
    fn honest(error: ServiceError) -> Self {
        Self {
            error,
            misconduct: None,
        }
    }
}

/// One result of a batch: its assignment and what became of it.
pub struct BatchItem {
    pub assignment_id: String,
    pub outcome: Result<ResultAck, ServiceError>,
}

/// Checks one result report (fields, then the result signature) and turns
/// it into the store's input. `prefix` starts field paths (`results[i].`
/// in a batch).
fn prepare_report(
    state: &AppState,
    by: &Reporter<'_>,
    r: ResultReport,
    prefix: &str,
    now_ms: i64,
) -> Result<ResultInput, Refusal> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, problem: &str| {
        errors.push(FieldError {
            field: format!("{prefix}{field}"),
            problem: problem.into(),
        })
    };
    if r.status == ReportStatus::Completed && !is_hex_digest(&r.result_digest) {
        bad(
            "result_digest",
            "must be 64 lower-case hex digits for a completed replica",
        );
    }
    if r.status == ReportStatus::Failed && !r.result_digest.is_empty() {
        bad("result_digest", "must be empty for a failed replica");
    }
    if r.failure.chars().count() > 1000 {
        bad("failure", "must be at most 1000 characters");
    }
    if b64::decode(&r.stdout).is_err() {
        bad("stdout", "must be base64url without padding");
    }
    if !errors.is_empty() {
        return Err(Refusal::honest(ServiceError::fields(errors)));
    }
    let statement = ResultStatement {
        assignment_id: &r.assignment_id,
        task_id: &r.task_id,
        node_id: by.node_key,
        status: r.status,
        result_digest: &r.result_digest,
    };
    if let Err(e) = verify_result(by.key, &statement, &r.signature) {
        return Err(Refusal {
            error: ServiceError::unauthorized("bad_result_signature", e.to_string()),
            misconduct: Some(Misconduct {
                kind: Misbehaviour::InvalidSignature,
                what: "invalid result signature",
            }),
        });
    }
    Ok(ResultInput {
        node_key: by.node_key.to_owned(),
        assignment_id: r.assignment_id,
        task_id: r.task_id,
        status: r.status,
        result_digest: r.result_digest,
        signature: r.signature,
        exit_code: r.exit_code,
        stdout: r.stdout,
        failure: r.failure,
        fuel_consumed: r.usage.fuel_consumed,
        now_ms,
        heartbeat_interval: state.config.heartbeat_interval.as_secs(),
        policy: state.config.byzantine_policy,
    })
}

/// The refusal (and the misbehaviour to count) for a result the store
/// refused.
fn refused(e: StoreError) -> Refusal {
    match e {
        // An agent reports only what it leased: a signed result for another
        // node's assignment, or under another task, is never honest and
        // counts as a policy violation (Byzantine evidence).
        e @ StoreError::ForeignAssignment { .. } => Refusal {
            error: ServiceError::new(
                ErrorKind::Forbidden,
                "policy-violation",
                "the report breaks the protocol",
                format!("{e}; counted as a policy violation"),
            )
            .with_reason("policy_violation"),
            misconduct: Some(Misconduct {
                kind: Misbehaviour::PolicyViolation,
                what: "result for an assignment that is not the node's",
            }),
        },
        // Fuel is deterministic and the sandbox stops a module at its limit:
        // a signed claim beyond it is a malicious pattern, not an error.
        e @ StoreError::ImpossibleClaim { .. } => Refusal {
            error: ServiceError::new(
                ErrorKind::Forbidden,
                "malicious-pattern",
                "the report claims work no honest agent can report",
                format!("{e}; counted as a malicious pattern"),
            )
            .with_reason("malicious_pattern"),
            misconduct: Some(Misconduct {
                kind: Misbehaviour::MaliciousPattern,
                what: "impossible work claim",
            }),
        },
        other => Refusal::honest(store_conflict(other)),
    }
}

/// Counts a refusal's misbehaviour, if any, and answers its error.
async fn refuse(state: &AppState, node_key: &str, r: Refusal) -> ServiceError {
    if let Some(m) = r.misconduct
        && let Err(e) = misbehaved(state, node_key, m).await
    {
        return e;
    }
    r.error
}

/// Records one result report.
pub async fn report(
    state: &AppState,
    by: Reporter<'_>,
    r: ResultReport,
) -> ServiceResult<ResultAck> {
    let now_ms = state.clock.now_ms();
    let input = match prepare_report(state, &by, r, "", now_ms) {
        Ok(input) => input,
        Err(refusal) => return Err(refuse(state, by.node_key, refusal).await),
    };
    let outcome = match state.store.record_result(input).await {
        Ok(o) => o,
        Err(e) => return Err(refuse(state, by.node_key, refused(e)).await),
    };
    if outcome.recorded {
        state.metrics.count("askee_results_recorded_total");
    }
    match outcome.task_state {
        TaskState::Verified if outcome.recorded => state.metrics.count("askee_tasks_decided_total"),
        _ => {}
    }
    Ok(ResultAck {
        recorded: outcome.recorded,
        task_state: outcome.task_state,
    })
}

/// Records a batch of result reports in one transaction with the request's
/// nonce; answers one item per result, in order.
pub async fn report_batch(
    state: &AppState,
    by: Reporter<'_>,
    nonce: &NonceClaim,
    results: Vec<ResultReport>,
) -> ServiceResult<Vec<BatchItem>> {
    let count = results.len();
    if count == 0 || count > MAX_RESULT_BATCH {
        return Err(ServiceError::field(
            "results",
            format!("must hold 1 to {MAX_RESULT_BATCH} results"),
        ));
    }
    let now_ms = state.clock.now_ms();
    let mut items: Vec<BatchItem> = Vec::with_capacity(count);
    let mut inputs = Vec::with_capacity(count);
    let mut input_of = Vec::with_capacity(count);
    let mut misconduct = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let assignment_id = r.assignment_id.clone();
        let prepared = prepare_report(state, &by, r, &format!("results[{i}]."), now_ms);
        let outcome = match prepared {
            Ok(input) => {
                input_of.push(i);
                inputs.push(input);
                // Replaced below by the store's outcome.
                Err(ServiceError::internal("no outcome for this result"))
            }
            Err(refusal) => {
                misconduct.extend(refusal.misconduct);
                Err(refusal.error)
            }
        };
        items.push(BatchItem {
            assignment_id,
            outcome,
        });
    }
    // One transaction: the nonce, every result, their quorum decisions and
    // audit entries.
    let outcomes = state.store.record_results(Some(nonce), inputs).await?;
    let mut recorded = 0u64;
    let mut decided = 0u64;
    for (outcome, i) in outcomes.into_iter().zip(input_of) {
        items[i].outcome = match outcome {
            Ok(o) => {
                if o.recorded {
                    recorded += 1;
                    if o.task_state == TaskState::Verified {
                        decided += 1;
                    }
                }
                Ok(ResultAck {
                    recorded: o.recorded,
                    task_state: o.task_state,
                })
            }
            Err(e) => {
                let refusal = refused(e);
                misconduct.extend(refusal.misconduct);
                Err(refusal.error)
            }
        };
    }
    // Misbehaviour is rare (only dishonest nodes): counted after the batch
    // committed, each through the node's own row, with exclusion and
    // revocation as for a single report.
    for m in misconduct {
        misbehaved(state, by.node_key, m).await?;
    }
    state.metrics.add("askee_results_recorded_total", recorded);
    state.metrics.add("askee_tasks_decided_total", decided);
    Ok(items)
}
