//! The operator's side of the coordinator: wasm modules, task signing
//! keys, signed task submissions (one or a batch), status with the signed
//! results as evidence, cancellation and progress.

use std::collections::HashMap;
use std::time::Duration;

use askee_core::b64;
use askee_core::coordinator::{duration_hours, task_facts, validate_statement};
use askee_core::signing::{self, verify_task};
use askee_core::validate::FieldError;
use askee_core::wire::v1::{
    ModuleStored, OperatorKey, OperatorKeyRegistration, ReportStatus, ResultEvidence, TaskCreated,
    TaskProgress, TaskState, TaskStatus, TaskSubmission,
};
use futures_util::Stream;

use super::{is_hex_digest, store_conflict};
use crate::service::consent::draft;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{AssignmentState, TaskRecord};

/// Refuses a module digest that is not 64 lower-case hex digits.
pub fn check_module_digest(sha256: &str) -> ServiceResult<()> {
    if !is_hex_digest(sha256) {
        return Err(ServiceError::field(
            "sha256",
            "must be 64 lower-case hex digits",
        ));
    }
    Ok(())
}

/// The bytes of a stored module.
pub async fn module(state: &AppState, sha256: &str) -> ServiceResult<Vec<u8>> {
    check_module_digest(sha256)?;
    state
        .store
        .module(sha256)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("module {sha256}")))
}

/// Stores a module under its digest, which the bytes must have;
/// `created` is false when it was already stored.
pub async fn put_module(
    state: &AppState,
    operator: &str,
    sha256: String,
    bytes: &[u8],
) -> ServiceResult<ModuleStored> {
    check_module_digest(&sha256)?;
    let actual = hex::encode(signing::sha256(bytes));
    if actual != sha256 {
        return Err(ServiceError::field(
            "sha256",
            format!("the body's sha-256 is {actual}"),
        ));
    }
    let created = state
        .store
        .put_module(&sha256, bytes, operator, state.clock.now())
        .await?;
    Ok(ModuleStored {
        sha256,
        size_bytes: bytes.len() as u64,
        created,
    })
}

/// Registers a task signing key of an operator.
pub async fn add_operator_key(
    state: &AppState,
    operator: &str,
    body: OperatorKeyRegistration,
) -> ServiceResult<OperatorKey> {
    b64::public_key(&body.public_key)
        .map_err(|e| ServiceError::field("public_key", e.to_string()))?;
    let now = state.clock.now();
    let audit = draft(
        state,
        "operator.key",
        operator,
        serde_json::json!({"public_key": body.public_key}),
    );
    state
        .store
        .add_operator_key(operator, &body.public_key, now, audit)
        .await
        .map_err(store_conflict)?;
    Ok(OperatorKey {
        operator: operator.to_owned(),
        public_key: body.public_key,
        created_at: now,
    })
}

/// What the submissions of one request look up in the store, once each: a
/// batch names the same operator key and module over and over.
#[derive(Default)]
struct SubmissionLookups {
    key_owners: HashMap<String, Option<String>>,
    modules: HashMap<String, bool>,
}

impl SubmissionLookups {
    async fn key_owner(
        &mut self,
        state: &AppState,
        key: &str,
    ) -> Result<Option<String>, ServiceError> {
        if let Some(owner) = self.key_owners.get(key) {
            return Ok(owner.clone());
        }
        let owner = state.store.operator_of_key(key).await?;
        self.key_owners.insert(key.to_owned(), owner.clone());
        Ok(owner)
    }

    async fn module_exists(
        &mut self,
        state: &AppState,
        sha256: &str,
    ) -> Result<bool, ServiceError> {
        if let Some(&exists) = self.modules.get(sha256) {
            return Ok(exists);
        }
        let exists = state.store.module_size(sha256).await?.is_some();
        self.modules.insert(sha256.to_owned(), exists);
        Ok(exists)
    }
}

