//! Starting a worker process (`posix_spawn`, its fds and environment as the
//! [`contract`](super::super::contract) says) and reaping it.

use std::ffi::{CString, OsString};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::super::contract::{
    CGROUP_JOIN_ENV, EARLY_NAMESPACES_ENV, IDLE_FD, IDLE_FD_ENV, NETNS_FD, NETNS_FD_ENV,
    PREPARE_ROOT_ENV, REPORT_FD, SPARE_WITH_USER_NAMESPACE, join_env,
};
use super::super::{cstr, pipe};
use super::mounts::mount_api;
use crate::SandboxError;
use crate::cgroup::TaskCgroup;

/// A worker process started ahead of its request: exec'd, its runtime
/// initialised, blocked reading the request on stdin.
///
/// A spare is made at once when the previous spare is taken, so it is ready for
/// the next task even when tasks come back to back, and at `SCHED_IDLE`, on
/// otherwise idle CPU: the exec, the runtime start, the request-independent
/// namespaces (network, UTS, IPC; as root) and its task cgroup, which the worker
/// joins itself as it starts ([`TaskCgroup::join_files`], [`CGROUP_JOIN_ENV`]).
pub(super) struct Started {
    pub(super) child: Worker,
    pub(super) report_r: OwnedFd,
    /// The task cgroup the worker joined as it started (a spare) or joins at its
    /// request (a spare that could not join tells then).
    pub(super) cgroup: Option<TaskCgroup>,
    /// The limits written into `cgroup` (a spare's: the last task's, so the
    /// next task, which mostly has the same, finds them written).
    pub(super) written: Option<crate::types::Limits>,
    /// Asked to prepare its root ahead ([`PREPARE_ROOT_ENV`]): its request
    /// passes the input, the program and the artifact as descriptors.
    pub(super) prepared: bool,
}

impl Started {
    pub(super) fn discard(mut self) {
        self.child.kill();
        let _ = self.child.wait();
        if let Some(c) = &self.cgroup {
            let _ = c.remove();
        }
    }
}

/// Exec `worker` with piped stdio and the report pipe as its fd 3; a spare
/// (`idle`) starts at `SCHED_IDLE`, so it is made only from idle CPU and never
/// delays a running task or the volunteer's own work, and makes its
/// request-independent namespaces while it waits ([`EARLY_NAMESPACES_ENV`]);
/// it joins `cgroup` as it starts, and enters `netns` rather than making a
/// network namespace ([`NETNS_FD_ENV`]).
pub(super) fn start_worker(
    worker: &Path,
    idle: bool,
    cgroup: Option<&TaskCgroup>,
    task_cgroup: Option<&TaskCgroup>,
    netns: Option<OwnedFd>,
) -> Result<Started, SandboxError> {
    let (report_r, report_w) = pipe()?;
    // Opened here, where the cgroup's files may be written; a failure only
    // leaves the cgroup's idleness to the sandbox (the task's processes are at
    // `SCHED_IDLE` regardless).
    let idle_fd = task_cgroup.and_then(TaskCgroup::idle_file).and_then(|f| {
        fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .inspect_err(|e| tracing::warn!(error = %e, file = %f.display(), "opening cpu.idle"))
            .ok()
    });
    let mut env = Vec::new();
    let prepared = idle && mount_api();
    if idle {
        let user = crate::probe::probe_cached().user_namespaces;
        env.push((
            EARLY_NAMESPACES_ENV,
            OsString::from(if user { SPARE_WITH_USER_NAMESPACE } else { "1" }),
        ));
    }
    if prepared {
        env.push((PREPARE_ROOT_ENV, OsString::from("1")));
    }
    if let Some(c) = cgroup {
        env.push((CGROUP_JOIN_ENV, join_env(&c.join_files())));
    }
    let mut extra = Vec::new();
    if let Some(f) = idle_fd {
        env.push((IDLE_FD_ENV, OsString::from(IDLE_FD.to_string())));
        extra.push((IDLE_FD, OwnedFd::from(f)));
    }
    if let Some(ns) = netns.filter(|_| idle) {
        env.push((NETNS_FD_ENV, OsString::from(NETNS_FD.to_string())));
        extra.push((NETNS_FD, ns));
    }
    let child = Worker::spawn(worker, &env, idle, report_w, extra).map_err(|source| {
        SandboxError::Spawn {
            path: worker.to_path_buf(),
            source,
        }
    })?;
    Ok(Started {
        child,
        report_r,
        cgroup: None,
        written: None,
        prepared,
    })
}

