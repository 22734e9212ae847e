//! Hostile workloads: each must end with a typed outcome while the host stays
//! unaffected. Native programs (tests/native/hostile.c, built with gcc) exercise the OS
//! layer on its own; WebAssembly modules exercise the runtime's limits.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use askee_sandbox::{KillReason, Sandbox, TaskOutcome, TaskSpec};
use common::{gcc, limits, sandbox, wat};

struct Env {
    _dir: tempfile::TempDir,
    sb: Sandbox,
    prog: std::path::PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path());
    let prog = gcc(dir.path(), "hostile");
    Env {
        _dir: dir,
        sb,
        prog,
    }
}

fn native(e: &Env, args: &[&str]) -> TaskSpec {
    let mut s = TaskSpec::native(&e.prog);
    s.args = args.iter().map(|a| a.to_string()).collect();
    s.limits = limits();
    s
}

fn run(e: &Env, spec: &TaskSpec) -> TaskOutcome {
    let out = e.sb.run(spec).expect("task runs");
    host_is_fine();
    out
}

/// The host can still fork and run a process.
fn host_is_fine() {
    let st = std::process::Command::new("true")
        .status()
        .expect("host can spawn");
    assert!(st.success());
}

fn failed_with(out: &TaskOutcome, needle: &str) {
    match out {
        TaskOutcome::Completed {
            exit_code: 3,
            stdout,
            ..
        } => {
            let s = String::from_utf8_lossy(stdout);
            assert!(s.contains(needle), "stdout {s:?} lacks {needle:?}");
        }
        other => panic!("expected a failed attack, got {other:?}"),
    }
}

fn denied(out: &TaskOutcome) {
    assert!(
        matches!(out, TaskOutcome::Denied { .. }),
        "expected Denied, got {out:?}"
    );
}

#[test]
fn trivial_native_program_completes() {
    let e = env();
    let out = run(&e, &native(&e, &["true"]));
    assert!(
        matches!(out, TaskOutcome::Completed { exit_code: 0, ref stdout, .. } if stdout == b"ok\n"),
        "{out:?}"
    );
}

#[test]
fn fork_bomb_hits_the_pids_limit() {
    let e = env();
    let mut spec = native(&e, &["forkbomb"]);
    spec.limits.wall_time = Duration::from_secs(2);
    spec.limits.cpu_time = Duration::from_secs(1);
    let out = run(&e, &spec);
    // Contained by its time limits, or by its memory limit: each fork, even
    // one the pids limit refuses, first copies page tables charged to the
    // task's cgroup, and under load their freeing lags (seen once in CI: 68 MiB
    // of kernel memory, and the OOM killer chose the worker).
    assert!(
        matches!(
            out.kill_reason(),
            Some(KillReason::WallTime | KillReason::CpuTime | KillReason::Memory)
        ),
        "{out:?}"
    );
    if askee_sandbox::probe().cgroup_enforcing_version.is_some() {
        assert!(out.usage().pids_limit_hits > 0, "{out:?}");
    }
}

#[test]
fn memory_balloon_is_killed_for_memory() {
    let e = env();
    let out = run(&e, &native(&e, &["balloon"]));
    if askee_sandbox::probe().cgroup_enforcing_version.is_some() {
        assert_eq!(out.kill_reason(), Some(KillReason::Memory), "{out:?}");
        assert!(out.usage().peak_memory_bytes.unwrap() <= (64 + 4) << 20);
    }
}

#[test]
fn cpu_spin_is_killed_for_cpu_time() {
    let e = env();
    let mut spec = native(&e, &["spin"]);
    spec.limits.cpu_time = Duration::from_secs(1);
    // SCHED_IDLE: on a busy host one CPU second can take many wall seconds.
    spec.limits.wall_time = Duration::from_secs(120);
    let out = run(&e, &spec);
    assert_eq!(out.kill_reason(), Some(KillReason::CpuTime), "{out:?}");
}

#[test]
fn sleeping_is_killed_for_wall_time() {
    let e = env();
    let mut spec = native(&e, &["sleep"]);
    spec.limits.wall_time = Duration::from_millis(500);
    let out = run(&e, &spec);
    assert_eq!(out.kill_reason(), Some(KillReason::WallTime), "{out:?}");
}

#[test]
fn shadow_and_home_are_invisible() {
    let e = env();
    failed_with(
        &run(&e, &native(&e, &["read", "/etc/shadow"])),
        "No such file",
    );
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let secret_dir = tempfile::tempdir_in(&home).unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "top secret").unwrap();
    failed_with(
        &run(&e, &native(&e, &["read", secret.to_str().unwrap()])),
        "No such file",
    );
}

