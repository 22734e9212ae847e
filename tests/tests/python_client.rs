//! Issue 8, item 6: a Python client generated from the committed
//! openapi/openapi.json with openapi-python-client joins, grants, verifies
//! its token, submits signed tasks and reads their verified results from a
//! live server (with a real `askee-agent run` doing the work). Generation
//! warnings, a response the generated models cannot parse, or a field the
//! spec does not declare fail the test: the spec must be complete and true.
//!
//! Needs the venv made by tests/setup.d/pyclient.sh (`ASKEE_PYCLIENT_VENV`,
//! default /opt/askee-pyclient-venv).

use std::path::PathBuf;
use std::process::Command;

use askee_core::b64;
use askee_sandbox::digest::result_digest;
use askee_testkit::process::AgentProcess;
use askee_testkit::work::{CAT, Coordinator, consent};
use askee_testkit::workspace_root;
use serde_json::{Value, json};

/// What openapi-python-client cannot turn into code, by design of the tool
/// and not of the spec: non-JSON request bodies.
const TOLERATED_WARNINGS: &[&str] = &[
    "Unsupported content type image/png",
    "Unsupported content type application/wasm",
];

fn venv() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("ASKEE_PYCLIENT_VENV").unwrap_or_else(|_| "/opt/askee-pyclient-venv".into()),
    );
    assert!(
        dir.join("bin/openapi-python-client").exists(),
        "no openapi-python-client in {}: run tests/setup (tests/setup.d/pyclient.sh)",
        dir.display()
    );
    dir
}

fn expected(input: &[u8]) -> String {
    hex::encode(result_digest(0, input, &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_python_client_joins_grants_submits_and_reads_results() {
    let venv = venv();
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();

    // Generate the client from the committed spec; every warning but the
    // tolerated ones names a route or schema the client would lack.
    let out_dir = dir.path().join("client");
    let config = dir.path().join("generator.json");
    std::fs::write(&config, r#"{"post_hooks": []}"#).unwrap();
    let generated = Command::new(venv.join("bin/openapi-python-client"))
        .arg("generate")
        .arg("--path")
        .arg(root.join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(&out_dir)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run openapi-python-client");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(generated.status.success(), "generation failed:\n{log}");
    // Each warning is a `WARNING ...` line, then (after blank lines) its cause.
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let warnings: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            l.starts_with("WARNING")
                && !lines
                    .get(i + 1)
                    .is_some_and(|cause| TOLERATED_WARNINGS.contains(cause))
        })
        .map(|(_, l)| *l)
        .collect();
    assert!(
        warnings.is_empty(),
        "the spec is incomplete: {warnings:?}\n{log}"
    );

    let Coordinator { server, op, api: _ } = Coordinator::start(dir.path(), 8, &[CAT]).await;
    let home = dir.path().join("agent");
    consent(&home, &server.url());
    let agent = AgentProcess::start(&home, &["--when", "always"]);

    // Three bootstrap challenges with known answers qualify the new node,
    // then one ordinary task whose answer only the sandbox knows.
    let inputs: Vec<String> = (0..4).map(|i| format!("python task {i}\n")).collect();
    let tasks: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            json!({
                "stdin": b64::encode(input.as_bytes()),
                "known_digest": (i < 3).then(|| expected(input.as_bytes())),
            })
        })
        .collect();
    let config = json!({
        "url": server.url(),
        "credential": op.credential,
        "operator_seed": b64::encode(op.key.to_bytes()),
        "spec": root.join("openapi/openapi.json"),
        "module_sha256": hex::encode(askee_core::signing::sha256(CAT.as_bytes())),
        "tasks": tasks,
        "timeout_seconds": 180,
    });
    let run = Command::new(venv.join("bin/python"))
        .arg(root.join("tests/python/flow.py"))
        .arg(config.to_string())
        .env("PYTHONPATH", &out_dir)
        .output()
        .expect("run flow.py");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "flow.py failed:\n{stdout}{}\nagent log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        agent.log()
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("flow.py prints its summary");

    let volunteer = &summary["volunteer"];
    assert!(
        volunteer["grant_id"]
            .as_str()
            .is_some_and(|g| !g.is_empty()),
        "{summary}"
    );
    let results = summary["tasks"].as_array().expect("task results");
    assert_eq!(results.len(), inputs.len(), "{summary}");
    for (result, input) in results.iter().zip(&inputs) {
        let digest = expected(input.as_bytes());
        assert_eq!(result["state"], "verified", "{summary}");
        assert_eq!(result["accepted_digest"], digest.as_str(), "{summary}");
        let evidence = result["evidence"].as_array().expect("evidence");
        assert!(
            evidence
                .iter()
                .any(|e| e["result_digest"] == digest.as_str() && e["status"] == "completed"),
            "no evidence of the accepted digest: {summary}"
        );
    }
}
