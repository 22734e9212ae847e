//! `askee-server task submit` and `operator keygen`: an operator's client
//! for the task API (upload the module, sign and submit the task, follow
//! its progress events with a progress bar).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use askee_core::wire::v1::{
    TASK_STATEMENT_VERSION, TaskCreated, TaskInputs, TaskLimits, TaskProgress, TaskRequirements,
    TaskState, TaskStatement, TaskStatus, TaskSubmission,
};
use askee_core::{SigningKey, b64, signing};
use clap::Args;

/// Options of `task submit`.
#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// Coordinator base URL.
    #[arg(
        long,
        env = "ASKEE_SERVER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Operator bearer credential (from `operator create`).
    #[arg(long, env = "ASKEE_OPERATOR_CREDENTIAL", hide_env_values = true)]
    pub credential: String,
    /// Operator signing key file (from `operator keygen`).
    #[arg(long, env = "ASKEE_OPERATOR_KEY")]
    pub key: PathBuf,
    /// The WebAssembly module to run.
    #[arg(long)]
    pub module: PathBuf,
    /// Task type from the coordinator's allowlist.
    #[arg(long, default_value = "data-processing")]
    pub task_type: String,
    /// Byzantine replicas tolerated (2f+1 replicas, f+1 must agree).
    #[arg(long, default_value_t = 1)]
    pub f: u32,
    /// Most replicas ever assigned (default 2f+3).
    #[arg(long)]
    pub max_replicas: Option<u32>,
    /// Seconds from now until the task fails if not verified.
    #[arg(long, default_value_t = 3600)]
    pub deadline_seconds: i64,
    /// A file whose bytes go to standard input.
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// An input file, as NAME=PATH (repeatable).
    #[arg(long = "input", value_parser = parse_input)]
    pub inputs: Vec<(String, PathBuf)>,
    #[arg(long, default_value_t = 1_000_000_000)]
    pub fuel: u64,
    #[arg(long, default_value_t = 256)]
    pub memory_mb: u64,
    #[arg(long, default_value_t = 600)]
    pub wall_seconds: u64,
    #[arg(long, default_value_t = 50)]
    pub cpu_percent: u32,
    /// Adaptive replication (trusted nodes alone, with spot checks).
    #[arg(long)]
    pub adaptive: bool,
    /// Seed of the task's deterministic randomness.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Wait for the verdict, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Arguments passed to the module.
    #[arg(last = true)]
    pub args: Vec<String>,
}

fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=PATH"))?;
    Ok((name.to_owned(), PathBuf::from(path)))
}

/// Writes a new operator key (0600) and returns its public key.
pub fn keygen(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        bail!("{} exists; not overwriting a key", path.display());
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let text = b64::encode(key.to_bytes());
    write_private(path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(b64::encode(key.verifying_key().as_bytes()))
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed: [u8; 32] = b64::decode_array(text.trim())
        .with_context(|| format!("{} is not an operator key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    bail!("{what} failed with {status}: {body}")
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<bool> {
    let base = a.server.trim_end_matches('/').to_owned();
    let key = load_key(&a.key)?;
    let public = b64::encode(key.verifying_key().as_bytes());
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", a.credential);
    check(
        http.post(format!("{base}/v1/operators/keys"))
            .header("authorization", &auth)
            .json(&serde_json::json!({ "public_key": public }))
            .send()
            .await?,
        "registering the operator key",
    )
    .await?;
    let module = std::fs::read(&a.module)
        .with_context(|| format!("reading module {}", a.module.display()))?;
    let sha = hex::encode(signing::sha256(&module));
    check(
        http.put(format!("{base}/v1/modules/{sha}"))
            .header("authorization", &auth)
            .header("content-type", "application/wasm")
            .body(module)
            .send()
            .await?,
        "uploading the module",
    )
    .await?;
    let stdin = match &a.stdin {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let mut files = BTreeMap::new();
    for (name, path) in &a.inputs {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        files.insert(name.clone(), b64::encode(bytes));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let statement = TaskStatement {
        version: TASK_STATEMENT_VERSION.into(),
        module_sha256: sha,
        task_type: a.task_type,
        inputs: TaskInputs {
            args: a.args,
            stdin: b64::encode(stdin),
            files,
        },
        requirements: TaskRequirements {
            cpu_cores: 1,
            ram_mb: a.memory_mb,
            storage_gb: 0,
            bandwidth_mbps: 0,
        },
        limits: TaskLimits {
            fuel: a.fuel,
            memory_mb: a.memory_mb,
            wall_seconds: a.wall_seconds,
            cpu_percent: a.cpu_percent,
        },
        random_seed: a.seed,
        deadline: now + a.deadline_seconds,
        f: a.f,
        max_replicas: a.max_replicas.unwrap_or(2 * a.f + 3),
        adaptive: a.adaptive,
        nonce: uuid::Uuid::new_v4().simple().to_string(),
    };
    let submission = TaskSubmission {
        signature: signing::sign_task(&key, &statement),
        statement,
        operator_public_key: public,
        known_digest: None,
        bootstrap: false,
    };
    let created: TaskCreated = check(
        http.post(format!("{base}/v1/tasks"))
            .header("authorization", &auth)
            .json(&submission)
            .send()
            .await?,
        "submitting the task",
    )
    .await?
    .json()
    .await?;
    println!("{}", created.task_id);
    if !a.wait {
        return Ok(true);
    }
    follow(&http, &base, &auth, &created.task_id).await?;
    let status: TaskStatus = check(
        http.get(format!("{base}/v1/tasks/{}", created.task_id))
            .header("authorization", &auth)
            .send()
            .await?,
        "reading the task",
    )
    .await?
    .json()
    .await?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(status.state == TaskState::Verified)
}

/// Follows the progress events until the task is final.
async fn follow(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    task_id: &str,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} results  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut resp = check(
        http.get(format!("{base}/v1/tasks/{task_id}/events"))
            .header("authorization", auth)
            .send()
            .await?,
        "following the task",
    )
    .await?;
    let mut buffer = String::new();
    while let Some(chunk) = resp.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let p: TaskProgress = serde_json::from_str(data.trim())
                        .context("a progress event is not valid json")?;
                    bar.set_length(u64::from(p.replicas_needed.max(1)));
                    bar.set_position(u64::from(p.results_received));
                    bar.set_message(format!(
                        "{} ({} replicas assigned)",
                        p.state.as_str(),
                        p.replicas_assigned
                    ));
                    if p.state.is_final() {
                        bar.finish();
                        return Ok(());
                    }
                }
            }
        }
    }
    bar.abandon();
    bail!("the progress stream ended before the task was final")
}
