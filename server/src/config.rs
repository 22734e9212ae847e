//! Server configuration: who operates the coordinator, what it offers, and
//! the limits that protect volunteers and the server itself.

use std::path::PathBuf;
use std::time::Duration;

use askee_core::wire::v1::{Monitoring, Permissions, Resources, TaskPermissions, TaskTypeInfo};

#[derive(Debug, Clone)]
pub struct Config {
    /// Operator name shown to volunteers.
    pub operator_name: String,
    pub operator_contact: String,
    /// Public base URL of this server, used in revocation URLs and documents.
    pub public_url: String,
    /// Where the coordinator's signing keys live.
    pub data_dir: PathBuf,
    /// Task types offered, with their limits (the seed's allowlist).
    pub task_types: Vec<TaskTypeInfo>,
    /// The widest resources a manifest proposes.
    pub proposed_resources: Resources,
    /// The reputation floor a manifest proposes (0 to 1).
    pub proposed_min_reputation: f64,
    /// Lifetime of one consent token; tokens are renewed under their grant.
    pub token_lifetime: Duration,
    /// Longest grant a manifest offers.
    pub max_grant_duration: Duration,
    /// How long a manifest can be granted after it is shown.
    pub manifest_lifetime: Duration,
    /// How long a signed revocation list stays fresh.
    pub revocation_list_lifetime: Duration,
    /// Accepted distance between a signed request's timestamp and the server clock.
    pub request_skew: Duration,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Most long-polls on the revocation URL held open at once.
    pub max_watchers: usize,
    /// Longest a long-poll on the revocation URL is held open.
    pub max_watch: Duration,
    /// Requests per second and burst per client address.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// Requests handled at once before the server sheds load.
    pub max_in_flight: usize,
    /// How often a new audit checkpoint is signed when the log grew.
    pub checkpoint_interval: Duration,
    /// Nodes send a heartbeat at least this often; three missed ones mark
    /// the node offline and put its work back.
    pub heartbeat_interval: Duration,
    /// How long a replica is leased before it goes back to the pool (a
    /// heartbeat naming it extends the lease).
    pub lease_duration: Duration,
    /// How often leases, silent nodes and deadlines are swept.
    pub sweep_interval: Duration,
    /// Evidence that marks a node Byzantine.
    pub byzantine_policy: askee_core::rules::ByzantinePolicy,
    /// Adaptive replication thresholds.
    pub adaptive_policy: askee_core::coordinator::AdaptivePolicy,
    /// Largest module upload.
    pub max_module_bytes: usize,
    /// Largest task submission body (a batch).
    pub max_task_body_bytes: usize,
    /// The agent update repository (TUF) served read-only under `/tuf/`.
    pub tuf_repo: Option<PathBuf>,
}

/// The seed's task allowlist (`askee_core::rules::default_task_types`),
/// with the plain-words descriptions volunteers read.
pub fn default_task_types() -> Vec<TaskTypeInfo> {
    askee_core::rules::default_task_types()
        .into_iter()
        .map(|p| TaskTypeInfo {
            description: match p.name.as_str() {
                "ml-training" => {
                    "training small machine-learning models on data the operator supplies"
                }
                "data-processing" => "transforming or summarising data sets the operator supplies",
                "scientific-compute" => "numerical simulations and estimates",
                _ => "computations the operator defines",
            }
            .into(),
            max_duration_hours: p.max_duration_hours,
            min_reputation: f64::from(p.min_reputation.micros()) / 1e6,
            resource_profile: p.resource_profile.as_str().into(),
            name: p.name,
        })
        .collect()
}

impl Config {
    pub fn new(data_dir: PathBuf, public_url: String) -> Self {
        Self {
            operator_name: "askee local coordinator".into(),
            operator_contact: "operator@localhost".into(),
            public_url,
            data_dir,
            task_types: default_task_types(),
            proposed_resources: Resources {
                cpu_percent_max: 50,
                ram_mb_max: 2048,
                storage_gb_max: 10,
                bandwidth_mbps_max: 10,
            },
            proposed_min_reputation: 0.5,
            token_lifetime: Duration::from_secs(3600),
            max_grant_duration: Duration::from_secs(30 * 24 * 3600),
            manifest_lifetime: Duration::from_secs(3600),
            revocation_list_lifetime: Duration::from_secs(60),
            request_skew: Duration::from_secs(300),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            max_watchers: 10_000,
            max_watch: Duration::from_secs(55),
            rate_per_second: 200.0,
            rate_burst: 400.0,
            max_in_flight: 1024,
            checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(30),
            lease_duration: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(1),
            byzantine_policy: askee_core::rules::ByzantinePolicy::default(),
            adaptive_policy: askee_core::coordinator::AdaptivePolicy::default(),
            max_module_bytes: 16 * 1024 * 1024,
            max_task_body_bytes: 16 * 1024 * 1024,
            tuf_repo: None,
        }
    }

    pub fn task_type_names(&self) -> Vec<&str> {
        self.task_types.iter().map(|t| t.name.as_str()).collect()
    }

    /// The widest permissions a manifest proposes.
    pub fn proposed_permissions(&self) -> Permissions {
        Permissions {
            resources: self.proposed_resources.clone(),
            tasks: TaskPermissions {
                allowlist: self.task_types.iter().map(|t| t.name.clone()).collect(),
                min_reputation: self.proposed_min_reputation,
                max_duration_hours: self
                    .task_types
                    .iter()
                    .map(|t| t.max_duration_hours)
                    .max()
                    .unwrap_or(1),
            },
            monitoring: Monitoring {
                user_activity_yield: true,
                resource_monitoring: true,
                audit_logging: true,
            },
        }
    }

    pub fn revocation_url(&self, token_id: &str) -> String {
        format!(
            "{}/revoke/{token_id}",
            self.public_url.trim_end_matches('/')
        )
    }

    /// The origin line of audit checkpoints.
    pub fn log_origin(&self) -> String {
        let host = self
            .public_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.public_url)
            .trim_end_matches('/');
        format!("{host}/askee-audit")
    }
}
