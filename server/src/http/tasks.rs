//! The coordinator's operator API (operator credential): modules, task
//! signing keys, signed tasks one by one or in batches, status with
//! evidence, cancellation, progress as server-sent events and the
//! reputation ledger.

use std::convert::Infallible;

use askee_core::wire::v1::{
    ModuleStored, OperatorKey, OperatorKeyRegistration, ReputationLedger, TaskBatch,
    TaskBatchCreated, TaskCreated, TaskProgress, TaskStatus, TaskSubmission,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::http::extract::{ApiJson, ApiQuery, Operator, json_body};
use crate::http::problem::{ApiError, ApiResult, Problem};
use crate::service::coordinator::{ledger, tasks};
use crate::state::AppState;

/// A task submission body, which may be larger than other bodies.
async fn task_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> ApiResult<T> {
    json_body(
        headers,
        body,
        state.config.max_task_body_bytes,
        "task bodies",
    )
    .await
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
pub(super) async fn put_module(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(sha256): Path<String>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<ModuleStored>)> {
    tasks::check_module_digest(&sha256)?;
    let limit = state.config.max_module_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(
            "the module is too large",
            format!("modules are limited to {limit} bytes"),
        )
    })?;
    let stored = tasks::put_module(&state, &op.name, sha256, &bytes).await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)))
}

#[utoipa::path(post, path = "/v1/operators/keys", tag = "tasks",
    request_body = OperatorKeyRegistration, security(("operator" = [])),
    responses(
        (status = 201, body = OperatorKey),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the key belongs to another operator"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn add_operator_key(
    State(state): State<AppState>,
    Operator(op): Operator,
    ApiJson(body): ApiJson<OperatorKeyRegistration>,
) -> ApiResult<(StatusCode, Json<OperatorKey>)> {
    let key = tasks::add_operator_key(&state, &op.name, body).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body = TaskSubmission, security(("operator" = [])),
    responses(
        (status = 201, body = TaskCreated, description = "created, or already known (created = false)"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "missing credential or bad task signature"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn submit(
    State(state): State<AppState>,
    Operator(op): Operator,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<TaskCreated>)> {
    let submission: TaskSubmission = task_json(&state, &headers, body).await?;
    let created = tasks::submit(&state, &op.name, submission).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks",
    request_body = TaskBatch, security(("operator" = [])),
    responses(
        (status = 201, body = TaskBatchCreated),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "a task is invalid (field paths start with tasks[i]); nothing is created")))]
pub(super) async fn submit_batch(
    State(state): State<AppState>,
    Operator(op): Operator,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<TaskBatchCreated>)> {
    let batch: TaskBatch = task_json(&state, &headers, body).await?;
    let tasks = tasks::submit_batch(&state, &op.name, batch.tasks).await?;
    Ok((StatusCode::CREATED, Json(TaskBatchCreated { tasks })))
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)), security(("operator" = [])),
    responses(
        (status = 200, body = TaskStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_task(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskStatus>> {
    tasks::status(&state, &op.name, &task_id).await.map(Json)
}

#[utoipa::path(post, path = "/v1/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path)), security(("operator" = [])),
    responses(
        (status = 200, body = TaskStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "already verified, failed or cancelled")))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskStatus>> {
    tasks::cancel(&state, &op.name, &task_id).await.map(Json)
}

#[utoipa::path(get, path = "/v1/tasks/{task_id}/events", tag = "tasks",
    params(("task_id" = String, Path)), security(("operator" = [])),
    responses(
        (status = 200, description = "text/event-stream of `progress` events (TaskProgress JSON) until the task is final", body = TaskProgress),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn events(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(task_id): Path<String>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    let updates = tasks::progress_updates(&state, &op.name, &task_id).await?;
    let stream = updates.map(|p| {
        Ok(Event::default()
            .event("progress")
            .json_data(&p)
            .unwrap_or_else(|_| Event::default().event("progress")))
    });
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
pub(super) async fn ledger(
    State(state): State<AppState>,
    Operator(_op): Operator,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> ApiResult<Json<ReputationLedger>> {
    ledger::ledger(&state, q.limit).await.map(Json)
}
