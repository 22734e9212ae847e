//! Version 1 of the coordinator protocol: node attestation, work leases,
//! result reports and operator tasks.
//!
//! Protocol. A node (an agent holding an Ed25519 node key and a consent
//! token issued for that key) first asks for a one-time challenge
//! (`POST /v1/nodes/challenge`, node-signed, body [`ChallengeRequest`]) and
//! registers (`POST /v1/nodes/register`, node-signed, body
//! [`NodeRegistration`]): the body carries the compact consent-token JWT, the
//! node's [`SystemProfile`](super::SystemProfile) (kept as its capabilities)
//! and an attestation signature made with
//! [`sign_attestation`](crate::signing::sign_attestation) over the challenge,
//! the token id and the SHA-256 of the profile's canonical JSON; the token's
//! subject must be the signing key. The node then sends heartbeats
//! (`POST /v1/nodes/heartbeat`, [`Heartbeat`]) that also extend the leases of
//! the assignments it is still running, and pulls work
//! (`POST /v1/work/lease`, [`LeaseRequest`] → [`LeaseResponse`]). Each
//! [`Assignment`] carries the operator-signed [`TaskStatement`] (the agent
//! verifies [`verify_task`](crate::signing::verify_task) against the
//! operator key it names and the module's SHA-256 after fetching the bytes
//! with a plain `GET` of `module.url`; modules are content addressed). When
//! the task ends the node reports (`POST /v1/work/results`,
//! [`ResultReport`]) the result digest computed by
//! `askee_sandbox::digest::result_digest` and its signature over a
//! [`ResultStatement`]; reports are idempotent per assignment. An expired
//! lease puts the replica back. The coordinator accepts a result when `f+1`
//! of at least `2f+1` replicas on distinct nodes sign the same digest.
//! Operators (bearer credential plus a registered Ed25519 operator key)
//! upload modules (`PUT /v1/modules/{sha256}`), submit signed tasks
//! (`POST /v1/tasks`, `POST /v1/tasks/batch`), read status and evidence
//! (`GET /v1/tasks/{id}`), follow progress as server-sent events
//! (`GET /v1/tasks/{id}/events`) and cancel (`POST /v1/tasks/{id}/cancel`).
//! Every agent-facing request carries the node-signed headers
//! (`askee-node-key`, `askee-timestamp`, `askee-nonce`, `askee-signature`).
//! Fields are only ever appended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::SystemProfile;

/// The `version` of every v1 task statement.
pub const TASK_STATEMENT_VERSION: &str = "askee-task/1";

/// Body of `POST /v1/nodes/challenge` (node-signed). Empty today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {}

/// A one-time registration challenge for one node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeChallenge {
    /// base64url of 32 random bytes.
    pub challenge: String,
    /// Unix seconds; the challenge is refused after this.
    pub expires_at: i64,
}

/// Body of `POST /v1/nodes/register` (node-signed by the node key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistration {
    /// The challenge from `POST /v1/nodes/challenge`.
    pub challenge: String,
    /// The compact consent-token JWT whose subject is this node key.
    pub consent_token: String,
    /// What the resource profiler found: the node's capabilities.
    pub profile: SystemProfile,
    /// base64url Ed25519 signature by the node key over the attestation
    /// bytes (`askee_core::signing::attestation_bytes`).
    pub attestation: String,
}

/// A node's state at the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Registered with a valid token and heartbeating: may get work.
    Active,
    /// Missed its heartbeats; its leases were put back.
    Offline,
    /// Marked Byzantine: reputation zero, excluded, token revoked.
    Byzantine,
    /// Its consent token was revoked or expired; re-register with a new one.
    Revoked,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Offline => "offline",
            Self::Byzantine => "byzantine",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "active" => Self::Active,
            "offline" => Self::Offline,
            "byzantine" => Self::Byzantine,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeRegistered {
    /// The node key (base64url): the node's id.
    pub node_id: String,
    pub state: NodeState,
    /// Current reputation, 0 to 1.
    pub reputation: f64,
    /// Send a heartbeat at least this often.
    pub heartbeat_interval_seconds: u64,
    /// Until when the registration holds (the consent token's expiry).
    pub token_expires_at: i64,
}

/// Body of `POST /v1/nodes/heartbeat` (node-signed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Assignments the node is still working on: their leases are extended.
    #[serde(default)]
    pub running: Vec<String>,
    /// Whether the node would take more work now (idle, within its limits).
    #[serde(default)]
    pub accepting_work: bool,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    pub state: NodeState,
    /// Send the next heartbeat within this many seconds.
    pub next_heartbeat_seconds: u64,
    /// Of `running`: assignments to stop (cancelled, expired or the task
    /// is already decided). Their results would not count.
    pub abandon: Vec<String>,
    /// New lease expiry (unix seconds) for the still valid `running` ones.
    pub lease_expires_at: i64,
}

