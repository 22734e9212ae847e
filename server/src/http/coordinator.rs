//! The coordinator's node API (node-signed): attestation and registration,
//! heartbeats, work leases, result reports and module downloads. The
//! operator's side (modules, keys, tasks, ledger) is in `http::tasks`; both
//! call `service::coordinator`.

use askee_core::wire::v1::{
    ChallengeRequest, Heartbeat, HeartbeatAck, ItemProblem, LeaseRequest, LeaseResponse,
    NodeChallenge, NodeRegistered, NodeRegistration, ResultAck, ResultBatch, ResultBatchAck,
    ResultItemAck, ResultReport,
};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use super::tasks::{
    __path_add_operator_key, __path_cancel, __path_events, __path_get_task, __path_ledger,
    __path_put_module, __path_submit, __path_submit_batch, add_operator_key, cancel, events,
    get_task, ledger, put_module, submit, submit_batch,
};
use crate::http::extract::{NodeSigned, NodeSignedDeferred, PeerAddr};
use crate::http::problem::{ApiResult, Problem, problem};
use crate::service::coordinator::registration::{self, Registration};
use crate::service::coordinator::results::{self, BatchItem, Reporter};
use crate::service::coordinator::{lease, tasks};
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/nodes/challenge", tag = "coordinator",
    request_body = ChallengeRequest, security(("node_signature" = [])),
    responses(
        (status = 200, body = NodeChallenge),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn challenge(
    State(state): State<AppState>,
    req: NodeSigned<ChallengeRequest>,
) -> ApiResult<Json<NodeChallenge>> {
    registration::challenge(&state, &req.node_key)
        .await
        .map(Json)
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
    let registration = Registration {
        node_key: req.node_key,
        key: req.key,
        peer,
        body: req.body,
    };
    registration::register(&state, registration).await.map(Json)
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
    registration::heartbeat(&state, &req.node_key, &req.body)
        .await
        .map(Json)
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
    lease::lease(&state, &req.node_key, &req.body)
        .await
        .map(Json)
}

/// One batch item as the agent receives it: an ack, or the problem the
/// single-result endpoint would have answered.
fn item_ack(item: BatchItem) -> ResultItemAck {
    match item.outcome {
        Ok(ack) => ResultItemAck {
            assignment_id: item.assignment_id,
            ack: Some(ack),
            problem: None,
        },
        Err(e) => {
            let p = problem(&e);
            ResultItemAck {
                assignment_id: item.assignment_id,
                ack: None,
                problem: Some(ItemProblem {
                    type_: p.type_,
                    title: p.title,
                    status: p.status,
                    detail: p.detail,
                    reason: p.reason,
                    errors: p.errors,
                }),
            }
        }
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
    let by = Reporter {
        node_key: &req.node_key,
        key: &req.key,
    };
    let items = results::report_batch(&state, by, &req.nonce, req.body.results).await?;
    Ok(Json(ResultBatchAck {
        results: items.into_iter().map(item_ack).collect(),
    }))
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
    let by = Reporter {
        node_key: &req.node_key,
        key: &req.key,
    };
    results::report(&state, by, req.body).await.map(Json)
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
    let bytes = tasks::module(&state, &sha256).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
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
pub struct CoordinatorApi;
