//! The consent API's requests and answers (`/v1/invitations`, `/v1/grants`,
//! `/v1/tokens/*`, the revocation URL), shared by the server and the agent.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CapabilityManifest, ConsentToken, ConsentTokenPayload, RevocationCertificate};

/// A direct opt-in: the node asks for a manifest. Signed with the node key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// base64url Ed25519 public key of the node; must be the signing key.
    pub node_public_key: String,
}

/// The manifest to review, and the digest a grant must name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ManifestResponse {
    pub manifest: CapabilityManifest,
    pub manifest_digest: String,
    /// `pending`, `granted` or `withdrawn`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantResponse {
    pub grant_id: String,
    pub grant_expires_at: i64,
    pub consent_token: ConsentToken,
    pub revocation_certificate: RevocationCertificate,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The compact JWT.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub payload: ConsentTokenPayload,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Any token of the grant to renew.
    pub token_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why consent is withdrawn (free text, at most 500 characters).
    pub reason: String,
}

/// The state of a token as the revocation URL reports it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationStatusResponse {
    pub token_id: String,
    pub grant_id: String,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub reason: Option<String>,
    pub revoked_by: Option<String>,
}