#[test]
fn writes_outside_scratch_fail_and_leave_the_host_alone() {
    let e = env();
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("data"), "original").unwrap();
    let mut spec = native(&e, &["write", "/input/data"]);
    spec.input_dir = Some(input.path().to_path_buf());
    failed_with(&run(&e, &spec), "Read-only file system");
    assert_eq!(
        std::fs::read_to_string(input.path().join("data")).unwrap(),
        "original"
    );
    failed_with(&run(&e, &native(&e, &["write", "/etc/passwd"])), "");
    failed_with(
        &run(&e, &native(&e, &["write", "/newfile"])),
        "Read-only file system",
    );
}

#[test]
fn filling_scratch_stops_at_the_storage_limit() {
    let e = env();
    let before = std::fs::metadata("/").map(|_| ()).is_ok();
    failed_with(&run(&e, &native(&e, &["fill"])), "No space left");
    assert!(before);
    let out = run(&e, &native(&e, &["bigfile"]));
    assert_eq!(out.kill_reason(), Some(KillReason::Storage), "{out:?}");
}

#[test]
fn loopback_service_is_unreachable() {
    let e = env();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    denied(&run(&e, &native(&e, &["connect", &port])));
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the sandbox reached the host's listener"
    );
}

#[test]
fn privileged_operations_are_denied() {
    let e = env();
    for attack in [
        "ptrace",
        "mount",
        "unshare",
        "setuid",
        "kill-parent",
        "chmod-suid",
    ] {
        let out = run(&e, &native(&e, &[attack]));
        denied(&out);
    }
}

/// The task has a UTS namespace of its own, named `askee`, which it cannot
/// rename, whether its worker was started for it or ahead of it as a spare
/// (a spare makes its UTS namespace before the request arrives).
#[test]
fn the_task_sees_its_own_host_name_and_cannot_change_it() {
    let e = env();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // The first task takes the spare; the second starts while the next spare is
    // being made, so one of them (usually both) runs in a worker made ahead.
    for _ in 0..2 {
        failed_with(&run(&e, &native(&e, &["hostname"])), "hostname askee\n");
        let out = run(&e, &native(&e, &["sethostname"]));
        if !matches!(out, TaskOutcome::Denied { .. }) {
            failed_with(&out, "sethostname: ");
        }
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host,
        "the host's name is unchanged"
    );
}

/// The `cpu.idle` of the task cgroup that `pid` is in, where the kernel has it.
fn cgroup_idle_of(pid: i32) -> Option<String> {
    let layout = askee_sandbox::cgroup::CgroupLayout::detect().ok()?;
    let (base, path) = match layout.v1_dirs.get("cpu") {
        Some(d) => (d.clone(), common::cgroup_of(pid, Some("cpu"))?),
        None => (layout.v2_dir?, common::cgroup_of(pid, None)?),
    };
    let name = path.rsplit('/').next()?;
    let v = std::fs::read_to_string(base.join(name).join("cpu.idle")).ok()?;
    Some(v.trim().to_string())
}

/// The task gives way to everything else (`SCHED_IDLE`, idle I/O class, and its
/// cgroup idle where the kernel has `cpu.idle`: a process's own policy ranks it
/// only within its cgroup); the sandbox's own processes run at the caller's
/// priority where it may raise them (root), so its set-up and teardown are not
/// starved either.
#[test]
fn only_the_task_runs_at_idle_priority() {
    let e = env();
    if askee_sandbox::probe().cgroup_enforcing_version.is_none() {
        return; // the task's processes are found through its cgroup
    }
    let running = e.sb.spawn(&native(&e, &["sleep"])).unwrap();
    let ctl = running.control();
    let stat = |p: i32| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
    wait_for("the task to start", || {
        ctl.pids().iter().any(|&p| stat(p).contains("(prog)"))
    });
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut seen = 0;
    for p in ctl.pids() {
        let s = stat(p);
        // Field 41 is the policy; the fields after the command start at 3.
        let Some(policy) = s
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(41 - 3))
            .and_then(|f| f.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: ioprio_get(IOPRIO_WHO_PROCESS, pid) only reads.
        let io_class = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, p) } >> 13;
        if s.contains("(prog)") {
            assert_eq!(policy, libc::SCHED_IDLE, "the task's policy: {s}");
            assert_eq!(io_class, 3, "the task's I/O class: {s}");
            // The init makes the cgroup idle once the task has exec'd, and
            // the task's name changes at its exec: polled, bounded.
            if cgroup_idle_of(p).is_some() {
                wait_for("the task's cgroup to be idle while it runs", || {
                    cgroup_idle_of(p).as_deref() == Some("1")
                });
            }
            seen += 1;
        } else if root {
            assert_ne!(policy, libc::SCHED_IDLE, "a sandbox process: {s}");
        }
    }
    assert_eq!(seen, 1, "the task was found");
    ctl.terminate();
    let (out, _) = running.wait().unwrap();
    assert!(matches!(out, TaskOutcome::Terminated { .. }), "{out:?}");
}

