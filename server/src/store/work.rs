//! The coordinator's part of the storage layer: nodes, operator keys,
//! modules, tasks and their replicas (assignments).
//!
//! Invariants the implementation keeps in one transaction each:
//! - a task never has more live replicas (`leased` or `reported`) than it
//!   wants, and never two on one node (`UNIQUE (task_id, node_key)`);
//! - a result is recorded once per assignment (a second report is answered
//!   `recorded: false`), and counted once per node by the quorum;
//! - an accepted or failed task gets its audit entry (with the evidence) in
//!   the transaction that decides it.

use async_trait::async_trait;

use askee_core::rules::ByzantinePolicy;
use askee_core::wire::v1::{NodeState, ReportStatus, TaskState};

use super::{AuditDraft, StoreError};

// A node's counters and the misbehaviour counted in them are plain data the
// verdicts read; they live in `crate::verdict`.
pub use crate::verdict::{Misbehaviour, NodeStats};

/// A registered node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub node_key: String,
    pub token_id: String,
    pub grant_id: String,
    pub token_expires_at: i64,
    /// JSON of the consent token's payload (`ConsentTokenPayload`).
    pub token_payload_json: String,
    /// JSON of the node's `SystemProfile`.
    pub profile_json: String,
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
    /// Who stands behind the node (Sybil diversity); the grant's domain or
    /// the node key itself.
    pub owner: String,
    pub network_prefix: String,
    pub state: NodeState,
    pub registered_at: i64,
    pub last_heartbeat: i64,
    pub stats: NodeStats,
    pub reputation_micros: u32,
    pub exclusion_reason: Option<String>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub task_id: String,
    pub operator: String,
    pub operator_key: String,
    /// Canonical JSON of the signed `TaskStatement`.
    pub statement_json: String,
    pub signature: String,
    pub module_sha256: String,
    pub task_type: String,
    pub duration_hours: u32,
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
    pub f: u32,
    pub max_replicas: u32,
    pub adaptive: bool,
    pub known_digest: Option<String>,
    /// A bootstrapping challenge: only for nodes earning eligibility.
    pub bootstrap: bool,
    pub deadline: i64,
    pub state: TaskState,
    pub replicas_wanted: u32,
    pub replicas_active: u32,
    pub replicas_total: u32,
    pub results_received: u32,
    /// Set when adaptive replication gave the task to this node alone.
    pub trusted_node: Option<String>,
    pub accepted_digest: Option<String>,
    pub reason: Option<String>,
    pub audit_index: Option<u64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Where a replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentState {
    Leased,
    Reported,
    Expired,
    Failed,
    Abandoned,
}

impl AssignmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leased => "leased",
            Self::Reported => "reported",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "leased" => Self::Leased,
            "reported" => Self::Reported,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            "abandoned" => Self::Abandoned,
            _ => return None,
        })
    }
}

/// One replica of a task on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRecord {
    pub assignment_id: String,
    pub task_id: String,
    pub node_key: String,
    pub state: AssignmentState,
    pub leased_at: i64,
    pub lease_expires_at: i64,
    pub status: Option<ReportStatus>,
    pub result_digest: Option<String>,
    pub signature: Option<String>,
    pub exit_code: Option<i32>,
    /// base64url stdout as reported.
    pub stdout: Option<String>,
    pub failure: Option<String>,
    /// `agreed` or `wrong` once judged.
    pub verdict: Option<String>,
    pub reported_at_ms: Option<i64>,
}

/// What the lease caller decides about one candidate task for this node.
pub use askee_core::coordinator::LeaseChoice;

/// A lease request as the store sees it.
pub struct LeaseQuery<'a> {
    pub node_key: &'a str,
    pub owner: &'a str,
    pub network_prefix: &'a str,
    pub max_tasks: u32,
    /// Task types to consider (already narrowed to the token's allowlist).
    pub task_types: &'a [String],
    /// Bootstrapping challenges (a node still earning eligibility) instead
    /// of ordinary tasks.
    pub challenges_only: bool,
    pub now: i64,
    pub lease_expires_at: i64,
    pub new_id: &'a (dyn Fn() -> String + Send + Sync),
    pub choose: &'a (dyn Fn(&TaskRecord) -> LeaseChoice + Send + Sync),
}

/// A result report as the store sees it (signature already verified).
#[derive(Debug, Clone)]
pub struct ResultInput {
    pub node_key: String,
    pub assignment_id: String,
    pub task_id: String,
    pub status: ReportStatus,
    pub result_digest: String,
    pub signature: String,
    pub exit_code: i32,
    pub stdout: String,
    pub failure: String,
    /// Fuel the node says the replica consumed (signed with the request).
    pub fuel_consumed: u64,
    pub now_ms: i64,
    pub heartbeat_interval: u64,
    pub policy: ByzantinePolicy,
}

/// A signed request's nonce, checked but not yet consumed: the store
/// consumes it inside the transaction of the request's work (one commit per
/// request instead of two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceClaim {
    pub node_key: String,
    pub nonce: String,
    pub expires_at: i64,
    pub now: i64,
}

/// A node newly marked Byzantine (its token must now be revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub node_key: String,
    pub token_id: String,
    pub reason: String,
}

/// What recording one result did. Exclusions no longer come from here: a
/// report appends node events, and exclusion is evaluated when they are
/// folded (`fold_node`, `fold_pending`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultOutcome {
    pub recorded: bool,
    pub task_state: TaskState,
}

/// What a sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub leases_expired: u64,
    pub nodes_offline: u64,
    pub tasks_failed: u64,
}

