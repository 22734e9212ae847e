//! The consent portal's HTTP API: pairing (node-signed), the session the
//! page and the agent share (the `askee-portal-session` header), the
//! volunteer's choice, the agent's grant, the status page and revocation.
//! The flow is described in `service::portal`.

use askee_core::wire::v1::{GrantResponse, RevocationStatusResponse, SignedGrant};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::http::extract::{ApiJson, ApiQuery, NodeSigned};
use crate::http::problem::{ApiResult, Problem};
use crate::service::portal::{
    self, ChoiceRequest, PortalPairing, PortalPairingRequest, PortalRevokeRequest, PortalSession,
    PortalStatus, SESSION_HEADER,
};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortalSessionQuery {
    /// Long-poll: hold the request up to this many seconds (at most 50) and
    /// answer as soon as the session's state differs from `seen`.
    pub wait: Option<u64>,
    /// The state the caller already knows.
    pub seen: Option<String>,
}

/// The session secret the request names, if any.
fn session(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(SESSION_HEADER).map(|v| v.as_bytes())
}

#[utoipa::path(post, path = "/v1/portal/pairings", tag = "portal",
    request_body = PortalPairingRequest,
    security(("node_signature" = [])),
    responses(
        (status = 201, body = PortalPairing, description = "the session secret and the page to open"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "the manifest is not pending"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn create_pairing(
    State(state): State<AppState>,
    req: NodeSigned<PortalPairingRequest>,
) -> ApiResult<(StatusCode, Json<PortalPairing>)> {
    let pairing = portal::pair(&state, &req.node_key, req.body).await?;
    Ok((StatusCode::CREATED, Json(pairing)))
}

#[utoipa::path(get, path = "/v1/portal/session", tag = "portal",
    params(PortalSessionQuery),
    security(("portal_session" = [])),
    responses(
        (status = 200, body = PortalSession),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "missing, malformed, unknown or expired session")))]
async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<PortalSessionQuery>,
) -> ApiResult<Json<PortalSession>> {
    portal::session(&state, session(&headers), q.wait, q.seen.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/v1/portal/choice", tag = "portal",
    request_body = ChoiceRequest,
    security(("portal_session" = [])),
    responses(
        (status = 200, body = PortalSession, description = "the choice is recorded; the agent signs it next"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "a choice was already made, or nothing is to be granted"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "a limit is wider than proposed; `errors` names the field")))]
async fn post_choice(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(choice): ApiJson<ChoiceRequest>,
) -> ApiResult<Json<PortalSession>> {
    portal::choose(&state, session(&headers), choice)
        .await
        .map(Json)
}

#[utoipa::path(post, path = "/v1/portal/grant", tag = "portal",
    request_body = SignedGrant,
    security(("portal_session" = [])),
    responses(
        (status = 201, body = GrantResponse, description = "the grant, signed by the node key over exactly the choice, is recorded"),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "unknown session, or the grant is not signed by the node key it names"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "nothing chosen yet, or already granted"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "the signed grant differs from the choice or the manifest")))]
async fn post_grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(signed): ApiJson<SignedGrant>,
) -> ApiResult<(StatusCode, Json<GrantResponse>)> {
    let grant = portal::grant(&state, session(&headers), signed).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

#[utoipa::path(get, path = "/v1/portal/status", tag = "portal",
    security(("portal_session" = [])),
    responses(
        (status = 200, body = PortalStatus, description = "the volunteer's tokens, usage, tasks and audit trail"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<PortalStatus>> {
    portal::status(&state, session(&headers)).await.map(Json)
}

#[utoipa::path(post, path = "/v1/portal/revoke", tag = "portal",
    request_body = PortalRevokeRequest,
    security(("portal_session" = [])),
    responses(
        (status = 200, body = RevocationStatusResponse, description = "the grant is revoked; agents long-polling its token learn at once"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "the token belongs to another node")))]
async fn post_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PortalRevokeRequest>,
) -> ApiResult<Json<RevocationStatusResponse>> {
    portal::revoke(&state, session(&headers), req)
        .await
        .map(Json)
}

/// The portal's JSON routes (ordinary requests).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/portal/pairings", post(create_pairing))
        .route("/v1/portal/choice", post(post_choice))
        .route("/v1/portal/grant", post(post_grant))
        .route("/v1/portal/status", get(get_status))
        .route("/v1/portal/revoke", post(post_revoke))
}

/// The session long-poll (held open like the revocation URL).
pub fn watch_routes() -> Router<AppState> {
    Router::new().route("/v1/portal/session", get(get_session))
}

struct SessionSecurity;

impl utoipa::Modify for SessionSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "portal_session",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    SESSION_HEADER,
                    "the portal session secret (64 lower-case hex characters) from \
                     `POST /v1/portal/pairings`; the page reads it from its URL fragment",
                ))),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(create_pairing, get_session, post_choice, post_grant, get_status, post_revoke),
    modifiers(&SessionSecurity),
    tags((name = "portal", description = "the volunteer's browser portal: pairing with the agent, choosing limits, status and revocation"))
)]
pub struct PortalApi;
