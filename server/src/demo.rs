//! `askee-server demo`: the whole system on one machine, from one command.
//!
//! It starts this server in process on embedded SQLite in a fresh directory
//! and on a free loopback port, creates an operator and its task-signing
//! key, uploads the example task modules (examples/tasks), and starts local
//! `askee-agent` daemons (the binary beside this one), each with its own
//! home, after going through consent with the agent's own CLI (`init`,
//! `join`, `consent grant` with explicit limits — printed as it runs). One
//! agent is started with the hidden, demo-only `--byzantine-corrupt-results`:
//! it signs wrong answers. New nodes must first pass bootstrapping
//! challenges (known answers); the liar fails them and is excluded, its
//! consent token revoked. Then the three example tasks run with Byzantine
//! tolerance f = 1 (three replicas, two must agree) and their verified
//! results are printed in plain words. A summary is written to
//! `<dir>/summary.json`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use askee_core::wire::v1::{
    NodeState, ReputationEntry, ReputationLedger, TASK_STATEMENT_VERSION, TaskCreated, TaskInputs,
    TaskLimits, TaskRequirements, TaskState, TaskStatement, TaskStatus, TaskSubmission,
};
use askee_core::{SigningKey, b64, signing};
use askee_server::{Clock, Config, store};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

/// Options of `askee-server demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Directory for the demo's database, keys, agent homes and summary. An
    /// earlier demo's directory is wiped first; any other existing directory
    /// is refused.
    #[arg(long, default_value = ".askee-demo")]
    pub dir: PathBuf,
    /// Directory holding the example modules pi.wasm, wordfreq.wasm and
    /// sgd.wasm (built by examples/tasks/build.sh).
    #[arg(long, default_value = "examples/tasks/wasm")]
    pub tasks: PathBuf,
    /// Text for the word-frequency task.
    #[arg(long, default_value = "examples/tasks/data/tale.txt")]
    pub text: PathBuf,
    /// Loopback port to serve on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Local agents to start, one of them Byzantine (f = 1 needs three
    /// honest ones).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(4..=12))]
    pub agents: u32,
    /// Seed of the π estimate.
    #[arg(long, default_value_t = 42)]
    pub pi_seed: u64,
    /// Points drawn for the π estimate.
    #[arg(long, default_value_t = 2_000_000)]
    pub pi_samples: u64,
    /// Seed of the SGD training data and shuffles.
    #[arg(long, default_value_t = 7)]
    pub sgd_seed: u64,
    /// Stop after printing the results instead of serving until ctrl-c.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Give up when the demo has not finished within this many seconds.
    #[arg(long, default_value_t = 240)]
    pub timeout_seconds: u64,
}

/// Challenges each new node must answer right before ordinary work
/// (`askee_core::coordinator::BOOTSTRAP_RESULTS`).
const BOOTSTRAP: u64 = askee_core::coordinator::BOOTSTRAP_RESULTS;

/// Task types the demo's volunteers allow.
const TASK_TYPES: &str = "scientific-compute,data-processing,ml-training";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The operator's side of the API, over HTTP like any operator client.
struct Operator {
    http: reqwest::Client,
    base: String,
    auth: String,
    key: SigningKey,
}

impl Operator {
    async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("{what} failed with {status}: {body}")
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        Ok(Self::check(resp, &format!("GET {path}"))
            .await?
            .json()
            .await?)
    }

    async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        Self::check(resp, &format!("POST {path}")).await
    }

    /// Uploads a module; returns its SHA-256 (hex).
    async fn upload(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let sha = hex::encode(signing::sha256(&bytes));
        let resp = self
            .http
            .put(format!("{}/v1/modules/{sha}", self.base))
            .header("authorization", &self.auth)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("uploading {name}"))?;
        Self::check(resp, &format!("uploading {name}")).await?;
        Ok(sha)
    }

    /// Signs and submits a task; returns its id.
    async fn submit(
        &self,
        statement: TaskStatement,
        known_digest: Option<String>,
    ) -> anyhow::Result<String> {
        let submission = TaskSubmission {
            signature: signing::sign_task(&self.key, &statement),
            operator_public_key: b64::encode(self.key.verifying_key().as_bytes()),
            statement,
            bootstrap: known_digest.is_some(),
            known_digest,
        };
        let created: TaskCreated = self
            .post("/v1/tasks", &serde_json::to_value(&submission)?)
            .await?
            .json()
            .await?;
        Ok(created.task_id)
    }

    async fn task(&self, id: &str) -> anyhow::Result<TaskStatus> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    async fn ledger(&self) -> anyhow::Result<Vec<ReputationEntry>> {
        Ok(self
            .get::<ReputationLedger>("/v1/reputation?limit=1000")
            .await?
            .nodes)
    }
}

