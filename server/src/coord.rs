//! The task coordinator: node attestation and heartbeats, the operator task
//! API (modules, signed tasks, status with evidence, cancel, progress as
//! server-sent events), work leases decided by `core::rules`, result reports
//! with the `2f+1`/`f+1` quorum, the reputation ledger, Byzantine exclusion
//! (with token revocation through the consent engine) and the sweeper that
//! puts expired leases and silent nodes' work back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use askee_core::b64;
use askee_core::coordinator::{
    BOOTSTRAP_RESULTS, LeaseCandidate, duration_hours, lease_choice, network_prefix, task_facts,
    validate_statement,
};
use askee_core::rules::{
    NodeFacts, NodeProfile, Reputation, SignatureFact, TaskTypePolicy, TokenFacts,
};
use askee_core::signing::{self, verify_attestation, verify_result, verify_task};
use askee_core::token::RevocationStatus;
use askee_core::validate::FieldError;
use askee_core::wire::v1::{
    Assignment, ChallengeRequest, ConsentTokenPayload, Heartbeat, HeartbeatAck, ItemProblem,
    LeaseRequest, LeaseResponse, MAX_RESULT_BATCH, ModuleRef, ModuleStored, NodeChallenge,
    NodeRegistered, NodeRegistration, NodeState, OperatorKey, OperatorKeyRegistration,
    ReportStatus, ReputationEntry, ReputationLedger, ResultAck, ResultBatch, ResultBatchAck,
    ResultEvidence, ResultItemAck, ResultReport, ResultStatement, TaskBatch, TaskBatchCreated,
    TaskCreated, TaskProgress, TaskState, TaskStatement, TaskStatus, TaskSubmission,
};
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::RngCore as _;
use utoipa::OpenApi;

use crate::consent::{self, Revoker, draft};
use crate::extract::{NodeSigned, NodeSignedDeferred, Operator, parse_json};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;
use crate::store::{
    AssignmentState, Exclusion, LeaseQuery, Misbehaviour, NodeRecord, NodeStats, ResultInput,
    StoreError, TaskRecord,
};

/// The client's address when the server was started with connect info
/// (tests driving the router in process have none).
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

fn random_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    b64::encode(bytes)
}

