//! `askee-agent consent portal`: review and choose in the browser, sign here.
//!
//! The agent asks the coordinator for a one-time pairing (a node-signed
//! request naming the pending manifest), prints the page link with the
//! session secret in its fragment, and waits on the session (a long-poll, no
//! sleeping). When the volunteer has chosen limits in the page, the agent
//! checks the choice against the manifest it holds itself (same manifest
//! digest, never wider than proposed), shows it, signs a grant over exactly
//! that manifest and those limits with the node key and submits it. The page
//! never holds the key, so it can never grant on its own.

use std::time::Duration;

use askee_core::signing::{self, manifest_digest};
use askee_core::wire::v1::{
    CapabilityManifest, GRANT_STATEMENT_VERSION, GrantResponse, GrantStatement,
    PortalPairingRequest, PortalSession,
};
use ed25519_dalek::SigningKey;

use crate::client::{ClientError, Coordinator};

pub use askee_core::portal::SESSION_HEADER;
/// One long-poll on the session.
const POLL: Duration = Duration::from_secs(50);

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the coordinator's answer is not what was expected: {0}")]
    Answer(String),
    #[error(
        "the portal session expired before a choice was made; run `askee-agent consent portal` again"
    )]
    Expired,
    #[error(
        "the manifest in the portal ({shown}) is not the one this agent reviewed ({held}); refusing to sign"
    )]
    ManifestMismatch { shown: String, held: String },
    #[error("the limits chosen in the portal are wider than proposed: {0}; refusing to sign")]
    Wider(String),
    #[error(
        "the portal chose an end {chosen} later than the manifest allows ({max}); refusing to sign"
    )]
    TooLong { chosen: i64, max: i64 },
}

/// A one-time pairing: the session secret and the page to open.
pub use askee_core::wire::v1::PortalPairing as Pairing;

/// What the volunteer chose in the page.
pub use askee_core::portal::ChoiceRequest as Choice;

/// Opens a pairing: for `manifest` (review and grant) or status only.
pub async fn pair(client: &Coordinator, manifest_id: Option<&str>) -> Result<Pairing, PortalError> {
    let request = PortalPairingRequest {
        manifest_id: manifest_id.map(str::to_owned),
    };
    Ok(client.signed_post("/v1/portal/pairings", &request).await?)
}

/// Waits until the page has recorded a choice, and checks it against the
/// manifest this agent holds.
pub async fn wait_for_choice(
    client: &Coordinator,
    pairing: &Pairing,
    held: &CapabilityManifest,
    now: impl Fn() -> i64,
) -> Result<Choice, PortalError> {
    let headers = [(SESSION_HEADER, pairing.session.as_str())];
    loop {
        if now() >= pairing.expires_at {
            return Err(PortalError::Expired);
        }
        let view: PortalSession = serde_json::from_value(
            client
                .get_with("/v1/portal/session?wait=50&seen=review", &headers, POLL)
                .await?,
        )
        .map_err(|e| PortalError::Answer(format!("session: {e}")))?;
        match view.state.as_str() {
            "review" => continue,
            "chosen" => {}
            other => {
                return Err(PortalError::Answer(format!(
                    "session state {other:?} while waiting for a choice"
                )));
            }
        }
        let shown = view
            .manifest
            .ok_or_else(|| PortalError::Answer("a chosen session without its manifest".into()))?
            .manifest;
        let (shown_digest, held_digest) = (manifest_digest(&shown), manifest_digest(held));
        if shown_digest != held_digest || shown.manifest_id != held.manifest_id {
            return Err(PortalError::ManifestMismatch {
                shown: shown_digest,
                held: held_digest,
            });
        }
        let choice = view
            .choice
            .ok_or_else(|| PortalError::Answer("a chosen session without its choice".into()))?;
        let wider = askee_core::validate::narrowing(&choice.permissions, &held.proposed, "");
        if !wider.is_empty() {
            let list: Vec<String> = wider.iter().map(ToString::to_string).collect();
            return Err(PortalError::Wider(list.join("; ")));
        }
        if choice.grant_expires_at > held.grant_expires_at_max {
            return Err(PortalError::TooLong {
                chosen: choice.grant_expires_at,
                max: held.grant_expires_at_max,
            });
        }
        return Ok(choice);
    }
}

/// Signs a grant over exactly `held` and `choice` and submits it through the
/// pairing; answers the coordinator's grant response.
pub async fn sign_and_submit(
    client: &Coordinator,
    key: &SigningKey,
    pairing: &Pairing,
    held: &CapabilityManifest,
    choice: &Choice,
    now: i64,
) -> Result<GrantResponse, PortalError> {
    let statement = GrantStatement {
        version: GRANT_STATEMENT_VERSION.into(),
        manifest_id: held.manifest_id.clone(),
        manifest_digest: manifest_digest(held),
        node_public_key: client.node_id(),
        permissions: choice.permissions.clone(),
        grant_expires_at: choice.grant_expires_at,
        signed_at: now,
        nonce: uuid::Uuid::new_v4().simple().to_string(),
    };
    let signed = signing::sign_grant(key, &statement);
    let headers = [(SESSION_HEADER, pairing.session.as_str())];
    Ok(client
        .post_with("/v1/portal/grant", &headers, &signed)
        .await?)
}
