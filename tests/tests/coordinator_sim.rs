//! The coordinator under the seeded simulator, over real HTTP against real
//! `askee-server` processes: with at most `f` colluders per task no wrong
//! result is accepted, malicious nodes are excluded, killed and flaky
//! agents' work is finished by others; and with two server processes on one
//! PostgreSQL database, a SIGKILL of one under load loses no acknowledged
//! verdict and counts no result twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use askee_testkit::pg::PgCluster;
use askee_testkit::process::{ServerProcess, server_command};
use askee_testkit::sim::{self, SimConfig, SimReport};

const SERVE_ARGS: &[&str] = &[
    "--rate-per-second",
    "1000000",
    "--rate-burst",
    "1000000",
    "--heartbeat-seconds",
    "1",
    "--lease-seconds",
    "2",
];

fn check(report: &SimReport) {
    println!("{}", report.render());
    assert_eq!(report.wrong_accepted, 0, "{}", report.render());
    assert_eq!(report.unfinished, 0, "{}", report.render());
    assert_eq!(report.failed, 0, "{}", report.render());
    assert_eq!(report.verified, report.tasks);
    assert_eq!(
        report.malicious_excluded,
        report.malicious_total,
        "{}",
        report.render()
    );
    assert_eq!(report.acked_lost, 0, "{}", report.render());
    assert_eq!(report.duplicate_evidence, 0, "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_volunteers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let data = dir.path().join("data");
    let op = sim::operator_setup(&url, &data, 7);
    let server = ServerProcess::start_with(&url, &data, Duration::from_secs(60), SERVE_ARGS);
    let cfg = SimConfig {
        seed: 7,
        tasks: 300,
        killed: 2,
        kill_after_reports: 10,
        ..SimConfig::default()
    };
    let report = sim::run(vec![server.url()], &op, cfg, async {})
        .await
        .unwrap();
    check(&report);
    // The log with every verdict still verifies.
    drop(server);
    let (ok, out) = server_command(&url, &data, &["audit", "verify"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_replication_with_faulty_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let data = dir.path().join("data");
    let op = sim::operator_setup(&url, &data, 5);
    let server = ServerProcess::start_with(&url, &data, Duration::from_secs(60), SERVE_ARGS);
    let cfg = SimConfig {
        seed: 5,
        honest: 9,
        faulty: 1,
        malicious: 0,
        colluding: 0,
        flaky: 0,
        slow: 0,
        tasks: 600,
        adaptive: true,
        spot_check_rate: 0.05,
        ..SimConfig::default()
    };
    let report = sim::run(vec![server.url()], &op, cfg, async {})
        .await
        .unwrap();
    println!("{}", report.render());
    assert_eq!(report.wrong_accepted, 0, "{}", report.render());
    assert_eq!(report.unfinished + report.failed, 0, "{}", report.render());
    // Trusted nodes ran tasks alone: better than fixed triple replication.
    assert!(report.efficiency > 0.34, "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_submit_cli_waits_for_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let data = dir.path().join("data");
    let op = sim::operator_setup(&url, &data, 3);
    let server = ServerProcess::start_with(&url, &data, Duration::from_secs(60), SERVE_ARGS);
    let key = dir.path().join("operator.key");
    let (ok, public) = server_command(
        &url,
        &data,
        &["operator", "keygen", "--out", key.to_str().unwrap()],
    );
    assert!(ok && !public.trim().is_empty());
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, sim::MODULE).unwrap();
    let base = server.url();
    let credential = op.credential.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let during = async move {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(askee_testkit::process::binary("askee-server"))
                .args(["task", "submit", "--wait", "--server", &base])
                .args(["--credential", &credential])
                .arg("--key")
                .arg(&key)
                .arg("--module")
                .arg(&module)
                .args(["--", "hello"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let _ = tx.send(out);
    };
    let cfg = SimConfig {
        seed: 3,
        honest: 4,
        faulty: 0,
        malicious: 0,
        colluding: 0,
        flaky: 0,
        slow: 0,
        tasks: 20,
        ..SimConfig::default()
    };
    let report = sim::run(vec![server.url()], &op, cfg, during)
        .await
        .unwrap();
    assert_eq!(report.verified, 20);
    let out = rx.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The task id, then the final status with its evidence.
    let json_start = stdout.find('{').unwrap();
    let status: serde_json::Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    assert_eq!(status["state"], "verified");
    assert_eq!(status["evidence"].as_array().unwrap().len(), 3);
    assert_eq!(status["task_id"], stdout.lines().next().unwrap().trim());
}

async fn recorded_results(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .and_then(|r| r.error_for_status());
    match text {
        Ok(r) => r
            .text()
            .await
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("askee_results_recorded_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_of_two_servers_on_postgres() {
    let pg = PgCluster::start();
    let url = pg.create_database("askee");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let op = sim::operator_setup(&url, &data, 11);
    let a = ServerProcess::start_with(&url, &data, Duration::from_secs(60), SERVE_ARGS);
    let b = ServerProcess::start_with(&url, &data, Duration::from_secs(60), SERVE_ARGS);
    let b_url = b.url();
    let victim = b_url.clone();
    let cfg = SimConfig {
        seed: 11,
        tasks: 300,
        killed: 1,
        kill_after_reports: 10,
        ..SimConfig::default()
    };
    // Kill server b with SIGKILL once it has recorded results, with agents
    // still leasing and reporting through it; they fail over to a.
    let at_kill = Arc::new(AtomicU64::new(0));
    let seen = at_kill.clone();
    let during = async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            let n = recorded_results(&victim).await;
            if n >= 100 || Instant::now() > deadline {
                seen.store(n, Ordering::SeqCst);
                break;
            }
            tick.tick().await;
        }
        b.kill();
    };
    let report = sim::run(vec![a.url(), b_url], &op, cfg, during)
        .await
        .unwrap();
    check(&report);
    // The kill happened under load: b had recorded results, and more work
    // was done after it (through a) than b had recorded.
    let before = at_kill.load(Ordering::SeqCst);
    assert!(
        before >= 100,
        "b recorded only {before} results before the kill"
    );
    assert!(
        report.results_reported > before + 100,
        "{}",
        report.render()
    );
    drop(a);
    let (ok, out) = server_command(&url, &data, &["audit", "verify"]);
    assert!(ok, "{out}");
}
