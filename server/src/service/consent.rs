//! The consent engine (the seed's ConsentEngine): invitation → capability
//! manifest → signed grant → consent token → renewal → revocation, with
//! every step written to the audit log in the same transaction.

use std::time::Duration;

use askee_core::signing::{self, canonical_json, manifest_digest};
use askee_core::token::{RevocationStatus, TokenError};
use askee_core::validate;
use askee_core::wire::v1::{
    CapabilityManifest, ConsentToken, ConsentTokenPayload, GrantResponse, JoinRequest,
    ManifestResponse, OperatorInfo, Permissions, REVOCATION_LIST_VERSION, RenewRequest,
    RevocationCertificate, RevocationList, RevocationStatusResponse, RevokedGrant, SignedGrant,
    SignedRevocationList, TOKEN_VERSION,
};

use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{
    AuditDraft, GrantRecord, InvitationRecord, InvitationState, RevokeOutcome, TokenRecord,
};

/// An audit entry, written by the store in the same transaction as the
/// change it records.
pub fn draft(state: &AppState, kind: &str, subject: &str, data: serde_json::Value) -> AuditDraft {
    AuditDraft {
        timestamp_ms: state.clock.now_ms(),
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        data,
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn manifest_for(
    state: &AppState,
    manifest_id: String,
    node_key: &str,
    now: i64,
) -> CapabilityManifest {
    let c = &state.config;
    let proposed = c.proposed_permissions();
    CapabilityManifest {
        manifest_id,
        operator: OperatorInfo {
            name: c.operator_name.clone(),
            contact: c.operator_contact.clone(),
            coordinator_url: c.public_url.clone(),
        },
        node_public_key: node_key.to_owned(),
        task_types: c.task_types.clone(),
        grant_expires_at_max: now + c.max_grant_duration.as_secs() as i64,
        token_lifetime_seconds: c.token_lifetime.as_secs() as i64,
        execution: format!(
            "tasks run only while your computer is idle, at most {}% of its CPU, and stop within a second when you use it again",
            proposed.resources.cpu_percent_max
        ),
        data_access: vec![
            "the task's own input files, read-only".into(),
            "a private scratch directory, deleted after the task".into(),
        ],
        never_accessed: vec![
            "your files, documents and home directory".into(),
            "your network, other machines and the internet".into(),
            "your camera, microphone, screen, keyboard and other devices".into(),
            "other programs and their memory".into(),
        ],
        revocation: format!(
            "run `askee-agent revoke`, use the revoke button in the portal, or present your revocation certificate at {}/revoke/<token id>; work stops within a second",
            c.public_url.trim_end_matches('/')
        ),
        proposed,
        created_at: now,
        expires_at: now + c.manifest_lifetime.as_secs() as i64,
    }
}

/// `presentManifest` for a direct join.
pub async fn join(
    state: &AppState,
    node_key: &str,
    req: JoinRequest,
) -> ServiceResult<ManifestResponse> {
    if req.node_public_key != node_key {
        return Err(ServiceError::field(
            "node_public_key",
            "must be the key that signed the request",
        ));
    }
    let now = state.clock.now();
    let (manifest, record, audit) = new_invitation(state, node_key, "join", None, now);
    let digest = record.manifest_digest.clone();
    state.store.create_invitation(&record, audit).await?;
    Ok(ManifestResponse {
        manifest,
        manifest_digest: digest,
        state: InvitationState::Pending.as_str().into(),
    })
}

fn parse_manifest(record: &InvitationRecord) -> ServiceResult<CapabilityManifest> {
    serde_json::from_str(&record.manifest_json).map_err(|e| {
        ServiceError::internal(format!(
            "stored manifest {} is corrupt: {e}",
            record.manifest_id
        ))
    })
}

pub async fn manifest(state: &AppState, manifest_id: &str) -> ServiceResult<ManifestResponse> {
    let record = state
        .store
        .invitation(manifest_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("manifest {manifest_id}")))?;
    Ok(ManifestResponse {
        manifest: parse_manifest(&record)?,
        manifest_digest: record.manifest_digest,
        state: record.state.as_str().into(),
    })
}

fn issue_token(
    state: &AppState,
    grant_id: &str,
    node_key: &str,
    permissions: Permissions,
    now: i64,
    grant_end: i64,
) -> ServiceResult<(ConsentToken, TokenRecord)> {
    let signer = state.keys.signer();
    let token_id = new_id();
    let expires_at = grant_end.min(now + state.config.token_lifetime.as_secs() as i64);
    let payload = ConsentTokenPayload {
        version: TOKEN_VERSION.into(),
        token_id: token_id.clone(),
        grant_id: grant_id.to_owned(),
        issuer: signer.issuer(),
        subject: node_key.to_owned(),
        issued_at: now,
        expires_at,
        permissions,
        revocation_url: state.config.revocation_url(&token_id),
    };
    let token = signer
        .issue(payload)
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    let record = TokenRecord {
        token_id,
        grant_id: grant_id.to_owned(),
        node_key: node_key.to_owned(),
        kid: signer.kid().to_owned(),
        issued_at: now,
        expires_at,
        jwt: token.token.clone(),
    };
    Ok((token, record))
}

/// `generateConsentToken`: checks the volunteer's signed grant against the
/// manifest it names, then stores the grant and issues the first token.
pub async fn grant(state: &AppState, signed: SignedGrant) -> ServiceResult<GrantResponse> {
    let (statement, _) = signing::open_grant(&signed).map_err(|e| match e {
        signing::SignatureError::Invalid { .. } => ServiceError::unauthorized(
            "bad_signature",
            format!("{e}: it must be signed by the node key it names"),
        ),
        signing::SignatureError::Malformed { field, .. } => {
            ServiceError::field(field, e.to_string())
        }
        signing::SignatureError::Version { .. } => {
            ServiceError::field("statement.version", e.to_string())
        }
        signing::SignatureError::Json { .. } => ServiceError::field("statement", e.to_string()),
    })?;
    let invitation = state
        .store
        .invitation(&statement.manifest_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("manifest {}", statement.manifest_id)))?;
    if invitation.state != InvitationState::Pending {
        return Err(ServiceError::conflict(format!(
            "manifest {} is {}, not pending",
            invitation.manifest_id,
            invitation.state.as_str()
        )));
    }
    let manifest = parse_manifest(&invitation)?;
    let now = state.clock.now();
    let errors = validate::grant(&statement, &manifest, &state.config.task_type_names(), now);
    if !errors.is_empty() {
        return Err(ServiceError::fields(errors));
    }
    let grant_id = new_id();
    let node_key = statement.node_public_key.clone();
    let (token, token_record) = issue_token(
        state,
        &grant_id,
        &node_key,
        statement.permissions.clone(),
        now,
        statement.grant_expires_at,
    )?;
    let certificate = signing::sign_revocation_certificate(
        state.keys.signer().signing_key(),
        state.keys.signer().kid(),
        &grant_id,
        &token_record.token_id,
        &node_key,
        now,
    );
    let grant = GrantRecord {
        grant_id: grant_id.clone(),
        manifest_id: statement.manifest_id.clone(),
        node_key: node_key.clone(),
        statement: signed.statement.clone(),
        signature: signed.signature.clone(),
        permissions_json: String::from_utf8(canonical_json(&statement.permissions)).expect("utf-8"),
        granted_at: now,
        expires_at: statement.grant_expires_at,
        revoked_at: None,
        revoke_reason: None,
        revoked_by: None,
    };
    let audits = vec![
        draft(
            state,
            "consent.grant",
            &node_key,
            serde_json::json!({
                "grant_id": grant_id,
                "manifest_id": statement.manifest_id,
                "manifest_digest": statement.manifest_digest,
                "grant_expires_at": statement.grant_expires_at,
                // The signed statement itself: anyone can re-check the consent.
                "statement": signed.statement,
                "signature": signed.signature,
            }),
        ),
        draft(
            state,
            "token.issue",
            &node_key,
            serde_json::json!({
                "grant_id": grant_id,
                "token_id": token_record.token_id,
                "kid": token_record.kid,
                "expires_at": token_record.expires_at,
            }),
        ),
    ];
    state
        .store
        .record_grant(&grant, &token_record, audits)
        .await?;
    state.metrics.count("askee_grants_total");
    Ok(GrantResponse {
        grant_id,
        grant_expires_at: statement.grant_expires_at,
        consent_token: token,
        revocation_certificate: certificate,
    })
}

