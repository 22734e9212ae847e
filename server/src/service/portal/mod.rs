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
//!    [`consent::grant`](crate::service::consent::grant), which checks it like every grant; the pairing is
//!    used up.
//!
//! Afterwards the same secret opens the status page (tokens, usage, tasks,
//! audit trail, revoke) until the session expires. Pairings live in this
//! process's memory: a restart ends them (run `consent portal` again).

use std::time::Duration;

use askee_core::signing;
use askee_core::validate::FieldError;
use askee_core::wire::v1::{GrantResponse, Permissions, RevocationStatusResponse, SignedGrant};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::consent::{self, Revoker};
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::state::pairings::{Granted, Pairing};
use crate::store::InvitationState;

pub mod status;

pub use status::status;

pub use askee_core::wire::v1::{PortalPairing, PortalPairingRequest, PortalSession};

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

fn session_key(secret: &str) -> String {
    hex::encode(signing::sha256(secret.as_bytes()))
}

fn new_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The pairing named by a session secret (the request's session header),
/// if it is live.
fn pairing_of(state: &AppState, session: Option<&[u8]>) -> ServiceResult<(String, Pairing)> {
    let secret = parse_session(session)
        .map_err(|e| ServiceError::unauthorized("bad_session", e.to_string()))?;
    let key = session_key(secret);
    let now = state.clock.now();
    let map = state.portal.lock();
    match map.get(&key) {
        Some(p) if p.expires_at > now => Ok((key, p.clone())),
        Some(_) => Err(ServiceError::unauthorized(
            "session_expired",
            "this portal session has expired; run `askee-agent consent portal` again",
        )),
        None => Err(ServiceError::unauthorized(
            "unknown_session",
            "this portal session is not known; run `askee-agent consent portal` again",
        )),
    }
}

async fn view(state: &AppState, p: &Pairing) -> ServiceResult<PortalSession> {
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
        grant_id: p.granted.as_ref().map(|g| g.grant_id.clone()),
        token_id: p.granted.as_ref().map(|g| g.token_id.clone()),
    })
}

/// Opens a pairing for a node-signed request: the session secret and the
/// page to open. With a manifest id, the manifest must be the node's and
/// pending.
pub async fn pair(
    state: &AppState,
    node_key: &str,
    body: PortalPairingRequest,
) -> ServiceResult<PortalPairing> {
    let now = state.clock.now();
    if let Some(id) = &body.manifest_id {
        let inv = state
            .store
            .invitation(id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("manifest {id}")))?;
        if inv.node_key != node_key {
            return Err(ServiceError::field(
                "manifest_id",
                "names a manifest made for another node",
            ));
        }
        if inv.state != InvitationState::Pending || inv.expires_at <= now {
            return Err(ServiceError::conflict(format!(
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
            return Err(ServiceError::unavailable(
                "too many portal sessions are open; try again later",
            ));
        }
        map.insert(
            session_key(&secret),
            Pairing {
                node_key: node_key.to_owned(),
                manifest_id: body.manifest_id.clone(),
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
            state,
            "portal.pair",
            node_key,
            serde_json::json!({ "manifest_id": body.manifest_id, "expires_at": expires_at }),
        )])
        .await?;
    let url = format!(
        "{}/portal#{secret}",
        state.config.public_url.trim_end_matches('/')
    );
    Ok(PortalPairing {
        session: secret,
        url,
        expires_at,
    })
}

/// The session as the page and the agent see it; with `wait`, held until
/// its state differs from `seen` (at most the wait).
pub async fn session(
    state: &AppState,
    session: Option<&[u8]>,
    wait: Option<u64>,
    seen: Option<&str>,
) -> ServiceResult<PortalSession> {
    let wait = Duration::from_secs(wait.unwrap_or(0))
        .min(MAX_SESSION_WAIT)
        .min(state.config.max_watch);
    let deadline = tokio::time::Instant::now() + wait;
    let mut bumps = state.portal.subscribe();
    loop {
        bumps.borrow_and_update();
        let (_, p) = pairing_of(state, session)?;
        let now = tokio::time::Instant::now();
        if seen != Some(p.state()) || now >= deadline {
            return view(state, &p).await;
        }
        // Woken by any session change; the deadline bounds the wait.
        let _ = tokio::time::timeout(deadline - now, bumps.changed()).await;
    }
}

/// Records the volunteer's choice of limits, no wider than the manifest.
pub async fn choose(
    state: &AppState,
    session: Option<&[u8]>,
    choice: ChoiceRequest,
) -> ServiceResult<PortalSession> {
    let (key, p) = pairing_of(state, session)?;
    let Some(manifest_id) = &p.manifest_id else {
        return Err(ServiceError::conflict("this session only shows status"));
    };
    if p.choice.is_some() {
        return Err(ServiceError::conflict(
            "a choice was already made in this session",
        ));
    }
    let shown = consent::manifest(state, manifest_id).await?;
    if shown.state != InvitationState::Pending.as_str() {
        return Err(ServiceError::conflict(format!(
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
        return Err(ServiceError::fields(errors));
    }
    let updated = {
        let mut map = state.portal.lock();
        match map.get_mut(&key) {
            Some(live) if live.choice.is_none() => {
                live.choice = Some(choice.clone());
                live.clone()
            }
            _ => {
                return Err(ServiceError::conflict(
                    "a choice was already made in this session",
                ));
            }
        }
    };
    state.portal.bump();
    state
        .store
        .append_audit(vec![consent::draft(
            state,
            "portal.choice",
            &p.node_key,
            serde_json::json!({ "manifest_id": manifest_id, "choice": choice }),
        )])
        .await?;
    view(state, &updated).await
}

fn mismatch(field: &str) -> FieldError {
    FieldError {
        field: format!("statement.{field}"),
        problem: "differs from what the volunteer chose in the portal".into(),
    }
}

/// Accepts the agent's grant when it signs exactly the stored choice, and
/// hands it to the consent engine; the pairing is used up.
pub async fn grant(
    state: &AppState,
    session: Option<&[u8]>,
    signed: SignedGrant,
) -> ServiceResult<GrantResponse> {
    let (key, p) = pairing_of(state, session)?;
    let (statement, _) = signing::open_grant(&signed).map_err(|e| {
        ServiceError::unauthorized(
            "bad_signature",
            format!("{e}: it must be signed by the node key"),
        )
    })?;
    let Some(choice) = p.choice.clone() else {
        return Err(ServiceError::conflict(
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
        return Err(ServiceError::fields(errors));
    }
    {
        let mut map = state.portal.lock();
        match map.get_mut(&key) {
            Some(live) if live.granted.is_none() && !live.granting => live.granting = true,
            _ => return Err(ServiceError::conflict("this pairing was already used")),
        }
    }
    let result = consent::grant(state, signed).await;
    {
        let mut map = state.portal.lock();
        if let Some(live) = map.get_mut(&key) {
            live.granting = false;
            if let Ok(resp) = &result {
                live.granted = Some(Granted {
                    grant_id: resp.grant_id.clone(),
                    token_id: resp.consent_token.payload.token_id.clone(),
                });
            }
        }
    }
    state.portal.bump();
    result
}

/// Revokes one of the session node's tokens.
pub async fn revoke(
    state: &AppState,
    session: Option<&[u8]>,
    req: PortalRevokeRequest,
) -> ServiceResult<RevocationStatusResponse> {
    let (_, p) = pairing_of(state, session)?;
    let reason = req
        .reason
        .unwrap_or_else(|| "revoked in the portal".to_owned());
    consent::revoke(state, &req.token_id, Revoker::Node(p.node_key), &reason).await
}