/// Checks one submission and turns it into a task record.
async fn task_record(
    state: &AppState,
    lookups: &mut SubmissionLookups,
    operator: &str,
    s: TaskSubmission,
    prefix: &str,
    now_ms: i64,
) -> Result<TaskRecord, ServiceError> {
    let now = now_ms.div_euclid(1000);
    let field = |name: &str, problem: String| {
        ServiceError::fields(vec![FieldError {
            field: format!("{prefix}{name}"),
            problem,
        }])
    };
    let key = b64::public_key(&s.operator_public_key)
        .map_err(|e| field("operator_public_key", e.to_string()))?;
    match lookups.key_owner(state, &s.operator_public_key).await? {
        Some(owner) if owner == operator => {}
        _ => {
            return Err(field(
                "operator_public_key",
                "is not a key registered by this operator (POST /v1/operators/keys)".into(),
            ));
        }
    }
    let errors = validate_statement(
        &s.statement,
        &state.config.task_type_names(),
        now,
        &format!("{prefix}statement."),
    );
    if !errors.is_empty() {
        return Err(ServiceError::fields(errors));
    }
    verify_task(&key, &s.statement, &s.signature)
        .map_err(|e| ServiceError::unauthorized("bad_task_signature", e.to_string()))?;
    if s.bootstrap && s.known_digest.is_none() {
        return Err(field(
            "known_digest",
            "a bootstrapping challenge needs its known answer".into(),
        ));
    }
    if let Some(known) = &s.known_digest
        && !is_hex_digest(known)
    {
        return Err(field(
            "known_digest",
            "must be 64 lower-case hex digits".into(),
        ));
    }
    if !lookups
        .module_exists(state, &s.statement.module_sha256)
        .await?
    {
        return Err(field(
            "statement.module_sha256",
            "no module with this digest was uploaded (PUT /v1/modules/{sha256})".into(),
        ));
    }
    let facts = task_facts(&s.statement);
    let statement = &s.statement;
    Ok(TaskRecord {
        task_id: signing::task_id(statement),
        operator: operator.to_owned(),
        operator_key: s.operator_public_key.clone(),
        statement_json: String::from_utf8(signing::task_statement_bytes(statement))
            .map_err(|e| ServiceError::internal(e.to_string()))?,
        signature: s.signature.clone(),
        module_sha256: statement.module_sha256.clone(),
        task_type: statement.task_type.clone(),
        duration_hours: duration_hours(statement.limits.wall_seconds),
        cpu_cores: facts.requirements.cpu_cores,
        ram_mb: facts.requirements.ram_mb,
        storage_gb: facts.requirements.storage_gb,
        bandwidth_mbps: facts.requirements.bandwidth_mbps,
        f: statement.f,
        max_replicas: statement.max_replicas,
        adaptive: statement.adaptive,
        known_digest: s.known_digest.clone(),
        bootstrap: s.bootstrap,
        deadline: statement.deadline,
        state: TaskState::Pending,
        replicas_wanted: 2 * statement.f + 1,
        replicas_active: 0,
        replicas_total: 0,
        results_received: 0,
        trusted_node: None,
        accepted_digest: None,
        reason: None,
        audit_index: None,
        created_ms: now_ms,
        updated_ms: now_ms,
    })
}

async fn create(
    state: &AppState,
    operator: &str,
    submissions: Vec<TaskSubmission>,
    batch: bool,
) -> ServiceResult<Vec<TaskCreated>> {
    let now_ms = state.clock.now_ms();
    let mut records = Vec::with_capacity(submissions.len());
    let mut audits = Vec::with_capacity(submissions.len());
    let mut lookups = SubmissionLookups::default();
    for (i, s) in submissions.into_iter().enumerate() {
        let prefix = if batch {
            format!("tasks[{i}].")
        } else {
            String::new()
        };
        let r = task_record(state, &mut lookups, operator, s, &prefix, now_ms).await?;
        audits.push(draft(
            state,
            "task.submit",
            &r.task_id,
            serde_json::json!({
                "operator": operator,
                "operator_key": r.operator_key,
                "module_sha256": r.module_sha256,
                "task_type": r.task_type,
                "f": r.f,
                "signature": r.signature,
            }),
        ));
        records.push(r);
    }
    let created = state.store.create_tasks(&records, audits).await?;
    Ok(records
        .into_iter()
        .zip(created)
        .map(|(r, created)| TaskCreated {
            task_id: r.task_id,
            created,
        })
        .collect())
}

pub async fn own_task(
    state: &AppState,
    operator: &str,
    task_id: &str,
) -> ServiceResult<TaskRecord> {
    state
        .store
        .task(task_id)
        .await?
        .filter(|t| t.operator == operator)
        .ok_or_else(|| ServiceError::not_found(format!("task {task_id}")))
}

