//! A reproducible, seeded simulator of volunteer nodes that speaks the real
//! HTTP API of one or more `askee-server` processes: each simulated agent
//! has its own node key, consents (join + signed grant), registers with an
//! attestation, heartbeats, leases work and reports signed results. Agents
//! do not run the sandbox: an honest agent returns the correct digest of the
//! (tiny, known) task directly; the others misbehave by kind.
//!
//! Kinds: honest; faulty (a wrong random answer with some probability);
//! malicious (always a wrong random answer); colluding (the same wrong
//! answer as every other colluder, after earning eligibility honestly);
//! flaky (drops an assignment silently now and then, as if disconnected
//! mid-task); slow (reports after a delay). Some agents can be killed
//! outright mid-run while holding leases.
//!
//! The report: wrong results accepted (checked against the known answer of
//! every task), time to exclude each malicious node, useful-work efficiency
//! (verified tasks over results reported) and throughput.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askee_core::signing::{self, sign_attestation, sign_result, sign_task, signed_headers};
use askee_core::wire::v1::*;
use askee_core::{SigningKey, b64};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

/// The module every simulated task names (agents never run it).
pub const MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Honest,
    Faulty,
    Malicious,
    Colluding,
    Flaky,
    Slow,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub honest: usize,
    pub faulty: usize,
    pub malicious: usize,
    pub colluding: usize,
    pub flaky: usize,
    pub slow: usize,
    /// Agents (honest ones) stopped outright after this many reports each.
    pub killed: usize,
    pub kill_after_reports: u64,
    /// Ordinary tasks to verify.
    pub tasks: usize,
    pub f: u32,
    pub max_replicas: u32,
    pub adaptive: bool,
    /// Share of ordinary tasks submitted with a known answer (spot checks).
    pub spot_check_rate: f64,
    /// Probability that a faulty agent answers wrong.
    pub faulty_error_rate: f64,
    /// Probability that a flaky agent drops an assignment.
    pub flaky_drop_rate: f64,
    pub slow_delay: Duration,
    /// Assignments an agent asks for at once.
    pub lease_batch: u32,
    /// Results an agent reports per request: 1 uses `POST /v1/work/results`
    /// per result, more uses `POST /v1/work/results/batch` (at most 64).
    pub report_batch: usize,
    /// Stop after this long even if tasks remain (reported as unfinished).
    pub time_limit: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            honest: 12,
            faulty: 2,
            malicious: 2,
            colluding: 1,
            flaky: 2,
            slow: 1,
            killed: 0,
            kill_after_reports: 20,
            tasks: 500,
            f: 1,
            max_replicas: 7,
            adaptive: false,
            spot_check_rate: 0.0,
            faulty_error_rate: 0.1,
            flaky_drop_rate: 0.05,
            slow_delay: Duration::from_millis(30),
            lease_batch: 8,
            report_batch: 8,
            time_limit: Duration::from_secs(120),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub tasks: usize,
    pub verified: usize,
    pub failed: usize,
    pub unfinished: usize,
    /// Verified tasks whose accepted digest is not the correct answer.
    pub wrong_accepted: usize,
    /// Results reported (completed replicas) for ordinary tasks.
    pub results_reported: u64,
    /// Verified ordinary tasks over completed results for them.
    pub efficiency: f64,
    pub elapsed: Duration,
    /// Verified tasks per second, from the first submission to the last
    /// decision.
    pub throughput: f64,
    /// Malicious nodes that were excluded, and how long each took from its
    /// registration.
    pub malicious_excluded: usize,
    pub malicious_total: usize,
    pub time_to_exclude: Vec<Duration>,
    /// Tasks the simulator saw acknowledged as verified (must all still be
    /// verified at the end, with the same digest).
    pub acked_verified: usize,
    pub acked_lost: usize,
    /// Evidence counted twice (a node in one task's evidence twice).
    pub duplicate_evidence: usize,
}

