//! Discovery's HTTP API, for operators: submit domains to the crawl queue,
//! upload a QR code image, list discovered invitations. The crawl itself
//! runs in `askee-server discover` (by hand or from a timer), which takes
//! the queue as it finds it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::http::extract::{ApiJson, ApiQuery, Operator};
use crate::http::problem::{ApiError, ApiResult, ErrorKind, Problem};
use crate::service::discovery::queue::{
    self, DiscoveredInvitations, QrImportResponse, SubmitDomains, SubmitDomainsResponse,
};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many, newest first (default 100, at most 1,000).
    pub limit: Option<u32>,
}

#[utoipa::path(post, path = "/v1/discovery/domains", tag = "discovery",
    request_body = SubmitDomains,
    security(("operator" = [])),
    responses(
        (status = 202, body = SubmitDomainsResponse, description = "queued for the next crawl"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn submit_domains(
    State(state): State<AppState>,
    _operator: Operator,
    ApiJson(body): ApiJson<SubmitDomains>,
) -> ApiResult<(StatusCode, Json<SubmitDomainsResponse>)> {
    let resp = queue::submit_domains(&state, body.domains).await?;
    Ok((StatusCode::ACCEPTED, Json(resp)))
}

#[utoipa::path(get, path = "/v1/discovery/invitations", tag = "discovery",
    params(ListQuery),
    security(("operator" = [])),
    responses(
        (status = 200, body = DiscoveredInvitations),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_invitations(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<DiscoveredInvitations>> {
    queue::discovered(&state, q.limit).await.map(Json)
}

#[utoipa::path(post, path = "/v1/discovery/qr", tag = "discovery",
    request_body(content = Vec<u8>, content_type = "image/png", description = "a PNG image of the volunteer's askee: QR code"),
    security(("operator" = [])),
    responses(
        (status = 201, body = QrImportResponse, description = "a new invitation was queued"),
        (status = 200, body = QrImportResponse, description = "this statement was verified before"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "no readable code, or the statement is rejected (reason given)")))]
async fn import_qr(
    State(state): State<AppState>,
    _operator: Operator,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<QrImportResponse>)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case("image/png") {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported-media-type",
            "unsupported media type",
            "the body must be a png image (content-type image/png)",
        ));
    }
    let resp = queue::upload_qr(&state, &body).await?;
    let status = if resp.manifest_id.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resp)))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/discovery/domains", post(submit_domains))
        .route("/v1/discovery/invitations", get(list_invitations))
        .route("/v1/discovery/qr", post(import_qr))
}

#[derive(OpenApi)]
#[openapi(
    paths(submit_domains, list_invitations, import_qr),
    tags((name = "discovery", description = "opt-in discovery: domains to crawl, QR uploads, discovered invitations"))
)]
pub struct DiscoveryApi;
