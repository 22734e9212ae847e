//! Coordinator benchmarks, in one run:
//! 1. verified tasks/s end to end (f = 1: 3 replicas, a tiny module,
//!    simulated agents over HTTP on loopback) on SQLite, and on PostgreSQL
//!    with two server instances sharing the database;
//! 2. useful-work efficiency of adaptive replication with 10% faulty nodes,
//!    next to fixed triple replication in the same run;
//! 3. assignment (lease) latency p50/p99 with 100,000 registered nodes.
//!
//! Run: `cargo bench -p askee-server --bench coordinator`.
//! Environment: ASKEE_BENCH_TASKS (default 10000: shorter runs are weighed
//! down by the agents' start, registration and bootstrapping), ASKEE_BENCH_AGENTS
//! (default 16), ASKEE_BENCH_ADAPTIVE_TASKS (default 10000),
//! ASKEE_BENCH_NODES (default 100000), ASKEE_BENCH_ONLY (a scenario name:
//! sqlite, postgres, adaptive, lease), ASKEE_BENCH_LEASE_BATCH (assignments
//! per lease, default 32) and ASKEE_BENCH_REPORT_BATCH (results per report
//! request, default 32; 1 = the single-result endpoint).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use askee_core::{SigningKey, b64, signing};
use askee_server::service::auth::credential_hash;
use askee_server::store::{LeaseChoice, LeaseQuery, OperatorRecord};
use askee_server::{AppState, Clock, Config};
use askee_testkit::pg::PgCluster;
use askee_testkit::sim::{self, OperatorSetup, SimConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(scenario: &str) -> bool {
    std::env::var("ASKEE_BENCH_ONLY").map_or(true, |v| v == scenario)
}

/// One in-process server instance over its own store (pool) on `url`.
async fn serve(url: &str, dir: &std::path::Path) -> (AppState, String) {
    let store = askee_server::store::open(url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut config = Config::new(dir.to_owned(), format!("http://{addr}"));
    config.rate_per_second = 1e9;
    config.rate_burst = 1e9;
    config.heartbeat_interval = Duration::from_secs(2);
    config.lease_duration = Duration::from_secs(5);
    let state = askee_server::state(config, store, Clock::System).unwrap();
    let app = askee_server::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    askee_server::spawn_checkpointer(state.clone());
    askee_server::service::coordinator::spawn_sweeper(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, format!("http://{addr}"))
}

async fn operator(state: &AppState, seed: u64) -> OperatorSetup {
    let credential = format!("askee_op_bench{seed}");
    let name = format!("bench-{seed}");
    state
        .store
        .create_operator(
            &OperatorRecord {
                name: name.clone(),
                token_hash: credential_hash(&credential),
                created_at: state.clock.now(),
            },
            askee_server::service::consent::draft(
                state,
                "operator.create",
                &name,
                serde_json::json!({}),
            ),
        )
        .await
        .unwrap();
    let key = SigningKey::from_bytes(&signing::sha256(name.as_bytes()));
    let public = b64::encode(key.verifying_key().as_bytes());
    state
        .store
        .add_operator_key(
            &name,
            &public,
            state.clock.now(),
            askee_server::service::consent::draft(
                state,
                "operator.key",
                &name,
                serde_json::json!({}),
            ),
        )
        .await
        .unwrap();
    OperatorSetup { credential, key }
}

fn honest(seed: u64, tasks: usize, agents: usize) -> SimConfig {
    SimConfig {
        seed,
        honest: agents,
        faulty: 0,
        malicious: 0,
        colluding: 0,
        flaky: 0,
        slow: 0,
        tasks,
        time_limit: Duration::from_secs(600),
        lease_batch: env("ASKEE_BENCH_LEASE_BATCH", 32) as u32,
        report_batch: env("ASKEE_BENCH_REPORT_BATCH", 32),
        ..SimConfig::default()
    }
}

async fn throughput_sqlite(tasks: usize, agents: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let (state, base) = serve(&url, dir.path()).await;
    let op = operator(&state, 1).await;
    let r = sim::run(vec![base], &op, honest(1, tasks, agents), async {})
        .await
        .unwrap();
    println!(
        "== sqlite, 1 server, {agents} agents, f=1 (3 replicas)\n{}\n",
        r.render()
    );
}

async fn throughput_postgres(tasks: usize, agents: usize) {
    let pg = PgCluster::start();
    let url = pg.create_database("askee");
    let dir = tempfile::tempdir().unwrap();
    let (state, a) = serve(&url, dir.path()).await;
    let (_, b) = serve(&url, dir.path()).await;
    let op = operator(&state, 2).await;
    let r = sim::run(vec![a, b], &op, honest(2, tasks, agents), async {})
        .await
        .unwrap();
    println!(
        "== postgres, 2 server instances, {agents} agents, f=1 (3 replicas), lease batch {}, report batch {}\n{}\n",
        env("ASKEE_BENCH_LEASE_BATCH", 32),
        env("ASKEE_BENCH_REPORT_BATCH", 32),
        r.render()
    );
}

async fn adaptive(tasks: usize) {
    for adaptive in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("askee.db").display());
        let (state, base) = serve(&url, dir.path()).await;
        let op = operator(&state, 3).await;
        let cfg = SimConfig {
            seed: 3,
            honest: 18,
            faulty: 2,
            malicious: 0,
            colluding: 0,
            flaky: 0,
            slow: 0,
            tasks,
            adaptive,
            spot_check_rate: 0.02,
            faulty_error_rate: 0.1,
            time_limit: Duration::from_secs(900),
            ..SimConfig::default()
        };
        let r = sim::run(vec![base], &op, cfg, async {}).await.unwrap();
        println!(
            "== {} replication, 20 agents of which 2 faulty (10% wrong answers), sqlite\n{}\n",
            if adaptive { "adaptive" } else { "fixed triple" },
            r.render()
        );
    }
}

