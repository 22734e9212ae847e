//! The HTTP API: versioned routes under `/v1`, the well-known documents, the
//! revocation URL, health and metrics, and the OpenAPI document that
//! describes them (generated here, committed as `openapi/openapi.json`).

use std::time::Instant;

use askee_core::wire::v1::{
    ConsentToken, CoordinatorInfo, JwkSet, RevocationCertificate, SignedGrant, SignedRevocationList,
};
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::audit::{AuditEntryResponse, CheckpointResponse, ConsistencyProof, InclusionProof};
use crate::consent::{
    self, GrantResponse, JoinRequest, ManifestResponse, RenewRequest, RevocationStatusResponse,
    RevokeRequest, Revoker, VerifyRequest, VerifyResponse,
};
use crate::extract::{
    ApiJson, NodeSigned, operator_from_headers, parse_json, verify_node_signature,
};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

/// Query strings, with problems instead of plain-text rejections.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
    }
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "the process is alive")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "the store answers"),
    (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    state.store.ping().await?;
    Ok("ready")
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "well-known",
    responses((status = 200, body = JwkSet, description = "the coordinator's Ed25519 signing keys")))]
async fn jwks(State(state): State<AppState>) -> Json<JwkSet> {
    Json(state.keys.jwks())
}

#[utoipa::path(get, path = "/.well-known/askee-coordinator", tag = "well-known",
    responses((status = 200, body = CoordinatorInfo)))]
