//! Issue 3, start-up latency: a spare prepares its root ahead (its own mount
//! namespace, `pivot_root`, the host's tree unmounted) and gets its task's
//! input, program and module artifact with the request, as descriptors. Its
//! own binary, so no other sandbox takes the spares.

mod common;

use std::path::PathBuf;

use askee_sandbox::{SPARE_WORKERS, Sandbox, SandboxConfig, TaskOutcome, TaskSpec};
use common::{gcc, limits, wait_for_a_spare, wat, worker_children};

/// The mount points each inner worker of this process's worker children sees
/// (a waiting spare's inner worker is its outer worker's one child).
fn spare_inner_mounts() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for pid in worker_children() {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let mounts = std::fs::read_to_string(format!("/proc/{child}/mountinfo"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(String::from))
                .collect();
            out.push(mounts);
        }
    }
    out
}

fn completed_stdout(out: &TaskOutcome) -> (i32, String) {
    match out {
        TaskOutcome::Completed {
            exit_code, stdout, ..
        } => (*exit_code, String::from_utf8_lossy(stdout).into_owned()),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn issue_3_a_prepared_spare_sees_only_the_mounts_its_request_passes() {
    let dir = tempfile::tempdir().unwrap();
    let prog = gcc(dir.path(), "hostile");
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("data.txt"), "twelve bytes").unwrap();
    let sb = Sandbox::new(SandboxConfig {
        worker: PathBuf::from(env!("CARGO_BIN_EXE_askee-worker")),
        work_dir: dir.path().join("work"),
        spare_worker: true,
    })
    .unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;

    // As root (the condition for a spare to make its namespaces ahead), each
    // waiting spare's inner worker has one mount: its empty root. Polled: a
    // spare is handed out before its inner worker has finished preparing.
    wait_for_a_spare(&sb);
    if root {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let inner = spare_inner_mounts();
            if inner.len() == SPARE_WORKERS && inner.iter().all(|m| m == &["/"]) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a spare's inner worker sees {inner:?}"
            );
            std::thread::yield_now();
        }
    }

    let run = |args: &[&str], with_input: bool| {
        wait_for_a_spare(&sb);
        let mut spec = TaskSpec::native(&prog);
        spec.args = args.iter().map(|a| a.to_string()).collect();
        spec.limits = limits();
        if with_input {
            spec.input_dir = Some(input.clone());
        }
        completed_stdout(&sb.run(&spec).unwrap())
    };
    // The input arrives, read-only; the host's tree does not.
    assert_eq!(
        run(&["read", "/input/data.txt"], true),
        (0, "read 12 bytes\n".into())
    );
    let (code, out) = run(&["write", "/input/data.txt"], true);
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(input.join("data.txt")).unwrap(),
        "twelve bytes"
    );
    let (code, out) = run(&["read", "/input/data.txt"], false);
    assert!(code != 0 && out.starts_with("open: "), "{out}");
    let host_file = dir.path().join("input/data.txt");
    let (code, out) = run(&["read", host_file.to_str().unwrap()], true);
    assert!(code != 0 && out.starts_with("open: "), "{out}");

    // A module's artifact arrives as a descriptor too.
    wait_for_a_spare(&sb);
    let mut spec = TaskSpec::wasm(wat(
        r#"(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"#,
        r#"(data (i32.const 0) "\10\00\00\00\03\00\00\00") (data (i32.const 16) "ok\n")"#,
    ));
    spec.limits = limits();
    assert_eq!(
        completed_stdout(&sb.run(&spec).unwrap()),
        (0, "ok\n".into())
    );
}
