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
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use askee_core::b64;
use askee_server::{Clock, Config, store};
use clap::Args;
use serde_json::json;

mod drive;
mod operator;
mod volunteers;

use drive::{drive, short};
use operator::Operator;
use volunteers::{Agent, agent_binary, agent_cli, fresh_dir};

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

/// The example tasks' modules, by name.
fn read_modules(args: &DemoArgs) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
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
    Ok(modules)
}

/// The server, running in this process until `stop` is sent.
struct DemoServer {
    url: String,
    /// The demo operator's bearer credential.
    credential: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), askee_server::ServeError>>,
}

/// Starts the server in process, on a free loopback port, with its SQLite
/// database and keys in `dir`.
async fn start_server(args: &DemoArgs, dir: &Path) -> anyhow::Result<DemoServer> {
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
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(askee_server::serve_on(state, listener, async move {
        let _ = stop_rx.await;
    }));
    println!(
        "askee demo: server at {url} (SQLite database and keys in {})",
        dir.display()
    );
    Ok(DemoServer {
        url,
        credential,
        stop,
        task,
    })
}

/// What the operator uploaded: the challenge module and the example
/// modules, by digest.
struct Uploads {
    pub(super) echo: String,
    pub(super) shas: Vec<String>,
}

/// The operator: a bearer credential and a task-signing key, registered,
/// with every module uploaded.
async fn set_up_operator(
    dir: &Path,
    server: &DemoServer,
    modules: Vec<(&'static str, Vec<u8>)>,
) -> anyhow::Result<(Operator, Uploads)> {
    let key_path = dir.join("operator.key");
    crate::task_cli::keygen(&key_path)?;
    let key = crate::task_cli::load_key(&key_path)?;
    std::fs::write(
        dir.join("operator.credential"),
        format!("{}\n", server.credential),
    )?;
    let op = Operator {
        http: reqwest::Client::new(),
        base: server.url.clone(),
        auth: format!("Bearer {}", server.credential),
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
            askee_core::coordinator::ECHO_CHALLENGE_WAT
                .as_bytes()
                .to_vec(),
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
    Ok((op, Uploads { echo, shas }))
}

/// Volunteers join and grant consent through the agent's own CLI; the last
/// one is the Byzantine node.
async fn join_volunteers(
    args: &DemoArgs,
    agent_bin: &Path,
    dir: &Path,
    url: &str,
) -> anyhow::Result<Vec<Agent>> {
    println!("\nfour volunteers join and grant consent (scripted; each step is the agent's CLI):");
    let mut agents = Vec::new();
    for i in 1..=args.agents {
        let name = format!("node-{i}");
        let home = dir.join("agents").join(&name);
        let byzantine = i == args.agents;
        let init = agent_cli(agent_bin, &home, &["init"], false).await?;
        let node_id = init
            .lines()
            .find_map(|l| l.strip_prefix("node id "))
            .map(|s| s.trim().to_owned())
            .context("`askee-agent init` did not print the node id")?;
        agent_cli(agent_bin, &home, &["join", url], false).await?;
        agent_cli(
            agent_bin,
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
    Ok(agents)
}

/// Starts every volunteer's agent daemon (`run --when always`), the
/// Byzantine one corrupting what it signs.
fn start_daemons(agent_bin: &Path, agents: &mut [Agent]) -> anyhow::Result<()> {
    for a in agents {
        let log = std::fs::File::create(a.home.join("agent.log"))?;
        let mut cmd = std::process::Command::new(agent_bin);
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
    Ok(())
}

/// Runs the demo; `Ok(true)` when every example task was verified and the
/// Byzantine node was excluded.
pub async fn run(args: DemoArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let agent_bin = agent_binary()?;
    let modules = read_modules(&args)?;
    let text =
        std::fs::read(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
    fresh_dir(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let server = start_server(&args, &dir).await?;
    let url = server.url.clone();
    let (op, uploads) = set_up_operator(&dir, &server, modules).await?;
    let mut agents = join_volunteers(&args, &agent_bin, &dir, &url).await?;
    start_daemons(&agent_bin, &mut agents)?;

    let outcome = drive(&args, &op, &agents, &uploads, &text, deadline).await;
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
    let _ = server.stop.send(());
    let _ = server.task.await;
    Ok(ok)
}
