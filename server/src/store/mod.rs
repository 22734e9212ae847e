//! The storage layer: one trait, two backends (embedded SQLite, the default,
//! and PostgreSQL for production and several server processes).
//!
//! Every method that changes state does so in one transaction together with
//! its audit entries, so a crash leaves either all of an action or none of it.

use async_trait::async_trait;

use askee_core::merkle::Hash;
use askee_core::wire::v1::AuditEntry;

pub mod dashboard;
pub mod discovery;
mod sql;
pub mod work;

pub use work::*;

pub use sql::{SqlStore, default_pool_size, open, open_with};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported database url {url:?}: use sqlite:// or postgres://")]
    Url { url: String },
    #[error("migrating the {backend:?} database failed: {source}")]
    Migrate {
        backend: Backend,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error during {op}: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what} already exists")]
    Duplicate { what: String },
    #[error("conflict: {what}")]
    Conflict { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// A node reported on an assignment that is not its own (a policy
    /// violation, not a mere conflict).
    #[error("assignment {assignment_id} is not this node's replica of task {task_id}")]
    ForeignAssignment {
        assignment_id: String,
        task_id: String,
    },
    /// A node's report claims what no honest agent can (a malicious pattern).
    #[error("the report on assignment {assignment_id} claims {claim}, which no honest agent can")]
    ImpossibleClaim {
        assignment_id: String,
        claim: String,
    },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    /// A signed request's nonce was already used (a replay), found inside
    /// the transaction that was to consume it.
    #[error("nonce {nonce} of node {node_key} was already used")]
    ReplayedNonce { node_key: String, nonce: String },
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationState {
    Pending,
    Granted,
    Withdrawn,
}

impl InvitationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "granted" => Self::Granted,
            "withdrawn" => Self::Withdrawn,
            _ => return None,
        })
    }
}

/// An invitation and the capability manifest made for it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitationRecord {
    pub manifest_id: String,
    /// base64url node public key.
    pub node_key: String,
    /// How the volunteer opted in: `join`, `dns`, `wellknown`, `qr`.
    pub source: String,
    pub domain: Option<String>,
    /// Canonical JSON of the `CapabilityManifest`, exactly as shown.
    pub manifest_json: String,
    /// base64url SHA-256 of `manifest_json`.
    pub manifest_digest: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: InvitationState,
}

/// A volunteer's signed grant: the stored proof of consent.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRecord {
    pub grant_id: String,
    pub manifest_id: String,
    pub node_key: String,
    /// base64url of the exact signed statement bytes.
    pub statement: String,
    /// base64url node-key signature over the statement.
    pub signature: String,
    /// JSON of the granted `Permissions`.
    pub permissions_json: String,
    pub granted_at: i64,
    /// End of the grant; tokens are renewed until then.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    /// Who revoked: `volunteer`, `operator:<name>`, `certificate`, `system`.
    pub revoked_by: Option<String>,
}

/// One issued consent token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub token_id: String,
    pub grant_id: String,
    pub node_key: String,
    pub kid: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// The compact JWT.
    pub jwt: String,
}

/// An audit entry before the store gives it its index.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub timestamp_ms: i64,
    pub kind: String,
    pub subject: String,
    pub data: serde_json::Value,
}

/// An audit entry as stored: the entry, its exact leaf bytes and leaf hash.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAuditEntry {
    /// The row's index (its place in the log), whatever the body claims.
    pub index: u64,
    /// The entry as the row's columns describe it, with `data` from the body
    /// (`null` when the body does not parse).
    pub entry: AuditEntry,
    /// The canonical JSON bytes the leaf hash was computed over, as stored.
    pub body: String,
    pub leaf_hash: Hash,
}

/// A signed checkpoint of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    pub size: u64,
    pub root: Hash,
    /// The C2SP signed note.
    pub note: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OperatorRecord {
    pub name: String,
    /// Hex SHA-256 of the operator's bearer credential.
    pub token_hash: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RevokeOutcome {
    /// The grant is now revoked.
    Revoked,
    /// It was revoked before; the first revocation stands.
    AlreadyRevoked { at: i64, reason: String },
}

#[async_trait]
pub trait Store: CoordinatorStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// The discovery crawler's queue and verified signals.
    fn discovery(&self) -> &dyn discovery::DiscoveryStore;

    /// Read-only views for the dashboard and the volunteer's status page.
    fn dashboard(&self) -> &dyn dashboard::DashboardStore;

    /// Answers when the database is reachable (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new pending invitation with its audit entry.
    async fn create_invitation(
        &self,
        invitation: &InvitationRecord,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;

    async fn invitation(&self, manifest_id: &str) -> Result<Option<InvitationRecord>, StoreError>;

    /// In one transaction: moves the invitation from pending to granted
    /// (`Conflict` when it is not pending, so a manifest is granted once),
    /// stores the grant and its first token, and appends the audit entries.
    async fn record_grant(
        &self,
        grant: &GrantRecord,
        token: &TokenRecord,
        audit: Vec<AuditDraft>,
    ) -> Result<(), StoreError>;

    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>, StoreError>;

    async fn grants_of_node(&self, node_key: &str) -> Result<Vec<GrantRecord>, StoreError>;

    async fn token(&self, token_id: &str) -> Result<Option<TokenRecord>, StoreError>;

    async fn tokens_of_grant(&self, grant_id: &str) -> Result<Vec<TokenRecord>, StoreError>;

    /// In one transaction: refuses (`Conflict`) when the grant is revoked or
    /// `token.issued_at` is at or past its end, else stores the token and
    /// appends the audit entry. The check and the insert cannot interleave
    /// with a revocation.
    async fn record_renewal(
        &self,
        token: &TokenRecord,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;

    /// In one transaction: revokes the grant (and so every token under it)
    /// unless already revoked, and appends the audit entry only when it
    /// changed something. `NotFound` for an unknown grant.
    async fn revoke_grant(
        &self,
        grant_id: &str,
        at: i64,
        reason: &str,
        by: &str,
        audit: AuditDraft,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Revoked grants whose end is after `now`, each with its token ids:
    /// the content of the signed revocation list.
    async fn revoked_grants(&self, now: i64)
    -> Result<Vec<(GrantRecord, Vec<String>)>, StoreError>;

    /// Records a request nonce for replay protection. Returns `false` when
    /// this (key, nonce) was seen before. Forgets nonces past `expires_at`.
    async fn use_nonce(
        &self,
        node_key: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    async fn create_operator(
        &self,
        operator: &OperatorRecord,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;

    async fn operator_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<OperatorRecord>, StoreError>;

    /// Appends entries in one transaction; returns their indices.
    async fn append_audit(&self, drafts: Vec<AuditDraft>) -> Result<Vec<u64>, StoreError>;

    async fn audit_size(&self) -> Result<u64, StoreError>;

    /// Entries with `start <= index < end`, in index order, as stored (no
    /// checking: `audit verify` compares them with their hashes).
    async fn audit_entries(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError>;

    /// The stored leaf hashes of entries `0..end`, in index order.
    async fn audit_leaf_hashes(&self, end: u64) -> Result<Vec<Hash>, StoreError>;

    /// Stores a checkpoint; a second one of the same size is ignored.
    async fn save_checkpoint(&self, checkpoint: &CheckpointRecord) -> Result<(), StoreError>;

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError>;

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError>;
}
