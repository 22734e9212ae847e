//! Issue 3, start-up latency: a spare enters an ended task's network namespace
//! instead of making one, once no process of that task is left, and never one a
//! live sandbox is in. Its own binary, so no other sandbox takes the spares.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use askee_sandbox::{RunningTask, Sandbox, TaskOutcome, TaskSpec};
use common::{gcc, limits, sandbox, wait_for_a_spare};

/// A network namespace, held open so that its number is not given to another
/// while the test compares numbers.
struct Netns {
    ino: u64,
    _held: std::fs::File,
}

/// A task that waits until terminated, started on a spare, and the network
/// namespace each of its processes is in (outer worker, init, task).
fn start(sb: &Sandbox, prog: &Path) -> (RunningTask, Netns) {
    wait_for_a_spare(sb);
    let mut spec = TaskSpec::native(prog);
    spec.args = vec!["sleep".into()];
    spec.limits = limits();
    let task = sb.spawn(&spec).unwrap();
    // The task has exec'd once a process of the cgroup runs `/prog`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids = task.control().pids();
        if pids.iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "prog")
        }) {
            break pids;
        }
        assert!(Instant::now() < deadline, "the task did not start");
        std::thread::yield_now();
    };
    let held: Vec<Netns> = pids
        .iter()
        .map(|p| {
            let f = std::fs::File::open(format!("/proc/{p}/ns/net")).unwrap();
            Netns {
                ino: f.metadata().unwrap().ino(),
                _held: f,
            }
        })
        .collect();
    assert!(
        held.windows(2).all(|w| w[0].ino == w[1].ino),
        "the task's processes are in different network namespaces"
    );
    let ns = held.into_iter().next().expect("the task has processes");
    // Nothing was added to the namespace: its only interface is the loopback.
    let pid = pids[0];
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    assert_eq!(interfaces, ["lo"], "{dev}");
    (task, ns)
}

fn end(task: RunningTask) {
    task.control().terminate();
    let (out, _) = task.wait().unwrap();
    assert!(matches!(out, TaskOutcome::Terminated { .. }), "{out:?}");
}

#[test]
fn issue_3_an_ended_tasks_network_namespace_serves_a_later_task_never_two_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let prog = gcc(dir.path(), "hostile");
    let sb = sandbox(dir.path());
    let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();

    // Two live sandboxes: each in its own network namespace, not the host's.
    let (a, ns_a) = start(&sb, &prog);
    let (b, ns_b) = start(&sb, &prog);
    assert_ne!(ns_a.ino, host);
    assert_ne!(ns_b.ino, host);
    assert_ne!(
        ns_a.ino, ns_b.ino,
        "two live sandboxes share a network namespace"
    );
    end(a);
    end(b);

    // As root (the condition for a spare to make its namespaces ahead), a later
    // task gets one of theirs. Since the test holds both open, an equal number
    // is the same namespace, not a new one given a freed number.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (t, ns) = start(&sb, &prog);
        assert_ne!(ns.ino, host);
        // Meanwhile, the next task is never in this one's namespace.
        let (next, ns_next) = start(&sb, &prog);
        assert_ne!(
            ns.ino, ns_next.ino,
            "two live sandboxes share a network namespace"
        );
        end(t);
        end(next);
        seen.push(ns.ino);
        seen.push(ns_next.ino);
        if seen.contains(&ns_a.ino) || seen.contains(&ns_b.ino) {
            break;
        }
    }
    if root {
        assert!(
            seen.contains(&ns_a.ino) || seen.contains(&ns_b.ino),
            "no later task entered an ended task's network namespace: {seen:?}, ended {} and {}",
            ns_a.ino,
            ns_b.ino
        );
    }
}