pub fn token_error(e: &TokenError) -> ServiceError {
    let reason = match e {
        TokenError::Malformed | TokenError::Header(_) | TokenError::Payload(_) => "malformed",
        TokenError::Algorithm { .. } => "algorithm",
        TokenError::EmbeddedKey { .. } => "embedded_key",
        TokenError::MissingKid | TokenError::UnknownKid { .. } => "unknown_kid",
        TokenError::BadSignature => "bad_signature",
        TokenError::Version { .. } => "version",
        TokenError::Issuer => "issuer",
        TokenError::Expired { .. } => "expired",
        TokenError::NotYetValid { .. } | TokenError::Lifetime { .. } => "not_yet_valid",
        TokenError::Revoked { .. } => "revoked",
        TokenError::RevocationUnknown => "revocation_unknown",
        TokenError::Signing(_) => "internal",
    };
    ServiceError::new(
        ErrorKind::Unauthorized,
        "token-rejected",
        "the consent token is rejected",
        e.to_string(),
    )
    .with_reason(reason)
}

/// What the store says about a token's revocation; any doubt is `Unknown`.
async fn revocation_status(
    state: &AppState,
    token_id: &str,
    grant_id: &str,
    subject: &str,
) -> RevocationStatus {
    let token = match state.store.token(token_id).await {
        Ok(Some(t)) if t.grant_id == grant_id && t.node_key == subject => t,
        Ok(_) => return RevocationStatus::Unknown,
        Err(e) => {
            tracing::error!(error = %e, "revocation lookup failed; failing closed");
            return RevocationStatus::Unknown;
        }
    };
    match state.store.grant(&token.grant_id).await {
        Ok(Some(g)) => match g.revoked_at {
            Some(at) => RevocationStatus::Revoked {
                revoked_at: at,
                reason: g.revoke_reason.unwrap_or_default(),
            },
            None => RevocationStatus::Active,
        },
        Ok(None) => RevocationStatus::Unknown,
        Err(e) => {
            tracing::error!(error = %e, "revocation lookup failed; failing closed");
            RevocationStatus::Unknown
        }
    }
}

