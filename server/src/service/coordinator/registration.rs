//! Node registration: a one-time challenge, the attested registration
//! (consent token, challenge, profile) and heartbeats.

use std::net::SocketAddr;

use askee_core::coordinator::network_prefix;
use askee_core::signing::{self, verify_attestation};
use askee_core::wire::v1::{
    ConsentTokenPayload, Heartbeat, HeartbeatAck, NodeChallenge, NodeRegistered, NodeRegistration,
    NodeState,
};
use ed25519_dalek::VerifyingKey;

use super::exclusion::fold_node_events;
use super::{random_b64, registered, store_conflict};
use crate::service::consent::{self, draft};
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{NodeRecord, NodeStats};

/// A node-signed registration: who signed it, from where, and what it says.
pub struct Registration {
    pub node_key: String,
    pub key: VerifyingKey,
    /// The client's address, when known (its network prefix limits how many
    /// replicas of one task a network may hold).
    pub peer: Option<SocketAddr>,
    pub body: NodeRegistration,
}

/// A one-time challenge for the node's attestation, valid five minutes.
pub async fn challenge(state: &AppState, node_key: &str) -> ServiceResult<NodeChallenge> {
    let challenge = random_b64();
    let expires_at = state.clock.now() + 300;
    state
        .store
        .create_challenge(&challenge, node_key, expires_at)
        .await?;
    Ok(NodeChallenge {
        challenge,
        expires_at,
    })
}

/// The reputation a newly registered node starts with.
fn fresh_reputation(state: &AppState) -> u32 {
    let counters = askee_core::coordinator::NodeCounters {
        heartbeats: 1,
        heartbeat_interval: state.config.heartbeat_interval.as_secs(),
        active: true,
        ..Default::default()
    };
    askee_core::rules::node_reputation(&askee_core::coordinator::reputation_metrics(&counters))
        .map(|r| r.micros())
        .unwrap_or(0)
}

/// Registers a node: its consent token must verify and be its own, its
/// attestation must sign the challenge, and the challenge must be fresh.
pub async fn register(state: &AppState, r: Registration) -> ServiceResult<NodeRegistered> {
    let now = state.clock.now();
    let payload = attested_token(state, &r, now).await?;
    let record = node_record(state, &r, &payload, now).await?;
    let audit = draft(
        state,
        "node.register",
        &r.node_key,
        serde_json::json!({
            "token_id": payload.token_id,
            "grant_id": payload.grant_id,
            "profile_digest": hex::encode(signing::profile_digest(&r.body.profile)),
        }),
    );
    state
        .store
        .register_node(&record, audit)
        .await
        .map_err(store_conflict)?;
    let node = state
        .store
        .node(&r.node_key)
        .await?
        .ok_or_else(|| ServiceError::internal("registered node vanished"))?;
    Ok(NodeRegistered {
        node_id: r.node_key,
        state: node.state,
        reputation: f64::from(node.reputation_micros) / 1e6,
        heartbeat_interval_seconds: state.config.heartbeat_interval.as_secs(),
        token_expires_at: payload.expires_at,
    })
}

/// The registration's consent token, once it verifies, names this node,
/// and the attestation over the challenge holds; the challenge is used up.
async fn attested_token(
    state: &AppState,
    r: &Registration,
    now: i64,
) -> ServiceResult<ConsentTokenPayload> {
    let body = &r.body;
    let payload = consent::verify(state, &body.consent_token)
        .await
        .map_err(|e| consent::token_error(&e))?;
    if payload.subject != r.node_key {
        return Err(ServiceError::forbidden(
            "the consent token was issued to another node key",
        ));
    }
    verify_attestation(
        &r.key,
        &body.challenge,
        &payload.token_id,
        &body.profile,
        &body.attestation,
    )
    .map_err(|e| ServiceError::unauthorized("bad_attestation", e.to_string()))?;
    if !state
        .store
        .take_challenge(&body.challenge, &r.node_key, now)
        .await?
    {
        return Err(ServiceError::unauthorized(
            "unknown_challenge",
            "the challenge is unknown, used or expired; ask for a new one",
        ));
    }
    Ok(payload)
}

/// The stored record of a newly registered node. Its owner is the domain
/// that invited it, or the node itself.
async fn node_record(
    state: &AppState,
    r: &Registration,
    payload: &ConsentTokenPayload,
    now: i64,
) -> ServiceResult<NodeRecord> {
    let owner = match state.store.grant(&payload.grant_id).await? {
        Some(g) => state
            .store
            .invitation(&g.manifest_id)
            .await?
            .and_then(|i| i.domain)
            .unwrap_or_else(|| r.node_key.clone()),
        None => r.node_key.clone(),
    };
    let prefix = r
        .peer
        .map(|p| network_prefix(p.ip()))
        .unwrap_or_else(|| "unknown".into());
    let p = &r.body.profile;
    Ok(NodeRecord {
        node_key: r.node_key.clone(),
        token_id: payload.token_id.clone(),
        grant_id: payload.grant_id.clone(),
        token_expires_at: payload.expires_at,
        token_payload_json: serde_json::to_string(payload)
            .map_err(|e| ServiceError::internal(e.to_string()))?,
        profile_json: serde_json::to_string(p)
            .map_err(|e| ServiceError::internal(e.to_string()))?,
        cpu_cores: p.cpu.cores,
        ram_mb: p.memory.total_mb,
        storage_gb: p.storage.free_gb,
        bandwidth_mbps: p.network.bandwidth_mbps,
        owner,
        network_prefix: prefix,
        state: NodeState::Active,
        registered_at: now,
        last_heartbeat: now,
        stats: NodeStats::default(),
        reputation_micros: fresh_reputation(state),
        exclusion_reason: None,
    })
}

/// Records a heartbeat: the lease of every assignment still running is
/// extended; the answer names those to abandon.
pub async fn heartbeat(
    state: &AppState,
    node_key: &str,
    beat: &Heartbeat,
) -> ServiceResult<HeartbeatAck> {
    fold_node_events(state, node_key).await?;
    registered(state, node_key).await?;
    if beat.running.len() > 256 {
        return Err(ServiceError::field("running", "at most 256 assignments"));
    }
    let now = state.clock.now();
    let until = now + state.config.lease_duration.as_secs() as i64;
    let (node_state, abandon) = state
        .store
        .heartbeat(node_key, now, &beat.running, until)
        .await?;
    Ok(HeartbeatAck {
        state: node_state,
        next_heartbeat_seconds: state.config.heartbeat_interval.as_secs(),
        abandon,
        lease_expires_at: until,
    })
}
