//! Operations and well-known documents: health, readiness, metrics, the
//! OpenAPI document, the signing keys and the coordinator's description.

use askee_core::wire::v1::{CoordinatorInfo, JwkSet};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::http::problem::{ApiResult, Problem};
use crate::service;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "the process is alive")))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "the store answers"),
    (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    service::ready(&state).await?;
    Ok("ready")
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub(super) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_document(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "well-known",
    responses((status = 200, body = JwkSet, description = "the coordinator's Ed25519 signing keys")))]
pub(super) async fn jwks(State(state): State<AppState>) -> Json<JwkSet> {
    Json(state.keys.jwks())
}

#[utoipa::path(get, path = "/.well-known/askee-coordinator", tag = "well-known",
    responses((status = 200, body = CoordinatorInfo)))]
pub(super) async fn coordinator(State(state): State<AppState>) -> Json<CoordinatorInfo> {
    Json(service::coordinator_info(&state))
}
