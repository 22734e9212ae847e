//! Grant-to-token latency under concurrent load, over real HTTP on
//! loopback, on SQLite and on a throwaway PostgreSQL cluster, in one run.
//! Each client repeats join → signed grant; the figure is the grant
//! request's latency (signature check, validation, token issue, durable
//! commit of grant + token + audit entries). Run:
//!   cargo bench -p askee-server --bench grant_latency
//! Environment: ASKEE_BENCH_CLIENTS (default 16), ASKEE_BENCH_GRANTS (default 2000).

use std::net::SocketAddr;
use std::time::Instant;

use askee_server::{Clock, Config};
use askee_testkit::pg::PgCluster;
use askee_testkit::volunteer::join_and_grant;

async fn run(label: &str, url: &str, clients: usize, grants: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = askee_server::store::open(url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut config = Config::new(dir.path().to_owned(), format!("http://{addr}"));
    config.rate_per_second = 1e9;
    config.rate_burst = 1e9;
    let state = askee_server::state(config, store, Clock::System).unwrap();
    let app = askee_server::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}");
    let per_client = grants / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                lat.push(join_and_grant(&http, &base).await.unwrap().1);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = started.elapsed();
    server.abort();
    all.sort();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{label}: {} grants, {clients} clients: grant latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} join+grant flows/s",
        all.len(),
        q(0.50).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3,
        all.len() as f64 / wall.as_secs_f64()
    );
}

fn main() {
    let clients: usize = std::env::var("ASKEE_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let grants: usize = std::env::var("ASKEE_BENCH_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
        run("sqlite", &sqlite, clients, grants).await;
        let pg = PgCluster::start();
        let url = pg.create_database("bench");
        run("postgres", &url, clients, grants).await;
    });
}
