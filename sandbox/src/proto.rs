//! Messages between the library (parent) and the `askee-worker` process.
//!
//! The request travels on the worker's stdin, a unix socket: one byte carrying
//! the file descriptors it passes ([`WorkerRequest::passed`]), then one JSON
//! document to the end of the stream. Reports come back as JSON lines on file
//! descriptor 3.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::Limits;

/// Version of this request/report protocol. The agent and its worker are
/// released as a pair; the agent's self-check asks the worker for it with
/// [`PROTOCOL_VERSION_FLAG`] and refuses a worker that differs. Bump it on
/// every incompatible change of the types below.
pub const PROTOCOL_VERSION: u32 = 2;

/// The worker's one command-line argument besides its normal mode: print
/// [`PROTOCOL_VERSION`] and exit.
pub const PROTOCOL_VERSION_FLAG: &str = "--protocol-version";

/// What the worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerMode {
    /// A precompiled module artifact (written by the parent's module cache).
    Wasm {
        /// Artifact path.
        artifact: PathBuf,
        /// Module content hash.
        module_hash: [u8; 32],
    },
    /// A native, statically linked program.
    Native {
        /// Program path on the host.
        program: PathBuf,
    },
}

/// The worker's instructions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// What to run.
    pub mode: WorkerMode,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// stdin bytes.
    pub stdin: Vec<u8>,
    /// Host directory mounted read-only at `/input`.
    pub input_dir: Option<PathBuf>,
    /// Empty host directory the sandbox root is mounted on.
    pub root_dir: PathBuf,
    /// Limits.
    pub limits: Limits,
    /// Seed of deterministic randomness.
    pub random_seed: [u8; 32],
    /// The task cgroup's join files ([`crate::cgroup::TaskCgroup::join_files`]),
    /// joined before anything else (a spare joined them when it started).
    pub cgroup_join: Vec<PathBuf>,
    /// Create a user namespace.
    pub user_namespace: bool,
    /// AppArmor profile to change to, when AppArmor is enabled and the profile loaded.
    pub apparmor_profile: Option<String>,
    /// What each file descriptor passed with the request is, in the order
    /// passed; each kind at most once. A worker that prepared its root ahead
    /// (a spare) no longer sees the host's paths and gets them all this way.
    #[serde(default)]
    pub passed: Vec<Passed>,
}

/// A file descriptor passed with a [`WorkerRequest`]. Wire values: never
/// renumber or reuse a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Passed {
    /// `input_dir`, as a detached mount (`open_tree`), read-only, `nosuid`,
    /// `nodev` and `noexec` throughout, to be moved to `/input`.
    InputTree,
    /// A native program, as a detached read-only, `nosuid`, `nodev` mount of
    /// the file, to be moved to `/prog`.
    ProgramTree,
    /// A module artifact opened for reading.
    Artifact,
}

/// What the sandbox applied, as the worker saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConfinement {
    /// Namespaces created.
    pub namespaces: Vec<String>,
    /// Landlock ABI used, if Landlock was enforced.
    pub landlock_abi: Option<i32>,
    /// Landlock enforcement status as reported by the kernel.
    pub landlock_status: String,
    /// Seccomp filter installed.
    pub seccomp: bool,
    /// `no_new_privs` set.
    pub no_new_privs: bool,
    /// AppArmor profile applied.
    pub apparmor_profile: Option<String>,
}

/// A report line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerReport {
    /// Confinement is in place; the task starts now.
    Confined(AppliedConfinement),
    /// A WebAssembly run finished.
    Wasm(crate::types::WasmRun),
    /// The task process ended (written by the outer worker after `waitpid`).
    TaskExit {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal, when it was killed.
        signal: Option<i32>,
    },
    /// Setting up the sandbox failed at `stage`.
    SetupFailed {
        /// Stage.
        stage: String,
        /// Cause.
        message: String,
    },
}

/// Parse the report lines a worker wrote (JSON lines; empty lines are skipped). The
/// inner worker runs the untrusted task, so this input is untrusted.
pub fn parse_reports(bytes: &[u8]) -> Result<Vec<WorkerReport>, serde_json::Error> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect()
}