fn store_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { what } => ApiError::conflict(what),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/v1/nodes/challenge", tag = "coordinator",
    request_body = ChallengeRequest, security(("node_signature" = [])),
    responses(
        (status = 200, body = NodeChallenge),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn challenge(
    State(state): State<AppState>,
    req: NodeSigned<ChallengeRequest>,
) -> ApiResult<Json<NodeChallenge>> {
    let challenge = random_b64();
    let expires_at = state.clock.now() + 300;
    state
        .store
        .create_challenge(&challenge, &req.node_key, expires_at)
        .await?;
    Ok(Json(NodeChallenge {
        challenge,
        expires_at,
    }))
}

fn token_facts(payload: ConsentTokenPayload, revocation: RevocationStatus) -> TokenFacts {
    TokenFacts {
        payload,
        signature: SignatureFact::Verified,
        revocation,
    }
}

fn node_profile(n: &NodeRecord) -> NodeProfile {
    NodeProfile {
        cpu_cores: n.cpu_cores,
        ram_mb: n.ram_mb,
        storage_gb: n.storage_gb,
        bandwidth_mbps: n.bandwidth_mbps,
    }
}

fn fresh_reputation(state: &AppState) -> u32 {
    let counters = askee_core::coordinator::NodeCounters {
        heartbeats: 1,
        heartbeat_interval: state.config.heartbeat_interval.as_secs(),
        active: true,
        ..Default::default()
    };
    askee_core::rules::node_reputation(&askee_core::coordinator::reputation_metrics(&counters))
        .map(|r| r.micros())
        .unwrap_or(0)
}

#[utoipa::path(post, path = "/v1/nodes/register", tag = "coordinator",
    request_body = NodeRegistration, security(("node_signature" = [])),
    responses(
        (status = 200, body = NodeRegistered),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "unknown challenge, rejected token or bad attestation"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "the token belongs to another node"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the node was excluded as byzantine")))]
async fn register(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    req: NodeSigned<NodeRegistration>,
) -> ApiResult<Json<NodeRegistered>> {
    let now = state.clock.now();
    let body = req.body;
    let payload = consent::verify(&state, &body.consent_token)
        .await
        .map_err(|e| consent::token_error(&e))?;
    if payload.subject != req.node_key {
        return Err(ApiError::forbidden(
            "the consent token was issued to another node key",
        ));
    }
    verify_attestation(
        &req.key,
        &body.challenge,
        &payload.token_id,
        &body.profile,
        &body.attestation,
    )
    .map_err(|e| ApiError::unauthorized("bad_attestation", e.to_string()))?;
    if !state
        .store
        .take_challenge(&body.challenge, &req.node_key, now)
        .await?
    {
        return Err(ApiError::unauthorized(
            "unknown_challenge",
            "the challenge is unknown, used or expired; ask for a new one",
        ));
    }
    let owner = match state.store.grant(&payload.grant_id).await? {
        Some(g) => state
            .store
            .invitation(&g.manifest_id)
            .await?
            .and_then(|i| i.domain)
            .unwrap_or_else(|| req.node_key.clone()),
        None => req.node_key.clone(),
    };
    let prefix = peer
        .map(|p| network_prefix(p.ip()))
        .unwrap_or_else(|| "unknown".into());
    let p = &body.profile;
    let record = NodeRecord {
        node_key: req.node_key.clone(),
        token_id: payload.token_id.clone(),
        grant_id: payload.grant_id.clone(),
        token_expires_at: payload.expires_at,
        token_payload_json: serde_json::to_string(&payload)
            .map_err(|e| ApiError::internal(e.to_string()))?,
        profile_json: serde_json::to_string(p).map_err(|e| ApiError::internal(e.to_string()))?,
        cpu_cores: p.cpu.cores,
        ram_mb: p.memory.total_mb,
        storage_gb: p.storage.free_gb,
        bandwidth_mbps: p.network.bandwidth_mbps,
        owner,
        network_prefix: prefix,
        state: NodeState::Active,
        registered_at: now,
        last_heartbeat: now,
        stats: NodeStats::default(),
        reputation_micros: fresh_reputation(&state),
        exclusion_reason: None,
    };
    let audit = draft(
        &state,
        "node.register",
        &req.node_key,
        serde_json::json!({
            "token_id": payload.token_id,
            "grant_id": payload.grant_id,
            "profile_digest": hex::encode(signing::profile_digest(p)),
        }),
    );
    state
        .store
        .register_node(&record, audit)
        .await
        .map_err(store_conflict)?;
    let node = state
        .store
        .node(&req.node_key)
        .await?
        .ok_or_else(|| ApiError::internal("registered node vanished"))?;
    Ok(Json(NodeRegistered {
        node_id: req.node_key,
        state: node.state,
        reputation: f64::from(node.reputation_micros) / 1e6,
        heartbeat_interval_seconds: state.config.heartbeat_interval.as_secs(),
        token_expires_at: payload.expires_at,
    }))
}

async fn registered(state: &AppState, node_key: &str) -> ApiResult<NodeRecord> {
    state.store.node(node_key).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "not-registered",
            "the node is not registered",
            "register with POST /v1/nodes/register first",
        )
        .with_reason("not_registered")
    })
}

#[utoipa::path(post, path = "/v1/nodes/heartbeat", tag = "coordinator",
    request_body = Heartbeat, security(("node_signature" = [])),
    responses(
        (status = 200, body = HeartbeatAck),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "not registered")))]
async fn heartbeat(
    State(state): State<AppState>,
    req: NodeSigned<Heartbeat>,
) -> ApiResult<Json<HeartbeatAck>> {
    fold(&state, &req.node_key).await?;
    registered(&state, &req.node_key).await?;
    if req.body.running.len() > 256 {
        return Err(ApiError::field("running", "at most 256 assignments"));
    }
    let now = state.clock.now();
    let until = now + state.config.lease_duration.as_secs() as i64;
    let (node_state, abandon) = state
        .store
        .heartbeat(&req.node_key, now, &req.body.running, until)
        .await?;
    Ok(Json(HeartbeatAck {
        state: node_state,
        next_heartbeat_seconds: state.config.heartbeat_interval.as_secs(),
        abandon,
        lease_expires_at: until,
    }))
}

/// A stored task as the lease decision sees it: the signed statement is
/// the source of its facts (limits such as the CPU share are checked
/// against the token too).
fn lease_candidate(t: &TaskRecord) -> LeaseCandidate {
    LeaseCandidate {
        facts: serde_json::from_str::<TaskStatement>(&t.statement_json)
            .ok()
            .map(|st| task_facts(&st)),
        bootstrap: t.bootstrap,
        adaptive: t.adaptive,
        replicas_total: t.replicas_total,
    }
}