struct TaskSpec<'a> {
    module_sha256: &'a str,
    task_type: &'a str,
    args: Vec<String>,
    stdin: &'a [u8],
    files: Vec<(&'a str, &'a [u8])>,
    f: u32,
    nonce: String,
}

fn statement(t: TaskSpec<'_>) -> TaskStatement {
    TaskStatement {
        version: TASK_STATEMENT_VERSION.into(),
        module_sha256: t.module_sha256.into(),
        task_type: t.task_type.into(),
        inputs: TaskInputs {
            args: t.args,
            stdin: b64::encode(t.stdin),
            files: t
                .files
                .into_iter()
                .map(|(name, bytes)| (name.to_owned(), b64::encode(bytes)))
                .collect(),
        },
        requirements: TaskRequirements {
            cpu_cores: 1,
            ram_mb: 64,
            storage_gb: 0,
            bandwidth_mbps: 0,
        },
        limits: TaskLimits {
            fuel: 2_000_000_000,
            memory_mb: 64,
            wall_seconds: 60,
            cpu_percent: 50,
        },
        random_seed: 0,
        deadline: now() + 900,
        f: t.f,
        max_replicas: 2 * t.f + 3,
        adaptive: false,
        nonce: t.nonce,
    }
}

/// One local volunteer: its home and, once started, its daemon.
struct Agent {
    name: String,
    home: PathBuf,
    node_id: String,
    byzantine: bool,
    daemon: Option<Child>,
}

impl Agent {
    fn journal_count(&self, kind: &str) -> usize {
        std::fs::read_to_string(self.home.join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == kind)
            .count()
    }
}

impl Drop for Agent {
    /// SIGTERM first, so the daemon stops its sandboxed tasks cleanly.
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            sys::terminate(&mut child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(unix)]
mod sys {
    /// Asks a child to stop (SIGTERM) through kill(1).
    pub fn terminate(child: &mut std::process::Child) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
}

#[cfg(not(unix))]
mod sys {
    pub fn terminate(child: &mut std::process::Child) {
        let _ = child.kill();
    }
}

/// `askee-agent` beside this executable.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let name = format!("askee-agent{}", std::env::consts::EXE_SUFFIX);
    let path = exe
        .parent()
        .map(|d| d.join(&name))
        .context("this executable has no directory")?;
    if !path.exists() {
        bail!(
            "{} is missing: build the agent next to the server first, e.g. \
             `cargo build --release -p askee-server -p askee-agent` (examples/demo.sh does it all)",
            path.display()
        );
    }
    Ok(path)
}

/// Creates `dir` fresh: an earlier demo's directory (it holds the marker
/// file) is wiped, anything else that exists is refused.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    const MARKER: &str = ".askee-demo-dir";
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not an earlier demo's directory; choose another with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "created by `askee-server demo`; wiped by the next one\n",
    )
    .with_context(|| format!("writing the marker in {}", dir.display()))?;
    Ok(())
}

