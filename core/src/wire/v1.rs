//! Version 1 of askee's wire formats: the consent token of the seed's schema,
//! the capability manifest, the signed grant, the revocation certificate and
//! list, the audit log entries, and the well-known documents.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The `version` every v1 consent token carries.
pub const TOKEN_VERSION: &str = "1.0";

/// Resource ceilings a volunteer grants (the seed's `permissions.resources`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Highest share of the machine's CPU, in percent (1 to 100).
    pub cpu_percent_max: u32,
    /// Highest resident memory, in MiB.
    pub ram_mb_max: u64,
    /// Highest scratch storage, in GiB.
    pub storage_gb_max: u64,
    /// Highest network bandwidth, in Mbit/s.
    pub bandwidth_mbps_max: u64,
}

/// Which tasks may run (the seed's `permissions.tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPermissions {
    /// Task types that may run, each from the coordinator's allowlist.
    pub allowlist: Vec<String>,
    /// Lowest node reputation, from 0 to 1, at which tasks are assigned.
    pub min_reputation: f64,
    /// Longest single task, in hours.
    pub max_duration_hours: u32,
}

/// Monitoring promises (the seed's `permissions.monitoring`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Work yields as soon as the user is active.
    pub user_activity_yield: bool,
    /// Resource use is monitored and limits are enforced.
    pub resource_monitoring: bool,
    /// Every action is written to the audit log.
    pub audit_logging: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    pub resources: Resources,
    pub tasks: TaskPermissions,
    pub monitoring: Monitoring,
}

/// The claims of a consent token: the seed's schema plus `token_id` and
/// `grant_id`. Encoded as the payload of an EdDSA JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentTokenPayload {
    /// Always `"1.0"`.
    pub version: String,
    /// Unique id of this token.
    pub token_id: String,
    /// The grant this token was issued under; renewals share it.
    pub grant_id: String,
    /// The coordinator's signing public key (base64url).
    pub issuer: String,
    /// The node's public key (base64url): the node identifier.
    pub subject: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub permissions: Permissions,
    pub revocation_url: String,
}

/// The seed's `ConsentToken` interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConsentToken {
    /// The compact JWT.
    pub token: String,
    pub payload: ConsentTokenPayload,
    /// The JWT's signature segment (base64url Ed25519 signature).
    pub signature: String,
    #[serde(rename = "revocationUrl")]
    pub revocation_url: String,
}

/// A task type the coordinator offers, as shown in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskTypeInfo {
    pub name: String,
    pub description: String,
    pub max_duration_hours: u32,
    pub min_reputation: f64,
    pub resource_profile: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperatorInfo {
    /// Who runs the coordinator.
    pub name: String,
    pub contact: String,
    pub coordinator_url: String,
}

/// What a grant would allow, shown to the volunteer before they decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapabilityManifest {
    pub manifest_id: String,
    pub operator: OperatorInfo,
    /// The node this manifest was made for (base64url public key).
    pub node_public_key: String,
    pub task_types: Vec<TaskTypeInfo>,
    /// The widest permissions the coordinator asks for; a grant may narrow them.
    pub proposed: Permissions,
    /// Latest end of a grant made from this manifest (unix seconds).
    pub grant_expires_at_max: i64,
    /// Tokens are short-lived and renewed under the grant; this is their lifetime.
    pub token_lifetime_seconds: i64,
    /// In plain words: when tasks run.
    pub execution: String,
    /// In plain words: what tasks may touch.
    pub data_access: Vec<String>,
    /// In plain words: what tasks can never touch.
    pub never_accessed: Vec<String>,
    /// In plain words: how to withdraw consent.
    pub revocation: String,
    /// Unix seconds; the manifest can be granted until then.
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a volunteer signs to grant consent. Sent as the base64url of its
/// exact JSON bytes, so that what is verified and stored is what was signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantStatement {
    /// Always `"askee-grant/1"`.
    pub version: String,
    pub manifest_id: String,
    /// base64url SHA-256 of the manifest's canonical JSON bytes.
    pub manifest_digest: String,
    pub node_public_key: String,
    /// The permissions chosen: each at most what the manifest proposed.
    pub permissions: Permissions,
    /// When the grant ends (unix seconds).
    pub grant_expires_at: i64,
    /// When the volunteer signed (unix seconds).
    pub signed_at: i64,
    pub nonce: String,
}

pub const GRANT_STATEMENT_VERSION: &str = "askee-grant/1";

/// A signed grant as sent to the server: base64url statement bytes plus the
/// node key's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedGrant {
    /// base64url (no padding) of the UTF-8 JSON bytes of a `GrantStatement`,
    /// kept and verified exactly as sent (any member order or spacing).
    pub statement: String,
    /// base64url Ed25519 signature by the statement's `node_public_key` over
    /// `askee-grant-v1\0` followed by the decoded statement bytes.
    pub signature: String,
}