impl SimReport {
    pub fn render(&self) -> String {
        let tte = if self.time_to_exclude.is_empty() {
            "n/a".to_owned()
        } else {
            let max = self
                .time_to_exclude
                .iter()
                .max()
                .copied()
                .unwrap_or_default();
            let mean =
                self.time_to_exclude.iter().sum::<Duration>() / self.time_to_exclude.len() as u32;
            format!("mean {mean:.2?}, max {max:.2?}")
        };
        format!(
            "tasks {}: verified {}, failed {}, unfinished {}\n\
             wrong results accepted: {}\n\
             malicious nodes excluded: {}/{} (time to exclude: {tte})\n\
             useful-work efficiency: {:.1}% ({} results for {} verified tasks)\n\
             throughput: {:.1} verified tasks/s over {:.2?}\n\
             acknowledged verdicts lost: {}/{}; duplicate evidence: {}",
            self.tasks,
            self.verified,
            self.failed,
            self.unfinished,
            self.wrong_accepted,
            self.malicious_excluded,
            self.malicious_total,
            self.efficiency * 100.0,
            self.results_reported,
            self.verified,
            self.throughput,
            self.elapsed,
            self.acked_lost,
            self.acked_verified,
            self.duplicate_evidence,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("http request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The correct answer of a task: what an honest agent reports.
pub fn correct_digest(nonce: &str) -> String {
    hex::encode(signing::sha256(format!("honest:{nonce}").as_bytes()))
}

fn collusion_digest(nonce: &str) -> String {
    hex::encode(signing::sha256(format!("collude:{nonce}").as_bytes()))
}

/// An HTTP client over several coordinator processes: a request that cannot
/// connect moves on to the next base URL (a killed server's agents fail
/// over to a live one).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    preferred: usize,
}

impl Api {
    pub fn new(bases: Vec<String>, preferred: usize) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            bases: Arc::new(bases),
            preferred,
        }
    }

    async fn send(
        &self,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, SimError> {
        let n = self.bases.len();
        let mut last = None;
        for i in 0..n {
            let base = &self.bases[(self.preferred + i) % n];
            match make(&self.http, base).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        return Ok(serde_json::from_str(&body).unwrap_or(Value::Null));
                    }
                    return Err(SimError::Status {
                        what: what.to_owned(),
                        status: status.as_u16(),
                        body,
                    });
                }
                Err(source) if source.is_connect() || source.is_request() => {
                    last = Some(SimError::Http {
                        url: base.clone(),
                        source,
                    });
                }
                Err(source) => {
                    return Err(SimError::Http {
                        url: base.clone(),
                        source,
                    });
                }
            }
        }
        Err(last.expect("at least one base url"))
    }

    /// A node-signed POST (a fresh nonce and timestamp per attempt).
    pub async fn signed(
        &self,
        key: &SigningKey,
        path: &str,
        body: &Value,
    ) -> Result<Value, SimError> {
        let bytes = serde_json::to_vec(body).expect("json");
        self.send(
            |http, base| {
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let mut req = http
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(bytes.clone());
                for (k, v) in signed_headers(key, "POST", path, &bytes, now(), &nonce) {
                    req = req.header(k, v);
                }
                req
            },
            path,
        )
        .await
    }

    pub async fn plain_post(&self, path: &str, body: &Value) -> Result<Value, SimError> {
        self.send(
            |http, base| http.post(format!("{base}{path}")).json(body),
            path,
        )
        .await
    }

    pub async fn operator(
        &self,
        credential: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, SimError> {
        self.send(
            |http, base| {
                let mut req = http
                    .request(method.clone(), format!("{base}{path}"))
                    .header("authorization", format!("Bearer {credential}"));
                if let Some((ct, bytes)) = &body {
                    req = req.header("content-type", *ct).body(bytes.clone());
                }
                req
            },
            path,
        )
        .await
    }
}

/// A simulated system profile.
pub fn profile() -> SystemProfile {
    SystemProfile {
        os: "linux".into(),
        cpu: CpuInfo {
            arch: "x86_64".into(),
            model: "simulated".into(),
            cores: 4,
            frequency_mhz: 0,
        },
        memory: MemoryInfo {
            total_mb: 8192,
            available_mb: 4096,
        },
        storage: StorageInfo {
            free_gb: 50,
            total_gb: 100,
        },
        network: NetworkInfo {
            bandwidth_mbps: 100,
            metered: Some(false),
        },
        gpus: vec![],
        container_support: ContainerCapabilities {
            isolation: "linux-namespaces".into(),
            cgroup_version: Some(2),
            user_namespaces: true,
            seccomp: true,
            landlock_abi: Some(4),
            wasm: true,
        },
    }
}

