//! Workers started ahead of their tasks (`SandboxConfig::spare_worker`): a task
//! runs under its own limits, not the spare's, and no spare outlives its
//! sandbox. One test in its own binary, so no other sandbox takes the spares.

mod common;

use std::path::PathBuf;

use askee_sandbox::cgroup::CgroupLayout;
use askee_sandbox::{KillReason, SPARE_WORKERS, Sandbox, SandboxConfig, TaskOutcome, TaskSpec};
use common::{gcc, limits, wait_for_a_spare, worker_children};

/// Task cgroups of this process, in every hierarchy.
fn own_cgroups() -> Vec<PathBuf> {
    let Ok(layout) = CgroupLayout::detect() else {
        return Vec::new();
    };
    let prefix = format!("askee-{}-", std::process::id());
    layout
        .v2_dir
        .iter()
        .chain(layout.v1_dirs.values())
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn a_spare_worker_runs_its_task_under_the_tasks_limits_and_goes_with_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let balloon = gcc(dir.path(), "hostile");
    let enforcing = askee_sandbox::probe().cgroup_enforcing_version.is_some();
    let sb = Sandbox::new(SandboxConfig {
        worker: PathBuf::from(env!("CARGO_BIN_EXE_askee-worker")),
        work_dir: dir.path().join("work"),
        spare_worker: true,
    })
    .unwrap();
    assert_eq!(
        sb.spares_ready(),
        SPARE_WORKERS,
        "the spares are ready once the sandbox exists"
    );
    if enforcing {
        assert!(
            !own_cgroups().is_empty(),
            "the spares wait in cgroups of their own"
        );
    }

    let spares = worker_children();
    assert_eq!(
        spares.len(),
        SPARE_WORKERS,
        "spare workers waiting: {spares:?}"
    );

    // The spare's cgroup starts with the default 256 MiB; the task's 64 MiB holds.
    let mut spec = TaskSpec::native(&balloon);
    spec.args = vec!["balloon".into()];
    spec.limits = limits();
    let task = sb.spawn(&spec).unwrap();
    let (out, confinement) = task.wait().unwrap();
    // One spare became the task's worker and was reaped with it; a spare left
    // unused would still be waiting. (Its replacement has another pid.)
    let now = worker_children();
    let gone: Vec<&i32> = spares.iter().filter(|p| !now.contains(p)).collect();
    assert_eq!(
        gone.len(),
        1,
        "the task ran in one spare worker: {spares:?}, now {now:?}"
    );
    if enforcing {
        assert_eq!(out.kill_reason(), Some(KillReason::Memory), "{out:?}");
        assert!(
            out.usage().peak_memory_bytes.unwrap() <= (64 + 4) << 20,
            "{out:?}"
        );
    }
    assert!(confinement.no_new_privs, "{confinement:?}");

    // The next task, spare or not, completes as usual.
    spec.args = vec!["true".into()];
    let out = sb.run(&spec).unwrap();
    assert!(
        matches!(out, TaskOutcome::Completed { exit_code: 0, ref stdout, .. } if stdout == b"ok\n"),
        "{out:?}"
    );

    // Spares are made with the last task's limits, which the next task then
    // finds written: one with the same limits holds them, and one with other
    // limits gets its own written.
    if enforcing {
        for memory in [64u64 << 20, 32 << 20] {
            wait_for_a_spare(&sb);
            let mut spec = TaskSpec::native(&balloon);
            spec.args = vec!["balloon".into()];
            spec.limits = limits();
            spec.limits.memory_bytes = memory;
            let out = sb.run(&spec).unwrap();
            assert_eq!(out.kill_reason(), Some(KillReason::Memory), "{out:?}");
            let peak = out.usage().peak_memory_bytes.unwrap();
            assert!(peak <= memory + (4 << 20), "{memory}: peak {peak}");
        }
    }

    drop(sb);
    assert_eq!(
        own_cgroups(),
        Vec::<PathBuf>::new(),
        "no cgroup outlives the sandbox"
    );
}