/// A worker process, started with `posix_spawn`: glibc starts it with
/// `CLONE_VM | CLONE_VFORK`, so unlike `fork` (what `std::process::Command`
/// needs for its `pre_exec`) it copies none of this process's page tables. A
/// fork took 0.6 ms at the median, up to 3 ms, on the CPU a task was starting
/// on, with this process's memory map locked meanwhile.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) pid: i32,
    /// The request's channel ([`send_request`]).
    pub(super) stdin: Option<UnixStream>,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    pub(super) status: Option<std::process::ExitStatus>,
}

impl Worker {
    /// Exec `path` with only `env`, stdin a unix socket, stdout and stderr piped,
    /// `report_w` as fd 3 and each of `extra` on its number (above 3); at
    /// `SCHED_IDLE` when `idle`.
    pub(super) fn spawn(
        path: &Path,
        env: &[(&str, OsString)],
        idle: bool,
        report_w: OwnedFd,
        extra: Vec<(RawFd, OwnedFd)>,
    ) -> std::io::Result<Worker> {
        let sys = |e: SandboxError| match e {
            SandboxError::Io { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        };
        let (stdin_w, stdin_r) = UnixStream::pair()?;
        let (stdout_r, stdout_w) = pipe().map_err(sys)?;
        let (stderr_r, stderr_w) = pipe().map_err(sys)?;
        // The child's ends, moved above the numbers they are put on, so no
        // `dup2` in the list below overwrites another's source (and none is a
        // `dup2` onto itself, which would keep its close-on-exec flag).
        let mut high = Vec::with_capacity(4 + extra.len());
        for (fd, target) in [
            (stdin_r.as_fd(), 0),
            (stdout_w.as_fd(), 1),
            (stderr_w.as_fd(), 2),
            (report_w.as_fd(), REPORT_FD),
        ]
        .into_iter()
        .chain(extra.iter().map(|(target, fd)| (fd.as_fd(), *target)))
        {
            // SAFETY: F_DUPFD_CLOEXEC on an open fd we own.
            let d = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if d < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fcntl returned a new fd that nothing else owns.
            high.push((unsafe { OwnedFd::from_raw_fd(d) }, target));
        }
        drop((stdin_r, stdout_w, stderr_w, report_w, extra));
        let program = cstr(path);
        let argv = [program.as_ptr(), std::ptr::null()];
        let env_c: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).map_err(|e| std::io::Error::other(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut pid: libc::pid_t = 0;
        // SAFETY: the file actions and attributes are initialised before use and
        // destroyed after; `argv` and `envp` are NULL-terminated arrays of C
        // strings that outlive the call; every fd named is open.
        let rc = unsafe {
            let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
            libc::posix_spawn_file_actions_init(&mut actions);
            libc::posix_spawnattr_init(&mut attr);
            for (fd, target) in &high {
                libc::posix_spawn_file_actions_adddup2(&mut actions, fd.as_raw_fd(), *target);
            }
            // The child starts with no blocked and no handled signals, as with
            // `Command`; at `SCHED_IDLE` from its first instruction when idle.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::posix_spawnattr_setsigmask(&mut attr, &empty);
            let mut default: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            libc::posix_spawnattr_setsigdefault(&mut attr, &default);
            let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            if idle {
                let param = libc::sched_param { sched_priority: 0 };
                libc::posix_spawnattr_setschedparam(&mut attr, &param);
                libc::posix_spawnattr_setschedpolicy(&mut attr, libc::SCHED_IDLE);
                flags |= libc::POSIX_SPAWN_SETSCHEDULER;
            }
            libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short);
            let rc = libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            );
            libc::posix_spawn_file_actions_destroy(&mut actions);
            libc::posix_spawnattr_destroy(&mut attr);
            rc
        };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(Worker {
            pid,
            stdin: Some(stdin_w),
            stdout: Some(stdout_r),
            stderr: Some(stderr_r),
            status: None,
        })
    }

    pub(super) fn id(&self) -> i32 {
        self.pid
    }

    pub(super) fn kill(&self) {
        if self.status.is_none() {
            // SAFETY: kill on our own child, not yet reaped (so the pid is ours).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    pub(super) fn waitpid(
        &mut self,
        flags: libc::c_int,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            let mut raw = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r == self.pid {
                self.status = Some(std::process::ExitStatus::from_raw(raw));
                return Ok(self.status);
            }
            if r == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(super) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.waitpid(0)
            .map(|s| s.expect("a blocking waitpid returns a status"))
    }

    pub(super) fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.waitpid(libc::WNOHANG)
    }
}
