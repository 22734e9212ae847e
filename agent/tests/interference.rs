//! The deployed column of `validate-non-interference`: while the
//! volunteer's programs keep both cores busy, the agent's real idle monitor
//! (host sensors, default configuration, started as after a long idle spell)
//! and yielder freeze the sandboxed tasks, and frozen tasks use no CPU.

mod common;

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use askee_agent::config::Config;
use askee_agent::interference::{Deployed, task_cpu_ns};
use askee_agent::journal::{self, Journal};
use askee_agent::yielder::TaskSet;
use askee_sandbox::TaskControl;

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
    start.elapsed()
}

/// Busy loops in their own processes (the monitor leaves the agent's own
/// process out of the machine's CPU use, as in the daemon); killed on drop.
struct Hogs(Vec<Child>);

impl Hogs {
    fn one_per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Hogs(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("spawn a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn deployed_agent_freezes_tasks_under_a_foreground_cpu_load() {
    assert!(
        askee_sandbox::probe().cgroup_enforcing_version.is_some(),
        "this test needs an enforcing cgroup (run as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, spec) = common::spinning(dir.path());
    let tasks = TaskSet::new();
    let mut running = Vec::new();
    for id in ["spin-a", "spin-b"] {
        let task = sandbox.spawn(&spec).unwrap();
        let ctl = task.control();
        wait_for("task processes", || ctl.pids().len() >= 2);
        tasks.insert(id, ctl);
        running.push(task);
    }
    let controls: Vec<TaskControl> = tasks.controls().into_iter().map(|(_, c)| c).collect();
    let journal = Arc::new(Journal::open(&dir.path().join("journal.jsonl")).unwrap());
    let deployed = Deployed::new(tasks.clone(), Config::default(), journal.clone());
    assert_eq!(deployed.sample_interval(), Duration::from_millis(100));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let all_frozen = {
        let controls = controls.clone();
        move || controls.iter().all(|c| c.is_frozen().unwrap())
    };
    let (frozen_ns, yielded) = rt
        .block_on(deployed.beside(async {
            // `beside` thawed the tasks and saw each use CPU before this runs.
            assert!(controls.iter().all(|c| !c.is_frozen().unwrap()));
            let controls = controls.clone();
            tokio::task::spawn_blocking(move || {
                let hogs = Hogs::one_per_core();
                let took = wait_for("every task frozen", all_frozen);
                eprintln!("tasks frozen {took:?} after the busy loops started");
                let before: Vec<u64> = controls.iter().map(task_cpu_ns).collect();
                // A measurement window, not synchronisation: the machine
                // stays busy, so the tasks must stay frozen throughout.
                std::thread::sleep(Duration::from_millis(300));
                let used: u64 = controls
                    .iter()
                    .zip(before)
                    .map(|(c, b)| task_cpu_ns(c).saturating_sub(b))
                    .sum();
                assert!(
                    controls.iter().all(|c| c.is_frozen().unwrap()),
                    "a task thawed while the machine was busy"
                );
                drop(hogs);
                used
            })
            .await
            .unwrap()
        }))
        .unwrap();
    assert_eq!(frozen_ns, 0, "frozen tasks used cpu");
    let yielded = yielded.expect("the yield is reported");
    assert!(
        yielded.reason.contains("CPU"),
        "the tasks must yield to the CPU load, not to {:?}",
        yielded.reason
    );
    assert!(yielded.after_ms >= 0.0, "{yielded:?}");
    // Afterwards every task is thawed again.
    assert!(controls.iter().all(|c| !c.is_frozen().unwrap()));

    let entries = journal::read(journal.path()).unwrap();
    assert!(journal::verify(&entries).is_empty());
    let mut yields: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "task.yield")
        .map(|e| e.data["task"].as_str().unwrap())
        .collect();
    yields.sort();
    assert_eq!(yields, ["spin-a", "spin-b"]);

    for task in running {
        task.control().terminate();
        let _ = task.wait();
    }
}
