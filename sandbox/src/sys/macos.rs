//! macOS: the worker is started at background priority (`PRIO_DARWIN_BG`) with
//! rlimits, and confines itself with `sandbox_init` and the deny-by-default profile in
//! `deploy/macos/askee-task.sb`. No TCC (privacy) permission is ever requested; the
//! binaries must be code-signed.
//!
//! Only `cargo check` proves this file on CI (cross target aarch64-apple-darwin).

use std::ffi::{CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;

use crate::SandboxError;
use crate::probe::HostCapabilities;
use crate::proto::{AppliedConfinement, WorkerMode};
use crate::types::{TaskOutcome, TaskSpec};

/// The worker process.
pub type WorkerProcess = std::process::Child;

include!("portable_parent.rs");

/// SIGKILL one process.
pub fn kill_process(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// The deny-by-default profile, embedded so the worker needs no file access for it.
pub const SANDBOX_PROFILE: &str = include_str!("../../../deploy/macos/askee-task.sb");

unsafe extern "C" {
    fn sandbox_init(
        profile: *const libc::c_char,
        flags: u64,
        errorbuf: *mut *mut libc::c_char,
    ) -> libc::c_int;
    fn sandbox_free_error(errorbuf: *mut libc::c_char);
}

const PRIO_DARWIN_THREAD: libc::c_int = 3;
const PRIO_DARWIN_PROCESS: libc::c_int = 4;
const PRIO_DARWIN_BG: libc::c_int = 0x1000;

/// Free bytes of the file system holding `path`.
pub fn available_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: valid path and writable statvfs buffer.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
    }
}

/// Probe the host.
pub fn probe() -> HostCapabilities {
    HostCapabilities {
        os: "macos".into(),
        sandbox_init: true,
        // SAFETY: geteuid has no preconditions.
        running_as_root: unsafe { libc::geteuid() } == 0,
        ..Default::default()
    }
}

/// Apply the deny-by-default profile to the calling process.
pub fn enter_sandbox() -> Result<(), SandboxError> {
    let profile = CString::new(SANDBOX_PROFILE).map_err(|e| SandboxError::SetupFailed {
        stage: "sandbox profile".into(),
        message: e.to_string(),
    })?;
    let mut err: *mut libc::c_char = std::ptr::null_mut();
    // SAFETY: a valid profile string, flags 0 (profile text), and an error out-pointer.
    let r = unsafe { sandbox_init(profile.as_ptr(), 0, &mut err) };
    if r != 0 {
        let message = if err.is_null() {
            "sandbox_init failed".to_string()
        } else {
            // SAFETY: sandbox_init returned a NUL-terminated message we must free.
            let m = unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: freeing the buffer sandbox_init allocated, once.
            unsafe { sandbox_free_error(err) };
            m
        };
        return Err(SandboxError::SetupFailed {
            stage: "sandbox_init".into(),
            message,
        });
    }
    Ok(())
}

/// A task started by [`spawn`].
pub struct Running {
    control: Arc<Control>,
}

/// Workers are not started ahead of their tasks on this platform: every task
/// starts its own.
pub fn keep_spare(_worker: &Path, _on: bool) {}

/// No spares on this platform.
pub fn spares_ready(_worker: &Path) -> usize {
    0
}

/// Start the worker at background priority with rlimits.
pub fn spawn(
    worker: &Path,
    _work_dir: &Path,
    _mode: WorkerMode,
    spec: &TaskSpec,
) -> Result<Running, SandboxError> {
    let cpu = spec.limits.cpu_time.as_secs().max(1);
    let fsize = spec.limits.storage_bytes;
    let mut cmd = std::process::Command::new(worker);
    cmd.env_clear();
    // SAFETY: the closure only calls setpriority and setrlimit, which are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpriority(PRIO_DARWIN_PROCESS, 0, PRIO_DARWIN_BG);
            let _ = PRIO_DARWIN_THREAD;
            for (res, v) in [
                (libc::RLIMIT_CPU, cpu),
                (libc::RLIMIT_FSIZE, fsize),
                (libc::RLIMIT_CORE, 0),
            ] {
                let r = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                if libc::setrlimit(res, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        path: worker.to_path_buf(),
        source,
    })?;
    Ok(Running {
        control: Arc::new(Control {
            child: std::sync::Mutex::new(Some(child)),
            terminated: Default::default(),
        }),
    })
}

impl Running {
    /// Shared control.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The macOS worker protocol is not implemented yet: the task is stopped and the
    /// call reports it as unsupported.
    pub fn wait(self) -> Result<(TaskOutcome, AppliedConfinement), SandboxError> {
        self.control.terminate();
        Err(SandboxError::Unsupported {
            what: "running tasks on macos (worker protocol pending)".into(),
        })
    }
}

/// The worker's entry point on macOS: confine, then (pending) run the task.
pub fn worker_main() -> i32 {
    match enter_sandbox() {
        Ok(()) => {
            eprintln!("askee-worker: the macos worker protocol is not implemented");
            2
        }
        Err(e) => {
            eprintln!("askee-worker: {e}");
            1
        }
    }
}
