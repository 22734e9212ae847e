//! `askee-server discover` as a real process against NSD on loopback:
//! SIGKILL it mid-crawl, run it again, and nothing verified is lost and no
//! invitation is duplicated.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use askee_testkit::dns::{Nsd, generated_zone};
use askee_testkit::process::binary;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn discover(db: &str, data: &std::path::Path, ns: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary("askee-server"));
    cmd.args(["--database-url", db])
        .arg("--data-dir")
        .arg(data)
        .args([
            "discover",
            "--name-server",
            ns,
            "--no-well-known",
            "--quiet",
            "--json",
        ])
        .args(extra)
        .env("ASKEE_LOG", "info,sqlx=warn")
        .stdin(Stdio::null());
    cmd
}

fn summary(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "discover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json summary")
}

#[test]
fn a_killed_crawl_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (zone, domains, opted) = generated_zone("crawl.test", 2000, 50, now());
    assert_eq!(opted.len(), 40);
    let nsd = Nsd::start("crawl.test", &zone);
    let list = dir.path().join("domains.txt");
    std::fs::write(&list, domains.join("\n")).unwrap();
    let db = format!("sqlite://{}", dir.path().join("askee.db").display());
    let data = dir.path().join("data");
    let ns = nsd.addr.to_string();

    // First run, paced so that it is still crawling when killed.
    let mut child = discover(
        &db,
        &data,
        &ns,
        &["--domains", list.to_str().unwrap(), "--qps", "400"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("invitation queued") && tx.send(()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut queued = 0;
    while queued < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .expect("the first run queued 5 invitations within 60 s");
        queued += 1;
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the crawl was killed mid-run, not finished"
    );

    // Second run: no list, the queue resumes (domains whose results were
    // not yet written are checked again); whatever the first run verified
    // is not verified again.
    let resumed = summary(
        discover(&db, &data, &ns, &["--no-politeness"])
            .output()
            .unwrap(),
    );
    let invited_again = resumed["invited"].as_u64().unwrap();
    assert!(
        invited_again <= 40 - queued,
        "{queued} were queued before the kill, yet {invited_again} new ones now: {resumed}"
    );

    // Third run over the whole list: all 40 are known, none is new.
    let all = summary(
        discover(
            &db,
            &data,
            &ns,
            &["--domains", list.to_str().unwrap(), "--no-politeness"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(all["checked"], 2000, "{all}");
    assert_eq!(all["opted_in"], 40, "{all}");
    assert_eq!(all["invited"], 0, "{all}");
    assert_eq!(all["absent"], 1960, "{all}");
}

/// `serve` crawls in the background: domains submitted through the API
/// become verified invitations without anyone running `discover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_crawls_submitted_domains_in_the_background() {
    use askee_testkit::process::ServerProcess;
    use askee_testkit::sim::{Api, operator_setup};

    let dir = tempfile::tempdir().unwrap();
    let (zone, domains, opted) = generated_zone("serve.test", 30, 10, now());
    let nsd = Nsd::start("serve.test", &zone);
    let db = format!("sqlite://{}", dir.path().join("askee.db").display());
    let data = dir.path().join("data");
    let ns = nsd.addr.to_string();
    let server = ServerProcess::start_with(
        &db,
        &data,
        Duration::from_secs(60),
        &[
            "--crawl-every",
            "1",
            "--name-server",
            &ns,
            "--no-well-known",
            "--no-politeness",
        ],
    );
    let op = operator_setup(&db, &data, 3);
    let api = Api::new(vec![server.url()], 0);
    let body = serde_json::to_vec(&serde_json::json!({ "domains": domains })).unwrap();
    let queued = api
        .operator(
            &op.credential,
            reqwest::Method::POST,
            "/v1/discovery/domains",
            Some(("application/json", body)),
        )
        .await
        .expect("submit domains");
    assert_eq!(queued["queued"], 30, "{queued}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let list = api
            .operator(
                &op.credential,
                reqwest::Method::GET,
                "/v1/discovery/invitations",
                None,
            )
            .await
            .expect("list invitations");
        let mut found: Vec<String> = list["invitations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "pending")
            .map(|i| i["domain"].as_str().unwrap().to_owned())
            .collect();
        found.sort();
        if found.len() >= opted.len() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut expected = opted.clone();
    expected.sort();
    assert_eq!(found, expected, "{}", nsd.log());
}
