//! The README's main command end to end (issue 8): `askee-server demo
//! --exit-when-done` with the real example tasks built for wasm32-wasip1,
//! four real agents (one Byzantine) and the in-process server. The verified
//! results are checked against answers this test computes natively and
//! independently, and the Byzantine node must end up excluded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use askee_testkit::process::binary;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

/// Builds the example tasks with their script into `out`, caching the cargo
/// build beside the workspace's own target directory.
fn build_examples(out: &Path) {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/
    let target = exe.ancestors().nth(3).expect("target directory");
    let status = Command::new(repo().join("examples/tasks/build.sh"))
        .env("EXAMPLES_TARGET_DIR", target.join("examples-tasks"))
        .env("EXAMPLES_OUT_DIR", out)
        .status()
        .expect("run examples/tasks/build.sh");
    assert!(status.success(), "examples/tasks/build.sh failed");
}

/// SplitMix64, written again here so the check does not share code with
/// the task it checks.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn native_pi(seed: u64, samples: u64) -> String {
    let mut s = seed;
    let inside = (0..samples)
        .filter(|_| {
            let r = splitmix(&mut s);
            let (x, y) = ((r >> 32) as u128, (r & 0xffff_ffff) as u128);
            x * x + y * y < 1u128 << 64
        })
        .count() as u64;
    format!(
        "seed {seed}\nsamples {samples}\ninside {inside}\npi {:.6}\n",
        4.0 * inside as f64 / samples as f64
    )
}

fn native_wordfreq(text: &str, top: usize) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    let lower = text.to_lowercase();
    for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let word = raw.trim_matches('\'');
        if word.is_empty() {
            continue;
        }
        total += 1;
        *counts.entry(word.to_owned()).or_default() += 1;
    }
    let mut ranked: Vec<(&String, &u64)> = counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = format!("words {total}\ndistinct {}\n", counts.len());
    for (w, n) in ranked.into_iter().take(top) {
        out.push_str(&format!("{n} {w}\n"));
    }
    out
}

#[test]
fn the_demo_verifies_the_example_tasks_and_excludes_the_byzantine_node() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("wasm");
    build_examples(&wasm);
    let demo_dir = dir.path().join("demo");
    let text_path = repo().join("examples/tasks/data/tale.txt");
    let out = Command::new(binary("askee-server"))
        .arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .arg("--tasks")
        .arg(&wasm)
        .arg("--text")
        .arg(&text_path)
        .args([
            "--pi-seed",
            "2024",
            "--pi-samples",
            "500000",
            "--sgd-seed",
            "11",
        ])
        .args(["--exit-when-done", "--timeout-seconds", "150"])
        .stdin(Stdio::null())
        .output()
        .expect("run askee-server demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: String = (1..=4)
        .map(|i| {
            std::fs::read_to_string(demo_dir.join(format!("agents/node-{i}/agent.log")))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{stderr}\n{logs}",
        out.status
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(demo_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");

    let task = |label: &str| &summary["tasks"][label];
    for label in ["π estimate", "word counts", "SGD training"] {
        let t = task(label);
        assert_eq!(t["state"], "verified", "{label}: {t}");
        assert!(t["agreeing"].as_u64().unwrap() >= 2, "{label}: {t}");
    }
    // π: bit for bit what the same seeded computation gives natively.
    assert_eq!(
        task("π estimate")["stdout"].as_str().unwrap(),
        native_pi(2024, 500_000)
    );
    // Word counts: an independent count of the same text.
    let text = std::fs::read_to_string(&text_path).unwrap();
    assert_eq!(
        task("word counts")["stdout"].as_str().unwrap(),
        native_wordfreq(&text, 8)
    );
    // SGD: the loss falls every epoch and the fit finds the generating line.
    let sgd = task("SGD training")["stdout"].as_str().unwrap();
    let losses: Vec<f64> = sgd
        .lines()
        .filter_map(|l| l.strip_prefix("epoch ")?.split_once(" loss "))
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    assert!(losses.len() >= 5, "{sgd}");
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]),
        "the loss must fall every epoch: {losses:?}"
    );
    assert!(losses[losses.len() - 1] < losses[0] / 100.0, "{losses:?}");
    let param = |name: &str| -> f64 {
        sgd.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!((param("w") - 3.0).abs() < 0.2, "{sgd}");
    assert!((param("b") + 2.0).abs() < 0.2, "{sgd}");

    // The liar is excluded; the honest nodes are active and never wrong.
    let nodes = summary["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{summary:#}");
    for n in nodes {
        if n["byzantine"] == true {
            assert_eq!(n["state"], "byzantine", "{n}");
            assert!(n["wrong"].as_u64().unwrap() >= 3, "{n}");
            assert!(n["corrupted_results"].as_u64().unwrap() >= 3, "{n}");
            assert_eq!(n["reputation"].as_f64().unwrap(), 0.0, "{n}");
        } else {
            assert_eq!(n["state"], "active", "{n}");
            assert_eq!(n["wrong"], 0, "{n}");
            assert!(n["agreed"].as_u64().unwrap() >= 3, "{n}");
        }
    }
    assert_eq!(nodes.iter().filter(|n| n["byzantine"] == true).count(), 1);
    assert!(stdout.contains("verified results"), "{stdout}");
    assert!(stdout.contains("consent grant --yes"), "{stdout}");
    assert!(stdout.contains("operator dashboard: http://"), "{stdout}");
}
