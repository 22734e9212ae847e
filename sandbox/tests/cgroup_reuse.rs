//! An ended task's cgroup is reset and handed to a later task on v1 hosts
//! (`TaskCgroup::reset_for_reuse`): the later task's usage starts from zero,
//! and the ended task's control can no longer reach the cgroup. One test in its
//! own binary, so no other sandbox shares the spare thread's pool.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use askee_sandbox::{KillReason, RunningTask, Sandbox, SandboxConfig, TaskOutcome, TaskSpec};
use common::{cgroup_of, gcc, limits};

/// The memory cgroup of a running task's worker (v1), once it has one.
fn memory_cgroup(task: &RunningTask) -> String {
    let ctl = task.control();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = ctl
            .pids()
            .iter()
            .find_map(|&pid| cgroup_of(pid, Some("memory")));
        if let Some(path) = found {
            return path;
        }
        assert!(Instant::now() < deadline, "the task never joined a cgroup");
        std::thread::yield_now();
    }
}

#[test]
fn a_reused_cgroup_starts_from_zero_and_an_ended_tasks_control_cannot_reach_it() {
    let v1 = askee_sandbox::probe().cgroup_enforcing_version == Some(1);
    let dir = tempfile::tempdir().unwrap();
    let prog = gcc(dir.path(), "hostile");
    let sb = Sandbox::new(SandboxConfig {
        worker: PathBuf::from(env!("CARGO_BIN_EXE_askee-worker")),
        work_dir: dir.path().join("work"),
        spare_worker: true,
    })
    .unwrap();
    let spec = |attack: &str| {
        let mut s = TaskSpec::native(&prog);
        s.args = vec![attack.into()];
        s.limits = limits();
        s
    };

    // A first task, ended by terminate; its control outlives it.
    let first = sb.spawn(&spec("sleep")).unwrap();
    let first_cgroup = v1.then(|| memory_cgroup(&first));
    let stale = first.control();
    stale.terminate();
    let (out, _) = first.wait().unwrap();
    assert!(matches!(out, TaskOutcome::Terminated { .. }), "{out:?}");

    // Later tasks: the stale control's freeze and terminate must not touch them,
    // even the one that runs in the first task's cgroup.
    // With two spares ready, the first task's cgroup goes to the spare made
    // after the next take, which the third task after it takes.
    let mut reused = false;
    for _ in 0..8 {
        let task = sb.spawn(&spec("sleep")).unwrap();
        if let Some(first) = &first_cgroup {
            reused |= memory_cgroup(&task) == *first;
        }
        stale.freeze().unwrap();
        stale.terminate();
        assert!(!stale.is_frozen().unwrap());
        assert!(stale.pids().is_empty(), "an ended task has no processes");
        let ctl = task.control();
        assert!(
            !ctl.is_frozen().unwrap(),
            "a stale freeze reached a later task"
        );
        assert!(
            !ctl.pids().is_empty(),
            "a stale terminate reached a later task"
        );
        ctl.terminate();
        let (out, _) = task.wait().unwrap();
        assert!(matches!(out, TaskOutcome::Terminated { .. }), "{out:?}");
    }
    if v1 {
        assert!(reused, "no later task ran in the first task's cgroup");
    }

    // A balloon fills its cgroup to the limit; the tasks after it (one of which
    // runs in that cgroup) report their own peak, not the balloon's.
    let (balloon, _) = sb.spawn(&spec("balloon")).unwrap().wait().unwrap();
    if v1 {
        assert_eq!(
            balloon.kill_reason(),
            Some(KillReason::Memory),
            "{balloon:?}"
        );
    }
    for _ in 0..4 {
        let out = sb.run(&spec("true")).unwrap();
        assert!(
            matches!(out, TaskOutcome::Completed { exit_code: 0, .. }),
            "{out:?}"
        );
        if let Some(peak) = out.usage().peak_memory_bytes {
            assert!(peak < 32 << 20, "peak {peak} carried over: {out:?}");
        }
    }
}