/// A coordinator-signed statement that revokes a grant (and every token
/// issued under it) when presented to the revocation URL, by anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationCertificate {
    /// Always `"askee-revocation-cert/1"`.
    pub version: String,
    pub grant_id: String,
    pub token_id: String,
    pub subject: String,
    pub issued_at: i64,
    /// Id of the coordinator key that signed it.
    pub kid: String,
    /// base64url Ed25519 signature over the certificate's signing bytes.
    pub signature: String,
}

pub const REVOCATION_CERT_VERSION: &str = "askee-revocation-cert/1";

/// One revoked grant in the signed revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedGrant {
    pub grant_id: String,
    pub token_ids: Vec<String>,
    pub revoked_at: i64,
    pub reason: String,
}

/// The body of the revocation list; `SignedRevocationList` carries it with
/// a signature over its JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationList {
    pub version: String,
    pub issuer: String,
    pub kid: String,
    pub issued_at: i64,
    /// Agents must fetch a new list before this time and fail closed after it.
    pub next_update: i64,
    pub revoked: Vec<RevokedGrant>,
}

pub const REVOCATION_LIST_VERSION: &str = "askee-crl/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedRevocationList {
    /// base64url of the list's JSON bytes.
    pub list: String,
    pub signature: String,
}

/// One entry of the tamper-evident audit log. The leaf hashed into the
/// Merkle tree is the canonical JSON of this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub index: u64,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// What happened, e.g. `consent.grant`.
    pub kind: String,
    /// Whom it concerns (a node key, token id, operator name).
    pub subject: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// An Ed25519 public key as an OKP JSON Web Key (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// `/.well-known/askee-coordinator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorInfo {
    pub name: String,
    pub contact: String,
    pub api_base: String,
    pub key_ids: Vec<String>,
    pub task_types: Vec<TaskTypeInfo>,
    pub jwks_uri: String,
    pub revocation_list_uri: String,
}

/// The seed's `SystemProfile`: what the resource profiler found on a node.
/// Sent by the agent at registration and kept by the coordinator as the
/// node's capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemProfile {
    /// `linux`, `windows` or `macos`.
    pub os: String,
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub storage: StorageInfo,
    pub network: NetworkInfo,
    /// Graphics processors found, if any.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    #[serde(rename = "containerSupport")]
    pub container_support: ContainerCapabilities,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuInfo {
    /// e.g. `x86_64`, `aarch64`.
    pub arch: String,
    pub model: String,
    /// Logical processors.
    pub cores: u32,
    /// Nominal or highest frequency in MHz, 0 when unknown.
    pub frequency_mhz: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryInfo {
    pub total_mb: u64,
    pub available_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageInfo {
    /// Free space where the agent keeps task scratch directories.
    pub free_gb: u64,
    pub total_gb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInfo {
    /// Estimated or configured bandwidth in Mbit/s, 0 when unknown.
    pub bandwidth_mbps: u64,
    /// Whether the machine is on a metered connection, when known.
    pub metered: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    pub vendor: String,
    pub model: String,
    /// Video memory in MiB, 0 when unknown.
    pub memory_mb: u64,
}

/// What the native sandbox can enforce on this host (from the sandbox probe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerCapabilities {
    /// `linux-namespaces`, `windows-job-objects`, `macos-sandbox` or `none`.
    pub isolation: String,
    /// Enforcing cgroup version on Linux (1 or 2), `None` elsewhere.
    pub cgroup_version: Option<u8>,
    pub user_namespaces: bool,
    pub seccomp: bool,
    /// Landlock ABI level in use, `None` when unavailable.
    pub landlock_abi: Option<u32>,
    /// Whether the WebAssembly task runtime is built in.
    pub wasm: bool,
}

pub mod consent;
pub mod portal;
pub mod work;
pub use consent::*;
pub use portal::*;
pub use work::*;
/// Version of the participation signal format (`v=1` in DNS and the QR URI,
/// `"version": 1` in the well-known document).
pub const PARTICIPATION_SIGNAL_VERSION: u32 = 1;

/// The seed's `ParticipationSignal`: one signed opt-in statement, whichever
/// channel (DNS TXT, well-known document, QR code) carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParticipationSignal {
    /// `dns`, `wellknown` or `qr`.
    pub source: String,
    /// The domain the statement is bound to (lower case, no trailing dot);
    /// `None` for a QR code of a volunteer without a domain.
    pub domain: Option<String>,
    /// `ready` opts in; any other value withdraws.
    pub consent: String,
    /// base64url Ed25519 node public key (32 bytes).
    pub public_key: String,
    /// base64url SHA-256 of the canonical JSON of the volunteer's declared
    /// capabilities, when given.
    pub capabilities: Option<String>,
    /// Coordinator the volunteer prefers, when given.
    pub coordinator: Option<String>,
    /// Unix seconds when the statement was signed.
    pub timestamp: i64,
    /// base64url node-key signature over the statement's canonical bytes.
    pub signature: Option<String>,
}

/// The JSON served at `https://<domain>/.well-known/askee-participation`.
/// Unknown fields are ignored, as unknown keys are in the TXT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParticipationDocument {
    pub version: u32,
    pub domain: String,
    pub consent: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}
