//! The volunteer's consent portal: one-time pairings between the agent
//! (which holds the node key) and a browser page (which holds nothing).
//!
//! 1. `askee-agent consent portal` asks for a pairing with a node-signed
//!    request naming its pending manifest; the server answers a random
//!    session secret and the page URL `/portal#<secret>` (the secret lives in
//!    the URL fragment, so it never reaches server logs or a `Referer`).
//! 2. The page sends the secret in the `askee-portal-session` header (never a
//!    cookie: a cross-site page cannot send a custom header without a CORS
//!    preflight the server never grants), shows the manifest in plain words
//!    and posts the volunteer's *choice* of limits, checked no wider than the
//!    manifest. A choice is not consent.
//! 3. The agent, long-polling the same session, fetches the choice, shows it
//!    in the terminal, signs a grant over exactly that manifest and those
//!    limits with the node key and submits it here. The server accepts it only
//!    when it matches the stored choice, then hands it to
//!    [`consent::grant`], which checks it like every grant; the pairing is
//!    used up.
//!
//! Afterwards the same secret opens the status page (tokens, usage, tasks,
//! audit trail, revoke) until the session expires. Pairings live in this
//! process's memory: a restart ends them (run `consent portal` again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use askee_core::signing;
use askee_core::validate::FieldError;
use askee_core::wire::v1::{Permissions, SignedGrant};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::api::ApiQuery;
use crate::consent::{self, GrantResponse, ManifestResponse, RevocationStatusResponse, Revoker};
use crate::extract::{ApiJson, NodeSigned};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;
use crate::store::InvitationState;

