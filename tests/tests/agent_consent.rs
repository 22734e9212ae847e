//! The volunteer's side, end to end with the real binaries: init → join →
//! review → grant → status → revoke against a running server.

use std::time::Duration;

use askee_testkit::process::{ServerProcess, agent_command};

#[test]
fn agent_grants_and_revokes_consent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("askee.db").display());
    let server = ServerProcess::start(&url, &dir.path().join("data"), Duration::from_secs(60));
    let home = dir.path().join("agent");
    let run = |args: &[&str]| agent_command(&home, args);

    let (ok, out, _) = run(&["init"]);
    assert!(ok && out.contains("node id"), "{out}");
    let (ok, _, err) = run(&["join", "http://192.0.2.1:8080"]);
    assert!(!ok && err.contains("refusing plain http"), "{err}");
    let (ok, out, err) = run(&["join", &server.url()]);
    assert!(ok, "{err}");
    assert!(out.contains("Tasks can never touch"), "{out}");
    let (ok, out, _) = run(&["consent", "review"]);
    assert!(ok && out.contains("data-processing"), "{out}");

    // No silent consent: without a terminal and without --yes, nothing is granted.
    let (ok, _, err) = run(&["consent", "grant"]);
    assert!(!ok && err.contains("explicit answer"), "{err}");
    // --yes needs every limit spelled out.
    let (ok, _, err) = run(&["consent", "grant", "--yes", "--cpu-percent", "20"]);
    assert!(!ok && err.contains("--ram-mb"), "{err}");
    // Wider than proposed is refused before anything is sent.
    let wide = [
        "consent",
        "grant",
        "--yes",
        "--cpu-percent",
        "90",
        "--ram-mb",
        "512",
        "--storage-gb",
        "1",
        "--bandwidth-mbps",
        "1",
        "--task-types",
        "data-processing",
    ];
    let (ok, _, err) = run(&wide);
    assert!(!ok && err.contains("cpu_percent_max"), "{err}");

    let grant = [
        "consent",
        "grant",
        "--yes",
        "--cpu-percent",
        "20",
        "--ram-mb",
        "512",
        "--storage-gb",
        "1",
        "--bandwidth-mbps",
        "1",
        "--task-types",
        "data-processing",
        "--days",
        "7",
    ];
    let (ok, out, err) = run(&grant);
    assert!(ok, "{err}");
    assert!(out.contains("consent granted"), "{out}");
    let (ok, out, _) = run(&["status"]);
    assert!(
        ok && out.contains(": active") && out.contains("at most 20% of your CPU"),
        "{out}"
    );

    let (ok, out, err) = run(&["revoke", "--reason", "test over"]);
    assert!(ok, "{err}");
    assert!(out.contains("is revoked"), "{out}");
    let (ok, out, _) = run(&["status"]);
    assert!(ok && out.contains(": revoked"), "{out}");

    // Every consent step is in the volunteer's local, hash-chained journal.
    let (ok, out, err) = run(&["audit"]);
    assert!(ok, "{err}");
    for step in [
        "joined http://",
        "consent granted under grant",
        "(test over)",
    ] {
        assert!(out.contains(step), "{step} missing from: {out}");
    }
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(ok && out.contains("3 entries, chain intact"), "{out}{err}");
    server.kill();
}