/// `verifyConsentToken`: signature, expiry and revocation, on every call.
/// The token must also match its stored record (same node, same grant).
pub async fn verify(state: &AppState, token: &str) -> Result<ConsentTokenPayload, TokenError> {
    let checked = state.keys.keyring().check_signature(token)?;
    let status = revocation_status(
        state,
        checked.token_id(),
        checked.grant_id(),
        checked.subject(),
    )
    .await;
    checked.accept(state.clock.now(), status)
}

pub async fn renew(
    state: &AppState,
    node_key: &str,
    req: RenewRequest,
) -> ServiceResult<ConsentToken> {
    let old = state
        .store
        .token(&req.token_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("token {}", req.token_id)))?;
    if old.node_key != node_key {
        return Err(ServiceError::forbidden("the token belongs to another node"));
    }
    let grant = state.store.grant(&old.grant_id).await?.ok_or_else(|| {
        ServiceError::internal(format!(
            "grant {} of token {} is missing",
            old.grant_id, old.token_id
        ))
    })?;
    let now = state.clock.now();
    if let Some(at) = grant.revoked_at {
        return Err(ServiceError::conflict(format!(
            "grant {} was revoked at {at}; consent must be given again",
            grant.grant_id
        ))
        .with_reason("revoked"));
    }
    if now >= grant.expires_at {
        return Err(ServiceError::conflict(format!(
            "grant {} ended at {}",
            grant.grant_id, grant.expires_at
        ))
        .with_reason("grant_ended"));
    }
    let permissions: Permissions = serde_json::from_str(&grant.permissions_json).map_err(|e| {
        ServiceError::internal(format!(
            "stored permissions of grant {} are corrupt: {e}",
            grant.grant_id
        ))
    })?;
    let (token, record) = issue_token(
        state,
        &grant.grant_id,
        node_key,
        permissions,
        now,
        grant.expires_at,
    )?;
    let audit = draft(
        state,
        "token.renew",
        node_key,
        serde_json::json!({
            "grant_id": grant.grant_id,
            "token_id": record.token_id,
            "previous_token_id": old.token_id,
            "kid": record.kid,
            "expires_at": record.expires_at,
        }),
    );
    state
        .store
        .record_renewal(&record, audit)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict { what } => {
                ServiceError::conflict(what).with_reason("revoked")
            }
            other => other.into(),
        })?;
    Ok(token)
}

