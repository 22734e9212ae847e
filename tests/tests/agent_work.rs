//! The work loop end to end with the real binaries (issue 6's acceptance):
//! one server, two `askee-agent run` daemons with their consent tokens, real
//! WebAssembly tasks in the real sandbox, signed results verified by the
//! coordinator; then a revocation stops everything on one agent within a
//! second while the other keeps working.

use std::time::{Duration, Instant};

use askee_testkit::process::{AgentProcess, agent_command};
use askee_testkit::work::{
    CAT, Coordinator, SPIN, consent, started, statement, submit, task, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_verified_work_and_a_revocation_stops_one_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let Coordinator { server, op, api } = Coordinator::start(dir.path(), 6, &[CAT, SPIN]).await;

    let homes: Vec<_> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
    for home in &homes {
        consent(home, &server.url());
    }
    let mut agents: Vec<AgentProcess> = homes
        .iter()
        .map(|h| AgentProcess::start(h, &["--when", "always", "--parallel", "2"]))
        .collect();

    // Bootstrapping challenges with known answers: each new node needs three
    // before ordinary work, and each runs in the real sandbox. Which agent
    // takes which is up to them, so challenges go out until both qualify.
    let uploads = |a: &AgentProcess| {
        a.journal()
            .iter()
            .filter(|e| e["kind"] == "result.uploaded")
            .count()
    };
    let mut round = 0;
    while agents.iter().any(|a| uploads(a) < 3) {
        assert!(
            round < 12,
            "challenges never spread: {}\n{}",
            agents[0].log(),
            agents[1].log()
        );
        let mut batch = Vec::new();
        for k in 0..2 {
            let input = format!("challenge {round}.{k}\n");
            let known = hex::encode(askee_sandbox::digest::result_digest(
                0,
                input.as_bytes(),
                &[],
            ));
            let st = statement(
                CAT,
                input.as_bytes(),
                60,
                100_000_000,
                &format!("c{round}.{k}"),
            );
            batch.push(submit(&api, &op, st, Some(known)).await);
        }
        for id in &batch {
            let t = wait_for(
                "a challenge to be verified",
                Duration::from_secs(120),
                async || {
                    let t = task(&api, &op, id).await;
                    (t["state"] != "pending").then_some(t)
                },
            )
            .await;
            assert_eq!(
                t["state"],
                "verified",
                "{t}\n{}\n{}",
                agents[0].log(),
                agents[1].log()
            );
        }
        // A verified task's result was uploaded; the journal line follows the
        // upload's answer, so wait for it rather than race it.
        let total = 2 * (round + 1);
        wait_for(
            "the uploads to be journalled",
            Duration::from_secs(30),
            async || (agents.iter().map(uploads).sum::<usize>() >= total).then_some(()),
        )
        .await;
        round += 1;
    }

    // An endless task; whoever takes it is revoked while it runs.
    let spin = submit(
        &api,
        &op,
        statement(SPIN, b"", 300, u64::MAX / 4, "spin"),
        None,
    )
    .await;
    let victim = wait_for(
        "the endless task to start",
        Duration::from_secs(60),
        async || (0..agents.len()).find(|&i| started(&agents[i], &spin)),
    )
    .await;
    let other = 1 - victim;
    let revoke_started = Instant::now();
    let (ok, out, err) = agent_command(&homes[victim], &["revoke", "--reason", "e2e"]);
    assert!(ok, "{out}{err}");
    let stopped = wait_for(
        "the task to be stopped",
        Duration::from_secs(10),
        async || {
            agents[victim]
                .journal()
                .iter()
                .any(|e| e["kind"] == "task.terminated")
                .then(Instant::now)
        },
    )
    .await;
    let latency = stopped - revoke_started;
    // The target (1 s, in BENCHMARKS.md) is measured by the benchmark; this
    // bound only catches a path that does not push the revocation at all.
    assert!(
        latency < Duration::from_secs(5),
        "revocation took {latency:?}: {}",
        agents[victim].log()
    );
    let journal = agents[victim].journal();
    let stop = journal
        .iter()
        .find(|e| e["kind"] == "work.stopped")
        .expect("the stop is journalled");
    assert!(
        stop["data"]["reason"].as_str().unwrap().contains("revoked"),
        "{stop}"
    );
    assert!(
        agents[victim].is_running(),
        "the revoked agent stays up, idle"
    );
    // Its scratch space is clean and nothing runs there.
    let scratch = homes[victim].join("work");
    let leftovers = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "scratch space left behind");

    // The other agent keeps working; the revoked one takes nothing more.
    let input = b"after the revocation\n";
    let late = submit(
        &api,
        &op,
        statement(CAT, input, 60, 100_000_000, "late"),
        None,
    )
    .await;
    let t = wait_for(
        "work after the revocation",
        Duration::from_secs(60),
        async || {
            let t = task(&api, &op, &late).await;
            (t["state"] != "pending").then_some(t)
        },
    )
    .await;
    assert_eq!(t["state"], "verified", "{t}");
    assert_eq!(
        t["accepted_digest"],
        hex::encode(askee_sandbox::digest::result_digest(0, input, &[]))
    );
    assert!(started(&agents[other], &late));
    assert!(!started(&agents[victim], &late));
    // Both journals are intact hash chains.
    for home in &homes {
        let (ok, out, err) = agent_command(home, &["audit", "verify"]);
        assert!(ok, "{out}{err}");
    }
    agents.clear();
}
