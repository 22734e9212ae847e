//! Who is asking: operators by their credential, and the one-time nonces of
//! node-signed requests (the signature itself is checked from the request's
//! headers in `http::extract`).

use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{NonceClaim, OperatorRecord};

/// What the store keeps of an operator credential: its SHA-256, hex.
pub fn credential_hash(credential: &str) -> String {
    hex::encode(askee_core::signing::sha256(credential.as_bytes()))
}

/// The operator a credential belongs to.
pub async fn operator(state: &AppState, credential: &str) -> ServiceResult<OperatorRecord> {
    state
        .store
        .operator_by_token_hash(&credential_hash(credential))
        .await?
        .ok_or_else(|| {
            ServiceError::unauthorized("unknown_credential", "the operator credential is not known")
        })
}

/// Consumes the nonce of a correctly signed request; a replay is refused.
pub async fn use_nonce(state: &AppState, claim: &NonceClaim) -> ServiceResult<()> {
    let fresh = state
        .store
        .use_nonce(&claim.node_key, &claim.nonce, claim.expires_at, claim.now)
        .await?;
    if !fresh {
        return Err(ServiceError::unauthorized(
            "replayed_request",
            "this signed request was already used",
        ));
    }
    Ok(())
}
