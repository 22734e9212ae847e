//! What operators ask of discovery: domains for the crawl queue, the
//! invitations found, QR code images uploaded by hand.

use askee_core::signal::{self, Freshness};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DiscoveryError, Outcome};
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// Most domains one request may submit.
pub const MAX_DOMAINS_PER_REQUEST: usize = 2000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitDomains {
    /// Domain names (ASCII; IDNs in their xn-- form), at most 2,000.
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefusedDomain {
    pub domain: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitDomainsResponse {
    /// Domains queued (due now).
    pub queued: u64,
    /// How many of them the crawler did not know before.
    pub new: u64,
    pub refused: Vec<RefusedDomain>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredInvitationView {
    /// Empty for a QR statement without a domain.
    pub domain: String,
    pub node_public_key: String,
    /// `dns`, `wellknown` or `qr`.
    pub source: String,
    pub manifest_id: String,
    pub verified_at: i64,
    /// `pending`, `granted` or `withdrawn`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiscoveredInvitations {
    pub invitations: Vec<DiscoveredInvitationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QrImportResponse {
    /// `invited` (a new invitation) or `known` (verified before).
    pub outcome: String,
    pub manifest_id: Option<String>,
}

/// Queues the valid domains for the next crawl and names the refused ones.
pub async fn submit_domains(
    state: &AppState,
    domains: Vec<String>,
) -> ServiceResult<SubmitDomainsResponse> {
    if domains.len() > MAX_DOMAINS_PER_REQUEST {
        return Err(ServiceError::field(
            "domains",
            format!("at most {MAX_DOMAINS_PER_REQUEST} per request"),
        ));
    }
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for d in domains {
        match signal::normalize_domain(&d) {
            Ok(n) => ok.push(n),
            Err(e) => refused.push(RefusedDomain {
                domain: d,
                reason: e.to_string(),
            }),
        }
    }
    ok.sort();
    ok.dedup();
    let new = state
        .store
        .discovery()
        .add_domains(&ok, state.clock.now())
        .await?;
    Ok(SubmitDomainsResponse {
        queued: ok.len() as u64,
        new,
        refused,
    })
}

/// The newest discovered invitations (`limit` is clamped to 1..=1000,
/// 100 when absent).
pub async fn discovered(
    state: &AppState,
    limit: Option<u32>,
) -> ServiceResult<DiscoveredInvitations> {
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.discovery().discovered(limit).await?;
    Ok(DiscoveredInvitations {
        invitations: rows
            .into_iter()
            .map(|r| DiscoveredInvitationView {
                domain: r.domain,
                node_public_key: r.node_key,
                source: r.source,
                manifest_id: r.manifest_id,
                verified_at: r.verified_at,
                state: r.state.as_str().into(),
            })
            .collect(),
    })
}

/// Imports an uploaded QR code image; a manifest id in the answer means a
/// new invitation was queued.
pub async fn upload_qr(state: &AppState, png: &[u8]) -> ServiceResult<QrImportResponse> {
    match super::import_qr(state, png, Freshness::default()).await {
        Ok(Outcome::Invited { manifest_id }) => Ok(QrImportResponse {
            outcome: "invited".into(),
            manifest_id: Some(manifest_id),
        }),
        Ok(_) => Ok(QrImportResponse {
            outcome: "known".into(),
            manifest_id: None,
        }),
        Err(DiscoveryError::Store(e)) => Err(e.into()),
        Err(DiscoveryError::QrRejected(r)) => {
            Err(ServiceError::field("qr", r.to_string()).with_reason(r.reason()))
        }
        Err(e) => Err(ServiceError::field("qr", e.to_string()).with_reason("unreadable")),
    }
}