/// Consents and registers a node; returns when it is active.
pub async fn enrol(api: &Api, key: &SigningKey) -> Result<(), SimError> {
    let node = b64::encode(key.verifying_key().as_bytes());
    let m = api
        .signed(key, "/v1/invitations", &json!({ "node_public_key": node }))
        .await?;
    let statement = GrantStatement {
        version: GRANT_STATEMENT_VERSION.into(),
        manifest_id: m["manifest"]["manifest_id"]
            .as_str()
            .unwrap_or_default()
            .into(),
        manifest_digest: m["manifest_digest"].as_str().unwrap_or_default().into(),
        node_public_key: node,
        permissions: serde_json::from_value(m["manifest"]["proposed"].clone())
            .expect("manifest proposes permissions"),
        grant_expires_at: now() + 86_400,
        signed_at: now(),
        nonce: uuid::Uuid::new_v4().simple().to_string(),
    };
    let granted = api
        .plain_post(
            "/v1/grants",
            &serde_json::to_value(signing::sign_grant(key, &statement)).expect("json"),
        )
        .await?;
    let token = granted["consent_token"]["token"]
        .as_str()
        .unwrap_or_default();
    let token_id = granted["consent_token"]["payload"]["token_id"]
        .as_str()
        .unwrap_or_default();
    let ch = api.signed(key, "/v1/nodes/challenge", &json!({})).await?;
    let challenge = ch["challenge"].as_str().unwrap_or_default();
    let p = profile();
    let reg = NodeRegistration {
        challenge: challenge.into(),
        consent_token: token.into(),
        attestation: sign_attestation(key, challenge, token_id, &p),
        profile: p,
    };
    api.signed(
        key,
        "/v1/nodes/register",
        &serde_json::to_value(&reg).expect("json"),
    )
    .await?;
    Ok(())
}

/// Shared bookkeeping of a run.
#[derive(Default)]
struct Shared {
    /// Final verdicts acknowledged to agents: task id → state.
    acked: Mutex<HashMap<String, TaskState>>,
    results: AtomicU64,
    stop: AtomicBool,
    excluded_at: Mutex<HashMap<String, Instant>>,
}

struct Agent {
    api: Api,
    key: SigningKey,
    kind: Kind,
    rng: StdRng,
    cfg: SimConfig,
    shared: Arc<Shared>,
    kill_after: Option<u64>,
}

/// What one lease request gave an agent.
enum Leased {
    Work(Vec<Assignment>),
    /// Nothing to do now: ask again.
    Again,
    /// Refused for good (excluded): the agent stops.
    Stop,
}

/// An agent's progress through a run.
struct Progress {
    node_id: String,
    reports: u64,
    agreed_challenges: u32,
    last_beat: Instant,
}

