//! Storage of opt-in discovery: the crawl queue (one row per domain, ordered
//! by when it is next due) and the verified signals, each tied to the one
//! invitation it created.

use async_trait::async_trait;

use super::{AuditDraft, InvitationRecord, InvitationState, StoreError};

/// A domain whose check is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDomain {
    pub domain: String,
    /// Consecutive checks that got no answer.
    pub failures: i64,
}

/// The result of checking one domain, written back to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCheck {
    pub domain: String,
    pub checked_at: i64,
    pub next_check_at: i64,
    pub failures: i64,
    /// `invited`, `known`, `withdrawn`, `rejected`, `absent` or `retry`.
    pub outcome: String,
    /// The rejection reason, or what went unanswered.
    pub reason: Option<String>,
}

/// A verified signal, before the store ties it to its invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredSignal {
    /// `""` for a QR statement without a domain.
    pub domain: String,
    pub node_key: String,
    /// `dns`, `wellknown` or `qr`.
    pub source: String,
    /// JSON of the `ParticipationSignal` as verified.
    pub signal_json: String,
    pub verified_at: i64,
}

/// A discovered invitation as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredInvitation {
    pub domain: String,
    pub node_key: String,
    pub source: String,
    pub manifest_id: String,
    pub verified_at: i64,
    pub state: InvitationState,
}

#[async_trait]
pub trait DiscoveryStore: Send + Sync {
    /// Adds domains to the queue, due at `now`; a domain already known is
    /// made due at `now` again. Returns how many were new.
    async fn add_domains(&self, domains: &[String], now: i64) -> Result<u64, StoreError>;

    /// Up to `limit` domains due at `now`, the longest-waiting first.
    async fn due_domains(&self, now: i64, limit: u32) -> Result<Vec<DueDomain>, StoreError>;

    /// Writes a batch of check results in one transaction.
    async fn record_checks(&self, checks: &[DomainCheck]) -> Result<(), StoreError>;

    /// Whether this (domain, key) was verified before.
    async fn is_discovered(&self, domain: &str, node_key: &str) -> Result<bool, StoreError>;

    /// In one transaction: stores the verified signal, its pending
    /// invitation and the audit entry, unless this (domain, key) was
    /// verified before. Returns `false` (and writes nothing) then.
    async fn record_discovered(
        &self,
        signal: &DiscoveredSignal,
        invitation: &InvitationRecord,
        audit: AuditDraft,
    ) -> Result<bool, StoreError>;

    /// In one transaction: withdraws the pending invitations discovered for
    /// `domain` (other than `keep_key`'s, when given), each with an audit
    /// entry. Returns the manifest ids withdrawn.
    async fn withdraw_discovered(
        &self,
        domain: &str,
        keep_key: Option<&str>,
        at_ms: i64,
        reason: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Discovered invitations, newest first.
    async fn discovered(&self, limit: u32) -> Result<Vec<DiscoveredInvitation>, StoreError>;
}