fn policies(state: &AppState) -> Vec<TaskTypePolicy> {
    state
        .config
        .task_types
        .iter()
        .filter_map(|t| {
            Some(TaskTypePolicy {
                name: t.name.clone(),
                max_duration_hours: t.max_duration_hours,
                min_reputation: Reputation::from_f64(t.min_reputation)?,
                resource_profile: askee_core::rules::ResourceProfile::CpuIntensive,
            })
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/work/lease", tag = "coordinator",
    request_body = LeaseRequest, security(("node_signature" = [])),
    responses(
        (status = 200, body = LeaseResponse, description = "assignments, possibly none"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "not registered, excluded, revoked or offline"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn lease(
    State(state): State<AppState>,
    req: NodeSigned<LeaseRequest>,
) -> ApiResult<Json<LeaseResponse>> {
    if !(1..=64).contains(&req.body.max_tasks) {
        return Err(ApiError::field("max_tasks", "must be from 1 to 64"));
    }
    // The node's own pending verdicts first: its streak and trust (adaptive
    // replication) and a possible exclusion must be current before it is
    // given work, above all work trusted to it alone.
    fold(&state, &req.node_key).await?;
    let node = registered(&state, &req.node_key).await?;
    if node.state != NodeState::Active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "node-not-active",
            "the node may not take work",
            format!(
                "node state is {}{}",
                node.state.as_str(),
                node.exclusion_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        )
        .with_reason(node.state.as_str()));
    }
    let payload: ConsentTokenPayload = serde_json::from_str(&node.token_payload_json)
        .map_err(|e| ApiError::internal(format!("stored token payload is corrupt: {e}")))?;
    let revocation = match state.store.grant(&node.grant_id).await {
        Ok(Some(g)) => match g.revoked_at {
            Some(at) => RevocationStatus::Revoked {
                revoked_at: at,
                reason: g.revoke_reason.unwrap_or_default(),
            },
            None => RevocationStatus::Active,
        },
        _ => RevocationStatus::Unknown,
    };
    let now = state.clock.now();
    let task_types: Vec<String> = payload
        .permissions
        .tasks
        .allowlist
        .iter()
        .filter(|t| state.config.task_types.iter().any(|o| &o.name == *t))
        .filter(|t| req.body.task_types.is_empty() || req.body.task_types.contains(t))
        .cloned()
        .collect();
    let facts = NodeFacts {
        node_id: node.node_key.clone(),
        reputation: Reputation::from_micros(node.reputation_micros),
        byzantine: node.state == NodeState::Byzantine,
        profile: Some(node_profile(&node)),
    };
    let token = token_facts(payload, revocation);
    // The token itself must allow work now; say why not, rather than
    // silently handing out nothing.
    if let askee_core::rules::Validity::Invalid(reasons) =
        askee_core::rules::valid_consent_token(&token, now)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "token-not-valid",
            "the consent token no longer allows work",
            format!("{reasons:?}; renew the token and register again"),
        )
        .with_reason("token_invalid"));
    }
    let types = policies(&state);
    let adaptive = state.config.adaptive_policy;
    let record = askee_core::coordinator::TrustRecord {
        streak: node.stats.streak,
        wrong: node.stats.wrong,
    };
    let choose_fn = move |t: &TaskRecord| {
        lease_choice(
            &facts,
            &token,
            &types,
            &adaptive,
            record,
            now,
            &lease_candidate(t),
            rand::random(),
        )
    };
    let new_id = || uuid::Uuid::new_v4().to_string();
    let lease_until = now + state.config.lease_duration.as_secs() as i64;
    let bootstrapping = node.stats.agreed < BOOTSTRAP_RESULTS;
    // A bootstrapping node takes only the challenges it still needs, so
    // one node cannot drain the challenges others need.
    let needed = u32::try_from(BOOTSTRAP_RESULTS - node.stats.agreed.min(BOOTSTRAP_RESULTS))
        .unwrap_or(1)
        .max(1);
    let query = |challenges_only: bool| LeaseQuery {
        node_key: &node.node_key,
        owner: &node.owner,
        network_prefix: &node.network_prefix,
        max_tasks: if challenges_only {
            req.body.max_tasks.min(needed)
        } else {
            req.body.max_tasks
        },
        task_types: &task_types,
        challenges_only,
        now,
        lease_expires_at: lease_until,
        new_id: &new_id,
        choose: &choose_fn,
    };
    let mut leased = state.store.lease(query(bootstrapping)).await?;
    if leased.is_empty() && bootstrapping {
        // Nodes past the floors anyway (a lenient token and type) may take
        // ordinary work too; the floors are checked per task.
        leased = state.store.lease(query(false)).await?;
    }
    let mut assignments = Vec::with_capacity(leased.len());
    let mut sizes = std::collections::HashMap::new();
    for (a, t) in leased {
        let statement: TaskStatement = serde_json::from_str(&t.statement_json)
            .map_err(|e| ApiError::internal(format!("stored statement is corrupt: {e}")))?;
        let size = match sizes.get(&t.module_sha256) {
            Some(size) => *size,
            None => {
                let size = state
                    .store
                    .module_size(&t.module_sha256)
                    .await?
                    .unwrap_or(0);
                sizes.insert(t.module_sha256.clone(), size);
                size
            }
        };
        assignments.push(Assignment {
            assignment_id: a.assignment_id,
            task_id: t.task_id,
            module: ModuleRef {
                url: format!("/v1/modules/{}", t.module_sha256),
                sha256: t.module_sha256,
                size_bytes: size,
            },
            statement,
            operator_public_key: t.operator_key,
            operator_signature: t.signature,
            lease_expires_at: a.lease_expires_at,
        });
    }
    state
        .metrics
        .add("askee_replicas_leased_total", assignments.len() as u64);
    Ok(Json(LeaseResponse {
        retry_after_seconds: if assignments.is_empty() { 2 } else { 0 },
        assignments,
    }))
}