impl Agent {
    async fn run(mut self) {
        let mut p = Progress {
            node_id: b64::encode(self.key.verifying_key().as_bytes()),
            reports: 0,
            agreed_challenges: 0,
            last_beat: Instant::now(),
        };
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.heartbeat_if_due(&mut p.last_beat).await;
            let assignments = match self.lease(&mut p).await {
                Leased::Work(assignments) => assignments,
                Leased::Again => continue,
                Leased::Stop => return,
            };
            if !self.work_on(assignments, &mut p).await {
                return;
            }
        }
    }

    async fn heartbeat(&self, last_beat: &mut Instant) {
        let _ = self
            .api
            .signed(&self.key, "/v1/nodes/heartbeat", &json!({}))
            .await;
        *last_beat = Instant::now();
    }

    async fn heartbeat_if_due(&self, last_beat: &mut Instant) {
        if last_beat.elapsed() > Duration::from_millis(500) {
            self.heartbeat(last_beat).await;
        }
    }

    async fn lease(&self, p: &mut Progress) -> Leased {
        let leased = self
            .api
            .signed(
                &self.key,
                "/v1/work/lease",
                &json!({ "max_tasks": self.cfg.lease_batch }),
            )
            .await;
        match leased {
            Ok(v) => {
                let assignments: Vec<Assignment> =
                    serde_json::from_value(v["assignments"].clone()).unwrap_or_default();
                if assignments.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Leased::Again;
                }
                Leased::Work(assignments)
            }
            Err(SimError::Status {
                status: 403, body, ..
            }) if body.contains("\"reason\":\"offline\"") => {
                // Missed heartbeats while busy: announce and go on.
                self.heartbeat(&mut p.last_beat).await;
                Leased::Again
            }
            Err(SimError::Status {
                status: 403, body, ..
            }) => {
                if body.contains("byzantine") {
                    self.shared
                        .excluded_at
                        .lock()
                        .expect("lock")
                        .entry(p.node_id.clone())
                        .or_insert_with(Instant::now);
                }
                Leased::Stop
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Leased::Again
            }
        }
    }

    /// Works through one lease's assignments and reports them; false when
    /// the agent stops (the run is over, or the agent is killed) with
    /// reports still unsent.
    async fn work_on(&mut self, assignments: Vec<Assignment>, p: &mut Progress) -> bool {
        let mut pending: Vec<ResultReport> = Vec::new();
        for a in assignments {
            if self.shared.stop.load(Ordering::Relaxed) {
                return false;
            }
            if let Some(limit) = self.kill_after
                && p.reports >= limit
            {
                // Killed: leases it holds are left to expire.
                return false;
            }
            self.heartbeat_if_due(&mut p.last_beat).await;
            let nonce = a.statement.nonce.clone();
            let is_challenge = nonce.starts_with("challenge-");
            let Some(digest) = self.digest(&nonce, is_challenge, &mut p.agreed_challenges) else {
                continue;
            };
            if self.kind == Kind::Slow {
                tokio::time::sleep(self.cfg.slow_delay).await;
            }
            let report = self.report(&a, &p.node_id, digest);
            p.reports += 1;
            if !is_challenge {
                self.shared.results.fetch_add(1, Ordering::Relaxed);
            }
            pending.push(report);
            if pending.len() >= self.cfg.report_batch.max(1) {
                self.send_reports(&mut pending).await;
            }
        }
        self.send_reports(&mut pending).await;
        true
    }

    /// The digest this agent's kind reports for a task; `None` when a flaky
    /// agent drops the assignment.
    fn digest(&mut self, nonce: &str, is_challenge: bool, agreed: &mut u32) -> Option<String> {
        let right = correct_digest(nonce);
        Some(match self.kind {
            Kind::Honest | Kind::Slow => right,
            Kind::Flaky => {
                if self.rng.gen_bool(self.cfg.flaky_drop_rate) {
                    return None;
                }
                right
            }
            Kind::Faulty => {
                if self.rng.gen_bool(self.cfg.faulty_error_rate) {
                    self.wrong_digest(nonce)
                } else {
                    right
                }
            }
            Kind::Malicious => self.wrong_digest(nonce),
            Kind::Colluding => {
                if is_challenge && *agreed < 3 {
                    *agreed += 1;
                    right
                } else {
                    collusion_digest(nonce)
                }
            }
        })
    }

    /// A wrong answer of this agent's own, the same each time for a task.
    fn wrong_digest(&self, nonce: &str) -> String {
        let mut r = StdRng::seed_from_u64(
            u64::from_le_bytes(
                signing::sha256(nonce.as_bytes())[..8]
                    .try_into()
                    .expect("8 bytes"),
            ) ^ u64::from_le_bytes(self.key.to_bytes()[..8].try_into().expect("8 bytes")),
        );
        hex::encode(r.r#gen::<[u8; 32]>())
    }

    /// The signed report of a completed assignment.
    fn report(&self, a: &Assignment, node_id: &str, digest: String) -> ResultReport {
        let status = ReportStatus::Completed;
        let signature = sign_result(
            &self.key,
            &ResultStatement {
                assignment_id: &a.assignment_id,
                task_id: &a.task_id,
                node_id,
                status,
                result_digest: &digest,
            },
        );
        ResultReport {
            assignment_id: a.assignment_id.clone(),
            task_id: a.task_id.clone(),
            status,
            result_digest: digest,
            exit_code: 0,
            stdout: String::new(),
            outputs: Default::default(),
            failure: String::new(),
            usage: Default::default(),
            signature,
        }
    }

    /// Sends the pending reports: one by one, or as batches.
    async fn send_reports(&self, pending: &mut Vec<ResultReport>) {
        if pending.is_empty() {
            return;
        }
        let reports = std::mem::take(pending);
        let mut states = Vec::with_capacity(reports.len());
        if self.cfg.report_batch <= 1 {
            for report in &reports {
                let ack = self
                    .api
                    .signed(
                        &self.key,
                        "/v1/work/results",
                        &serde_json::to_value(report).expect("json"),
                    )
                    .await;
                states.push(ack.ok().and_then(|ack| {
                    serde_json::from_value::<TaskState>(ack["task_state"].clone()).ok()
                }));
            }
        } else {
            for chunk in reports.chunks(self.cfg.report_batch.min(64)) {
                let ack = self
                    .api
                    .signed(
                        &self.key,
                        "/v1/work/results/batch",
                        &json!({ "results": chunk }),
                    )
                    .await;
                let acks: Vec<ResultItemAck> = ack
                    .ok()
                    .and_then(|v| serde_json::from_value(v["results"].clone()).ok())
                    .unwrap_or_default();
                for k in 0..chunk.len() {
                    states.push(
                        acks.get(k)
                            .and_then(|a| a.ack.as_ref())
                            .map(|a| a.task_state),
                    );
                }
            }
        }
        for (report, state) in reports.iter().zip(states) {
            if let Some(state) = state
                && state.is_final()
            {
                self.shared
                    .acked
                    .lock()
                    .expect("lock")
                    .insert(report.task_id.clone(), state);
            }
        }
    }
}

