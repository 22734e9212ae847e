//! The server's transport protections: HTTPS with rustls when given a
//! certificate, and per-client rate limiting with a problem document.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use askee_server::{Clock, Config, Tls};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();

    let store =
        askee_server::store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
            .await
            .unwrap();
    let port = askee_testkit::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = Config::new(dir.path().join("data"), format!("https://localhost:{port}"));
    let state = askee_server::state(config, store, Clock::System).unwrap();
    let server = tokio::spawn(askee_server::serve(
        state,
        addr,
        Some(Tls {
            cert: cert_path,
            key: key_path,
        }),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "https server did not listen");
        tokio::task::yield_now().await;
    }
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let resp = client
        .get(format!(
            "https://localhost:{port}/.well-known/askee-coordinator"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let info: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(info["api_base"], format!("https://localhost:{port}/v1"));
    // A client that does not trust the certificate is refused by TLS itself.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", addr)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
    server.abort();
}

#[tokio::test]
async fn a_client_past_its_burst_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        askee_server::store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
            .await
            .unwrap();
    let mut config = Config::new(dir.path().join("data"), "http://askee.test".into());
    config.rate_per_second = 0.5;
    config.rate_burst = 3.0;
    let state = askee_server::state(config, store, Clock::System).unwrap();
    let app = askee_server::app(state);
    let get = || Request::get("/healthz").body(Body::empty()).unwrap();
    for _ in 0..3 {
        assert_eq!(
            app.clone().oneshot(get()).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let refused = app.clone().oneshot(get()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(refused.headers()["retry-after"], "2");
    let body: serde_json::Value =
        serde_json::from_slice(&refused.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["type"], "https://askee.dev/problems/rate-limited");
}