/// Folds a node's pending events into its record (exclusion evaluated, a
/// new one revoked).
async fn fold(state: &AppState, node_key: &str) -> ApiResult<()> {
    let excluded = state
        .store
        .fold_node(
            node_key,
            state.clock.now_ms(),
            state.config.heartbeat_interval.as_secs(),
            state.config.byzantine_policy,
        )
        .await?;
    revoke_excluded(state, excluded.as_slice()).await;
    Ok(())
}

/// Folds every node's pending events (ledger, dashboard).
pub(crate) async fn fold_all(state: &AppState) -> Result<(), StoreError> {
    fold_older(state, i64::MAX).await
}

/// Folds the pending events of nodes with an event from before `before_ms`
/// and revokes new exclusions.
async fn fold_older(state: &AppState, before_ms: i64) -> Result<(), StoreError> {
    let excluded = state
        .store
        .fold_pending(
            10_000,
            before_ms,
            state.clock.now_ms(),
            state.config.heartbeat_interval.as_secs(),
            state.config.byzantine_policy,
        )
        .await?;
    revoke_excluded(state, &excluded).await;
    Ok(())
}

/// Revokes the tokens of newly excluded nodes through the consent engine.
async fn revoke_excluded(state: &AppState, excluded: &[Exclusion]) {
    for e in excluded {
        state.metrics.count("askee_nodes_excluded_total");
        tracing::warn!(node = %e.node_key, reason = %e.reason, "node excluded as byzantine");
        if let Err(err) = consent::revoke(
            state,
            &e.token_id,
            Revoker::System,
            &format!("node excluded as byzantine: {}", e.reason),
        )
        .await
        {
            tracing::error!(node = %e.node_key, error = %err.detail, "revoking an excluded node's token failed; the sweeper retries");
        }
    }
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Counts a node's misbehaviour as Byzantine evidence and, when that
/// excludes it, revokes its token.
async fn misbehaved(
    state: &AppState,
    node_key: &str,
    kind: Misbehaviour,
    what: &str,
) -> ApiResult<()> {
    let excluded = state
        .store
        .record_misbehaviour(
            node_key,
            kind,
            what,
            state.clock.now_ms(),
            state.config.heartbeat_interval.as_secs(),
            state.config.byzantine_policy,
        )
        .await?;
    revoke_excluded(state, excluded.as_slice()).await;
    Ok(())
}

/// A refused result: the problem, and the misbehaviour to count against the
/// node (with a word for the log), if any.
type Refusal = (ApiError, Option<(Misbehaviour, &'static str)>);

/// Checks one result report (fields, then the result signature) and turns
/// it into the store's input. On failure, the problem and the misbehaviour
/// to count against the node (an invalid signature), if any. `prefix`
/// starts field paths (`results[i].` in a batch).
#[allow(clippy::result_large_err)]
fn prepare_report(
    state: &AppState,
    node_key: &str,
    key: &ed25519_dalek::VerifyingKey,
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
        return Err((ApiError::fields(errors), None));
    }
    let statement = ResultStatement {
        assignment_id: &r.assignment_id,
        task_id: &r.task_id,
        node_id: node_key,
        status: r.status,
        result_digest: &r.result_digest,
    };
    if let Err(e) = verify_result(key, &statement, &r.signature) {
        return Err((
            ApiError::unauthorized("bad_result_signature", e.to_string()),
            Some((Misbehaviour::InvalidSignature, "invalid result signature")),
        ));
    }
    Ok(ResultInput {
        node_key: node_key.to_owned(),
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

/// The problem (and the misbehaviour to count) for a result the store
/// refused.
fn refused(e: StoreError) -> Refusal {
    match e {
        // An agent reports only what it leased: a signed result for another
        // node's assignment, or under another task, is never honest and
        // counts as a policy violation (Byzantine evidence).
        e @ StoreError::ForeignAssignment { .. } => (
            ApiError::new(
                StatusCode::FORBIDDEN,
                "policy-violation",
                "the report breaks the protocol",
                format!("{e}; counted as a policy violation"),
            )
            .with_reason("policy_violation"),
            Some((
                Misbehaviour::PolicyViolation,
                "result for an assignment that is not the node's",
            )),
        ),
        // Fuel is deterministic and the sandbox stops a module at its limit:
        // a signed claim beyond it is a malicious pattern, not an error.
        e @ StoreError::ImpossibleClaim { .. } => (
            ApiError::new(
                StatusCode::FORBIDDEN,
                "malicious-pattern",
                "the report claims work no honest agent can report",
                format!("{e}; counted as a malicious pattern"),
            )
            .with_reason("malicious_pattern"),
            Some((Misbehaviour::MaliciousPattern, "impossible work claim")),
        ),
        other => (store_conflict(other), None),
    }
}

fn item_problem(e: &ApiError) -> ItemProblem {
    let p = e.problem();
    ItemProblem {
        type_: p.type_,
        title: p.title,
        status: p.status,
        detail: p.detail,
        reason: p.reason,
        errors: p.errors,
    }
}

#[utoipa::path(post, path = "/v1/work/results/batch", tag = "coordinator",
    request_body = ResultBatch, security(("node_signature" = [])),
    responses(
        (status = 200, body = ResultBatchAck, description = "one entry per result, in request order: an ack (recorded, or already recorded with recorded = false) or the problem the single-result endpoint would have answered for it (nothing of that result is stored; invalid signatures, other nodes' assignments and impossible claims are counted against the node)"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "the request signature does not verify or the request is a replay; nothing is stored"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "not 1 to 64 results; nothing is stored")))]
async fn report_batch(
    State(state): State<AppState>,
    req: NodeSignedDeferred<ResultBatch>,
) -> ApiResult<Json<ResultBatchAck>> {
    let count = req.body.results.len();
    if count == 0 || count > MAX_RESULT_BATCH {
        return Err(ApiError::field(
            "results",
            format!("must hold 1 to {MAX_RESULT_BATCH} results"),
        ));
    }
    let now_ms = state.clock.now_ms();
    let mut acks: Vec<ResultItemAck> = Vec::with_capacity(count);
    let mut inputs = Vec::with_capacity(count);
    let mut input_of = Vec::with_capacity(count);
    let mut misbehaviour = Vec::new();
    for (i, r) in req.body.results.into_iter().enumerate() {
        acks.push(ResultItemAck {
            assignment_id: r.assignment_id.clone(),
            ack: None,
            problem: None,
        });
        match prepare_report(
            &state,
            &req.node_key,
            &req.key,
            r,
            &format!("results[{i}]."),
            now_ms,
        ) {
            Ok(input) => {
                input_of.push(i);
                inputs.push(input);
            }
            Err((error, m)) => {
                acks[i].problem = Some(item_problem(&error));
                misbehaviour.extend(m);
            }
        }
    }
    // One transaction: the nonce, every result, their quorum decisions and
    // audit entries.
    let outcomes = state.store.record_results(Some(&req.nonce), inputs).await?;
    let mut recorded = 0u64;
    let mut decided = 0u64;
    for (outcome, i) in outcomes.into_iter().zip(input_of) {
        match outcome {
            Ok(o) => {
                if o.recorded {
                    recorded += 1;
                    if o.task_state == TaskState::Verified {
                        decided += 1;
                    }
                }
                acks[i].ack = Some(ResultAck {
                    recorded: o.recorded,
                    task_state: o.task_state,
                });
            }
            Err(e) => {
                let (error, m) = refused(e);
                acks[i].problem = Some(item_problem(&error));
                misbehaviour.extend(m);
            }
        }
    }
    // Misbehaviour is rare (only dishonest nodes): counted after the batch
    // committed, each through the node's own row, with exclusion and
    // revocation as for a single report.
    for (kind, what) in misbehaviour {
        misbehaved(&state, &req.node_key, kind, what).await?;
    }
    state.metrics.add("askee_results_recorded_total", recorded);
    state.metrics.add("askee_tasks_decided_total", decided);
    Ok(Json(ResultBatchAck { results: acks }))
}

#[utoipa::path(post, path = "/v1/work/results", tag = "coordinator",
    request_body = ResultReport, security(("node_signature" = [])),
    responses(
        (status = 200, body = ResultAck, description = "recorded, or already recorded (recorded = false)"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "the result signature does not verify (counted against the node)"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "the assignment is another node's or of another task (a policy violation), or the report claims more fuel than the task allows (a malicious pattern); both counted against the node"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn report(
    State(state): State<AppState>,
    req: NodeSigned<ResultReport>,
) -> ApiResult<Json<ResultAck>> {
    let now_ms = state.clock.now_ms();
    let r = req.body;
    let input = match prepare_report(&state, &req.node_key, &req.key, r, "", now_ms) {
        Ok(input) => input,
        Err((error, misbehaviour)) => {
            if let Some((kind, what)) = misbehaviour {
                misbehaved(&state, &req.node_key, kind, what).await?;
            }
            return Err(error);
        }
    };
    let outcome = state.store.record_result(input).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let (error, misbehaviour) = refused(e);
            if let Some((kind, what)) = misbehaviour {
                misbehaved(&state, &req.node_key, kind, what).await?;
            }
            return Err(error);
        }
    };
    if outcome.recorded {
        state.metrics.count("askee_results_recorded_total");
    }
    match outcome.task_state {
        TaskState::Verified if outcome.recorded => state.metrics.count("askee_tasks_decided_total"),
        _ => {}
    }
    Ok(Json(ResultAck {
        recorded: outcome.recorded,
        task_state: outcome.task_state,
    }))
}

#[utoipa::path(get, path = "/v1/modules/{sha256}", tag = "coordinator",
    params(("sha256" = String, Path, description = "lower-case hex SHA-256 of the module")),
    responses(
        (status = 200, description = "the module bytes (application/wasm)"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_module(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> ApiResult<Response> {
    if !is_hex_digest(&sha256) {
        return Err(ApiError::field(
            "sha256",
            "must be 64 lower-case hex digits",
        ));
    }
    let bytes = state
        .store
        .module(&sha256)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("module {sha256}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(put, path = "/v1/modules/{sha256}", tag = "tasks",
    params(("sha256" = String, Path, description = "lower-case hex SHA-256 of the body")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    security(("operator" = [])),
    responses(
        (status = 201, body = ModuleStored, description = "stored"),
        (status = 200, body = ModuleStored, description = "already stored"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "the body's digest differs")))]
async fn put_module(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(sha256): Path<String>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<ModuleStored>)> {
    if !is_hex_digest(&sha256) {
        return Err(ApiError::field(
            "sha256",
            "must be 64 lower-case hex digits",
        ));
    }
    let limit = state.config.max_module_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the module is too large",
            format!("modules are limited to {limit} bytes"),
        )
    })?;
    let actual = hex::encode(signing::sha256(&bytes));
    if actual != sha256 {
        return Err(ApiError::field(
            "sha256",
            format!("the body's sha-256 is {actual}"),
        ));
    }
    let created = state
        .store
        .put_module(&sha256, &bytes, &op.name, state.clock.now())
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(ModuleStored {
            sha256,
            size_bytes: bytes.len() as u64,
            created,
        }),
    ))
}

#[utoipa::path(post, path = "/v1/operators/keys", tag = "tasks",
    request_body = OperatorKeyRegistration, security(("operator" = [])),
    responses(
        (status = 201, body = OperatorKey),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the key belongs to another operator"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn add_operator_key(
    State(state): State<AppState>,
    Operator(op): Operator,
    crate::extract::ApiJson(body): crate::extract::ApiJson<OperatorKeyRegistration>,
) -> ApiResult<(StatusCode, Json<OperatorKey>)> {
    b64::public_key(&body.public_key).map_err(|e| ApiError::field("public_key", e.to_string()))?;
    let now = state.clock.now();
    let audit = draft(
        &state,
        "operator.key",
        &op.name,
        serde_json::json!({"public_key": body.public_key}),
    );
    state
        .store
        .add_operator_key(&op.name, &body.public_key, now, audit)
        .await
        .map_err(store_conflict)?;
    Ok((
        StatusCode::CREATED,
        Json(OperatorKey {
            operator: op.name,
            public_key: body.public_key,
            created_at: now,
        }),
    ))
}

/// What the submissions of one request look up in the store, once each: a
/// batch names the same operator key and module over and over.
#[derive(Default)]
struct SubmissionLookups {
    key_owners: std::collections::HashMap<String, Option<String>>,
    modules: std::collections::HashMap<String, bool>,
}

impl SubmissionLookups {
    async fn key_owner(&mut self, state: &AppState, key: &str) -> Result<Option<String>, ApiError> {
        if let Some(owner) = self.key_owners.get(key) {
            return Ok(owner.clone());
        }
        let owner = state.store.operator_of_key(key).await?;
        self.key_owners.insert(key.to_owned(), owner.clone());
        Ok(owner)
    }

    async fn module_exists(&mut self, state: &AppState, sha256: &str) -> Result<bool, ApiError> {
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
) -> Result<TaskRecord, ApiError> {
    let now = now_ms.div_euclid(1000);
    let field = |name: &str, problem: String| {
        ApiError::fields(vec![FieldError {
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
        return Err(ApiError::fields(errors));
    }
    verify_task(&key, &s.statement, &s.signature)
        .map_err(|e| ApiError::unauthorized("bad_task_signature", e.to_string()))?;
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
    let st = &s.statement;
    Ok(TaskRecord {
        task_id: signing::task_id(st),
        operator: operator.to_owned(),
        operator_key: s.operator_public_key.clone(),
        statement_json: String::from_utf8(signing::task_statement_bytes(st))
            .map_err(|e| ApiError::internal(e.to_string()))?,
        signature: s.signature.clone(),
        module_sha256: st.module_sha256.clone(),
        task_type: st.task_type.clone(),
        duration_hours: duration_hours(st.limits.wall_seconds),
        cpu_cores: facts.requirements.cpu_cores,
        ram_mb: facts.requirements.ram_mb,
        storage_gb: facts.requirements.storage_gb,
        bandwidth_mbps: facts.requirements.bandwidth_mbps,
        f: st.f,
        max_replicas: st.max_replicas,
        adaptive: st.adaptive,
        known_digest: s.known_digest.clone(),
        bootstrap: s.bootstrap,
        deadline: st.deadline,
        state: TaskState::Pending,
        replicas_wanted: 2 * st.f + 1,
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

async fn read_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<T> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/json");
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the body must be json",
            "content-type must be application/json",
        ));
    }
    let limit = state.config.max_task_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the request body is too large",
            format!("task bodies are limited to {limit} bytes"),
        )
    })?;
    parse_json(&bytes)
}

async fn create(
    state: &AppState,
    operator: &str,
    submissions: Vec<TaskSubmission>,
    batch: bool,
) -> ApiResult<Vec<TaskCreated>> {
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

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body = TaskSubmission, security(("operator" = [])),
    responses(
        (status = 201, body = TaskCreated, description = "created, or already known (created = false)"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "missing credential or bad task signature"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn submit(
    State(state): State<AppState>,
    Operator(op): Operator,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<TaskCreated>)> {
    let submission: TaskSubmission = read_json(&state, &headers, body).await?;
    let mut created = create(&state, &op.name, vec![submission], false).await?;
    Ok((StatusCode::CREATED, Json(created.remove(0))))
}

#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks",
    request_body = TaskBatch, security(("operator" = [])),
    responses(
        (status = 201, body = TaskBatchCreated),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "a task is invalid (field paths start with tasks[i]); nothing is created")))]
async fn submit_batch(
    State(state): State<AppState>,
    Operator(op): Operator,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<TaskBatchCreated>)> {
    let batch: TaskBatch = read_json(&state, &headers, body).await?;
    if batch.tasks.is_empty() || batch.tasks.len() > 10_000 {
        return Err(ApiError::field("tasks", "must hold 1 to 10000 tasks"));
    }
    let tasks = create(&state, &op.name, batch.tasks, true).await?;
    Ok((StatusCode::CREATED, Json(TaskBatchCreated { tasks })))
}

async fn own_task(state: &AppState, operator: &str, task_id: &str) -> ApiResult<TaskRecord> {
    state
        .store
        .task(task_id)
        .await?
        .filter(|t| t.operator == operator)
        .ok_or_else(|| ApiError::not_found(format!("task {task_id}")))
}

/// The status document of a task, with every signed result as evidence.
pub async fn task_status(state: &AppState, t: TaskRecord) -> ApiResult<TaskStatus> {
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

#[utoipa::path(get, path = "/v1/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)), security(("operator" = [])),
    responses(
        (status = 200, body = TaskStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_task(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskStatus>> {
    let t = own_task(&state, &op.name, &task_id).await?;
    task_status(&state, t).await.map(Json)
}

#[utoipa::path(post, path = "/v1/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path)), security(("operator" = [])),
    responses(
        (status = 200, body = TaskStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "already verified, failed or cancelled")))]
async fn cancel(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskStatus>> {
    let audit = draft(
        &state,
        "task.cancel",
        &task_id,
        serde_json::json!({"operator": op.name}),
    );
    let t = state
        .store
        .cancel_task(&task_id, &op.name, state.clock.now_ms(), audit)
        .await
        .map_err(store_conflict)?;
    task_status(&state, t).await.map(Json)
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

#[utoipa::path(get, path = "/v1/tasks/{task_id}/events", tag = "tasks",
    params(("task_id" = String, Path)), security(("operator" = [])),
    responses(
        (status = 200, description = "text/event-stream of `progress` events (TaskProgress JSON) until the task is final", body = TaskProgress),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn events(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(task_id): Path<String>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    let first = own_task(&state, &op.name, &task_id).await?;
    // Polls the store, so progress made by any server process sharing the
    // database shows; sends an event when something changed, and ends after
    // the final state.
    let stream = futures_util::stream::unfold(
        (state, task_id, None::<TaskProgress>, Some(first), false),
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
                    let event = Event::default()
                        .event("progress")
                        .json_data(&p)
                        .unwrap_or_else(|_| Event::default().event("progress"));
                    return Some((Ok(event), (state, id, Some(p), None, done)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Most nodes to list (default 100, at most 10000).
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/reputation", tag = "tasks",
    params(LedgerQuery), security(("operator" = [])),
    responses(
        (status = 200, body = ReputationLedger),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn ledger(
    State(state): State<AppState>,
    Operator(_op): Operator,
    crate::api::ApiQuery(q): crate::api::ApiQuery<LedgerQuery>,
) -> ApiResult<Json<ReputationLedger>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    // Counters as of every report so far.
    fold_all(&state).await?;
    let now = state.clock.now();
    let nodes = state.store.reputation_ledger(limit).await?;
    let interval = state.config.heartbeat_interval.as_secs();
    Ok(Json(ReputationLedger {
        nodes: nodes
            .into_iter()
            .map(|n| {
                let m = askee_core::coordinator::reputation_metrics(&askee_core::coordinator::NodeCounters {
                    assigned: n.stats.assigned,
                    completed: n.stats.completed,
                    agreed: n.stats.agreed,
                    wrong: n.stats.wrong,
                    heartbeats: n.stats.heartbeats,
                    age_seconds: u64::try_from(now - n.registered_at).unwrap_or(0),
                    heartbeat_interval: interval,
                    active: n.state == NodeState::Active,
                });
                ReputationEntry {
                    node_id: n.node_key,
                    state: n.state,
                    reputation: f64::from(n.reputation_micros) / 1e6,
                    completion_rate: m.completion_rate,
                    accuracy_rate: m.accuracy_rate,
                    uptime_rate: m.uptime_rate,
                    participation_rate: m.participation_rate,
                    assigned: n.stats.assigned,
                    completed: n.stats.completed,
                    agreed: n.stats.agreed,
                    wrong: n.stats.wrong,
                    streak: n.stats.streak,
                    exclusion_reason: n.exclusion_reason,
                }
            })
            .collect(),
    }))
}

/// One sweep: expired leases, silent nodes, deadlines, and revocations an
/// earlier crash may have left undone.
pub async fn sweep_once(state: &AppState) -> Result<crate::store::SweepReport, StoreError> {
    let now = state.clock.now();
    let offline_before = now - 3 * state.config.heartbeat_interval.as_secs() as i64;
    let report = state
        .store
        .sweep(now, offline_before, state.clock.now_ms())
        .await?;
    // Nodes that lease fold their own events first; the sweeper folds those
    // of nodes that stopped asking (events older than a heartbeat interval),
    // so their counters, reputation and any exclusion still follow.
    let interval_ms =
        i64::try_from(state.config.heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
    fold_older(state, state.clock.now_ms().saturating_sub(interval_ms)).await?;
    let pending = state.store.excluded_unrevoked().await?;
    revoke_excluded(state, &pending).await;
    Ok(report)
}

/// Runs [`sweep_once`] every `sweep_interval` (every server process does;
/// each step is conditional, so concurrent sweepers agree).
pub fn spawn_sweeper(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep_once(&state).await {
                Ok(r) if r != Default::default() => {
                    tracing::info!(?r, "coordinator sweep put work back")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "coordinator sweep failed"),
            }
        }
    })
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes/challenge", post(challenge))
        .route("/v1/nodes/register", post(register))
        .route("/v1/nodes/heartbeat", post(heartbeat))
        .route("/v1/work/lease", post(lease))
        .route("/v1/work/results", post(report))
        .route("/v1/work/results/batch", post(report_batch))
        .route("/v1/modules/{sha256}", get(get_module).put(put_module))
        .route("/v1/operators/keys", post(add_operator_key))
        .route("/v1/tasks", post(submit))
        .route("/v1/tasks/batch", post(submit_batch))
        .route("/v1/tasks/{task_id}", get(get_task))
        .route("/v1/tasks/{task_id}/cancel", post(cancel))
        .route("/v1/tasks/{task_id}/events", get(events))
        .route("/v1/reputation", get(ledger))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        challenge, register, heartbeat, lease, report, report_batch, get_module, put_module, add_operator_key,
        submit, submit_batch, get_task, cancel, events, ledger
    ),
    tags(
        (name = "coordinator", description = "node attestation, heartbeats, work leases and result reports (node-signed)"),
        (name = "tasks", description = "operator modules, signed tasks, status with evidence, progress and the reputation ledger")
    )
)]
pub struct CoordApiDoc;