async fn coordinator(State(state): State<AppState>) -> Json<CoordinatorInfo> {
    let c = &state.config;
    let base = c.public_url.trim_end_matches('/');
    Json(CoordinatorInfo {
        name: c.operator_name.clone(),
        contact: c.operator_contact.clone(),
        api_base: format!("{base}/v1"),
        key_ids: state.keys.key_ids(),
        task_types: c.task_types.clone(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        revocation_list_uri: format!("{base}/v1/revocations"),
    })
}

const SIGNED: &str = "node_signature";

#[utoipa::path(post, path = "/v1/invitations", tag = "consent",
    request_body = JoinRequest,
    security(("node_signature" = [])),
    responses(
        (status = 201, body = ManifestResponse, description = "the capability manifest to review"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn join(
    State(state): State<AppState>,
    req: NodeSigned<JoinRequest>,
) -> ApiResult<(StatusCode, Json<ManifestResponse>)> {
    let resp = consent::join(&state, &req.node_key, req.body).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

#[utoipa::path(get, path = "/v1/manifests/{manifest_id}", tag = "consent",
    params(("manifest_id" = String, Path)),
    responses(
        (status = 200, body = ManifestResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_manifest(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ManifestResponse>> {
    consent::manifest(&state, &id).await.map(Json)
}

#[utoipa::path(post, path = "/v1/grants", tag = "consent",
    request_body = SignedGrant,
    responses(
        (status = 201, body = GrantResponse, description = "the consent token and revocation certificate"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "the grant is not signed by the node key it names"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the manifest was already granted"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "a limit widens the proposal, or a field is invalid")))]
async fn grant(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignedGrant>,
) -> ApiResult<(StatusCode, Json<GrantResponse>)> {
    let resp = consent::grant(&state, body).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

#[utoipa::path(post, path = "/v1/tokens/verify", tag = "tokens",
    request_body = VerifyRequest,
    responses(
        (status = 200, body = VerifyResponse),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "rejected; `reason` says why")))]
async fn verify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> ApiResult<Json<VerifyResponse>> {
    match consent::verify(&state, &body.token).await {
        Ok(payload) => Ok(Json(VerifyResponse {
            valid: true,
            payload,
        })),
        Err(e) => Err(consent::token_error(&e)),
    }
}

#[utoipa::path(post, path = "/v1/tokens/renew", tag = "tokens",
    request_body = RenewRequest,
    security(("node_signature" = [])),
    responses(
        (status = 201, body = ConsentToken),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the grant was revoked or has ended")))]
async fn renew(
    State(state): State<AppState>,
    req: NodeSigned<RenewRequest>,
) -> ApiResult<(StatusCode, Json<ConsentToken>)> {
    let token = consent::renew(&state, &req.node_key, req.body).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

#[utoipa::path(post, path = "/v1/tokens/{token_id}/revoke", tag = "tokens",
    params(("token_id" = String, Path)),
    request_body = RevokeRequest,
    security(("node_signature" = []), ("operator" = [])),
    responses(
        (status = 200, body = RevocationStatusResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn revoke(
    State(state): State<AppState>,
    Path(token_id): Path<String>,
    req: Request,
) -> ApiResult<Json<RevocationStatusResponse>> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| ApiError::bad_request("body too large"))?;
    let revoker = match operator_from_headers(&parts.headers, &state).await? {
        Some(op) => Revoker::Operator(op.name),
        None => Revoker::Node(verify_node_signature(&parts, &bytes, &state).await?.0),
    };
    let body: RevokeRequest = parse_json(&bytes)?;
    consent::revoke(&state, &token_id, revoker, &body.reason)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Long-poll: hold the request up to this many seconds (capped by the
    /// server, 55 by default) and answer as soon as the token is revoked or
    /// expired. Without it the current status is answered at once.
    pub wait: Option<u64>,
}

#[utoipa::path(get, path = "/revoke/{token_id}", tag = "revocation",
    params(("token_id" = String, Path), WatchQuery),
    responses(
        (status = 200, body = RevocationStatusResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn revocation_status(
    State(state): State<AppState>,
    Path(token_id): Path<String>,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> ApiResult<Json<RevocationStatusResponse>> {
    match q.wait {
        Some(secs) if secs > 0 => {
            consent::watch(&state, &token_id, std::time::Duration::from_secs(secs))
                .await
                .map(Json)
        }
        _ => consent::status(&state, &token_id).await.map(Json),
    }
}

#[utoipa::path(post, path = "/revoke/{token_id}", tag = "revocation",
    params(("token_id" = String, Path)),
    request_body = RevocationCertificate,
    responses(
        (status = 200, body = RevocationStatusResponse, description = "the grant is revoked"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn revoke_by_certificate(
    State(state): State<AppState>,
    Path(token_id): Path<String>,
    ApiJson(cert): ApiJson<RevocationCertificate>,
) -> ApiResult<Json<RevocationStatusResponse>> {
    consent::revoke_with_certificate(&state, &token_id, cert)
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/revocations", tag = "revocation",
    responses((status = 200, body = SignedRevocationList, description = "signed; stale after next_update")))]
async fn revocations(State(state): State<AppState>) -> ApiResult<Json<SignedRevocationList>> {
    consent::revocation_list(&state).await.map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// First index (default 0).
    #[serde(default)]
    pub start: u64,
    /// One past the last index (default: the log size; at most 1000 per page).
    pub end: Option<u64>,
}

#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", params(EntriesQuery),
    responses((status = 200, body = Vec<AuditEntryResponse>)))]
async fn audit_entries(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> ApiResult<Json<Vec<AuditEntryResponse>>> {
    crate::audit::entries(&state, q.start, q.end)
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointResponse)))]
async fn audit_checkpoint(State(state): State<AppState>) -> ApiResult<Json<CheckpointResponse>> {
    crate::audit::latest(&state).await.map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    pub index: u64,
    /// Tree size of the checkpoint to prove against.
    pub size: u64,
}

#[utoipa::path(get, path = "/v1/audit/proof/inclusion", tag = "audit", params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn audit_inclusion(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    crate::audit::inclusion(&state, q.index, q.size)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    pub first: u64,
    pub second: u64,
}

#[utoipa::path(get, path = "/v1/audit/proof/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn audit_consistency(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    crate::audit::consistency(&state, q.first, q.second)
        .await
        .map(Json)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("route {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method not allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let start = Instant::now();
    let mut resp = next.run(req).await;
    state.metrics.observe_request(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The routes without the protective layers (see [`crate::app`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/askee-coordinator", get(coordinator))
        .route("/v1/invitations", post(join))
        .route("/v1/manifests/{manifest_id}", get(get_manifest))
        .route("/v1/grants", post(grant))
        .route("/v1/tokens/verify", post(verify))
        .route("/v1/tokens/renew", post(renew))
        .route("/v1/tokens/{token_id}/revoke", post(revoke))
        .route("/revoke/{token_id}", post(revoke_by_certificate))
        .route("/v1/revocations", get(revocations))
        .route("/v1/audit/entries", get(audit_entries))
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/v1/audit/proof/inclusion", get(audit_inclusion))
        .route("/v1/audit/proof/consistency", get(audit_consistency))
        .merge(crate::coord::routes())
        .merge(crate::discovery::api::routes())
        .merge(crate::portal::routes())
        .merge(crate::dashboard::routes())
        .merge(crate::web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Routes that may be held open (long-polls); [`crate::app`] gives them their
/// own concurrency cap instead of the request timeout.
pub fn watch_routes(state: AppState) -> Router {
    Router::new()
        .route("/revoke/{token_id}", get(revocation_status))
        .merge(crate::portal::watch_routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SIGNED,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "askee-signature",
                "base64url (no padding) Ed25519 signature by the node key over the bytes \
                 `askee-request-v1\\0` followed by the UTF-8 text `METHOD\\nPATH_AND_QUERY\\nTIMESTAMP\\nNONCE\\nBODY_SHA256` \
                 (upper-case method, the request target as sent, the askee-timestamp value, the askee-nonce value, \
                 lower-case hex SHA-256 of the exact body bytes); sent with headers askee-node-key (base64url public key), \
                 askee-timestamp (unix seconds, within the server's allowed skew) and askee-nonce; a nonce is accepted once",
            ))),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "operator credential from `askee-server operator create`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "askee control plane", description = "Consent-first volunteer computing: consent engine, revocation, audit log.", version = "1"),
    paths(
        healthz, readyz, metrics, jwks, coordinator, join, get_manifest, grant, verify, renew, revoke,
        revocation_status, revoke_by_certificate, revocations, audit_entries, audit_checkpoint,
        audit_inclusion, audit_consistency
    ),
    modifiers(&Security),
    tags(
        (name = "consent", description = "invitations, manifests and signed grants"),
        (name = "tokens", description = "consent token verification, renewal and revocation"),
        (name = "revocation", description = "the revocation URL and the signed revocation list"),
        (name = "audit", description = "the tamper-evident audit log"),
        (name = "well-known", description = "discovery documents"),
        (name = "ops", description = "health and metrics")
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON with a trailing newline: the exact
/// content of `openapi/openapi.json`.
pub fn openapi_document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(<crate::coord::CoordApiDoc as OpenApi>::openapi());
    doc.merge(crate::discovery::api::DiscoveryApi::openapi());
    doc.merge(crate::portal::PortalApi::openapi());
    doc.merge(crate::dashboard::DashboardApi::openapi());
    let mut s = doc.to_pretty_json().expect("openapi serialises");
    s.push('\n');
    s
}
