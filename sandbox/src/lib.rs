//! askee's native OS sandbox and deterministic task runtime.
//!
//! The agent calls [`Sandbox::spawn`] (or [`Sandbox::run`]) with a [`TaskSpec`]; the
//! task runs in `askee-worker` inside the platform sandbox and ends with a typed
//! [`TaskOutcome`]. A [`TaskControl`] freezes, thaws or terminates it. [`probe`] and
//! [`capability_report`] tell what the host enforces.

pub mod cgroup;
pub mod digest;
pub mod probe;
pub mod proto;
#[cfg(feature = "wasm")]
pub mod runtime;
mod sys;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use probe::{CapabilityLine, HostCapabilities, capability_report, probe};
pub use proto::AppliedConfinement;
/// Free bytes of the file system holding a path, where the OS layer measures it.
pub use sys::available_bytes;
pub use types::{KillReason, Limits, OutputFile, Program, TaskOutcome, TaskSpec, Usage};

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The host lacks what this operation needs.
    #[error("unsupported on this host: {what}")]
    Unsupported {
        /// What is missing.
        what: String,
    },
    /// The module could not be compiled, cached or loaded.
    #[cfg(feature = "wasm")]
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The worker process could not be started.
    #[error("spawning worker {path}: {source}")]
    Spawn {
        /// Worker path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file-system or process operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// Operation.
        op: String,
        /// Path involved (may be empty).
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The worker sent something unreadable.
    #[error("worker protocol: {message}")]
    Protocol {
        /// Detail.
        message: String,
    },
    /// The worker could not confine itself; the task did not run.
    #[error("sandbox setup failed at {stage}: {message}")]
    SetupFailed {
        /// Stage.
        stage: String,
        /// Cause.
        message: String,
    },
    /// The worker died without reporting an outcome.
    #[error("worker failed ({status}): {stderr}")]
    WorkerFailed {
        /// Exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
}

/// Where the sandbox finds its worker and keeps its files.
/// Spare workers kept ready per worker binary on Linux
/// ([`SandboxConfig::spare_worker`]). Two: with tasks back to back, one spare
/// has about one task's start to be made in, at idle priority, and was not
/// ready for about one start in four; each of two has two.
pub const SPARE_WORKERS: usize = 2;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Path of the `askee-worker` binary.
    pub worker: PathBuf,
    /// Private directory for task roots and the compiled-module cache.
    pub work_dir: PathBuf,
    /// Keep worker processes started ahead of the next tasks (Linux:
    /// [`SPARE_WORKERS`] per worker binary), so a task starts without waiting
    /// for a worker's exec and set-up: about half of a cold start here, for a
    /// few idle processes.
    pub spare_worker: bool,
}

impl SandboxConfig {
    /// The worker next to the current executable (or its parent, for test binaries in
    /// `target/<profile>/deps`), and `work_dir` as given.
    pub fn beside_current_exe(work_dir: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let exe = std::env::current_exe().map_err(|source| SandboxError::Io {
            op: "locate current executable".into(),
            path: PathBuf::new(),
            source,
        })?;
        let name = format!("askee-worker{}", std::env::consts::EXE_SUFFIX);
        let dir = exe.parent().unwrap_or(Path::new("."));
        let cands = [dir.join(&name), dir.parent().unwrap_or(dir).join(&name)];
        let worker = cands
            .iter()
            .find(|p| p.exists())
            .cloned()
            .unwrap_or_else(|| cands[0].clone());
        Ok(SandboxConfig {
            worker,
            work_dir: work_dir.into(),
            spare_worker: false,
        })
    }
}

/// The sandbox: a worker binary, a work directory and (with the `wasm` feature) the
/// module cache.
pub struct Sandbox {
    config: SandboxConfig,
    #[cfg(feature = "wasm")]
    engine: runtime::WasmEngine,
}

