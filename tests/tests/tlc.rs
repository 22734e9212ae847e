//! Runs TLC on every TLA+ model under tla/ through tla/run-tlc.sh: each good
//! config must check clean and each `*_bug.cfg` must make TLC report the
//! violation its config names. Needs java and tla2tools.jar, which
//! tests/setup installs (tests/setup.d/formal.sh); without them this fails.

use std::collections::BTreeMap;
use std::process::Command;

use askee_testkit::workspace_root;

#[test]
fn tlc_checks_every_model_and_catches_every_bug_variant() {
    let tla = workspace_root().join("tla");
    let output = Command::new("bash")
        .arg(tla.join("run-tlc.sh"))
        .output()
        .expect("run bash tla/run-tlc.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tla/run-tlc.sh failed (java or tla2tools.jar missing? run tests/setup):\n{stdout}\n{stderr}"
    );

    // Every config on disk must have been checked, with the outcome its
    // name promises.
    let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
    for line in stdout.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("ok"), Some(cfg), Some(outcome)) = (parts.next(), parts.next(), parts.next()) {
            let distinct: u64 = parts
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no state count in {line:?}"));
            assert!(distinct > 0, "{line}");
            outcomes.insert(cfg.to_owned(), outcome.to_owned());
        }
    }
    let mut configs: Vec<String> = std::fs::read_dir(&tla)
        .expect("read tla/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfg"))
        .collect();
    configs.sort();
    assert_eq!(
        configs,
        outcomes.keys().cloned().collect::<Vec<_>>(),
        "{stdout}"
    );
    for (cfg, outcome) in &outcomes {
        if cfg.ends_with("_bug.cfg") {
            assert!(outcome.starts_with("violated:"), "{cfg}: {outcome}");
        } else {
            assert_eq!(outcome, "no-error", "{cfg}");
        }
    }
    // The adaptive-replication part of Verification.tla has its own bug
    // variants: results not judged against a known answer, a lost trusted
    // replica not escalated to full replication, a node trusted alone
    // without a long record.
    for cfg in [
        "Verification_spot_check_ignored_bug.cfg",
        "Verification_escalation_bug.cfg",
        "Verification_untrusted_single_bug.cfg",
    ] {
        assert_eq!(
            outcomes.get(cfg).map(String::as_str),
            Some("violated:NoWrongAcceptance"),
            "{cfg}:\n{stdout}"
        );
    }
    // Each safety invariant the issue names has a bug variant TLC catches,
    // and so does at least one liveness property.
    for name in [
        "ConsentPreservation",
        "ResourceBounds",
        "NoWrongAcceptance",
        "RevocationStops",
        "RevocationNoNewWork",
        "FaultRecovery",
        "ConsentResolution",
    ] {
        assert!(
            outcomes.values().any(|o| o == &format!("violated:{name}")),
            "no bug config shows TLC catching {name}:\n{stdout}"
        );
    }
}