#[async_trait]
pub trait CoordinatorStore: Send + Sync {
    /// Remembers a registration challenge for a node key.
    async fn create_challenge(
        &self,
        challenge: &str,
        node_key: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Consumes a challenge: `true` when it existed for this node and had not
    /// expired. A challenge is usable once.
    async fn take_challenge(
        &self,
        challenge: &str,
        node_key: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Registers a node or renews its registration (new token, profile,
    /// state active), keeping its counters. `Conflict` for a Byzantine node.
    async fn register_node(&self, node: &NodeRecord, audit: AuditDraft) -> Result<(), StoreError>;

    async fn node(&self, node_key: &str) -> Result<Option<NodeRecord>, StoreError>;

    /// Records a heartbeat and extends the leases of `running` that are still
    /// live; returns the node's state and the ids to abandon.
    async fn heartbeat(
        &self,
        node_key: &str,
        now: i64,
        running: &[String],
        lease_expires_at: i64,
    ) -> Result<(NodeState, Vec<String>), StoreError>;

    async fn add_operator_key(
        &self,
        operator: &str,
        public_key: &str,
        now: i64,
        audit: AuditDraft,
    ) -> Result<(), StoreError>;

    /// The operator owning a registered public key.
    async fn operator_of_key(&self, public_key: &str) -> Result<Option<String>, StoreError>;

    /// Stores module bytes under their SHA-256; `false` when already stored.
    async fn put_module(
        &self,
        sha256: &str,
        bytes: &[u8],
        operator: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    async fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;

    async fn module_size(&self, sha256: &str) -> Result<Option<u64>, StoreError>;

    /// Inserts tasks (one transaction); for each, `false` when the task id
    /// already existed. `audits[i]` is appended when `tasks[i]` is new.
    async fn create_tasks(
        &self,
        tasks: &[TaskRecord],
        audits: Vec<AuditDraft>,
    ) -> Result<Vec<bool>, StoreError>;

    async fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError>;

    async fn assignments_of_task(&self, task_id: &str)
    -> Result<Vec<AssignmentRecord>, StoreError>;

    /// Leases up to `max_tasks` replicas to a node (PostgreSQL: `FOR UPDATE
    /// SKIP LOCKED`, so concurrent servers take different tasks).
    async fn lease(
        &self,
        query: LeaseQuery<'_>,
    ) -> Result<Vec<(AssignmentRecord, TaskRecord)>, StoreError>;

    async fn assignment(&self, assignment_id: &str)
    -> Result<Option<AssignmentRecord>, StoreError>;

    /// Records a result and runs the quorum decision, in one transaction.
    async fn record_result(&self, input: ResultInput) -> Result<ResultOutcome, StoreError> {
        let mut outcomes = self.record_results(None, vec![input]).await?;
        outcomes.pop().unwrap_or_else(|| {
            Err(StoreError::Corrupt {
                what: "result batch outcome".into(),
                detail: "no outcome for the one result".into(),
            })
        })
    }

    /// Records several results of one node in ONE transaction (consuming
    /// `nonce` in it first: `ReplayedNonce` when it was used, and nothing is
    /// stored). Items are processed in task order (so concurrent batches
    /// lock task rows in one order); the outcomes are in input order. An
    /// item that names an unknown task or assignment, another node's
    /// assignment (`ForeignAssignment`) or makes an impossible claim gets
    /// that error as its outcome and changes nothing; any other error
    /// rolls the whole batch back. Counter changes for the nodes involved
    /// are appended as node events, never written to other nodes' rows.
    async fn record_results(
        &self,
        nonce: Option<&NonceClaim>,
        inputs: Vec<ResultInput>,
    ) -> Result<Vec<Result<ResultOutcome, StoreError>>, StoreError>;

    /// Folds a node's pending events into its counters and reputation and
    /// evaluates Byzantine exclusion on the result (returned when new). A
    /// read-only no-op when nothing is pending.
    async fn fold_node(
        &self,
        node_key: &str,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Option<Exclusion>, StoreError>;

    /// Folds the pending events of up to `limit` nodes that have an event
    /// from before `before_ms` (sweeper: nodes that stopped leasing;
    /// ledger: every node, with `before_ms` past now).
    async fn fold_pending(
        &self,
        limit: u32,
        before_ms: i64,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Vec<Exclusion>, StoreError>;

    /// Counts an invalid signature or a policy violation against a node
    /// and excludes it when the policy says so.
    /// `heartbeat_interval` (seconds) is the server's, for the uptime rate
    /// in the recomputed reputation.
    async fn record_misbehaviour(
        &self,
        node_key: &str,
        kind: Misbehaviour,
        what: &str,
        now_ms: i64,
        heartbeat_interval: u64,
        policy: ByzantinePolicy,
    ) -> Result<Option<Exclusion>, StoreError>;

    /// Cancels a pending task of this operator. `Conflict` when final.
    async fn cancel_task(
        &self,
        task_id: &str,
        operator: &str,
        now_ms: i64,
        audit: AuditDraft,
    ) -> Result<TaskRecord, StoreError>;

    /// Expires overdue leases, marks silent nodes offline (putting their
    /// work back) and fails tasks past their deadline.
    async fn sweep(
        &self,
        now: i64,
        offline_before: i64,
        now_ms: i64,
    ) -> Result<SweepReport, StoreError>;

    /// Nodes by reputation, highest first.
    async fn reputation_ledger(&self, limit: u32) -> Result<Vec<NodeRecord>, StoreError>;

    /// Byzantine nodes whose grant is not revoked yet (repair after a crash
    /// between exclusion and revocation).
    async fn excluded_unrevoked(&self) -> Result<Vec<Exclusion>, StoreError>;
}
