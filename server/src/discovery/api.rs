//! Discovery's HTTP API, for operators: submit domains to the crawl queue,
//! upload a QR code image, list discovered invitations. The crawl itself
//! runs in `askee-server discover` (by hand or from a timer), which takes
//! the queue as it finds it.

use askee_core::signal::{self, Freshness};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{DiscoveryError, Outcome};
use crate::api::ApiQuery;
use crate::extract::{ApiJson, Operator};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

/// Most domains one request may submit.
pub const MAX_DOMAINS_PER_REQUEST: usize = 2000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitDomains {
    /// Domain names (ASCII; IDNs in their xn-- form), at most 2,000.
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefusedDomain {
    pub domain: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitDomainsResponse {
    /// Domains queued (due now).
    pub queued: u64,
    /// How many of them the crawler did not know before.
    pub new: u64,
    pub refused: Vec<RefusedDomain>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredInvitationView {
    /// Empty for a QR statement without a domain.
    pub domain: String,
    pub node_public_key: String,
    /// `dns`, `wellknown` or `qr`.
    pub source: String,
    pub manifest_id: String,
    pub verified_at: i64,
    /// `pending`, `granted` or `withdrawn`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredInvitations {
    pub invitations: Vec<DiscoveredInvitationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QrImportResponse {
    /// `invited` (a new invitation) or `known` (verified before).
    pub outcome: String,
    pub manifest_id: Option<String>,
}

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
    if body.domains.len() > MAX_DOMAINS_PER_REQUEST {
        return Err(ApiError::field(
            "domains",
            format!("at most {MAX_DOMAINS_PER_REQUEST} per request"),
        ));
    }
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for d in body.domains {
        match signal::normalize_domain(&d) {
            Ok(n) => ok.push(n),
            Err(e) => refused.push(RefusedDomain {
                domain: d,
                reason: e.to_string(),
            }),
        }
    }
    ok.sort();
    ok.dedup();
    let new = state
        .store
        .discovery()
        .add_domains(&ok, state.clock.now())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitDomainsResponse {
            queued: ok.len() as u64,
            new,
            refused,
        }),
    ))
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
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.discovery().discovered(limit).await?;
    Ok(Json(DiscoveredInvitations {
        invitations: rows
            .into_iter()
            .map(|r| DiscoveredInvitationView {
                domain: r.domain,
                node_public_key: r.node_key,
                source: r.source,
                manifest_id: r.manifest_id,
                verified_at: r.verified_at,
                state: r.state.as_str().into(),
            })
            .collect(),
    }))
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
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "unsupported media type",
            "the body must be a png image (content-type image/png)",
        ));
    }
    match super::import_qr(&state, &body, Freshness::default()).await {
        Ok(Outcome::Invited { manifest_id }) => Ok((
            StatusCode::CREATED,
            Json(QrImportResponse {
                outcome: "invited".into(),
                manifest_id: Some(manifest_id),
            }),
        )),
        Ok(_) => Ok((
            StatusCode::OK,
            Json(QrImportResponse {
                outcome: "known".into(),
                manifest_id: None,
            }),
        )),
        Err(DiscoveryError::Store(e)) => Err(e.into()),
        Err(DiscoveryError::QrRejected(r)) => {
            Err(ApiError::field("qr", r.to_string()).with_reason(r.reason()))
        }
        Err(e) => Err(ApiError::field("qr", e.to_string()).with_reason("unreadable")),
    }
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
