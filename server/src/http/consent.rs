//! The consent API: invitations, manifests, signed grants, token
//! verification, renewal and revocation, the revocation URL and list, and
//! the audit log's entries and proofs. Each handler passes straight through
//! to `service::consent` or `service::audit`.

use askee_core::wire::v1::{
    ConsentToken, GrantResponse, JoinRequest, ManifestResponse, RenewRequest,
    RevocationCertificate, RevocationStatusResponse, RevokeRequest, SignedGrant,
    SignedRevocationList, VerifyRequest, VerifyResponse,
};
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http::extract::{
    ApiJson, ApiQuery, NodeSigned, operator_from_headers, parse_json, verify_node_signature,
};
use crate::http::problem::{ApiError, ApiResult, Problem};
use crate::service::audit::{
    self, AuditEntryResponse, CheckpointResponse, ConsistencyProof, InclusionProof,
};
use crate::service::consent::{self, Revoker};
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/invitations", tag = "consent",
    request_body = JoinRequest,
    security(("node_signature" = [])),
    responses(
        (status = 201, body = ManifestResponse, description = "the capability manifest to review"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn join(
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
pub(super) async fn get_manifest(
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
pub(super) async fn grant(
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
pub(super) async fn verify(
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
pub(super) async fn renew(
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
pub(super) async fn revoke(
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
pub(super) async fn revocation_status(
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
pub(super) async fn revoke_by_certificate(
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
pub(super) async fn revocations(
    State(state): State<AppState>,
) -> ApiResult<Json<SignedRevocationList>> {
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
pub(super) async fn audit_entries(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> ApiResult<Json<Vec<AuditEntryResponse>>> {
    audit::entries(&state, q.start, q.end).await.map(Json)
}

#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointResponse)))]
pub(super) async fn audit_checkpoint(
    State(state): State<AppState>,
) -> ApiResult<Json<CheckpointResponse>> {
    audit::latest(&state).await.map(Json)
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
pub(super) async fn audit_inclusion(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    audit::inclusion(&state, q.index, q.size).await.map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    pub first: u64,
    pub second: u64,
}

#[utoipa::path(get, path = "/v1/audit/proof/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn audit_consistency(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    audit::consistency(&state, q.first, q.second)
        .await
        .map(Json)
}