/// The status document of a task, with every signed result as evidence.
pub async fn task_status(state: &AppState, t: TaskRecord) -> ServiceResult<TaskStatus> {
    let assignments = state.store.assignments_of_task(&t.task_id).await?;
    let evidence: Vec<ResultEvidence> = assignments
        .iter()
        .filter(|a| matches!(a.state, AssignmentState::Reported | AssignmentState::Failed))
        .map(|a| ResultEvidence {
            assignment_id: a.assignment_id.clone(),
            node_id: a.node_key.clone(),
            status: a.status.unwrap_or(ReportStatus::Failed),
            result_digest: a.result_digest.clone().unwrap_or_default(),
            signature: a.signature.clone().unwrap_or_default(),
            reported_at_ms: a.reported_at_ms.unwrap_or(0),
        })
        .collect();
    let stdout = t.accepted_digest.as_ref().and_then(|d| {
        assignments
            .iter()
            .find(|a| a.result_digest.as_ref() == Some(d))
            .and_then(|a| a.stdout.clone())
    });
    Ok(TaskStatus {
        task_id: t.task_id,
        state: t.state,
        task_type: t.task_type,
        f: t.f,
        max_replicas: t.max_replicas,
        replicas_assigned: t.replicas_total,
        results_received: t.results_received,
        deadline: t.deadline,
        created_at: t.created_ms.div_euclid(1000),
        accepted_digest: t.accepted_digest,
        reason: t.reason,
        evidence,
        stdout,
        audit_index: t.audit_index,
    })
}

fn progress(t: &TaskRecord) -> TaskProgress {
    TaskProgress {
        task_id: t.task_id.clone(),
        state: t.state,
        replicas_assigned: t.replicas_total,
        results_received: t.results_received,
        replicas_needed: t.replicas_wanted,
    }
}

/// Creates one task.
pub async fn submit(
    state: &AppState,
    operator: &str,
    submission: TaskSubmission,
) -> ServiceResult<TaskCreated> {
    let mut created = create(state, operator, vec![submission], false).await?;
    Ok(created.remove(0))
}

/// Creates the tasks of a batch, all or none.
pub async fn submit_batch(
    state: &AppState,
    operator: &str,
    tasks: Vec<TaskSubmission>,
) -> ServiceResult<Vec<TaskCreated>> {
    if tasks.is_empty() || tasks.len() > 10_000 {
        return Err(ServiceError::field("tasks", "must hold 1 to 10000 tasks"));
    }
    create(state, operator, tasks, true).await
}

/// The status of one of the operator's tasks.
pub async fn status(state: &AppState, operator: &str, task_id: &str) -> ServiceResult<TaskStatus> {
    let t = own_task(state, operator, task_id).await?;
    task_status(state, t).await
}

/// Cancels one of the operator's tasks.
pub async fn cancel(state: &AppState, operator: &str, task_id: &str) -> ServiceResult<TaskStatus> {
    let audit = draft(
        state,
        "task.cancel",
        task_id,
        serde_json::json!({"operator": operator}),
    );
    let t = state
        .store
        .cancel_task(task_id, operator, state.clock.now_ms(), audit)
        .await
        .map_err(store_conflict)?;
    task_status(state, t).await
}

/// The progress of one of the operator's tasks, each time it changes,
/// until the task is final. Polls the store, so progress made by any
/// server process sharing the database shows.
pub async fn progress_updates(
    state: &AppState,
    operator: &str,
    task_id: &str,
) -> ServiceResult<impl Stream<Item = TaskProgress> + use<>> {
    let first = own_task(state, operator, task_id).await?;
    Ok(futures_util::stream::unfold(
        (
            state.clone(),
            task_id.to_owned(),
            None::<TaskProgress>,
            Some(first),
            false,
        ),
        |(state, id, last, pending, done)| async move {
            if done {
                return None;
            }
            let mut current = pending;
            loop {
                let t = match current.take() {
                    Some(t) => t,
                    None => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        match state.store.task(&id).await {
                            Ok(Some(t)) => t,
                            _ => return None,
                        }
                    }
                };
                let p = progress(&t);
                if last.as_ref() != Some(&p) {
                    let done = p.state.is_final();
                    return Some((p.clone(), (state, id, Some(p), None, done)));
                }
            }
        },
    ))
}
