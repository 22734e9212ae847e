//! Linux: namespaces, a minimal read-only root, cgroups (v2 or v1), rlimits,
//! `no_new_privs`, capability drop, Landlock, AppArmor (where enabled), seccomp,
//! `SCHED_IDLE` and the idle I/O class.
//!
//! Process model: the library spawns `askee-worker` (the *outer* worker) with the
//! request on stdin (a unix socket, which also passes file descriptors) and a
//! report pipe on fd 3. The outer worker joins the task's
//! cgroup, unshares user/pid/net/mnt/uts/ipc/cgroup namespaces and
//! forks the *inner* worker, which is PID 1 of the new pid namespace. The inner worker
//! builds the root, confines itself and runs the task (wasm in-process, or `execve` of
//! a native program). The outer worker waits and reports the exit status.
//!
//! Where code runs is where it sits:
//! - [`parent`]: the library's side, in the caller's process (the agent), which
//!   is **multithreaded**: spawning workers, the spare workers made ahead of
//!   their tasks, waiting for a task and reading its reports, the probe. Code
//!   here never forks: it starts workers with `posix_spawn`, and changes
//!   nothing process-wide (no `unshare`, no `setns`, no rlimits).
//! - [`worker`]: `askee-worker` after its exec, which is **single-threaded**
//!   until the wasm runtime starts: namespaces, the root (`pivot_root`,
//!   mounts), confinement (rlimits, Landlock, `no_new_privs`, capabilities,
//!   AppArmor, seccomp, scheduling) and the task's exec. The `SAFETY`
//!   arguments for `unshare`, `setns` and `fork` there, and the taking over of
//!   the inherited fds 3 to 5, depend on that: they hold in the worker only.
//! - [`contract`]: what both sides agree on: environment variables, fd
//!   numbers, passing descriptors with the request (`SCM_RIGHTS`) and the
//!   report lines.
//!
//! The helpers below are called on both sides.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::SandboxError;

mod contract;
mod parent;
mod worker;

pub use parent::Control;
pub use parent::probe::probe;
pub use parent::running::Running;
pub use parent::spares::{keep_spare, spares_ready};
pub use parent::spawn::spawn;
pub use worker::worker_main;

/// Name of the AppArmor profile shipped in `deploy/apparmor/`.
pub const APPARMOR_PROFILE: &str = "askee-task";

/// Extra cgroup memory a wasm worker needs besides the guest's linear memory
/// (wasmtime's code, the WASI runtime's threads and buffers).
pub const WASM_RUNTIME_OVERHEAD: u64 = 96 << 20;

static SECCOMP_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_wasm.bpf"));
static SECCOMP_NATIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_native.bpf"));

/// Free bytes of the file system holding `path`.
pub fn available_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs buffer.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) == 0 {
            Some(st.f_bavail as u64 * st.f_frsize as u64)
        } else {
            None
        }
    }
}

/// SIGKILL one process (errors such as an already exited process are ignored).
pub fn kill_process(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cstr(p: impl AsRef<Path>) -> CString {
    CString::new(p.as_ref().as_os_str().as_bytes()).unwrap_or_default()
}

/// Highest Landlock ABI the kernel supports, or `None`.
pub fn landlock_abi() -> Option<i32> {
    // SAFETY: landlock_create_ruleset with a NULL attribute, size 0 and the VERSION
    // flag (1) only returns the ABI number; it reads no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    (v > 0).then_some(v as i32)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two ints as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Io {
            op: "pipe2".into(),
            path: PathBuf::new(),
            source: errno(),
        });
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