#[test]
fn gigabytes_of_stdout_are_truncated() {
    let e = env();
    let out = run(&e, &native(&e, &["stdout"]));
    let TaskOutcome::OutputTruncated { stdout, .. } = &out else {
        panic!("{out:?}")
    };
    assert_eq!(stdout.len() as u64, limits().stdout_bytes);
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn terminate_kills_a_task_that_ignores_signals() {
    let e = env();
    let running = e.sb.spawn(&native(&e, &["ignore-term"])).unwrap();
    let ctl = running.control();
    if askee_sandbox::probe().cgroup_enforcing_version.is_some() {
        // outer worker + the task itself
        wait_for("task processes", || ctl.pids().len() >= 2);
        let pids = ctl.pids();
        ctl.freeze().unwrap();
        wait_for("frozen", || ctl.is_frozen().unwrap());
        ctl.thaw().unwrap();
        ctl.terminate();
        let (out, _) = running.wait().unwrap();
        assert!(matches!(out, TaskOutcome::Terminated { .. }), "{out:?}");
        for p in pids {
            // Gone, or a zombie waiting for its reaper: nothing runs any more.
            wait_for("task processes to die", || {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
                    .unwrap_or(true)
            });
        }
    }
    host_is_fine();
}

// ---- WebAssembly ----

fn wasm(e: &Env, module: Vec<u8>) -> TaskSpec {
    let mut s = TaskSpec::wasm(module);
    s.limits = limits();
    let _ = e;
    s
}

#[test]
fn wasm_memory_balloon_is_killed_for_memory() {
    let e = env();
    let m = wat(
        "(loop $l (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable)) (br $l))",
        "",
    );
    let out = run(&e, &wasm(&e, m));
    assert_eq!(out.kill_reason(), Some(KillReason::Memory), "{out:?}");
}

#[test]
fn wasm_spin_runs_out_of_fuel_or_time() {
    let e = env();
    let m = wat("(loop $l (br $l))", "");
    let mut spec = wasm(&e, m.clone());
    spec.limits.fuel = 50_000_000;
    assert_eq!(run(&e, &spec).kill_reason(), Some(KillReason::Fuel));
    let mut spec = wasm(&e, m);
    spec.limits.fuel = u64::MAX;
    spec.limits.wall_time = Duration::from_millis(500);
    assert_eq!(run(&e, &spec).kill_reason(), Some(KillReason::WallTime));
}

#[test]
fn wasm_sleep_is_killed_for_wall_time() {
    let e = env();
    // poll_oneoff with one relative clock subscription of 1000 s.
    let m = wat(
        "(i64.store (i32.const 64) (i64.const 0)) (i32.store8 (i32.const 72) (i32.const 0))
         (i32.store (i32.const 80) (i32.const 1)) (i64.store (i32.const 88) (i64.const 1000000000000))
         (i64.store (i32.const 96) (i64.const 0)) (i32.store16 (i32.const 104) (i32.const 0))
         (drop (call $poll_oneoff (i32.const 64) (i32.const 200) (i32.const 1) (i32.const 300)))",
        "",
    );
    let mut spec = wasm(&e, m);
    spec.limits.wall_time = Duration::from_millis(700);
    assert_eq!(run(&e, &spec).kill_reason(), Some(KillReason::WallTime));
}

#[test]
fn wasm_stdout_flood_is_truncated() {
    let e = env();
    let m = wat(
        "(loop $l (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))",
        r#"(data (i32.const 0) "\10\00\00\00\00\10\00\00")"#,
    );
    let out = run(&e, &wasm(&e, m));
    assert!(
        matches!(out, TaskOutcome::OutputTruncated { .. }),
        "{out:?}"
    );
}

#[test]
fn wasm_cannot_escape_its_preopens() {
    let e = env();
    // path_open(fd 3 = /input, "../etc/shadow") then proc_exit(errno).
    let m = wat(
        "(call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 13)
            (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8)))",
        r#"(data (i32.const 16) "../etc/shadow")"#,
    );
    let input = tempfile::tempdir().unwrap();
    let mut spec = wasm(&e, m);
    spec.input_dir = Some(input.path().to_path_buf());
    let out = run(&e, &spec);
    // WASI errno 76 = ENOTCAPABLE, 2 = EACCES, 44 = ENOENT: anything but success.
    assert!(
        matches!(out, TaskOutcome::Completed { exit_code, .. } if exit_code != 0),
        "{out:?}"
    );
}
