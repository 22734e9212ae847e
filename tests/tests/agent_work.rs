//! The work loop end to end with the real binaries (issue 6's acceptance):
//! one server, two `askee-agent run` daemons with their consent tokens, real
//! WebAssembly tasks in the real sandbox, signed results verified by the
//! coordinator; then a revocation stops everything on one agent within a
//! second while the other keeps working.

use std::path::Path;
use std::time::{Duration, Instant};

use askee_core::wire::v1::{
    TASK_STATEMENT_VERSION, TaskInputs, TaskLimits, TaskRequirements, TaskStatement, TaskSubmission,
};
use askee_core::{b64, signing};
use askee_testkit::process::{AgentProcess, ServerProcess, agent_command};
use askee_testkit::sim::{Api, OperatorSetup, operator_setup};
use serde_json::Value;

/// Copies standard input to standard output.
const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (block $done (loop $more
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (br_if $done (i32.eqz (local.get $n)))
      (i32.store (i32.const 4) (local.get $n))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $more)))))"#;

/// Never ends on its own.
const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `cond` until it holds or `limit` passes; the condition is the
/// synchronisation, the deadline only bounds a failure.
async fn wait_for<T>(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn statement(module: &str, stdin: &[u8], wall: u64, fuel: u64, nonce: &str) -> TaskStatement {
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

async fn submit(api: &Api, op: &OperatorSetup, st: TaskStatement, known: Option<String>) -> String {
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

async fn task(api: &Api, op: &OperatorSetup, id: &str) -> Value {
    api.operator(
        &op.credential,
        reqwest::Method::GET,
        &format!("/v1/tasks/{id}"),
        None,
    )
    .await
    .expect("read a task")
}

fn consent(home: &Path, server: &str) {
    let run = |args: &[&str]| {
        let (ok, out, err) = agent_command(home, args);
        assert!(ok, "askee-agent {args:?} failed: {out}{err}");
    };
    run(&["init"]);
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

fn started(agent: &AgentProcess, task_id: &str) -> bool {
    agent
        .journal()
        .iter()
        .any(|e| e["kind"] == "task.start" && e["data"]["task_id"] == task_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_verified_work_and_a_revocation_stops_one_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let data = dir.path().join("data");
    let server = ServerProcess::start_with(
        &url,
        &data,
        Duration::from_secs(60),
        &["--heartbeat-seconds", "2"],
    );
    let op = operator_setup(&url, &data, 6);
    let api = Api::new(vec![server.url()], 0);
    for module in [CAT, SPIN] {
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

    let homes: Vec<_> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
    for home in &homes {
        consent(home, &server.url());
    }
    let mut agents: Vec<AgentProcess> = homes
        .iter()
        .map(|h| AgentProcess::start(h, &["--when", "always", "--parallel", "2"]))
        .collect();

    // Bootstrapping challenges with known answers: each new node needs three
    // before ordinary work, and each runs in the real sandbox. Which agent
    // takes which is up to them, so challenges go out until both qualify.
    let uploads = |a: &AgentProcess| {
        a.journal()
            .iter()
            .filter(|e| e["kind"] == "result.uploaded")
            .count()
    };
    let mut round = 0;
    while agents.iter().any(|a| uploads(a) < 3) {
        assert!(
            round < 12,
            "challenges never spread: {}\n{}",
            agents[0].log(),
            agents[1].log()
        );
        let mut batch = Vec::new();
        for k in 0..2 {
            let input = format!("challenge {round}.{k}\n");
            let known = hex::encode(askee_sandbox::digest::result_digest(
                0,
                input.as_bytes(),
                &[],
            ));
            let st = statement(
                CAT,
                input.as_bytes(),
                60,
                100_000_000,
                &format!("c{round}.{k}"),
            );
            batch.push(submit(&api, &op, st, Some(known)).await);
        }
        for id in &batch {
            let t = wait_for(
                "a challenge to be verified",
                Duration::from_secs(120),
                async || {
                    let t = task(&api, &op, id).await;
                    (t["state"] != "pending").then_some(t)
                },
            )
            .await;
            assert_eq!(
                t["state"],
                "verified",
                "{t}\n{}\n{}",
                agents[0].log(),
                agents[1].log()
            );
        }
        // A verified task's result was uploaded; the journal line follows the
        // upload's answer, so wait for it rather than race it.
        let total = 2 * (round + 1);
        wait_for(
            "the uploads to be journalled",
            Duration::from_secs(30),
            async || (agents.iter().map(uploads).sum::<usize>() >= total).then_some(()),
        )
        .await;
        round += 1;
    }

    // An endless task; whoever takes it is revoked while it runs.
    let spin = submit(
        &api,
        &op,
        statement(SPIN, b"", 300, u64::MAX / 4, "spin"),
        None,
    )
    .await;
    let victim = wait_for(
        "the endless task to start",
        Duration::from_secs(60),
        async || (0..agents.len()).find(|&i| started(&agents[i], &spin)),
    )
    .await;
    let other = 1 - victim;
    let revoke_started = Instant::now();
    let (ok, out, err) = agent_command(&homes[victim], &["revoke", "--reason", "e2e"]);
    assert!(ok, "{out}{err}");
    let stopped = wait_for(
        "the task to be stopped",
        Duration::from_secs(10),
        async || {
            agents[victim]
                .journal()
                .iter()
                .any(|e| e["kind"] == "task.terminated")
                .then(Instant::now)
        },
    )
    .await;
    let latency = stopped - revoke_started;
    // The target (1 s, in BENCHMARKS.md) is measured by the benchmark; this
    // bound only catches a path that does not push the revocation at all.
    assert!(
        latency < Duration::from_secs(5),
        "revocation took {latency:?}: {}",
        agents[victim].log()
    );
    let journal = agents[victim].journal();
    let stop = journal
        .iter()
        .find(|e| e["kind"] == "work.stopped")
        .expect("the stop is journalled");
    assert!(
        stop["data"]["reason"].as_str().unwrap().contains("revoked"),
        "{stop}"
    );
    assert!(
        agents[victim].is_running(),
        "the revoked agent stays up, idle"
    );
    // Its scratch space is clean and nothing runs there.
    let scratch = homes[victim].join("work");
    let leftovers = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "scratch space left behind");

    // The other agent keeps working; the revoked one takes nothing more.
    let input = b"after the revocation\n";
    let late = submit(
        &api,
        &op,
        statement(CAT, input, 60, 100_000_000, "late"),
        None,
    )
    .await;
    let t = wait_for(
        "work after the revocation",
        Duration::from_secs(60),
        async || {
            let t = task(&api, &op, &late).await;
            (t["state"] != "pending").then_some(t)
        },
    )
    .await;
    assert_eq!(t["state"], "verified", "{t}");
    assert_eq!(
        t["accepted_digest"],
        hex::encode(askee_sandbox::digest::result_digest(0, input, &[]))
    );
    assert!(started(&agents[other], &late));
    assert!(!started(&agents[victim], &late));
    // Both journals are intact hash chains.
    for home in &homes {
        let (ok, out, err) = agent_command(home, &["audit", "verify"]);
        assert!(ok, "{out}{err}");
    }
    agents.clear();
}