/// Body of `POST /v1/work/lease` (node-signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// At most this many assignments (1 to 64).
    pub max_tasks: u32,
    /// Only these task types; empty means any the token allows.
    #[serde(default)]
    pub task_types: Vec<String>,
}

/// Answer to a lease request; empty `assignments` means no work now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseResponse {
    pub assignments: Vec<Assignment>,
    /// When there is no work: ask again after this many seconds.
    pub retry_after_seconds: u64,
}

/// Where to fetch a module's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleRef {
    /// Lower-case hex SHA-256 of the module bytes.
    pub sha256: String,
    /// Path (relative to the coordinator's API base) for a plain `GET` of
    /// the bytes, e.g. `/v1/modules/<sha256>`.
    pub url: String,
    pub size_bytes: u64,
}

/// The inputs of a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInputs {
    /// Command-line arguments (argv[1..]).
    #[serde(default)]
    pub args: Vec<String>,
    /// base64url of the bytes on standard input.
    #[serde(default)]
    pub stdin: String,
    /// Input files by relative name, each the base64url of its bytes; shown
    /// to the task read-only under `/input`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// What a task needs from a node (matched against its profile and token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequirements {
    pub cpu_cores: u32,
    pub ram_mb: u64,
    pub storage_gb: u64,
    pub bandwidth_mbps: u64,
}

/// The sandbox limits a task runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskLimits {
    /// WebAssembly fuel (deterministic work units).
    pub fuel: u64,
    pub memory_mb: u64,
    /// Wall-clock seconds of running (frozen time not counted).
    pub wall_seconds: u64,
    /// Highest CPU share, 1 to 100.
    pub cpu_percent: u32,
}

/// What an operator signs: the whole definition of a task. The task id is
/// [`task_id`](crate::signing::task_id) of it, so submitting the same
/// statement twice is one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskStatement {
    /// Always `"askee-task/1"`.
    pub version: String,
    /// Lower-case hex SHA-256 of the WebAssembly module.
    pub module_sha256: String,
    /// From the coordinator's allowlist.
    pub task_type: String,
    pub inputs: TaskInputs,
    pub requirements: TaskRequirements,
    pub limits: TaskLimits,
    /// The seed for the task's deterministic randomness.
    pub random_seed: u64,
    /// Unix seconds; after it the task fails if not verified.
    pub deadline: i64,
    /// Byzantine replicas tolerated: `2f+1` replicas, `f+1` must agree.
    pub f: u32,
    /// Most replicas ever assigned (at least `2f+1`).
    pub max_replicas: u32,
    /// Adaptive replication: a node with a long clean record may be trusted
    /// alone, with random spot checks.
    #[serde(default)]
    pub adaptive: bool,
    /// Makes otherwise equal statements distinct tasks.
    pub nonce: String,
}

/// An operator's signed task as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    pub statement: TaskStatement,
    /// The operator's registered Ed25519 key (base64url).
    pub operator_public_key: String,
    /// base64url (no padding) Ed25519 signature over `askee-task-v1\0`
    /// followed by the statement's canonical JSON (`signing::sign_task`):
    /// compact (no whitespace), every member present, object members in the
    /// order of the schema's `properties`, map entries sorted by key bytes,
    /// strings escaping only `"`, backslash and control characters.
    pub signature: String,
    /// Known correct result digest (hex), for bootstrapping challenges and
    /// spot checks; kept by the coordinator, never sent to nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_digest: Option<String>,
    /// A bootstrapping challenge (needs `known_digest`): offered only to
    /// nodes still earning eligibility, never to established ones.
    #[serde(default)]
    pub bootstrap: bool,
}

/// Body of `POST /v1/tasks/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBatch {
    pub tasks: Vec<TaskSubmission>,
}

/// Answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskCreated {
    pub task_id: String,
    /// False when the same statement was already submitted.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskBatchCreated {
    pub tasks: Vec<TaskCreated>,
}

/// One replica handed to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub assignment_id: String,
    pub task_id: String,
    pub module: ModuleRef,
    /// The statement exactly as the operator signed it.
    pub statement: TaskStatement,
    /// The operator key (base64url) and its signature over `statement`.
    pub operator_public_key: String,
    pub operator_signature: String,
    /// Unix seconds; report (or extend by heartbeat) before this.
    pub lease_expires_at: i64,
}

/// How a replica ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Ran to completion; `result_digest` is set.
    Completed,
    /// Could not run or was killed (limits, trap, sandbox refused); the
    /// replica goes back to the pool.
    Failed,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// Resources a replica used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceUsage {
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
    #[serde(default)]
    pub fuel_consumed: u64,
}

