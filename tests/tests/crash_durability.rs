//! Killing the server with SIGKILL during a burst of grants loses no
//! acknowledged grant and leaves no half-written one, on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use askee_testkit::pg::PgCluster;
use askee_testkit::process::{ServerProcess, server_command};
use askee_testkit::volunteer::join_and_grant;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const KILL_AFTER: usize = 40;
const CLIENTS: usize = 8;

async fn burst_then_kill(database_url: &str, data_dir: &std::path::Path) {
    let server = ServerProcess::start(database_url, data_dir, Duration::from_secs(60));
    let base = server.url();
    let acked = Arc::new(Mutex::new(Vec::<Value>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (acked, count, base, mut killed) = (
            acked.clone(),
            count.clone(),
            base.clone(),
            killed_rx.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                if *killed.borrow_and_update() {
                    return;
                }
                match join_and_grant(&http, &base).await {
                    Ok((g, _)) => {
                        acked.lock().await.push(g);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server is gone: every acknowledged grant is recorded.
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once enough grants are acknowledged, with requests still in flight.
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        tick.tick().await;
    }
    server.kill();
    killed_tx.send(true).unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= KILL_AFTER);

    let server = ServerProcess::start(database_url, data_dir, Duration::from_secs(60));
    let http = reqwest::Client::new();
    for g in &acked {
        let token = g["consent_token"]["token"].as_str().unwrap();
        let r = http
            .post(format!("{}/v1/tokens/verify", server.url()))
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "acknowledged grant {} was lost",
            g["grant_id"]
        );
    }
    // No half-written grant: every grant in the log has its token, and each
    // token the log names is stored and active.
    let entries: Vec<Value> = http
        .get(format!(
            "{}/v1/audit/entries?start=0&end=1000",
            server.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grants: Vec<&Value> = entries
        .iter()
        .filter(|e| e["entry"]["kind"] == "consent.grant")
        .collect();
    let tokens: Vec<&Value> = entries
        .iter()
        .filter(|e| e["entry"]["kind"] == "token.issue")
        .collect();
    assert_eq!(grants.len(), tokens.len());
    assert!(grants.len() >= acked.len());
    for t in tokens {
        let id = t["entry"]["data"]["token_id"].as_str().unwrap();
        let status: Value = http
            .get(format!("{}/revoke/{id}", server.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            status["status"], "active",
            "token {id} is half-written: {status}"
        );
    }
    server.kill();
    let (ok, out) = server_command(database_url, data_dir, &["audit", "verify"]);
    assert!(ok, "audit verify failed after the crash: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_grants_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    burst_then_kill(&url, &dir.path().join("data")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_grants_postgres() {
    let pg = PgCluster::start();
    let url = pg.create_database("crash");
    let dir = tempfile::tempdir().unwrap();
    burst_then_kill(&url, &dir.path().join("data")).await;
}