/// Runs one agent command to completion, printing it first.
async fn agent_cli(
    bin: &Path,
    home: &Path,
    args: &[&str],
    show_output: bool,
) -> anyhow::Result<String> {
    println!(
        "  $ askee-agent --home {} {}",
        home.display(),
        args.join(" ")
    );
    let out = tokio::process::Command::new(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("ASKEE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "askee-agent {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if show_output {
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            println!("      {line}");
        }
    }
    Ok(stdout)
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn short(node_id: &str) -> &str {
    node_id.get(..10).unwrap_or(node_id)
}

/// Runs the demo; `Ok(true)` when every example task was verified and the
/// Byzantine node was excluded.
pub async fn run(args: DemoArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let agent_bin = agent_binary()?;
    let mut modules = Vec::new();
    for name in ["pi", "wordfreq", "sgd"] {
        let path = args.tasks.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {}: build the example tasks with examples/tasks/build.sh",
                path.display()
            )
        })?;
        modules.push((name, bytes));
    }
    let text =
        std::fs::read(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    fresh_dir(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;

    // The server, in process, on a free loopback port.
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
            .await
            .context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let database = format!("sqlite://{}", dir.join("askee.db").display());
    let store = store::open(&database)
        .await
        .with_context(|| format!("opening {database}"))?;
    let mut config = Config::new(dir.join("data"), url.clone());
    config.operator_name = "askee demo operator".into();
    config.heartbeat_interval = Duration::from_secs(5);
    let state = askee_server::state(config, store, Clock::System)?;
    let credential = crate::new_operator(&state, "demo").await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(askee_server::serve_on(state, listener, async move {
        let _ = stop_rx.await;
    }));
    println!(
        "askee demo: server at {url} (SQLite database and keys in {})",
        dir.display()
    );

    // The operator: a bearer credential and a task-signing key.
    let key_path = dir.join("operator.key");
    crate::task_cli::keygen(&key_path)?;
    let key = crate::task_cli::load_key(&key_path)?;
    std::fs::write(dir.join("operator.credential"), format!("{credential}\n"))?;
    let op = Operator {
        http: reqwest::Client::new(),
        base: url.clone(),
        auth: format!("Bearer {credential}"),
        key,
    };
    op.post(
        "/v1/operators/keys",
        &json!({ "public_key": b64::encode(op.key.verifying_key().as_bytes()) }),
    )
    .await?;
    let echo = op
        .upload(
            "the challenge module",
            askee_core::coordinator::ECHO_CHALLENGE_WAT.as_bytes().to_vec(),
        )
        .await?;
    let mut shas = Vec::new();
    for (name, bytes) in modules {
        let size = bytes.len();
        let sha = op.upload(name, bytes).await?;
        println!(
            "uploaded {name}.wasm ({} KiB, sha256 {}…)",
            size / 1024,
            &sha[..12]
        );
        shas.push(sha);
    }

    // Volunteers: consent through the agent's own CLI, then the daemons.
    println!("\nfour volunteers join and grant consent (scripted; each step is the agent's CLI):");
    let mut agents = Vec::new();
    for i in 1..=args.agents {
        let name = format!("node-{i}");
        let home = dir.join("agents").join(&name);
        let byzantine = i == args.agents;
        let init = agent_cli(&agent_bin, &home, &["init"], false).await?;
        let node_id = init
            .lines()
            .find_map(|l| l.strip_prefix("node id "))
            .map(|s| s.trim().to_owned())
            .context("`askee-agent init` did not print the node id")?;
        agent_cli(&agent_bin, &home, &["join", &url], false).await?;
        agent_cli(
            &agent_bin,
            &home,
            &[
                "consent",
                "grant",
                "--yes",
                "--cpu-percent",
                "50",
                "--ram-mb",
                "256",
                "--storage-gb",
                "1",
                "--bandwidth-mbps",
                "1",
                "--task-types",
                TASK_TYPES,
                "--days",
                "1",
            ],
            i == 1,
        )
        .await?;
        agents.push(Agent {
            name,
            home,
            node_id,
            byzantine,
            daemon: None,
        });
    }
    for a in &mut agents {
        let log = std::fs::File::create(a.home.join("agent.log"))?;
        let mut cmd = std::process::Command::new(&agent_bin);
        cmd.arg("--home")
            .arg(&a.home)
            .args(["run", "--when", "always", "--parallel", "2"]);
        if a.byzantine {
            cmd.arg("--byzantine-corrupt-results");
        }
        let child = cmd
            .env("ASKEE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", agent_bin.display()))?;
        println!(
            "started {} (node {}…){}",
            a.name,
            short(&a.node_id),
            if a.byzantine {
                "  <- deliberately Byzantine: it corrupts every result it signs"
            } else {
                ""
            }
        );
        a.daemon = Some(child);
    }

    let outcome = drive(&args, &op, &agents, &echo, &shas, &text, deadline).await;
    let ok = match outcome {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            for a in &agents {
                eprintln!("  agent log: {}", a.home.join("agent.log").display());
            }
            false
        }
    };
    println!(
        "\ndone in {:.0} s. The server is at {url}\n  operator dashboard: {url}/dashboard (paste the operator credential from {})\n  try: curl -H \"authorization: Bearer $(cat {})\" {url}/v1/reputation\n  also {url}/v1/audit/checkpoint and {url}/openapi.json",
        started.elapsed().as_secs_f64(),
        dir.join("operator.credential").display(),
        dir.join("operator.credential").display(),
    );
    if !args.exit_when_done {
        println!("serving until ctrl-c");
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(agents);
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(ok)
}

/// Polls `f` every 200 ms until it returns `Some`, or fails at `deadline`.
async fn until<T>(
    what: &str,
    deadline: Instant,
    mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn drive(
    args: &DemoArgs,
    op: &Operator,
    agents: &[Agent],
    echo: &str,
    shas: &[String],
    text: &[u8],
    deadline: Instant,
) -> anyhow::Result<bool> {
    let ids: Vec<&str> = agents.iter().map(|a| a.node_id.as_str()).collect();
    until("every agent to register", deadline, async || {
        let ledger = op.ledger().await?;
        Ok(ids
            .iter()
            .all(|id| ledger.iter().any(|n| n.node_id == *id))
            .then_some(()))
    })
    .await?;

    // Bootstrapping: challenges with known answers until every honest node
    // has earned its reputation and the liar has been caught.
    println!(
        "\nbootstrapping: each new node must answer {BOOTSTRAP} challenges with known answers before real work"
    );
    let multi = MultiProgress::new();
    let honest: Vec<&Agent> = agents.iter().filter(|a| !a.byzantine).collect();
    let liar = agents
        .iter()
        .find(|a| a.byzantine)
        .context("no byzantine agent")?;
    let boot = multi.add(ProgressBar::new(BOOTSTRAP * honest.len() as u64));
    boot.set_style(bar_style(
        "{prefix:>14} {bar:30.green} {pos}/{len} right answers  {msg}",
    ));
    boot.set_prefix("honest nodes");
    let caught = multi.add(ProgressBar::new(u64::from(
        askee_core::rules::ByzantinePolicy::default().wrong_results,
    )));
    caught.set_style(bar_style(
        "{prefix:>14} {bar:30.red} {pos}/{len} wrong answers  {msg}",
    ));
    caught.set_prefix(liar.name.clone());
    let mut challenges: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut round = 0u32;
    loop {
        let ledger = op.ledger().await?;
        let entry = |id: &str| ledger.iter().find(|n| n.node_id == id);
        let right: u64 = honest
            .iter()
            .map(|a| entry(&a.node_id).map_or(0, |n| n.agreed.min(BOOTSTRAP)))
            .sum();
        boot.set_position(right);
        let liar_entry = entry(&liar.node_id);
        caught.set_position(liar_entry.map_or(0, |n| n.wrong));
        if let Some(n) = liar_entry {
            caught.set_message(format!("state {}", n.state.as_str()));
        }
        // Done when every honest node has its right answers and no
        // challenge still running (a challenge withdrawn while it runs would
        // count as unfinished work against the node).
        let done_honest = right == BOOTSTRAP * honest.len() as u64
            && honest
                .iter()
                .all(|a| entry(&a.node_id).is_some_and(|n| n.completed >= n.assigned));
        let done_liar = liar_entry.is_some_and(|n| n.state == NodeState::Byzantine);
        if done_honest && done_liar {
            break;
        }
        if Instant::now() > deadline {
            bail!("bootstrapping did not finish in time");
        }
        // Keep challenges on offer: a wrong answer goes back to the pool.
        let mut still = Vec::new();
        for id in &pending {
            if op.task(id).await?.state == TaskState::Pending {
                still.push(id.clone());
            }
        }
        pending = still;
        let want = if challenges.is_empty() {
            BOOTSTRAP as usize * agents.len()
        } else {
            4
        };
        while pending.len() < want && challenges.len() < 64 {
            let input = format!("challenge {round}: say this back exactly\n");
            let known = hex::encode(askee_sandbox::digest::result_digest(
                0,
                input.as_bytes(),
                &[],
            ));
            let id = op
                .submit(
                    statement(TaskSpec {
                        module_sha256: echo,
                        task_type: "data-processing",
                        args: Vec::new(),
                        stdin: input.as_bytes(),
                        files: Vec::new(),
                        f: 0,
                        nonce: format!("challenge-{round}"),
                    }),
                    Some(known),
                )
                .await?;
            challenges.push(id.clone());
            pending.push(id);
            round += 1;
        }
        boot.set_message(format!("{} challenges sent", challenges.len()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    boot.finish();
    caught.finish_with_message("excluded as byzantine; its consent token is revoked");
    // Challenges nobody needs any more are withdrawn.
    for id in &challenges {
        if op.task(id).await?.state == TaskState::Pending {
            op.post(&format!("/v1/tasks/{id}/cancel"), &json!({}))
                .await?;
        }
    }

    // The example tasks, each on three nodes, two of which must agree.
    println!("\nthe example tasks, each replicated on 3 nodes (f = 1: 2 matching results needed):");
    let pi_args = vec![
        "--seed".to_owned(),
        args.pi_seed.to_string(),
        "--samples".to_owned(),
        args.pi_samples.to_string(),
    ];
    let sgd_args = vec!["--seed".to_owned(), args.sgd_seed.to_string()];
    let specs = [
        (
            "π estimate",
            "scientific-compute",
            &shas[0],
            pi_args,
            Vec::new(),
        ),
        (
            "word counts",
            "data-processing",
            &shas[1],
            vec![
                "/input/text.txt".to_owned(),
                "--top".to_owned(),
                "8".to_owned(),
            ],
            vec![("text.txt", text)],
        ),
        (
            "SGD training",
            "ml-training",
            &shas[2],
            sgd_args,
            Vec::new(),
        ),
    ];
    let mut tasks = Vec::new();
    for (label, task_type, sha, task_args, files) in specs {
        let id = op
            .submit(
                statement(TaskSpec {
                    module_sha256: sha,
                    task_type,
                    args: task_args,
                    stdin: b"",
                    files,
                    f: 1,
                    nonce: uuid::Uuid::new_v4().simple().to_string(),
                }),
                None,
            )
            .await?;
        let bar = multi.add(ProgressBar::new(3));
        bar.set_style(bar_style(
            "{prefix:>14} {bar:30.cyan} {pos}/{len} results  {msg}",
        ));
        bar.set_prefix(label);
        bar.enable_steady_tick(Duration::from_millis(200));
        tasks.push((label, task_type, id, bar));
    }
    let mut statuses = Vec::new();
    for (label, _, id, bar) in &tasks {
        let status = until(&format!("the {label} task"), deadline, async || {
            let s = op.task(id).await?;
            bar.set_length(u64::from(2 * s.f + 1).max(u64::from(s.replicas_assigned)));
            bar.set_position(u64::from(s.results_received));
            bar.set_message(s.state.as_str().to_owned());
            Ok(s.state.is_final().then_some(s))
        })
        .await?;
        bar.finish();
        statuses.push(status);
    }
    drop(multi);

    // The results in plain words.
    println!("\nverified results:");
    let mut all_verified = true;
    let mut summary_tasks = serde_json::Map::new();
    for ((label, task_type, id, _), s) in tasks.iter().zip(&statuses) {
        let stdout = s
            .stdout
            .as_deref()
            .and_then(|t| b64::decode(t).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let agreeing = s
            .evidence
            .iter()
            .filter(|e| Some(&e.result_digest) == s.accepted_digest.as_ref())
            .count();
        if s.state != TaskState::Verified {
            all_verified = false;
            println!(
                "  {label}: {} — {}",
                s.state.as_str(),
                s.reason.as_deref().unwrap_or("no reason given")
            );
        } else {
            println!(
                "  {label} ({task_type}), {agreeing} of {} results agree:",
                s.evidence.len()
            );
            for line in plain_words(label, &stdout) {
                println!("    {line}");
            }
        }
        summary_tasks.insert(
            (*label).to_owned(),
            json!({
                "task_id": id,
                "task_type": task_type,
                "state": s.state.as_str(),
                "agreeing": agreeing,
                "results": s.evidence.len(),
                "accepted_digest": s.accepted_digest,
                "stdout": stdout,
            }),
        );
    }

    // Every node's standing, and what became of the liar.
    let ledger = op.ledger().await?;
    println!("\nnodes:");
    let mut summary_nodes = Vec::new();
    let mut liar_excluded = false;
    for a in agents {
        let Some(n) = ledger.iter().find(|n| n.node_id == a.node_id) else {
            continue;
        };
        let corrupted = a.journal_count("byzantine.corrupted");
        println!(
            "  {} {}…  {:<9} reputation {:.2}  right {}  wrong {}{}",
            a.name,
            short(&a.node_id),
            n.state.as_str(),
            n.reputation,
            n.agreed,
            n.wrong,
            match &n.exclusion_reason {
                Some(r) => format!("  excluded: {r}"),
                None => String::new(),
            }
        );
        if a.byzantine {
            liar_excluded = n.state == NodeState::Byzantine;
            println!(
                "    {} lied {corrupted} time(s) (its own journal records each lie); the coordinator {}",
                a.name,
                if liar_excluded {
                    "caught it, excluded it and revoked its consent token"
                } else {
                    "has NOT excluded it"
                }
            );
        }
        summary_nodes.push(json!({
            "name": a.name,
            "node_id": a.node_id,
            "byzantine": a.byzantine,
            "state": n.state.as_str(),
            "reputation": n.reputation,
            "agreed": n.agreed,
            "wrong": n.wrong,
            "exclusion_reason": n.exclusion_reason,
            "corrupted_results": corrupted,
        }));
    }
    let summary = json!({
        "server": op.base,
        "tasks": summary_tasks,
        "nodes": summary_nodes,
        "ok": all_verified && liar_excluded,
    });
    let path = args.dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(all_verified && liar_excluded)
}

/// A task's output, explained.
fn plain_words(label: &str, stdout: &str) -> Vec<String> {
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or("?")
            .to_owned()
    };
    match label {
        "π estimate" => vec![format!(
            "π ≈ {} from {} random points ({} inside the quarter circle, seed {})",
            field("pi"),
            field("samples"),
            field("inside"),
            field("seed")
        )],
        "word counts" => {
            let top: Vec<String> = stdout
                .lines()
                .filter_map(|l| {
                    let (n, w) = l.split_once(' ')?;
                    n.parse::<u64>().ok().map(|n| format!("{w} ×{n}"))
                })
                .collect();
            vec![format!(
                "{} words, {} distinct; most frequent: {}",
                field("words"),
                field("distinct"),
                top.join(", ")
            )]
        }
        "SGD training" => {
            let losses: Vec<&str> = stdout
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("epoch ")?
                        .split_once(" loss ")
                        .map(|(_, v)| v)
                })
                .collect();
            vec![format!("loss per epoch: {}", losses.join(" → ")), {
                let b = field("b");
                let b = match b.strip_prefix('-') {
                    Some(minus) => format!("− {minus}"),
                    None => format!("+ {b}"),
                };
                format!(
                    "fitted y = {}·x {b} (the data came from y = 3·x − 2 plus noise)",
                    field("w")
                )
            }]
        }
        _ => stdout.lines().map(str::to_owned).collect(),
    }
}
