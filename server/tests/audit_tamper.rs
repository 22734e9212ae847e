//! Editing, deleting or reordering audit rows by hand is detected by
//! `askee-server audit verify`, which names the entry, on both backends.

mod support;

use askee_server::service::audit::{Finding, verify_log};
use askee_server::store::SqlStore;
use axum::http::StatusCode;
use support::{Backend, TestServer, node};

async fn tampered(s: &TestServer, sql: &str) -> Vec<Finding> {
    let raw = SqlStore::open(&s.database_url).await.unwrap();
    sqlx::query(sql).execute(raw.pool()).await.unwrap();
    let (_, findings) = verify_log(
        s.state.store.as_ref(),
        &s.state.keys,
        &s.state.config.log_origin(),
    )
    .await
    .unwrap();
    findings
}

async fn tampering_is_named(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.consent(&node(1)).await;
    s.consent(&node(2)).await;
    s.get("/v1/audit/checkpoint").await.expect(StatusCode::OK);
    let (size, clean) = verify_log(
        s.state.store.as_ref(),
        &s.state.keys,
        &s.state.config.log_origin(),
    )
    .await
    .unwrap();
    assert_eq!(size, 6);
    assert!(clean.is_empty(), "{clean:?}");

    let edited = tampered(
        &s,
        "UPDATE audit_entries SET body = REPLACE(body, 'consent.grant', 'consent.grunt') WHERE idx = 1",
    )
    .await;
    assert!(edited.contains(&Finding::Edited { index: 1 }), "{edited:?}");
    assert!(
        edited.contains(&Finding::RootMismatch { size: 6 }),
        "{edited:?}"
    );
    assert_eq!(
        edited[0].to_string(),
        "entry 1: content does not match its leaf hash (edited)"
    );
    if matches!(backend, Backend::Sqlite) {
        // The real command fails and names the entry.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_askee-server"))
            .args(["--database-url", &s.database_url])
            .arg("--data-dir")
            .arg(&s.state.config.data_dir)
            .args(["audit", "verify"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("entry 1: content does not match"));
    }
    // Put it back: the log verifies again.
    let restored = tampered(
        &s,
        "UPDATE audit_entries SET body = REPLACE(body, 'consent.grunt', 'consent.grant') WHERE idx = 1",
    )
    .await;
    assert!(restored.is_empty(), "{restored:?}");

    // Swapping two rows (bodies and hashes) is a reordering: move them
    // aside, then back into each other's place.
    tampered(
        &s,
        "UPDATE audit_entries SET idx = CASE idx WHEN 2 THEN 1002 WHEN 3 THEN 1003 END WHERE idx IN (2, 3)",
    )
    .await;
    let swapped = tampered(
        &s,
        "UPDATE audit_entries SET idx = CASE idx WHEN 1002 THEN 3 WHEN 1003 THEN 2 END WHERE idx IN (1002, 1003)",
    )
    .await;
    assert!(
        swapped.contains(&Finding::Moved {
            index: 2,
            claims: 3
        }),
        "{swapped:?}"
    );
    assert!(
        swapped.contains(&Finding::Moved {
            index: 3,
            claims: 2
        }),
        "{swapped:?}"
    );

    let deleted = tampered(&s, "DELETE FROM audit_entries WHERE idx = 5").await;
    assert!(
        deleted.contains(&Finding::Truncated {
            checkpoint_size: 6,
            stored: 5
        }),
        "{deleted:?}"
    );
}

both_backends!(tampering_is_named);
