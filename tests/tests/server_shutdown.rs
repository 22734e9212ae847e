//! `askee-server serve` stops cleanly on SIGTERM (how systemd and container
//! runtimes stop it): requests in flight finish, a long-poll on the
//! revocation URL does not hold the process beyond the grace period, and
//! the exit status is success.

use std::time::{Duration, Instant};

use askee_testkit::process::ServerProcess;
use askee_testkit::volunteer::join_and_grant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_within_its_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let server = ServerProcess::start(&url, &dir.path().join("data"), Duration::from_secs(60));
    let base = server.url();
    let http = reqwest::Client::new();
    let (granted, _) = join_and_grant(&http, &base).await.expect("join and grant");
    let token_id = granted["consent_token"]["payload"]["token_id"]
        .as_str()
        .expect("token id in the grant response")
        .to_owned();
    // A long-poll that would otherwise wait 50 s.
    let watch = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/revoke/{token_id}?wait=50");
        async move { http.get(url).send().await }
    });
    // The long-poll is in the server once a plain request after it is answered.
    http.get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    let asked = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(30)))
        .await
        .unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "askee-server exited with {status}");
    // The server's grace period (`askee_server::SHUTDOWN_GRACE`) is 10 s;
    // the bound only catches a server that waits for the long-poll's 50 s.
    assert!(took < Duration::from_secs(25), "stopping took {took:?}");
    // The long-poll did not get a forged answer: it was cut off or answered
    // with the true status.
    if let Ok(resp) = watch.await.unwrap()
        && resp.status().is_success()
    {
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "active", "{body}");
    }
}
