//! Shared helpers for the sandbox's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use askee_sandbox::{Limits, Sandbox, SandboxConfig};

pub fn sandbox(dir: &Path) -> Sandbox {
    let cfg = SandboxConfig {
        worker: PathBuf::from(env!("CARGO_BIN_EXE_askee-worker")),
        work_dir: dir.join("work"),
        spare_worker: true,
    };
    Sandbox::new(cfg).expect("sandbox")
}

pub fn limits() -> Limits {
    Limits {
        cpu_percent: 100,
        memory_bytes: 64 << 20,
        storage_bytes: 4 << 20,
        pids: 16,
        wall_time: Duration::from_secs(10),
        cpu_time: Duration::from_secs(5),
        fuel: 2_000_000_000,
        stdout_bytes: 64 << 10,
    }
}

/// Compile a C source from tests/native/ statically with gcc into `dir`.
pub fn gcc(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/native")
        .join(format!("{name}.c"));
    let out = dir.join(name);
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(st.success(), "gcc failed for {name}");
    out
}

/// A WASI command module in text format whose `_start` body is `body`; memory 1 page,
/// the usual WASI imports available.
pub fn wat(body: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {extra}
  (func (export "_start") {body}))"#
    )
    .into_bytes()
}

/// The path of `pid`'s cgroup within the v1 hierarchy of `controller`, or
/// within the v2 hierarchy when `controller` is `None` (from `/proc/<pid>/cgroup`).
pub fn cgroup_of(pid: i32, controller: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let line = text.lines().find(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers) = (f.next(), f.next().unwrap_or_default());
        match controller {
            Some(c) => controllers.split(',').any(|x| x == c),
            None => l.starts_with("0::"),
        }
    })?;
    Some(line.splitn(3, ':').nth(2)?.to_string())
}

/// This process's worker children: the spares waiting, and the workers of
/// tasks not yet waited for.
pub fn worker_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let ppid = rest.split(' ').nth(1)?;
            (head.ends_with("(askee-worker") && ppid == me)
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Wait (bounded) until the sandbox's next spare is ready, so the next task
/// takes it.
pub fn wait_for_a_spare(sb: &Sandbox) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sb.spares_ready() == 0 {
        assert!(std::time::Instant::now() < deadline, "no spare was made");
        std::thread::yield_now();
    }
}
