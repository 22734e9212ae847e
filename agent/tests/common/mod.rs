//! Shared by the agent's integration tests and its bench (`#[path]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use askee_sandbox::{Limits, Sandbox, SandboxConfig, TaskSpec};

/// A sandbox on the agent's worker (no spare: the tests count its processes)
/// in `dir`, and a WebAssembly task that spins until it is stopped.
pub fn spinning(dir: &Path) -> (Sandbox, TaskSpec) {
    let sandbox = Sandbox::new(SandboxConfig {
        worker: PathBuf::from(env!("CARGO_BIN_EXE_askee-agent-worker")),
        work_dir: dir.join("work"),
        spare_worker: false,
    })
    .expect("sandbox");
    let mut spec = TaskSpec::wasm(
        br#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#
            .to_vec(),
    );
    spec.limits = Limits {
        cpu_percent: 100,
        memory_bytes: 128 << 20,
        fuel: u64::MAX,
        wall_time: Duration::from_secs(120),
        cpu_time: Duration::from_secs(120),
        ..Limits::default()
    };
    (sandbox, spec)
}
