//! The crate's public vocabulary: limits, task specifications, outcomes and usage.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Resource limits for one task, taken from the consent token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU bandwidth cap in percent of one core (100 = one full core), enforced by the
    /// cgroup CPU quota (Linux), the Job Object hard cap (Windows).
    pub cpu_percent: u32,
    /// Memory limit in bytes: cgroup `memory.max` (v2) or `memory.limit_in_bytes` (v1),
    /// and the WebAssembly store limit for linear memories.
    pub memory_bytes: u64,
    /// Size of the writable scratch directory (a tmpfs of this size on Linux).
    pub storage_bytes: u64,
    /// Maximum number of processes and threads in the task's cgroup.
    pub pids: u32,
    /// Wall-clock limit, enforced by the parent (kill-all) and by the wasm epoch watchdog.
    pub wall_time: Duration,
    /// CPU-time limit (`RLIMIT_CPU`), whole seconds, rounded up.
    pub cpu_time: Duration,
    /// Deterministic work limit for WebAssembly tasks (wasmtime fuel units), at
    /// most `runtime::MAX_FUEL`.
    pub fuel: u64,
    /// Largest stdout the task may produce; past it the task is stopped with
    /// [`TaskOutcome::OutputTruncated`].
    pub stdout_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_percent: 100,
            memory_bytes: 256 << 20,
            storage_bytes: 16 << 20,
            pids: 32,
            wall_time: Duration::from_secs(30),
            cpu_time: Duration::from_secs(30),
            fuel: 10_000_000_000,
            stdout_bytes: 1 << 20,
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    /// A WebAssembly module (WASI preview 1), as bytes (binary or text format).
    Wasm(Vec<u8>),
    /// A native executable run directly inside the OS sandbox. Used to test the OS layer
    /// on its own; the agent only runs [`Program::Wasm`]. It must be statically linked:
    /// the sandbox's root holds no shared libraries.
    Native(PathBuf),
}

/// A task to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The program.
    pub program: Program,
    /// Arguments after the program name (`argv[1..]`).
    pub args: Vec<String>,
    /// Bytes given on stdin.
    pub stdin: Vec<u8>,
    /// Host directory exposed read-only at `/input`.
    pub input_dir: Option<PathBuf>,
    /// Seed of the deterministic stand-in for randomness given to WebAssembly tasks.
    pub random_seed: [u8; 32],
    /// Limits.
    pub limits: Limits,
}

impl TaskSpec {
    /// A WebAssembly task with default limits and no input.
    pub fn wasm(module: impl Into<Vec<u8>>) -> Self {
        TaskSpec {
            program: Program::Wasm(module.into()),
            args: Vec::new(),
            stdin: Vec::new(),
            input_dir: None,
            random_seed: [0; 32],
            limits: Limits::default(),
        }
    }

    /// A native task with default limits and no input.
    pub fn native(path: impl Into<PathBuf>) -> Self {
        TaskSpec {
            program: Program::Native(path.into()),
            ..TaskSpec::wasm(Vec::new())
        }
    }
}

/// Why a task was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillReason {
    /// The memory limit was reached (cgroup OOM kill or wasm memory limit).
    Memory,
    /// The CPU-time limit was reached.
    CpuTime,
    /// The wall-clock limit was reached.
    WallTime,
    /// The storage limit was reached (scratch directory full, or file size limit).
    Storage,
    /// The fuel (deterministic work) limit was reached.
    Fuel,
}

/// Per-task resource usage, read back from the cgroup (and wasmtime for fuel).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time from spawn to exit.
    pub wall_time: Duration,
    /// CPU time consumed by all processes of the task, if the cgroup reports it.
    pub cpu_time: Option<Duration>,
    /// Peak memory of the task's cgroup in bytes, if reported.
    pub peak_memory_bytes: Option<u64>,
    /// Bytes read from block devices, if reported.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices, if reported.
    pub io_write_bytes: Option<u64>,
    /// Times the memory cgroup killed a process for exceeding its limit.
    pub oom_kills: u64,
    /// Times a fork or clone failed on the pids limit.
    pub pids_limit_hits: u64,
    /// Fuel consumed (WebAssembly tasks).
    pub fuel_consumed: Option<u64>,
}

/// A file the task wrote under its output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
}

/// How a task ended. Every variant carries the usage measured up to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// The task ran to its end.
    Completed {
        /// Exit code (0 for a wasm module that returned from `_start`).
        exit_code: i32,
        /// SHA-256 over the canonical encoding of exit code, stdout and outputs
        /// (see [`crate::digest`]).
        digest: [u8; 32],
        /// Everything written to stdout.
        stdout: Vec<u8>,
        /// Files written under the output directory, sorted by path.
        outputs: Vec<OutputFile>,
        /// Usage.
        usage: Usage,
    },
    /// The task was stopped on a limit.
    Killed {
        /// Which limit.
        reason: KillReason,
        /// Usage.
        usage: Usage,
    },
    /// The task attempted an operation the sandbox forbids and was stopped for it
    /// (a system call outside the seccomp allowlist).
    Denied {
        /// What was denied.
        operation: String,
        /// Usage.
        usage: Usage,
    },
    /// The task wrote more than [`Limits::stdout_bytes`] to stdout and was stopped.
    OutputTruncated {
        /// The first `stdout_bytes` bytes.
        stdout: Vec<u8>,
        /// Usage.
        usage: Usage,
    },
    /// The WebAssembly module trapped (a fault in the guest, not a limit).
    Trapped {
        /// The trap message.
        message: String,
        /// Usage.
        usage: Usage,
    },
    /// A native task died on a signal that is not a limit.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Usage.
        usage: Usage,
    },
    /// The task was stopped through [`crate::TaskControl::terminate`].
    Terminated {
        /// Usage.
        usage: Usage,
    },
}

impl TaskOutcome {
    /// The usage carried by any variant.
    pub fn usage(&self) -> &Usage {
        match self {
            TaskOutcome::Completed { usage, .. }
            | TaskOutcome::Killed { usage, .. }
            | TaskOutcome::Denied { usage, .. }
            | TaskOutcome::OutputTruncated { usage, .. }
            | TaskOutcome::Trapped { usage, .. }
            | TaskOutcome::Signaled { usage, .. }
            | TaskOutcome::Terminated { usage } => usage,
        }
    }

    /// The kill reason, when the task was stopped on a limit.
    pub fn kill_reason(&self) -> Option<KillReason> {
        match self {
            TaskOutcome::Killed { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// How a module run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WasmEnd {
    /// `_start` returned (code 0) or the guest called `proc_exit`.
    Exited(i32),
    /// A limit stopped it.
    Killed(KillReason),
    /// The guest wrote past the stdout limit.
    OutputTruncated,
    /// The guest trapped.
    Trapped(String),
}

/// Result of a module run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmRun {
    /// How it ended.
    pub end: WasmEnd,
    /// stdout (at most the stdout limit).
    pub stdout: Vec<u8>,
    /// stderr (at most 64 KiB; not part of the digest).
    pub stderr: Vec<u8>,
    /// Output files, sorted by path.
    pub outputs: Vec<OutputFile>,
    /// Fuel consumed.
    pub fuel_consumed: u64,
}