/// Lease latency with `nodes` registered nodes and 10,000 pending tasks,
/// measured at the store (one lease transaction: candidate query, the
/// eligibility callback, diversity check, insert and counters).
async fn lease_latency(label: &str, url: &str, nodes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = askee_server::store::SqlStore::open(url).await.unwrap();
    let pool = store.pool().clone();
    let started = Instant::now();
    // Nodes in bulk, straight into the table (registration over HTTP would
    // measure registration).
    let mut i = 0;
    while i < nodes {
        let n = 1000.min(nodes - i);
        let mut sql = String::from(
            "INSERT INTO nodes (node_key, token_id, grant_id, token_expires_at, token_payload_json, \
             profile_json, cpu_cores, ram_mb, storage_gb, bandwidth_mbps, owner, network_prefix, \
             state, registered_at, last_heartbeat) VALUES ",
        );
        for j in 0..n {
            let k = i + j;
            if j > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('node-{k}', 'tok-{k}', 'grant-{k}', 4000000000, '{{}}', '{{}}', 4, 8192, 50, 100, \
                 'owner-{k}', '10.{}.{}.0/24', 'active', 0, 0)",
                (k / 256) % 256,
                k % 256
            ));
        }
        sqlx::query(&sql).execute(&pool).await.unwrap();
        i += n;
    }
    sqlx::query(
        "INSERT INTO modules (sha256, bytes, size_bytes, operator, created_at) VALUES ('m', $1, 1, 'op', 0)",
    )
    .bind(vec![0u8])
    .execute(&pool)
    .await
    .unwrap();
    for chunk in 0..10 {
        let mut sql = String::from(
            "INSERT INTO tasks (task_id, operator, operator_key, statement_json, signature, \
             module_sha256, task_type, duration_hours, cpu_cores, ram_mb, storage_gb, \
             bandwidth_mbps, f, max_replicas, adaptive, known_digest, bootstrap, deadline, state, \
             replicas_wanted, created_ms, updated_ms) VALUES ",
        );
        for j in 0..1000 {
            let k = chunk * 1000 + j;
            if j > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('task-{k:06}', 'op', 'key', '{{}}', 'sig', 'm', 'data-processing', 1, 1, 16, 0, 0, \
                 1, 5, 0, NULL, 0, 4000000000, 'pending', 3, {k}, {k})"
            ));
        }
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    // Statistics, as autovacuum would gather them on a live database.
    let _ = sqlx::query("ANALYZE").execute(&pool).await;
    let setup = started.elapsed();
    let types = vec!["data-processing".to_owned()];
    let new_id = || uuid::Uuid::new_v4().to_string();
    let choose = |_: &askee_server::store::TaskRecord| LeaseChoice::Take;
    let mut lat = Vec::new();
    let rounds = 3000;
    use askee_server::store::CoordinatorStore as _;
    for r in 0..rounds {
        // Different nodes across the whole table.
        let k = (r * 7919) % nodes;
        let node = format!("node-{k}");
        let owner = format!("owner-{k}");
        let prefix = format!("10.{}.{}.0/24", (k / 256) % 256, k % 256);
        let t = Instant::now();
        let got = store
            .lease(LeaseQuery {
                node_key: &node,
                owner: &owner,
                network_prefix: &prefix,
                max_tasks: 1,
                task_types: &types,
                challenges_only: false,
                now: 1_900_000_000,
                lease_expires_at: 1_900_000_300,
                new_id: &new_id,
                choose: &choose,
            })
            .await
            .unwrap();
        lat.push(t.elapsed());
        assert_eq!(got.len(), 1);
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "== lease latency, {label}: {nodes} registered nodes, 10000 pending tasks, {rounds} sequential leases\n\
         p50 {:.2?}, p99 {:.2?}, max {:.2?} (setup {:.1?})\n",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1],
        setup
    );
    drop(dir);
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tasks = env("ASKEE_BENCH_TASKS", 10_000);
    let agents = env("ASKEE_BENCH_AGENTS", 16);
    let nodes = env("ASKEE_BENCH_NODES", 100_000);
    rt.block_on(async {
        if wanted("sqlite") {
            throughput_sqlite(tasks, agents).await;
        }
        if wanted("postgres") {
            throughput_postgres(tasks, agents).await;
        }
        if wanted("adaptive") {
            adaptive(env("ASKEE_BENCH_ADAPTIVE_TASKS", 10_000)).await;
        }
        if wanted("lease") {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("lease.db").display());
            lease_latency("sqlite", &url, nodes).await;
            let pg = PgCluster::start();
            let url = pg.create_database("lease");
            lease_latency("postgres", &url, nodes).await;
        }
    });
}
