//! Revocation to stopped work, end to end with the real binaries: one
//! server, one `askee-agent run` daemon running an endless task in the
//! sandbox; `askee-agent revoke` is run and the time until the daemon
//! journals `task.terminated` is measured, round after round (each round
//! grants a new consent). The target is p99 at most one second.
//!
//! Run: `cargo build -p askee-server -p askee-agent --bins &&
//! cargo bench --profile dev -p askee-testkit --bench revocation`
//! (the binaries are taken from the same profile's directory).
//! `ASKEE_BENCH_ROUNDS` sets the rounds (default 20).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use askee_testkit::process::{AgentProcess, agent_command};
use askee_testkit::work::{
    Coordinator, SPIN, consent, grant, started, statement, submit, wait_for,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let rounds: usize = std::env::var("ASKEE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(rounds));
}

async fn run(rounds: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let Coordinator { server, op, api } = Coordinator::start(dir.path(), 7, &[SPIN]).await;
    let home = dir.path().join("volunteer");
    consent(&home, &server.url());
    let agent = AgentProcess::start(&home, &["--when", "always", "--parallel", "1"]);

    let mut command = Vec::new();
    let mut stop = Vec::new();
    for round in 0..rounds {
        // A bootstrap challenge, so the new node may take it; its known
        // answer is never reached because the task never ends.
        let st = statement(SPIN, b"", 300, u64::MAX / 4, &format!("spin {round}"));
        let id = submit(&api, &op, st, Some("00".repeat(32))).await;
        wait_for(
            "the endless task to start",
            Duration::from_secs(120),
            async || started(&agent, &id).then_some(()),
        )
        .await;
        let before = now_ms();
        let (ok, out, err) = agent_command(&home, &["revoke", "--reason", "bench"]);
        assert!(ok, "revoke failed: {out}{err}");
        let returned = now_ms();
        let entry = wait_for("the task to stop", Duration::from_secs(30), async || {
            agent
                .journal()
                .into_iter()
                .filter(|e| e["kind"] == "task.terminated")
                .nth(round)
        })
        .await;
        let at = entry["timestamp_ms"].as_i64().expect("journal timestamp");
        command.push(returned - before);
        stop.push(at - before);
        api.operator(
            &op.credential,
            reqwest::Method::POST,
            &format!("/v1/tasks/{id}/cancel"),
            None,
        )
        .await
        .expect("cancel the task");
        grant(&home, &server.url());
        eprint!("\rround {}/{rounds}: {} ms", round + 1, at - before);
    }
    eprintln!();
    command.sort_unstable();
    stop.sort_unstable();
    let started = Instant::now();
    drop(agent);
    let shutdown = started.elapsed();
    println!("revocation to stopped task, {rounds} rounds (ms):");
    for (name, v) in [
        ("revoke command returned (reference)", &command),
        ("task terminated", &stop),
    ] {
        println!(
            "  {name:38} p50 {:5}  p90 {:5}  p99 {:5}  max {:5}",
            percentile(v, 50.0),
            percentile(v, 90.0),
            percentile(v, 99.0),
            v[v.len() - 1]
        );
    }
    let p99 = percentile(&stop, 99.0);
    println!(
        "target p99 <= 1000 ms: {} (agent shutdown took {} ms)",
        if p99 <= 1000 { "met" } else { "NOT met" },
        shutdown.as_millis()
    );
}