/// Who withdraws consent.
pub enum Revoker {
    /// The volunteer, proven by a node-key signature.
    Node(String),
    Operator(String),
    /// Anyone holding the revocation certificate.
    Certificate,
    /// The coordinator itself (an automatic trigger: the node was excluded
    /// as Byzantine).
    System,
}

impl Revoker {
    fn label(&self) -> String {
        match self {
            Self::Node(_) => "volunteer".into(),
            Self::Operator(name) => format!("operator:{name}"),
            Self::Certificate => "certificate".into(),
            Self::System => "system".into(),
        }
    }
}

pub async fn revoke(
    state: &AppState,
    token_id: &str,
    by: Revoker,
    reason: &str,
) -> ServiceResult<RevocationStatusResponse> {
    if reason.chars().count() > 500 {
        return Err(ServiceError::field(
            "reason",
            "must be at most 500 characters",
        ));
    }
    let token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("token {token_id}")))?;
    if let Revoker::Node(key) = &by
        && key != &token.node_key
    {
        return Err(ServiceError::forbidden("the token belongs to another node"));
    }
    let now = state.clock.now();
    let label = by.label();
    let audit = draft(
        state,
        "consent.revoke",
        &token.node_key,
        serde_json::json!({
            "grant_id": token.grant_id,
            "token_id": token_id,
            "by": label,
            "reason": reason,
        }),
    );
    let outcome = state
        .store
        .revoke_grant(&token.grant_id, now, reason, &label, audit)
        .await?;
    if outcome == RevokeOutcome::Revoked {
        state.metrics.count("askee_revocations_total");
        state.revocations.send_modify(|n| *n += 1);
    }
    status(state, token_id).await
}

pub async fn revoke_with_certificate(
    state: &AppState,
    token_id: &str,
    cert: RevocationCertificate,
) -> ServiceResult<RevocationStatusResponse> {
    let key = state
        .keys
        .verifying_key(&cert.kid)
        .or_else(|| state.keys.historic_key(&cert.kid))
        .ok_or_else(|| {
            ServiceError::field(
                "kid",
                format!("{} is not a key of this coordinator", cert.kid),
            )
        })?;
    signing::verify_revocation_certificate(&key, &cert)
        .map_err(|e| ServiceError::unauthorized("bad_signature", e.to_string()))?;
    let token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("token {token_id}")))?;
    if token.grant_id != cert.grant_id {
        return Err(ServiceError::field(
            "grant_id",
            "the certificate is for another grant",
        ));
    }
    revoke(
        state,
        token_id,
        Revoker::Certificate,
        "revocation certificate presented",
    )
    .await
}

/// How often a long-poll re-reads the store, to see revocations committed by
/// another server process and tokens that expire while it waits.
const WATCH_RECHECK: Duration = Duration::from_millis(250);

