//! Building blocks for end-to-end runs with real servers and agents:
//! tiny WebAssembly tasks, signed task statements, the agent's consent
//! steps, and waiting on a condition with a bounded deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use askee_core::wire::v1::{
    TASK_STATEMENT_VERSION, TaskInputs, TaskLimits, TaskRequirements, TaskStatement, TaskSubmission,
};
use askee_core::{b64, signing};
use serde_json::Value;

use crate::process::{AgentProcess, ServerProcess, agent_command};
use crate::sim::{Api, OperatorSetup, operator_setup};

/// Copies standard input to standard output.
pub const CAT: &str = askee_core::coordinator::ECHO_CHALLENGE_WAT;

/// Never ends on its own.
pub const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `cond` until it holds or `limit` passes; the condition is the
/// synchronisation, the deadline only bounds a failure.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut cond: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A data-processing task statement for `module` reading `stdin`.
pub fn statement(module: &str, stdin: &[u8], wall: u64, fuel: u64, nonce: &str) -> TaskStatement {
    TaskStatement {
        version: TASK_STATEMENT_VERSION.into(),
        module_sha256: hex::encode(signing::sha256(module.as_bytes())),
        task_type: "data-processing".into(),
        inputs: TaskInputs {
            stdin: b64::encode(stdin),
            ..Default::default()
        },
        requirements: TaskRequirements {
            cpu_cores: 1,
            ram_mb: 32,
            storage_gb: 0,
            bandwidth_mbps: 0,
        },
        limits: TaskLimits {
            fuel,
            memory_mb: 32,
            wall_seconds: wall,
            cpu_percent: 50,
        },
        random_seed: 0,
        deadline: now() + 3600,
        f: 0,
        max_replicas: 3,
        adaptive: false,
        nonce: nonce.into(),
    }
}

/// Submits `st` signed by the operator; `known` makes it a bootstrap
/// challenge with that known digest. Returns the task id.
pub async fn submit(
    api: &Api,
    op: &OperatorSetup,
    st: TaskStatement,
    known: Option<String>,
) -> String {
    let sub = TaskSubmission {
        signature: signing::sign_task(&op.key, &st),
        operator_public_key: b64::encode(op.key.verifying_key().as_bytes()),
        statement: st,
        known_digest: known.clone(),
        bootstrap: known.is_some(),
    };
    let body = serde_json::to_vec(&sub).unwrap();
    let created = api
        .operator(
            &op.credential,
            reqwest::Method::POST,
            "/v1/tasks",
            Some(("application/json", body)),
        )
        .await
        .expect("submit a task");
    created["task_id"].as_str().unwrap().to_owned()
}

/// The task record as the operator sees it.
pub async fn task(api: &Api, op: &OperatorSetup, id: &str) -> Value {
    api.operator(
        &op.credential,
        reqwest::Method::GET,
        &format!("/v1/tasks/{id}"),
        None,
    )
    .await
    .expect("read a task")
}

/// Initialises the agent home and grants consent (see [`grant`]).
pub fn consent(home: &Path, server: &str) {
    let (ok, out, err) = agent_command(home, &["init"]);
    assert!(ok, "askee-agent init failed: {out}{err}");
    grant(home, server);
}

/// Joins `server` and grants a consent for data-processing tasks with
/// explicit limits (a new grant each time: after a revocation too).
pub fn grant(home: &Path, server: &str) {
    let run = |args: &[&str]| {
        let (ok, out, err) = agent_command(home, args);
        assert!(ok, "askee-agent {args:?} failed: {out}{err}");
    };
    run(&["join", server]);
    run(&[
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
        "data-processing",
        "--days",
        "1",
    ]);
}

/// Whether the agent journalled the start of `task_id`.
pub fn started(agent: &AgentProcess, task_id: &str) -> bool {
    agent
        .journal()
        .iter()
        .any(|e| e["kind"] == "task.start" && e["data"]["task_id"] == task_id)
}

/// A real server on SQLite in `dir` with an operator whose task-signing key
/// comes from `seed`, and `modules` (WAT text) already uploaded.
pub struct Coordinator {
    pub server: ServerProcess,
    pub op: OperatorSetup,
    pub api: Api,
}

impl Coordinator {
    pub async fn start(dir: &Path, seed: u64, modules: &[&str]) -> Self {
        let url = format!("sqlite://{}", dir.join("askee.db").display());
        let data = dir.join("data");
        // Short heartbeats so a silent agent is noticed within the test.
        let server = ServerProcess::start_with(
            &url,
            &data,
            Duration::from_secs(60),
            &["--heartbeat-seconds", "2"],
        );
        let op = operator_setup(&url, &data, seed);
        let api = Api::new(vec![server.url()], 0);
        for module in modules {
            api.operator(
                &op.credential,
                reqwest::Method::PUT,
                &format!(
                    "/v1/modules/{}",
                    hex::encode(signing::sha256(module.as_bytes()))
                ),
                Some(("application/wasm", module.as_bytes().to_vec())),
            )
            .await
            .expect("upload a module");
        }
        Self { server, op, api }
    }
}