/// Body of `POST /v1/work/results` (node-signed). Idempotent per assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultReport {
    pub assignment_id: String,
    pub task_id: String,
    pub status: ReportStatus,
    /// Lower-case hex of `askee_sandbox::digest::result_digest`; empty when
    /// `status` is `failed`.
    #[serde(default)]
    pub result_digest: String,
    #[serde(default)]
    pub exit_code: i32,
    /// base64url of standard output (may be capped by the coordinator).
    #[serde(default)]
    pub stdout: String,
    /// Output files by path, each base64url.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Why it failed, in words, when `status` is `failed`.
    #[serde(default)]
    pub failure: String,
    #[serde(default)]
    pub usage: ResourceUsage,
    /// base64url signature by the node key over the [`ResultStatement`].
    pub signature: String,
}

/// What a node signs about a result (`signing::sign_result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultStatement<'a> {
    pub assignment_id: &'a str,
    pub task_id: &'a str,
    pub node_id: &'a str,
    pub status: ReportStatus,
    pub result_digest: &'a str,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for replicas or results.
    Pending,
    /// A quorum accepted a result.
    Verified,
    /// No quorum within the replica cap, conflicting quorums, or deadline.
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "verified" => Self::Verified,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// Answer to a result report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResultAck {
    /// False when this assignment's result was already recorded (the first
    /// one counts).
    pub recorded: bool,
    pub task_state: TaskState,
}

/// Most results in one [`ResultBatch`].
pub const MAX_RESULT_BATCH: usize = 64;

/// Body of `POST /v1/work/results/batch` (node-signed once for the whole
/// request; every result still carries its own signature over its
/// [`ResultStatement`], kept as evidence). 1 to [`MAX_RESULT_BATCH`]
/// results of the signing node, recorded in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBatch {
    pub results: Vec<ResultReport>,
}

/// What went wrong with one result of a batch: the problem document
/// (RFC 9457 members) the single-result endpoint would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ItemProblem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    /// The HTTP status the single-result endpoint would have used.
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Offending fields, as `results[i].field`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::validate::FieldError>,
}

/// The outcome of one result of a batch: an acknowledgement or a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResultItemAck {
    pub assignment_id: String,
    /// Set when the result was accepted for recording (`recorded` false: it
    /// was already recorded, the first one counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<ResultAck>,
    /// Set when this result was refused; nothing of it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<ItemProblem>,
}

/// Answer to a [`ResultBatch`]: one entry per result, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResultBatchAck {
    pub results: Vec<ResultItemAck>,
}

/// One signed result in a task's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResultEvidence {
    pub assignment_id: String,
    pub node_id: String,
    pub status: ReportStatus,
    pub result_digest: String,
    pub signature: String,
    /// Unix milliseconds.
    pub reported_at_ms: i64,
}

/// `GET /v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    pub task_type: String,
    pub f: u32,
    pub max_replicas: u32,
    pub replicas_assigned: u32,
    pub results_received: u32,
    pub deadline: i64,
    pub created_at: i64,
    /// The accepted digest (hex), when verified.
    pub accepted_digest: Option<String>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Every signed result received, agreeing or not.
    pub evidence: Vec<ResultEvidence>,
    /// base64url of the accepted result's standard output, when verified.
    pub stdout: Option<String>,
    /// Audit log index of the acceptance entry.
    pub audit_index: Option<u64>,
}

/// One server-sent event on `GET /v1/tasks/{id}/events` (event `progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskProgress {
    pub task_id: String,
    pub state: TaskState,
    pub replicas_assigned: u32,
    pub results_received: u32,
    /// Replicas needed at least (`2f+1`, or 1 when adaptive trusts a node).
    pub replicas_needed: u32,
}

/// Body of `POST /v1/operators/keys` (bearer-authenticated operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorKeyRegistration {
    /// Ed25519 public key (base64url).
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperatorKey {
    pub operator: String,
    pub public_key: String,
    pub created_at: i64,
}

/// `PUT /v1/modules/{sha256}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModuleStored {
    pub sha256: String,
    pub size_bytes: u64,
    pub created: bool,
}

/// One node in the reputation ledger (`GET /v1/reputation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReputationEntry {
    pub node_id: String,
    pub state: NodeState,
    /// Weighted score, 0 to 1 (zero once Byzantine).
    pub reputation: f64,
    pub completion_rate: f64,
    pub accuracy_rate: f64,
    pub uptime_rate: f64,
    pub participation_rate: f64,
    pub assigned: u64,
    pub completed: u64,
    pub agreed: u64,
    pub wrong: u64,
    /// Consecutive results that agreed with a quorum or a known answer
    /// (adaptive replication's record; reset by any invalid result).
    pub streak: u64,
    /// Why the node was excluded, when it was.
    pub exclusion_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReputationLedger {
    pub nodes: Vec<ReputationEntry>,
}