impl Sandbox {
    /// Create the sandbox; the module cache lives in `work_dir/modules`.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(&config.work_dir).map_err(|source| SandboxError::Io {
            op: "create work dir".into(),
            path: config.work_dir.clone(),
            source,
        })?;
        if config.spare_worker {
            sys::keep_spare(&config.worker, true);
        }
        Ok(Sandbox {
            #[cfg(feature = "wasm")]
            // Compiled for the worker, which runs under the parent's kill-all.
            engine: runtime::WasmEngine::new(
                Some(config.work_dir.join("modules")),
                runtime::Watchdog::External,
            )?,
            config,
        })
    }

    /// The module engine (compile ahead of time, run in-process for measurement). Its
    /// code has no epoch checks ([`runtime::Watchdog::External`]): an in-process run is
    /// bounded by its fuel, not by its wall-clock limit.
    #[cfg(feature = "wasm")]
    pub fn engine(&self) -> &runtime::WasmEngine {
        &self.engine
    }

    /// Start a task.
    pub fn spawn(&self, spec: &TaskSpec) -> Result<RunningTask, SandboxError> {
        let mode = match &spec.program {
            Program::Native(p) => proto::WorkerMode::Native { program: p.clone() },
            Program::Wasm(bytes) => self.prepare_wasm(bytes)?,
        };
        let running = sys::spawn(&self.config.worker, &self.config.work_dir, mode, spec)?;
        Ok(RunningTask { running })
    }

    #[cfg(feature = "wasm")]
    fn prepare_wasm(&self, bytes: &[u8]) -> Result<proto::WorkerMode, SandboxError> {
        let compiled = self.engine.compile(bytes)?;
        let hash = compiled.hash();
        let artifact = self
            .engine
            .artifact_path(&hash)
            .ok_or(SandboxError::Unsupported {
                what: "module cache directory".into(),
            })?;
        Ok(proto::WorkerMode::Wasm {
            artifact,
            module_hash: hash,
        })
    }

    #[cfg(not(feature = "wasm"))]
    fn prepare_wasm(&self, _bytes: &[u8]) -> Result<proto::WorkerMode, SandboxError> {
        Err(SandboxError::Unsupported {
            what: "webassembly (built without the wasm feature)".into(),
        })
    }

    /// Worker processes started ahead of their tasks and ready now, up to
    /// [`SPARE_WORKERS`] (shared by the sandboxes of one worker binary).
    pub fn spares_ready(&self) -> usize {
        sys::spares_ready(&self.config.worker)
    }

    /// Run a task to its end.
    pub fn run(&self, spec: &TaskSpec) -> Result<TaskOutcome, SandboxError> {
        Ok(self.spawn(spec)?.wait()?.0)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.config.spare_worker {
            sys::keep_spare(&self.config.worker, false);
        }
    }
}

/// A task in progress.
pub struct RunningTask {
    running: sys::Running,
}

impl RunningTask {
    /// A handle to freeze, thaw or terminate the task from another thread.
    pub fn control(&self) -> TaskControl {
        TaskControl(self.running.control())
    }

    /// Wait for the end; returns the outcome and the confinement the worker applied.
    pub fn wait(self) -> Result<(TaskOutcome, AppliedConfinement), SandboxError> {
        self.running.wait()
    }
}

/// Control of a running task (cheap to clone).
#[derive(Clone)]
pub struct TaskControl(Arc<sys::Control>);

impl TaskControl {
    /// Stop every process of the task where it is (the user became active).
    pub fn freeze(&self) -> Result<(), SandboxError> {
        self.0.freeze()
    }

    /// Resume after [`TaskControl::freeze`]. Frozen time does not count against the
    /// wall-clock limit.
    pub fn thaw(&self) -> Result<(), SandboxError> {
        self.0.thaw()
    }

    /// Whether the kernel reports the task frozen.
    pub fn is_frozen(&self) -> Result<bool, SandboxError> {
        self.0.is_frozen()
    }

    /// Kill every process of the task (consent revoked); `wait` then returns
    /// [`TaskOutcome::Terminated`].
    pub fn terminate(&self) {
        self.0.terminate()
    }

    /// Host pids of the task's processes.
    pub fn pids(&self) -> Vec<i32> {
        self.0.pids()
    }
}

/// Entry point of the `askee-worker` binary; returns its exit code.
#[doc(hidden)]
pub fn worker_main() -> i32 {
    sys::worker_main()
}
