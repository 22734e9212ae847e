//! The operator dashboard's read-only JSON: nodes, tasks, the discovery
//! queue, audit checkpoints and verified-task throughput. Every route needs
//! the operator credential (`Authorization: Bearer …`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::http::extract::Operator;
use crate::http::problem::{ApiResult, Problem};
use crate::service::dashboard::{
    self, DashboardCheckpoint, DashboardDomain, DashboardNode, DashboardTask, Throughput,
};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/dashboard/nodes", tag = "dashboard",
    security(("operator" = [])),
    responses((status = 200, body = Vec<DashboardNode>, description = "registered nodes, highest reputation first"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn nodes(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Vec<DashboardNode>>> {
    dashboard::nodes(&state).await.map(Json)
}

#[utoipa::path(get, path = "/v1/dashboard/tasks", tag = "dashboard",
    security(("operator" = [])),
    responses((status = 200, body = Vec<DashboardTask>, description = "the most recent tasks, newest first"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn tasks(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Vec<DashboardTask>>> {
    dashboard::tasks(&state).await.map(Json)
}

#[utoipa::path(get, path = "/v1/dashboard/discovery", tag = "dashboard",
    security(("operator" = [])),
    responses((status = 200, body = Vec<DashboardDomain>, description = "the discovery queue in check order"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn discovery(
    State(state): State<AppState>,
    _: Operator,
) -> ApiResult<Json<Vec<DashboardDomain>>> {
    dashboard::discovery_queue(&state).await.map(Json)
}

#[utoipa::path(get, path = "/v1/dashboard/checkpoints", tag = "dashboard",
    security(("operator" = [])),
    responses((status = 200, body = Vec<DashboardCheckpoint>, description = "signed audit checkpoints, newest first (at most 500)"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn checkpoints(
    State(state): State<AppState>,
    _: Operator,
) -> ApiResult<Json<Vec<DashboardCheckpoint>>> {
    dashboard::checkpoints(&state).await.map(Json)
}

#[utoipa::path(get, path = "/v1/dashboard/throughput", tag = "dashboard",
    security(("operator" = [])),
    responses((status = 200, body = Throughput, description = "tasks verified per minute over the last hour"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn throughput(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Throughput>> {
    dashboard::throughput(&state).await.map(Json)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/dashboard/nodes", get(nodes))
        .route("/v1/dashboard/tasks", get(tasks))
        .route("/v1/dashboard/discovery", get(discovery))
        .route("/v1/dashboard/checkpoints", get(checkpoints))
        .route("/v1/dashboard/throughput", get(throughput))
}

#[derive(OpenApi)]
#[openapi(
    paths(nodes, tasks, discovery, checkpoints, throughput),
    tags((name = "dashboard", description = "the operator dashboard's read-only views (operator credential)"))
)]
pub struct DashboardApi;