/// The revocation URL as a long-poll: answers as soon as the token is no
/// longer active (revoked or expired), or with its active status once `wait`
/// has passed. This is how agents learn of a revocation within a second.
pub async fn watch(
    state: &AppState,
    token_id: &str,
    wait: Duration,
) -> ServiceResult<RevocationStatusResponse> {
    let deadline = tokio::time::Instant::now() + wait.min(state.config.max_watch);
    let mut bumps = state.revocations.subscribe();
    loop {
        // Mark the current value seen before reading the store, so a
        // revocation committed after the read still wakes us.
        bumps.borrow_and_update();
        let current = status(state, token_id).await?;
        let now = tokio::time::Instant::now();
        if current.status != "active" || now >= deadline {
            return Ok(current);
        }
        let nap = (deadline - now).min(WATCH_RECHECK);
        let _ = tokio::time::timeout(nap, bumps.changed()).await;
    }
}

pub async fn status(state: &AppState, token_id: &str) -> ServiceResult<RevocationStatusResponse> {
    let token = state
        .store
        .token(token_id)
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("token {token_id}")))?;
    let grant =
        state.store.grant(&token.grant_id).await?.ok_or_else(|| {
            ServiceError::internal(format!("grant {} is missing", token.grant_id))
        })?;
    let now = state.clock.now();
    let status = if grant.revoked_at.is_some() {
        "revoked"
    } else if now >= token.expires_at {
        "expired"
    } else {
        "active"
    };
    Ok(RevocationStatusResponse {
        token_id: token.token_id,
        grant_id: token.grant_id,
        status: status.into(),
        expires_at: token.expires_at,
        revoked_at: grant.revoked_at,
        reason: grant.revoke_reason,
        revoked_by: grant.revoked_by,
    })
}

/// The signed revocation list agents cache; stale after `next_update`.
pub async fn revocation_list(state: &AppState) -> ServiceResult<SignedRevocationList> {
    let now = state.clock.now();
    let revoked = state
        .store
        .revoked_grants(now)
        .await?
        .into_iter()
        .map(|(g, token_ids)| RevokedGrant {
            grant_id: g.grant_id,
            token_ids,
            revoked_at: g.revoked_at.unwrap_or(now),
            reason: g.revoke_reason.unwrap_or_default(),
        })
        .collect();
    let signer = state.keys.signer();
    let list = RevocationList {
        version: REVOCATION_LIST_VERSION.into(),
        issuer: signer.issuer(),
        kid: signer.kid().into(),
        issued_at: now,
        next_update: now + state.config.revocation_list_lifetime.as_secs() as i64,
        revoked,
    };
    Ok(signing::sign_revocation_list(signer.signing_key(), &list))
}

/// A pending invitation and its audit entry: for a direct join (source
/// `join`, no domain) or a discovered, verified participation signal (the
/// channel as its source and the domain it was found under).
pub fn new_invitation(
    state: &AppState,
    node_key: &str,
    source: &str,
    domain: Option<&str>,
    now: i64,
) -> (CapabilityManifest, InvitationRecord, AuditDraft) {
    let manifest = manifest_for(state, new_id(), node_key, now);
    let manifest_json = String::from_utf8(canonical_json(&manifest)).expect("utf-8 json");
    let digest = manifest_digest(&manifest);
    let record = InvitationRecord {
        manifest_id: manifest.manifest_id.clone(),
        node_key: node_key.to_owned(),
        source: source.to_owned(),
        domain: domain.map(str::to_owned),
        manifest_json,
        manifest_digest: digest.clone(),
        created_at: now,
        expires_at: manifest.expires_at,
        state: InvitationState::Pending,
    };
    let audit = draft(
        state,
        "invitation.create",
        node_key,
        serde_json::json!({
            "manifest_id": record.manifest_id,
            "source": source,
            "domain": domain,
            "manifest_digest": digest,
        }),
    );
    (manifest, record, audit)
}
