//! Issue 28: tokens any JWT library can judge. An independent implementation
//! (PyJWT, from the venv made by tests/setup.d/pyclient.sh,
//! `ASKEE_PYCLIENT_VENV`, default /opt/askee-pyclient-venv) verifies a fresh
//! askee consent token from the coordinator's JWKS and refuses an expired one
//! by its registered `exp` claim, against the real wall clock.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use support::{Backend, TestServer, key_of, node};

fn python() -> PathBuf {
    let venv =
        std::env::var("ASKEE_PYCLIENT_VENV").unwrap_or_else(|_| "/opt/askee-pyclient-venv".into());
    let python = PathBuf::from(venv).join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/setup (tests/setup.d/pyclient.sh)",
        python.display()
    );
    python
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn issue_28_an_independent_jwt_library_verifies_fresh_tokens_and_refuses_expired_ones() {
    let s = TestServer::start(Backend::Sqlite).await;
    // Issued ten days ago with a one-hour lifetime: expired by the real clock.
    s.clock
        .store(wall_clock_ms() - 10 * 24 * 3600 * 1000, Ordering::SeqCst);
    let expired = s.consent(&node(41)).await.consent_token;
    assert!(expired.payload.expires_at * 1000 < wall_clock_ms());
    s.clock.store(wall_clock_ms(), Ordering::SeqCst);
    let volunteer = node(42);
    let fresh = s.consent(&volunteer).await.consent_token;

    let jwks = s.get("/.well-known/jwks.json").await.expect(StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let jwks = write("jwks.json", &jwks.to_string());
    let fresh = write("fresh.jwt", &fresh.token);
    let expired = write("expired.jwt", &expired.token);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/jwt_check.py");

    let out = Command::new(python())
        .arg(script)
        .args([&jwks, &fresh, &expired])
        .arg(key_of(&volunteer))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyJWT disagreed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fresh: verified"), "{stdout}");
    assert!(stdout.contains("expired: refused"), "{stdout}");
    assert!(stdout.contains("spliced: refused"), "{stdout}");
}