pub use askee_core::portal::{
    ChoiceRequest, SESSION_HEADER, SessionError, check_choice, parse_session,
};
/// How long a pairing (and the status session it becomes) lasts.
pub const SESSION_LIFETIME_SECS: i64 = 30 * 60;
/// Most pairings held at once; expired ones are dropped first.
const MAX_PAIRINGS: usize = 10_000;
/// Longest long-poll on a session.
const MAX_SESSION_WAIT: Duration = Duration::from_secs(50);
/// How many tasks and audit entries the status page shows.
const STATUS_ROWS: u32 = 100;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalPairingRequest {
    /// The pending manifest to review in the page; absent for a status-only
    /// session.
    pub manifest_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalPairing {
    /// The session secret: 64 hex characters, held only by the volunteer.
    pub session: String,
    /// The page to open, with the secret in its fragment.
    pub url: String,
    pub expires_at: i64,
}

/// A session as the page and the agent see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalSession {
    /// `review` (waiting for a choice), `chosen` (waiting for the agent's
    /// signature), `granted`, or `status` (a status-only session).
    pub state: String,
    pub node_public_key: String,
    pub expires_at: i64,
    /// The manifest to review (absent for a status-only session).
    pub manifest: Option<ManifestResponse>,
    pub choice: Option<ChoiceRequest>,
    pub grant_id: Option<String>,
    pub token_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortalSessionQuery {
    /// Long-poll: hold the request up to this many seconds (at most 50) and
    /// answer as soon as the session's state differs from `seen`.
    pub wait: Option<u64>,
    /// The state the caller already knows.
    pub seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalRevokeRequest {
    pub token_id: String,
    /// Why (free text, at most 500 characters); defaults to "revoked in the portal".
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalToken {
    pub token_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalGrant {
    pub grant_id: String,
    pub manifest_id: String,
    pub granted_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub revoked_by: Option<String>,
    pub permissions: Option<Permissions>,
    pub tokens: Vec<PortalToken>,
}

/// What the coordinator knows of the node from its heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalUsage {
    /// `active`, `offline`, `byzantine` or `revoked`.
    pub state: String,
    /// From 0 to 1.
    pub reputation: f64,
    pub last_heartbeat: i64,
    pub heartbeats: u64,
    /// Replicas leased right now.
    pub running: u64,
    pub assigned: u64,
    pub completed: u64,
    pub failed: u64,
    pub agreed: u64,
    pub wrong: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalTaskRun {
    pub task_id: String,
    pub task_type: String,
    /// `leased`, `reported`, `expired`, `failed` or `abandoned`.
    pub state: String,
    pub verdict: Option<String>,
    pub leased_at: i64,
    pub reported_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalAuditEntry {
    pub index: u64,
    pub timestamp_ms: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalStatus {
    pub node_public_key: String,
    pub session_expires_at: i64,
    pub grants: Vec<PortalGrant>,
    pub usage: Option<PortalUsage>,
    pub tasks: Vec<PortalTaskRun>,
    pub audit: Vec<PortalAuditEntry>,
}

#[derive(Debug, Clone)]
struct Pairing {
    node_key: String,
    manifest_id: Option<String>,
    expires_at: i64,
    choice: Option<ChoiceRequest>,
    /// A grant for this pairing is being checked right now.
    granting: bool,
    granted: Option<(String, String)>,
}

impl Pairing {
    fn state(&self) -> &'static str {
        if self.manifest_id.is_none() {
            "status"
        } else if self.granted.is_some() {
            "granted"
        } else if self.choice.is_some() {
            "chosen"
        } else {
            "review"
        }
    }
}

/// The pairings this process holds, keyed by the SHA-256 of their secret.
pub struct Pairings {
    inner: Mutex<HashMap<String, Pairing>>,
    bumps: tokio::sync::watch::Sender<u64>,
}

impl Default for Pairings {
    fn default() -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            bumps: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Pairings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pairing>> {
        // A panic while holding the lock cannot leave a pairing half-written
        // (every update is one assignment), so a poisoned map is still sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.bumps.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn session_key(secret: &str) -> String {
    hex::encode(signing::sha256(secret.as_bytes()))
}

fn new_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The pairing named by the request's session header, if it is live.
fn pairing_of(state: &AppState, headers: &HeaderMap) -> ApiResult<(String, Pairing)> {
    let secret = parse_session(headers.get(SESSION_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| ApiError::unauthorized("bad_session", e.to_string()))?;
    let key = session_key(secret);
    let now = state.clock.now();
    let map = state.portal.lock();
    match map.get(&key) {
        Some(p) if p.expires_at > now => Ok((key, p.clone())),
        Some(_) => Err(ApiError::unauthorized(
            "session_expired",
            "this portal session has expired; run `askee-agent consent portal` again",
        )),
        None => Err(ApiError::unauthorized(
            "unknown_session",
            "this portal session is not known; run `askee-agent consent portal` again",
        )),
    }
}

async fn view(state: &AppState, p: &Pairing) -> ApiResult<PortalSession> {
    let manifest = match &p.manifest_id {
        Some(id) => Some(consent::manifest(state, id).await?),
        None => None,
    };
    Ok(PortalSession {
        state: p.state().into(),
        node_public_key: p.node_key.clone(),
        expires_at: p.expires_at,
        manifest,
        choice: p.choice.clone(),
        grant_id: p.granted.as_ref().map(|g| g.0.clone()),
        token_id: p.granted.as_ref().map(|g| g.1.clone()),
    })
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
    let now = state.clock.now();
    if let Some(id) = &req.body.manifest_id {
        let inv = state
            .store
            .invitation(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("manifest {id}")))?;
        if inv.node_key != req.node_key {
            return Err(ApiError::field(
                "manifest_id",
                "names a manifest made for another node",
            ));
        }
        if inv.state != InvitationState::Pending || inv.expires_at <= now {
            return Err(ApiError::conflict(format!(
                "manifest {id} is {}, not pending",
                if inv.state == InvitationState::Pending {
                    "expired"
                } else {
                    inv.state.as_str()
                }
            )));
        }
    }
    let secret = new_secret();
    let expires_at = now + SESSION_LIFETIME_SECS;
    {
        let mut map = state.portal.lock();
        map.retain(|_, p| p.expires_at > now);
        if map.len() >= MAX_PAIRINGS {
            return Err(ApiError::unavailable(
                "too many portal sessions are open; try again later",
            ));
        }
        map.insert(
            session_key(&secret),
            Pairing {
                node_key: req.node_key.clone(),
                manifest_id: req.body.manifest_id.clone(),
                expires_at,
                choice: None,
                granting: false,
                granted: None,
            },
        );
    }
    state
        .store
        .append_audit(vec![consent::draft(
            &state,
            "portal.pair",
            &req.node_key,
            serde_json::json!({ "manifest_id": req.body.manifest_id, "expires_at": expires_at }),
        )])
        .await?;
    let url = format!(
        "{}/portal#{secret}",
        state.config.public_url.trim_end_matches('/')
    );
    Ok((
        StatusCode::CREATED,
        Json(PortalPairing {
            session: secret,
            url,
            expires_at,
        }),
    ))
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
    let wait = Duration::from_secs(q.wait.unwrap_or(0))
        .min(MAX_SESSION_WAIT)
        .min(state.config.max_watch);
    let deadline = tokio::time::Instant::now() + wait;
    let mut bumps = state.portal.bumps.subscribe();
    loop {
        bumps.borrow_and_update();
        let (_, p) = pairing_of(&state, &headers)?;
        let now = tokio::time::Instant::now();
        if q.seen.as_deref() != Some(p.state()) || now >= deadline {
            return view(&state, &p).await.map(Json);
        }
        // Woken by any session change; the deadline bounds the wait.
        let _ = tokio::time::timeout(deadline - now, bumps.changed()).await;
    }
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
    let (key, p) = pairing_of(&state, &headers)?;
    let Some(manifest_id) = &p.manifest_id else {
        return Err(ApiError::conflict("this session only shows status"));
    };
    if p.choice.is_some() {
        return Err(ApiError::conflict(
            "a choice was already made in this session",
        ));
    }
    let shown = consent::manifest(&state, manifest_id).await?;
    if shown.state != InvitationState::Pending.as_str() {
        return Err(ApiError::conflict(format!(
            "manifest {manifest_id} is {}, not pending",
            shown.state
        )));
    }
    let now = state.clock.now();
    let errors = check_choice(
        &choice,
        &shown.manifest,
        &state.config.task_type_names(),
        now,
    );
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let updated = {
        let mut map = state.portal.lock();
        match map.get_mut(&key) {
            Some(live) if live.choice.is_none() => {
                live.choice = Some(choice.clone());
                live.clone()
            }
            _ => {
                return Err(ApiError::conflict(
                    "a choice was already made in this session",
                ));
            }
        }
    };
    state.portal.bump();
    state
        .store
        .append_audit(vec![consent::draft(
            &state,
            "portal.choice",
            &p.node_key,
            serde_json::json!({ "manifest_id": manifest_id, "choice": choice }),
        )])
        .await?;
    view(&state, &updated).await.map(Json)
}

fn mismatch(field: &str) -> FieldError {
    FieldError {
        field: format!("statement.{field}"),
        problem: "differs from what the volunteer chose in the portal".into(),
    }
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
    let (key, p) = pairing_of(&state, &headers)?;
    let (statement, _) = signing::open_grant(&signed).map_err(|e| {
        ApiError::unauthorized(
            "bad_signature",
            format!("{e}: it must be signed by the node key"),
        )
    })?;
    let Some(choice) = p.choice.clone() else {
        return Err(ApiError::conflict(
            "nothing was chosen in the portal yet, or this session only shows status",
        ));
    };
    let mut errors = Vec::new();
    if Some(&statement.manifest_id) != p.manifest_id.as_ref() {
        errors.push(mismatch("manifest_id"));
    }
    if statement.node_public_key != p.node_key {
        errors.push(FieldError {
            field: "statement.node_public_key".into(),
            problem: "is not the node key that opened this session".into(),
        });
    }
    if statement.permissions != choice.permissions {
        errors.push(mismatch("permissions"));
    }
    if statement.grant_expires_at != choice.grant_expires_at {
        errors.push(mismatch("grant_expires_at"));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    {
        let mut map = state.portal.lock();
        match map.get_mut(&key) {
            Some(live) if live.granted.is_none() && !live.granting => live.granting = true,
            _ => return Err(ApiError::conflict("this pairing was already used")),
        }
    }
    let result = consent::grant(&state, signed).await;
    {
        let mut map = state.portal.lock();
        if let Some(live) = map.get_mut(&key) {
            live.granting = false;
            if let Ok(resp) = &result {
                live.granted = Some((
                    resp.grant_id.clone(),
                    resp.consent_token.payload.token_id.clone(),
                ));
            }
        }
    }
    state.portal.bump();
    result.map(|r| (StatusCode::CREATED, Json(r)))
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
    let (_, p) = pairing_of(&state, &headers)?;
    let node_key = &p.node_key;
    let now = state.clock.now();
    let mut grants = Vec::new();
    for g in state.store.grants_of_node(node_key).await? {
        let tokens = state
            .store
            .tokens_of_grant(&g.grant_id)
            .await?
            .into_iter()
            .map(|t| PortalToken {
                status: if g.revoked_at.is_some() {
                    "revoked"
                } else if now >= t.expires_at {
                    "expired"
                } else {
                    "active"
                }
                .into(),
                token_id: t.token_id,
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            })
            .collect();
        grants.push(PortalGrant {
            permissions: serde_json::from_str(&g.permissions_json).ok(),
            grant_id: g.grant_id,
            manifest_id: g.manifest_id,
            granted_at: g.granted_at,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
            revoke_reason: g.revoke_reason,
            revoked_by: g.revoked_by,
            tokens,
        });
    }
    grants.sort_by_key(|g| std::cmp::Reverse(g.granted_at));
    let dash = state.store.dashboard();
    let assignments = dash.assignments_of_node(node_key, STATUS_ROWS).await?;
    let running = assignments.iter().filter(|a| a.state == "leased").count() as u64;
    let usage = state.store.node(node_key).await?.map(|n| PortalUsage {
        state: n.state.as_str().into(),
        reputation: f64::from(n.reputation_micros) / 1e6,
        last_heartbeat: n.last_heartbeat,
        heartbeats: n.stats.heartbeats,
        running,
        assigned: n.stats.assigned,
        completed: n.stats.completed,
        failed: n.stats.failed,
        agreed: n.stats.agreed,
        wrong: n.stats.wrong,
    });
    let tasks = assignments
        .into_iter()
        .map(|a| PortalTaskRun {
            task_id: a.task_id,
            task_type: a.task_type,
            state: a.state,
            verdict: a.verdict,
            leased_at: a.leased_at,
            reported_at_ms: a.reported_at_ms,
        })
        .collect();
    let audit = dash
        .audit_of_subject(node_key, STATUS_ROWS)
        .await?
        .into_iter()
        .map(|e| PortalAuditEntry {
            // The leaf body is `{"data":…,"index":…,…}`; show its data.
            data: serde_json::from_str::<serde_json::Value>(&e.body)
                .map(|v| v.get("data").cloned().unwrap_or(serde_json::Value::Null))
                .unwrap_or(serde_json::Value::Null),
            index: e.index,
            timestamp_ms: e.timestamp_ms,
            kind: e.kind,
        })
        .collect();
    Ok(Json(PortalStatus {
        node_public_key: node_key.clone(),
        session_expires_at: p.expires_at,
        grants,
        usage,
        tasks,
        audit,
    }))
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
    let (_, p) = pairing_of(&state, &headers)?;
    let reason = req
        .reason
        .unwrap_or_else(|| "revoked in the portal".to_owned());
    consent::revoke(&state, &req.token_id, Revoker::Node(p.node_key), &reason)
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