/// Everything the simulator needs to act as the operator.
pub struct OperatorSetup {
    pub credential: String,
    pub key: SigningKey,
}

fn statement(nonce: String, f: u32, max_replicas: u32, adaptive: bool) -> TaskStatement {
    TaskStatement {
        version: TASK_STATEMENT_VERSION.into(),
        module_sha256: hex::encode(signing::sha256(MODULE)),
        task_type: "data-processing".into(),
        inputs: TaskInputs {
            args: vec![nonce.clone()],
            ..Default::default()
        },
        requirements: TaskRequirements {
            cpu_cores: 1,
            ram_mb: 16,
            storage_gb: 0,
            bandwidth_mbps: 0,
        },
        limits: TaskLimits {
            fuel: 1_000_000,
            memory_mb: 16,
            wall_seconds: 60,
            cpu_percent: 50,
        },
        random_seed: 0,
        deadline: now() + 3600,
        f,
        max_replicas,
        adaptive,
        nonce,
    }
}

async fn submit_all(
    api: &Api,
    op: &OperatorSetup,
    subs: Vec<TaskSubmission>,
) -> Result<Vec<String>, SimError> {
    let mut ids = Vec::with_capacity(subs.len());
    for chunk in subs.chunks(500) {
        let body = serde_json::to_vec(&TaskBatch {
            tasks: chunk.to_vec(),
        })
        .expect("json");
        let created = api
            .operator(
                &op.credential,
                reqwest::Method::POST,
                "/v1/tasks/batch",
                Some(("application/json", body)),
            )
            .await?;
        for t in created["tasks"].as_array().cloned().unwrap_or_default() {
            ids.push(t["task_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(ids)
}

fn submission(
    op: &OperatorSetup,
    st: TaskStatement,
    known: Option<String>,
    bootstrap: bool,
) -> TaskSubmission {
    TaskSubmission {
        bootstrap,
        signature: sign_task(&op.key, &st),
        statement: st,
        operator_public_key: b64::encode(op.key.verifying_key().as_bytes()),
        known_digest: known,
    }
}

/// Creates the simulator's operator with `askee-server operator create`
/// (bearer credential plus a registered task-signing key), on the database
/// the servers use.
pub fn operator_setup(database_url: &str, data_dir: &std::path::Path, seed: u64) -> OperatorSetup {
    let key = SigningKey::from_bytes(&signing::sha256(format!("sim-operator-{seed}").as_bytes()));
    let public = b64::encode(key.verifying_key().as_bytes());
    let (ok, out) = crate::process::server_command(
        database_url,
        data_dir,
        &[
            "operator",
            "create",
            "--name",
            &format!("sim-{seed}"),
            "--public-key",
            &public,
        ],
    );
    assert!(ok, "operator create failed: {out}");
    OperatorSetup {
        credential: out.trim().to_owned(),
        key,
    }
}

/// Runs one simulation against coordinators at `bases` (the operator's key
/// must already be registered for `op.credential`). `during` is spawned once
/// the ordinary tasks are submitted (e.g. to SIGKILL a server under load, or
/// to submit work of its own); agents run until both it and the tasks are
/// done.
pub async fn run(
    bases: Vec<String>,
    op: &OperatorSetup,
    cfg: SimConfig,
    during: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SimReport, SimError> {
    let api = Api::new(bases.clone(), 0);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    api.operator(
        &op.credential,
        reqwest::Method::PUT,
        &format!("/v1/modules/{}", hex::encode(signing::sha256(MODULE))),
        Some(("application/wasm", MODULE.to_vec())),
    )
    .await?;
    let kinds = agent_kinds(&cfg);
    // Bootstrapping challenges: enough for every node to earn eligibility.
    let challenges: Vec<TaskSubmission> = (0..kinds.len() * 4 + 8)
        .map(|i| {
            let nonce = format!("challenge-{}-{i}", cfg.seed);
            let known = correct_digest(&nonce);
            submission(op, statement(nonce, 0, 3, false), Some(known), true)
        })
        .collect();
    submit_all(&api, op, challenges).await?;

    let shared = Arc::new(Shared::default());
    let agents = start_agents(&bases, &cfg, &kinds, &mut rng, &shared).await?;

    // Ordinary tasks.
    let start = Instant::now();
    let (subs, answers) = ordinary_tasks(op, &cfg, &mut rng);
    let ids = submit_all(&api, op, subs).await?;
    let during = tokio::spawn(during);
    let ids: HashSet<String> = ids.into_iter().collect();
    // Wait until every ordinary task was acknowledged final, then verify all.
    wait_for_acks(&shared, &ids, start + cfg.time_limit).await;
    let elapsed = start.elapsed();
    // Agents keep working until `during` is over too (it may wait on work
    // of its own, e.g. a task submitted by the CLI).
    let _ = during.await;
    shared.stop.store(true, Ordering::Relaxed);
    for h in agents.handles {
        let _ = h.await;
    }

    let mut report = SimReport {
        tasks: ids.len(),
        elapsed,
        malicious_total: agents.malicious_ids.len(),
        results_reported: shared.results.load(Ordering::Relaxed),
        ..Default::default()
    };
    let acked = shared.acked.lock().expect("lock").clone();
    let ids: Vec<String> = ids.into_iter().collect();
    tally_tasks(&api, op, &ids, &acked, &answers, &mut report).await?;
    let excluded = shared.excluded_at.lock().expect("lock").clone();
    for id in &agents.malicious_ids {
        if let Some(at) = excluded.get(id) {
            report.malicious_excluded += 1;
            report
                .time_to_exclude
                .push(at.duration_since(agents.registered_at[id]));
        }
    }
    report.efficiency = if report.results_reported == 0 {
        0.0
    } else {
        report.verified as f64 / report.results_reported as f64
    };
    report.throughput = report.verified as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok(report)
}

/// Each agent's kind, in the order the agents start.
fn agent_kinds(cfg: &SimConfig) -> Vec<Kind> {
    let mut kinds = Vec::new();
    for (kind, n) in [
        (Kind::Honest, cfg.honest),
        (Kind::Faulty, cfg.faulty),
        (Kind::Malicious, cfg.malicious),
        (Kind::Colluding, cfg.colluding),
        (Kind::Flaky, cfg.flaky),
        (Kind::Slow, cfg.slow),
    ] {
        kinds.extend(std::iter::repeat_n(kind, n));
    }
    kinds
}

/// The running agents, and what the report needs to know of them.
struct Agents {
    handles: Vec<tokio::task::JoinHandle<()>>,
    /// Node id → when it registered.
    registered_at: HashMap<String, Instant>,
    malicious_ids: Vec<String>,
}

/// Enrols one agent of each kind in `kinds` (spread over `bases`) and
/// starts it.
async fn start_agents(
    bases: &[String],
    cfg: &SimConfig,
    kinds: &[Kind],
    rng: &mut StdRng,
    shared: &Arc<Shared>,
) -> Result<Agents, SimError> {
    let mut agents = Agents {
        handles: Vec::new(),
        registered_at: HashMap::new(),
        malicious_ids: Vec::new(),
    };
    let mut killed = 0;
    for (i, kind) in kinds.iter().enumerate() {
        let key = SigningKey::from_bytes(&rng.r#gen::<[u8; 32]>());
        let agent_api = Api::new(bases.to_vec(), i % bases.len());
        enrol(&agent_api, &key).await?;
        let id = b64::encode(key.verifying_key().as_bytes());
        agents.registered_at.insert(id.clone(), Instant::now());
        if *kind == Kind::Malicious {
            agents.malicious_ids.push(id);
        }
        let kill_after = (*kind == Kind::Honest && killed < cfg.killed).then(|| {
            killed += 1;
            cfg.kill_after_reports
        });
        let agent = Agent {
            api: agent_api,
            key,
            kind: *kind,
            rng: StdRng::seed_from_u64(rng.r#gen()),
            cfg: cfg.clone(),
            shared: shared.clone(),
            kill_after,
        };
        agents.handles.push(tokio::spawn(agent.run()));
    }
    Ok(agents)
}

/// The ordinary tasks to submit, and each one's correct answer by task id.
fn ordinary_tasks(
    op: &OperatorSetup,
    cfg: &SimConfig,
    rng: &mut StdRng,
) -> (Vec<TaskSubmission>, HashMap<String, String>) {
    let mut answers: HashMap<String, String> = HashMap::new();
    let mut subs = Vec::with_capacity(cfg.tasks);
    for i in 0..cfg.tasks {
        let nonce = format!("task-{}-{i}", cfg.seed);
        let known = (cfg.spot_check_rate > 0.0 && rng.gen_bool(cfg.spot_check_rate))
            .then(|| correct_digest(&nonce));
        let st = statement(nonce.clone(), cfg.f, cfg.max_replicas, cfg.adaptive);
        answers.insert(signing::task_id(&st), correct_digest(&nonce));
        subs.push(submission(op, st, known, false));
    }
    (subs, answers)
}

/// Waits until agents were told a final state for every task in `ids`, or
/// the deadline passes.
async fn wait_for_acks(shared: &Shared, ids: &HashSet<String>, deadline: Instant) {
    loop {
        let done = {
            let acked = shared.acked.lock().expect("lock");
            ids.iter().filter(|id| acked.contains_key(*id)).count()
        };
        if done == ids.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every task's final status from the server and counts it into the
/// report, against what agents were told (`acked`) and the known answers.
async fn tally_tasks(
    api: &Api,
    op: &OperatorSetup,
    ids: &[String],
    acked: &HashMap<String, TaskState>,
    answers: &HashMap<String, String>,
    report: &mut SimReport,
) -> Result<(), SimError> {
    for chunk in ids.chunks(32) {
        let futures = chunk.iter().cloned().map(|id| {
            let api = api.clone();
            let credential = op.credential.clone();
            async move {
                let v = api
                    .operator(
                        &credential,
                        reqwest::Method::GET,
                        &format!("/v1/tasks/{id}"),
                        None,
                    )
                    .await?;
                Ok::<_, SimError>((id, serde_json::from_value::<TaskStatus>(v)))
            }
        });
        for r in futures_join(futures).await {
            let (id, status) = r?;
            let Ok(status) = status else {
                continue;
            };
            tally_task(&id, &status, acked, answers, report);
        }
    }
    Ok(())
}

fn tally_task(
    id: &str,
    status: &TaskStatus,
    acked: &HashMap<String, TaskState>,
    answers: &HashMap<String, String>,
    report: &mut SimReport,
) {
    let mut nodes = HashSet::new();
    for e in &status.evidence {
        if !nodes.insert(e.node_id.clone()) {
            report.duplicate_evidence += 1;
        }
    }
    if acked.get(id) == Some(&TaskState::Verified) {
        report.acked_verified += 1;
        if status.state != TaskState::Verified {
            report.acked_lost += 1;
        }
    }
    match status.state {
        TaskState::Verified => {
            report.verified += 1;
            if status.accepted_digest.as_ref() != answers.get(id) {
                report.wrong_accepted += 1;
            }
        }
        TaskState::Failed | TaskState::Cancelled => report.failed += 1,
        TaskState::Pending => report.unfinished += 1,
    }
}

async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("status task"));
    }
    out
}
