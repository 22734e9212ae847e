//! The consent portal's pairing API (`/v1/portal/pairings`,
//! `/v1/portal/session`), shared by the server and the agent that pairs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ManifestResponse, Permissions};

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

/// What the volunteer chose in the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChoiceRequest {
    /// The limits chosen: each at most what the manifest proposed.
    pub permissions: Permissions,
    /// When the grant should end (unix seconds), at most the manifest's
    /// `grant_expires_at_max`.
    pub grant_expires_at: i64,
}
