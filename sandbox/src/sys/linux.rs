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

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, mpsc};
use std::time::{Duration, Instant};

use crate::SandboxError;
use crate::cgroup::{CgroupLayout, TaskCgroup};
use crate::probe::HostCapabilities;
use crate::proto::{AppliedConfinement, Passed, WorkerMode, WorkerReport, WorkerRequest};
use crate::types::{KillReason, TaskOutcome, Usage, WasmEnd};

/// Name of the AppArmor profile shipped in `deploy/apparmor/`.
pub const APPARMOR_PROFILE: &str = "askee-task";

/// Extra cgroup memory a wasm worker needs besides the guest's linear memory
/// (wasmtime's code, the WASI runtime's threads and buffers).
pub const WASM_RUNTIME_OVERHEAD: u64 = 96 << 20;

static SECCOMP_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_wasm.bpf"));
static SECCOMP_NATIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_native.bpf"));

// ---------------------------------------------------------------------------
// small helpers

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

fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

fn apparmor_profile_loaded(name: &str) -> bool {
    fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .map(|s| s.lines().any(|l| l.split_whitespace().next() == Some(name)))
        .unwrap_or(false)
}

fn user_namespaces_available() -> bool {
    let max: u64 = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unpriv_ok = fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
        && fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .map(|s| s.trim() != "1")
            .unwrap_or(true);
    max > 0 && (root || unpriv_ok)
}

fn seccomp_available() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false)
}

/// Probe the host.
pub fn probe() -> HostCapabilities {
    let layout = CgroupLayout::detect().ok();
    HostCapabilities {
        os: "linux".into(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cgroup_mode: layout.as_ref().map(|l| l.mode),
        cgroup_enforcing_version: layout.as_ref().and_then(|l| l.enforcing_version()),
        cgroup_v1_controllers: layout
            .as_ref()
            .map(|l| l.v1_dirs.keys().cloned().collect())
            .unwrap_or_default(),
        cgroup_v2_controllers: layout
            .as_ref()
            .map(|l| l.v2_controllers.clone())
            .unwrap_or_default(),
        user_namespaces: user_namespaces_available(),
        seccomp: seccomp_available(),
        seccomp_filters_built: !SECCOMP_WASM.is_empty(),
        landlock_abi: landlock_abi(),
        apparmor_enabled: apparmor_enabled(),
        apparmor_profile_loaded: apparmor_profile_loaded(APPARMOR_PROFILE),
        // SAFETY: geteuid has no preconditions.
        running_as_root: unsafe { libc::geteuid() } == 0,
        job_objects: false,
        appcontainer: false,
        sandbox_init: false,
    }
}

fn cached_layout() -> Option<&'static CgroupLayout> {
    static L: OnceLock<Option<CgroupLayout>> = OnceLock::new();
    L.get_or_init(|| {
        let layout = CgroupLayout::detect().ok()?;
        crate::cgroup::remove_stale(&layout);
        Some(layout)
    })
    .as_ref()
}

// ---------------------------------------------------------------------------
// parent side

/// Shared control of a running task.
#[derive(Debug)]
pub struct Control {
    /// The task's cgroup until the task has ended; then `None`, so a late call
    /// (a yield, a revocation) cannot reach the cgroup, which may then be
    /// another task's ([`TaskCgroup::reset_for_reuse`]), nor a reused pid.
    cgroup: RwLock<Option<TaskCgroup>>,
    ended: AtomicBool,
    /// The cgroup's counters when the task began (a spare's cgroup already
    /// counted its worker's start).
    baseline: crate::cgroup::CgroupUsage,
    worker_pid: i32,
    terminated: AtomicBool,
    truncated: AtomicBool,
    frozen_since: Mutex<Option<Instant>>,
    frozen_total_ms: AtomicU64,
}

impl Control {
    fn cgroup(&self) -> RwLockReadGuard<'_, Option<TaskCgroup>> {
        self.cgroup.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the cgroup away once the task has ended (see `cgroup`).
    fn end(&self) -> Option<TaskCgroup> {
        let mut g = self.cgroup.write().unwrap_or_else(|p| p.into_inner());
        self.ended.store(true, Ordering::SeqCst);
        g.take()
    }

    fn kill_all(&self) {
        let cg = self.cgroup();
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        if let Some(cg) = cg.as_ref()
            && let Err(e) = cg.kill_all()
        {
            tracing::warn!(error = %e, "cgroup kill-all failed");
        }
        kill_process(self.worker_pid);
    }

    /// Freeze the task (nothing to do once it has ended).
    pub fn freeze(&self) -> Result<(), SandboxError> {
        let cg = self.cgroup();
        if self.ended.load(Ordering::SeqCst) {
            return Ok(());
        }
        let cg = cg.as_ref().ok_or(SandboxError::Unsupported {
            what: "freeze without a cgroup".into(),
        })?;
        cg.freeze()?;
        let mut f = self.frozen_since.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Thaw the task (nothing to do once it has ended).
    pub fn thaw(&self) -> Result<(), SandboxError> {
        let cg = self.cgroup();
        if self.ended.load(Ordering::SeqCst) {
            return Ok(());
        }
        let cg = cg.as_ref().ok_or(SandboxError::Unsupported {
            what: "thaw without a cgroup".into(),
        })?;
        cg.thaw()?;
        let mut f = self.frozen_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = f.take() {
            self.frozen_total_ms
                .fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the task is frozen (as the kernel reports it).
    pub fn is_frozen(&self) -> Result<bool, SandboxError> {
        match self.cgroup().as_ref() {
            Some(cg) => Ok(cg.is_frozen()?),
            None => Ok(false),
        }
    }

    /// Kill every process of the task.
    pub fn terminate(&self) {
        self.terminated.store(true, Ordering::SeqCst);
        self.kill_all();
    }

    /// Pids of the task's processes (host pid namespace).
    pub fn pids(&self) -> Vec<i32> {
        self.cgroup()
            .as_ref()
            .and_then(|c| c.pids().ok())
            .unwrap_or_default()
    }
}

/// A task started by [`spawn`].
pub struct Running {
    worker: PathBuf,
    /// The request's socket, read once the task has ended for the mount
    /// namespace a spare handed back (`hand_over_mount_namespace`).
    request: Option<UnixStream>,
    child: Worker,
    control: Arc<Control>,
    started: Instant,
    wall: Duration,
    cpu_time: Duration,
    /// The worker's stdout, stderr and report pipes, drained by `wait`.
    output: Output,
}

/// The worker's three output pipes, read by the waiting thread itself (one
/// `poll` over them and the worker's pidfd, no reader threads to start and to
/// wake and join at the end of every task).
struct Output {
    /// stdout, stderr, reports; `None` once at end of file.
    files: [Option<File>; 3],
    bufs: [Vec<u8>; 3],
    /// How much of each is kept: the task's stdout limit, 64 KiB of stderr, all
    /// reports; beyond a cap the pipe is still drained so the writer does not
    /// block before it dies.
    caps: [usize; 3],
}

/// stdout's index in [`Output`].
const STDOUT: usize = 0;

impl Output {
    fn open(&self) -> bool {
        self.files.iter().any(Option::is_some)
    }

    /// One read from pipe `i` (readable or at end of file); false when the
    /// read went past its cap.
    fn read(&mut self, i: usize, scratch: &mut [u8]) -> bool {
        let Some(f) = &mut self.files[i] else {
            return true;
        };
        match f.read(scratch) {
            Ok(0) => self.files[i] = None,
            Ok(n) => {
                let room = self.caps[i].saturating_sub(self.bufs[i].len());
                self.bufs[i].extend_from_slice(&scratch[..n.min(room)]);
                return n <= room;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.files[i] = None,
        }
        true
    }
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

static TASK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A worker process started ahead of its request: exec'd, its runtime
/// initialised, blocked reading the request on stdin.
///
/// A spare is made at once when the previous spare is taken, so it is ready for
/// the next task even when tasks come back to back, and at `SCHED_IDLE`, on
/// otherwise idle CPU: the exec, the runtime start, the request-independent
/// namespaces (network, UTS, IPC; as root) and its task cgroup, which the worker
/// joins itself as it starts ([`TaskCgroup::join_files`], [`CGROUP_JOIN_ENV`]).
struct Started {
    child: Worker,
    report_r: OwnedFd,
    /// The task cgroup the worker joined as it started (a spare) or joins at its
    /// request (a spare that could not join tells then).
    cgroup: Option<TaskCgroup>,
    /// The limits written into `cgroup` (a spare's: the last task's, so the
    /// next task, which mostly has the same, finds them written).
    written: Option<crate::types::Limits>,
    /// Asked to prepare its root ahead ([`PREPARE_ROOT_ENV`]): its request
    /// passes the input, the program and the artifact as descriptors.
    prepared: bool,
}

impl Started {
    fn discard(mut self) {
        self.child.kill();
        let _ = self.child.wait();
        if let Some(c) = &self.cgroup {
            let _ = c.remove();
        }
    }
}

/// A spare: a worker at `SCHED_IDLE` in the cgroup it will run its task in (an
/// ended task's, reset, or a new one), with the last task's limits
/// ([`spare_limits`]) until its own task's differ, and idle until taken.
fn start_spare(worker: &Path) -> Result<Started, SandboxError> {
    let limits = spare_limits(lock_spares().last_limits.clone());
    let cgroup = cached_layout()
        .filter(|l| l.enforcing_version().is_some())
        .and_then(|l| match task_cgroup(l, &limits, true) {
            Ok(c) => Some(c),
            // The task's cgroup is then made when it arrives.
            Err(e) => {
                tracing::warn!(error = %e, "preparing a spare worker's cgroup");
                None
            }
        });
    let netns = lock_spares().free_netns.pop();
    match start_worker(worker, true, cgroup.as_ref(), cgroup.as_ref(), netns) {
        Ok(w) => Ok(Started {
            written: cgroup.as_ref().map(|_| limits),
            cgroup,
            ..w
        }),
        Err(e) => {
            if let Some(c) = cgroup {
                end_cgroup(worker, c, Vec::new(), None);
            }
            Err(e)
        }
    }
}

/// A cgroup for a task with `limits`, `idle` for a spare (see
/// [`TaskCgroup::set_idle`]): an ended task's cgroup kept for reuse when there
/// is one (no creation, and no cgroup lock held up by an earlier removal's
/// offlining), else a new one.
fn task_cgroup(
    layout: &CgroupLayout,
    limits: &crate::types::Limits,
    idle: bool,
) -> Result<TaskCgroup, crate::cgroup::CgroupError> {
    let reused = lock_spares().free.pop();
    let c = match reused {
        Some(c) => match c.apply_limits(limits) {
            Ok(()) => c,
            Err(e) => {
                tracing::warn!(error = %e, "limits for a reused task cgroup");
                let _ = c.remove();
                return task_cgroup(layout, limits, idle);
            }
        },
        None => {
            let name = format!(
                "askee-{}-{}",
                std::process::id(),
                TASK_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            // Made idle.
            let c = TaskCgroup::create(layout, &name, limits)?;
            if idle {
                return Ok(c);
            }
            c
        }
    };
    set_idle(&c, idle);
    Ok(c)
}

/// [`TaskCgroup::set_idle`]; a failure leaves the scheduling as it was (the
/// task's own processes are at `SCHED_IDLE` regardless).
fn set_idle(cgroup: &TaskCgroup, idle: bool) {
    if let Err(e) = cgroup.set_idle(idle) {
        tracing::warn!(error = %e, idle, "cpu.idle of a task cgroup");
    }
}

/// Exec `worker` with piped stdio and the report pipe as its fd 3; a spare
/// (`idle`) starts at `SCHED_IDLE`, so it is made only from idle CPU and never
/// delays a running task or the volunteer's own work, and makes its
/// request-independent namespaces while it waits ([`EARLY_NAMESPACES_ENV`]);
/// it joins `cgroup` as it starts, and enters `netns` rather than making a
/// network namespace ([`NETNS_FD_ENV`]).
fn start_worker(
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
struct Worker {
    pid: i32,
    /// The request's channel ([`send_request`]).
    stdin: Option<UnixStream>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    status: Option<std::process::ExitStatus>,
}

impl Worker {
    /// Exec `path` with only `env`, stdin a unix socket, stdout and stderr piped,
    /// `report_w` as fd 3 and each of `extra` on its number (above 3); at
    /// `SCHED_IDLE` when `idle`.
    fn spawn(
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
            (report_w.as_fd(), 3),
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

    fn id(&self) -> i32 {
        self.pid
    }

    fn kill(&self) {
        if self.status.is_none() {
            // SAFETY: kill on our own child, not yet reaped (so the pid is ours).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    fn waitpid(&mut self, flags: libc::c_int) -> std::io::Result<Option<std::process::ExitStatus>> {
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

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.waitpid(0)
            .map(|s| s.expect("a blocking waitpid returns a status"))
    }

    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.waitpid(libc::WNOHANG)
    }
}

/// Set for a spare whose parent can pass it mounts (see [`mount_api`]): its
/// inner worker prepares its root before the request ([`prepare_root`]), so a
/// start unmounts nothing. An unmount waits out an RCU grace period, which on a
/// kernel without preemption waits for every other CPU to leave the kernel;
/// with tasks back to back the other CPU is making the next spare, and the
/// unmount after `pivot_root` took about 1 ms instead of 0.08 in one start in
/// ten.
const PREPARE_ROOT_ENV: &str = "ASKEE_WORKER_PREPARE_ROOT";

/// Where a spare mounts its root before `pivot_root`, inside its own mount
/// namespace (the host's directory is untouched): a directory every Linux
/// system has and nothing removes (a directory removed on the host is unmounted
/// in every namespace, a spare's root with it).
const SPARE_MOUNT_POINT: &str = "/tmp";

// The new mount API's flags (linux/mount.h), which the libc crate lacks.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Whether this process can make detached mounts (`open_tree`, Linux 5.2, with
/// `mount_setattr`, 5.12, and `CAP_SYS_ADMIN`), the condition for passing a
/// spare its input and program; probed once.
fn mount_api() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return false;
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/"));
        detached_mount(&exe, false, MOUNT_ATTR_RDONLY)
            .inspect_err(|e| tracing::debug!(error = %e, "no detached mounts: spares unmount at their start"))
            .is_ok()
    })
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`;
/// with its submounts when `recursive`), with `attr` set throughout.
fn detached_mount(path: &Path, recursive: bool, attr: u64) -> std::io::Result<OwnedFd> {
    let c = cstr(path);
    let rec = if recursive { libc::AT_RECURSIVE } else { 0 };
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec as libc::c_uint;
    // SAFETY: open_tree with a valid path; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a non-negative return is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: mount_attr is plain data; all zero is "change nothing".
    let mut a: libc::mount_attr = unsafe { std::mem::zeroed() };
    a.attr_set = attr;
    // SAFETY: mount_setattr on our fd with an empty path, a valid attribute
    // struct and its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | rec,
            &a as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Move the detached mount `tree` onto `target` (`move_mount`).
fn move_into(tree: OwnedFd, target: &Path) -> Result<(), String> {
    let t = cstr(target);
    // SAFETY: move_mount from our fd (empty path) to a valid path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    } as libc::c_int;
    check(r, &format!("move mount onto {}", target.display()))
}

/// What a request to a worker that prepared its root passes: the input
/// directory and a native program as detached read-only mounts, a module's
/// artifact as an open file.
fn pass_to_prepared(
    mode: &WorkerMode,
    input: Option<&Path>,
) -> Result<(Vec<Passed>, Vec<OwnedFd>), (PathBuf, std::io::Error)> {
    let mut kinds = Vec::new();
    let mut fds = Vec::new();
    if let Some(dir) = input {
        let attr = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        fds.push(detached_mount(dir, true, attr).map_err(|e| (dir.to_path_buf(), e))?);
        kinds.push(Passed::InputTree);
    }
    match mode {
        WorkerMode::Native { program } => {
            let attr = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
            fds.push(detached_mount(program, false, attr).map_err(|e| (program.clone(), e))?);
            kinds.push(Passed::ProgramTree);
        }
        WorkerMode::Wasm { artifact, .. } => {
            fds.push(
                File::open(artifact)
                    .map_err(|e| (artifact.clone(), e))?
                    .into(),
            );
            kinds.push(Passed::Artifact);
        }
    }
    Ok((kinds, fds))
}

/// The most descriptors a request passes (one of each [`Passed`]).
const MAX_PASSED: usize = 3;

/// Send a request: one byte carrying `fds`, then `json` (the worker reads it
/// to the end of the stream).
fn send_request(sock: &mut UnixStream, fds: &[OwnedFd], json: &[u8]) -> std::io::Result<()> {
    send_fds(sock.as_raw_fd(), fds)?;
    sock.write_all(json)
}

/// Send one byte carrying `fds` on the socket `sock`.
fn send_fds(sock: RawFd, fds: &[OwnedFd]) -> std::io::Result<()> {
    let byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zero is an empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fds.len() > MAX_PASSED {
        return Err(std::io::Error::other(format!(
            "{} descriptors to pass, at most {MAX_PASSED}",
            fds.len()
        )));
    }
    if !fds.is_empty() {
        let bytes = (fds.len() * std::mem::size_of::<RawFd>()) as libc::c_uint;
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&control));
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds one header with room for
        // MAX_PASSED descriptors; CMSG_FIRSTHDR and CMSG_DATA point into it.
        unsafe {
            let h = libc::CMSG_FIRSTHDR(&msg);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_RIGHTS;
            (*h).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(h).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: sendmsg on our socket with the message built above.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r == 1 {
            return Ok(());
        }
        if r >= 0 {
            return Err(std::io::Error::other(
                "the request's first byte was not sent",
            ));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The descriptors a request passed, by kind.
#[derive(Default)]
struct PassedFds {
    input: Option<OwnedFd>,
    program: Option<OwnedFd>,
    artifact: Option<OwnedFd>,
}

impl PassedFds {
    /// Pair `fds` with the request's `kinds`: as many of each, and each kind once.
    fn pair(kinds: &[Passed], fds: Vec<OwnedFd>) -> Result<PassedFds, String> {
        if kinds.len() != fds.len() {
            return Err(format!(
                "the request names {} passed descriptors, {} arrived",
                kinds.len(),
                fds.len()
            ));
        }
        let mut out = PassedFds::default();
        for (kind, fd) in kinds.iter().zip(fds) {
            let slot = match kind {
                Passed::InputTree => &mut out.input,
                Passed::ProgramTree => &mut out.program,
                Passed::Artifact => &mut out.artifact,
            };
            if slot.replace(fd).is_some() {
                return Err(format!("the request passes {kind:?} twice"));
            }
        }
        Ok(out)
    }
}

/// The descriptors passed with the byte before the request on fd 0
/// ([`send_request`]), close-on-exec; none when fd 0 is not a socket.
fn receive_fds() -> std::io::Result<Vec<OwnedFd>> {
    receive_fds_on(0, 0)
}

/// The descriptors passed with one byte on `sock` ([`send_fds`]),
/// close-on-exec; `flags` for `recvmsg` (`MSG_DONTWAIT`).
fn receive_fds_on(sock: RawFd, flags: libc::c_int) -> std::io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zero is an empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let r = loop {
        // SAFETY: recvmsg on `sock` into the buffers above, which outlive the call.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        let e = std::io::Error::last_os_error();
        if r < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if r < 0 && e.raw_os_error() == Some(libc::ENOTSOCK) {
            return Ok(Vec::new());
        }
        if r < 0 {
            return Err(e);
        }
        break r;
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR
    // and CMSG_NXTHDR stay within it, and each SCM_RIGHTS payload holds
    // descriptors now ours.
    unsafe {
        let mut h = libc::CMSG_FIRSTHDR(&msg);
        while !h.is_null() {
            if (*h).cmsg_level == libc::SOL_SOCKET && (*h).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*h).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(h).cast::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            h = libc::CMSG_NXTHDR(&msg, h);
        }
    }
    if r != 1 {
        return Err(std::io::Error::other(
            "the stream ended before the byte carrying descriptors",
        ));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other(
            "more descriptors were passed than fit a request's",
        ));
    }
    Ok(fds)
}

/// Set for a spare: the join files of the cgroup to join as it starts, one per
/// line (a path with a newline would fail to join early and be joined at the
/// request, which names the files again).
const CGROUP_JOIN_ENV: &str = "ASKEE_WORKER_CGROUP_JOIN";

/// Set when the worker's fd [`IDLE_FD`] is its task cgroup's `cpu.idle`,
/// opened by the sandbox: the sandbox's init makes the cgroup idle as its task
/// starts and lifts that as the task ends ([`TaskCgroup::set_idle`]), so the
/// set-up and tear-down around it run at the caller's priority.
const IDLE_FD_ENV: &str = "ASKEE_WORKER_IDLE_FD";

/// The worker's fd for its cgroup's `cpu.idle` (after the report pipe, fd 3).
const IDLE_FD: RawFd = 4;

/// Set for a spare whose fd [`NETNS_FD`] is a network namespace to enter
/// instead of making one: an earlier task's, which nothing in it could change
/// ([`NetnsFromTask`]). Making a network namespace is half a millisecond in
/// the kernel, and its tear-down a kernel worker's run after every task, both
/// beside the start of the next task when tasks come back to back.
const NETNS_FD_ENV: &str = "ASKEE_WORKER_NETNS_FD";

/// The worker's fd for the network namespace to enter ([`NETNS_FD_ENV`]).
const NETNS_FD: RawFd = 5;

/// `ioctl(NS_GET_NSTYPE)` (linux/nsfs.h, Linux 4.11): a namespace file's
/// `CLONE_NEW*` type.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Whether `fd` is a network namespace.
fn is_network_namespace(fd: &OwnedFd) -> bool {
    // SAFETY: an ioctl without argument on an fd we own; on a file that is not a
    // namespace it fails.
    unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) == libc::CLONE_NEWNET }
}

fn join_env(files: &[PathBuf]) -> OsString {
    let mut v = OsString::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            v.push("\n");
        }
        v.push(f);
    }
    v
}

/// Join the cgroup by its join files ([`TaskCgroup::join_files`]); a process
/// with several threads joins through v1's `cgroup.procs` instead of `tasks`,
/// which would move the calling thread only.
fn join_cgroup(files: &[PathBuf]) -> Result<(), String> {
    let threads = fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    for f in files {
        let procs;
        let file = if threads != 1 && f.file_name() == Some(OsStr::new("tasks")) {
            procs = f.with_file_name("cgroup.procs");
            &procs
        } else {
            f
        };
        fs::write(file, "0").map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// Set for a spare: make the network, UTS and IPC namespaces before the request
/// arrives (or enter an ended task's network namespace, [`NETNS_FD_ENV`]). None
/// of them depends on the request; the network namespace alone takes about
/// 0.4 ms to make. Its value says whether the task gets a user
/// namespace ([`SPARE_WITH_USER_NAMESPACE`]), so that a spare that has joined its
/// cgroup can make the remaining namespaces and its inner worker early as well.
const EARLY_NAMESPACES_ENV: &str = "ASKEE_WORKER_EARLY_NAMESPACES";

/// [`EARLY_NAMESPACES_ENV`]'s value for a task with a user namespace.
const SPARE_WITH_USER_NAMESPACE: &str = "user";

/// The namespaces a spare makes early, as root only (unprivileged, they need the
/// user namespace made first). With a user namespace made later they belong to
/// the initial one, so the task holds no capability over them at all.
const EARLY_NAMESPACES: libc::c_int = libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;

/// A spare was made at `SCHED_IDLE`; its task's set-up runs at the caller's
/// priority, as a cold worker's does (the task itself drops to `SCHED_IDLE`).
/// Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (or a high enough `RLIMIT_NICE`);
/// without it the set-up just stays at `SCHED_IDLE`.
fn raise_priority(pid: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a process of our task, with a valid parameter.
    unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &param) };
}

/// Run the task's processes (and none of the sandbox's own set-up) at
/// `SCHED_IDLE` and the idle I/O class.
fn lower_priority() {
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        // IOPRIO_WHO_PROCESS = 1, IOPRIO_CLASS_IDLE = 3 << 13.
        libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
    }
}

/// A spare's cgroup limits: the last task's (the next task mostly has the same,
/// and finds them written), but never so low that the spare itself, a
/// worker with its inner worker, could not start in them.
fn spare_limits(last: Option<crate::types::Limits>) -> crate::types::Limits {
    let mut l = last.unwrap_or_default();
    l.memory_bytes = l.memory_bytes.max(32 << 20);
    l.pids = l.pids.max(8);
    l
}

/// Whether `a` and `b` write the same values into a task cgroup (the fields
/// [`TaskCgroup::apply_limits`] reads).
fn same_cgroup_limits(a: &crate::types::Limits, b: &crate::types::Limits) -> bool {
    (a.cpu_percent, a.memory_bytes, a.pids) == (b.cpu_percent, b.memory_bytes, b.pids)
}

/// Ended tasks' cgroups kept for reuse, at most; as many network namespaces.
const FREE_CGROUPS: usize = 4;

/// Spare workers per worker binary, for the sandboxes that asked for them.
#[derive(Default)]
struct Spares {
    /// Per binary: how many sandboxes want a spare, and the spares ready.
    ready: HashMap<PathBuf, (usize, Vec<Started>)>,
    /// Ended tasks' cgroups, empty and reset, for the next spares.
    free: Vec<TaskCgroup>,
    /// Ended tasks' network namespaces, left by every process, for the next
    /// spares ([`NETNS_FD_ENV`]).
    free_netns: Vec<OwnedFd>,
    /// The cgroup limits of the last task that took a spare: the next spare's.
    last_limits: Option<crate::types::Limits>,
}

impl Spares {
    /// Some sandbox wants spares of `worker` and fewer than
    /// [`crate::SPARE_WORKERS`] are ready.
    fn short_of(&self, worker: &Path) -> bool {
        self.ready
            .get(worker)
            .is_some_and(|(want, ready)| *want > 0 && ready.len() < crate::SPARE_WORKERS)
    }

    fn any_wanted(&self) -> bool {
        self.ready.values().any(|(want, _)| *want > 0)
    }

    /// Put a spare (back) into the pool, or discard it if no sandbox wants one.
    fn put(&mut self, worker: &Path, w: Started) -> Option<Started> {
        match self.ready.get_mut(worker) {
            Some((want, ready)) if *want > 0 => {
                ready.push(w);
                None
            }
            _ => Some(w),
        }
    }
}

/// Work for the spare thread.
enum Job {
    /// Make a spare of a worker binary, and tell whom when it is ready.
    Refill(PathBuf, Option<mpsc::Sender<()>>),
    /// Keep an ended task's cgroup for a later spare, or remove it (off the
    /// task's path: its usage was read); first let go of what its worker
    /// handed back (its mount namespace: the unmounts happen here), and keep
    /// its network namespace for a later spare once the cgroup is empty.
    Ended(TaskCgroup, Vec<OwnedFd>, Option<NetnsFromTask>),
}

/// The network namespace a spare's worker handed back, from a task that ran
/// under the seccomp filter without capabilities: the filter admits no socket
/// call but `socketpair(AF_UNIX)` and no `sendmsg`, so nothing in the task
/// could bind a name, bring an interface up or leave a socket behind. Once no
/// process of the task is left (its cgroup is empty) the namespace is as it was
/// made, and a later task gets it as its own: it is in one sandbox at a time.
struct NetnsFromTask(OwnedFd);

impl NetnsFromTask {
    /// The network namespace among `held` (what a worker handed back), if
    /// its task ran under the seccomp filter and without capabilities.
    fn take(held: &mut Vec<OwnedFd>, confinement: Option<&AppliedConfinement>) -> Option<Self> {
        if !confinement.is_some_and(|c| c.seccomp && c.no_new_privs) {
            return None;
        }
        let i = held.iter().position(is_network_namespace)?;
        Some(NetnsFromTask(held.swap_remove(i)))
    }
}

/// The spares, and the channel to the thread that makes them (none when that
/// thread could not start).
type SparePool = (Mutex<Spares>, Option<Mutex<mpsc::Sender<Job>>>);

/// The spare thread's loop: make spares when asked, and keep or remove ended
/// tasks' cgroups.
fn spare_thread(rx: mpsc::Receiver<Job>) {
    loop {
        let Ok(msg) = rx.recv() else {
            return;
        };
        let (worker, done) = match msg {
            Job::Refill(worker, done) => (worker, done),
            Job::Ended(cgroup, held, netns) => {
                drop(held);
                let (keep, keep_netns) = {
                    let s = lock_spares();
                    let wanted = s.any_wanted();
                    (
                        wanted && s.free.len() < FREE_CGROUPS,
                        wanted && netns.is_some() && s.free_netns.len() < FREE_CGROUPS,
                    )
                };
                let mut empty = false;
                if keep || keep_netns {
                    // Members killed at the task's end (a terminate, a wall-clock
                    // kill, stragglers) may still be exiting: a killed outer
                    // worker is reaped before its namespace's init has finished
                    // tearing the namespace down. Bounded, off the task's path.
                    let deadline = Instant::now() + Duration::from_secs(1);
                    loop {
                        match cgroup.pids() {
                            Ok(p) if p.is_empty() => {
                                empty = true;
                                break;
                            }
                            Err(_) => break,
                            Ok(_) if Instant::now() >= deadline => break,
                            Ok(_) => std::thread::yield_now(),
                        }
                    }
                }
                // A task leaves its namespaces before its cgroup as it exits:
                // with the cgroup empty, no process is left in the namespace.
                if let Some(NetnsFromTask(ns)) = netns
                    && keep_netns
                    && empty
                {
                    lock_spares().free_netns.push(ns);
                }
                match keep.then(|| cgroup.reset_for_reuse()) {
                    Some(Ok(true)) => lock_spares().free.push(cgroup),
                    other => {
                        if let Some(Err(e)) = other {
                            tracing::warn!(error = %e, "resetting a task cgroup for reuse");
                        }
                        if let Err(e) = cgroup.remove() {
                            tracing::warn!(error = %e, "removing task cgroup");
                        }
                    }
                }
                continue;
            }
        };
        while lock_spares().short_of(&worker) {
            match start_spare(&worker) {
                Ok(w) => {
                    let extra = lock_spares().put(&worker, w);
                    if let Some(w) = extra {
                        w.discard();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "starting a spare worker");
                    break;
                }
            }
        }
        // No sandbox wants spares any more: no kept cgroup outlives them.
        let unused = {
            let mut s = lock_spares();
            if s.any_wanted() {
                Vec::new()
            } else {
                s.free_netns.clear();
                std::mem::take(&mut s.free)
            }
        };
        for c in unused {
            if let Err(e) = c.remove() {
                tracing::warn!(error = %e, "removing task cgroup");
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

fn spares() -> &'static SparePool {
    static S: OnceLock<SparePool> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // One thread for the life of the process starts every spare: a worker's
        // parent-death signal fires when the *thread* that forked it exits, so the
        // forking thread must outlive its workers.
        let thread = std::thread::Builder::new()
            .name("askee-spares".into())
            .spawn(move || spare_thread(rx));
        match thread {
            Ok(_) => (Mutex::new(Spares::default()), Some(Mutex::new(tx))),
            Err(e) => {
                tracing::warn!(error = %e, "no spare-worker thread: every task starts its worker");
                (Mutex::new(Spares::default()), None)
            }
        }
    })
}

fn lock_spares() -> std::sync::MutexGuard<'static, Spares> {
    spares().0.lock().unwrap_or_else(|p| p.into_inner())
}

fn send_job(job: Job) -> Result<(), Job> {
    match &spares().1 {
        Some(tx) => tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|e| e.0),
        None => Err(job),
    }
}

fn refill(worker: &Path, done: Option<mpsc::Sender<()>>) -> bool {
    send_job(Job::Refill(worker.to_path_buf(), done)).is_ok()
}

/// An ended task's cgroup: kept for a later spare or removed, on the spare thread
/// when a sandbox wants spares of `worker` (dropping the last such sandbox waits
/// for the thread, so no cgroup outlives it); removed here otherwise.
fn end_cgroup(worker: &Path, cgroup: TaskCgroup, held: Vec<OwnedFd>, netns: Option<NetnsFromTask>) {
    let wanted = lock_spares()
        .ready
        .get(worker)
        .is_some_and(|(want, _)| *want > 0);
    let job = Job::Ended(cgroup, held, netns);
    let left = if wanted {
        send_job(job).err()
    } else {
        Some(job)
    };
    if let Some(Job::Ended(c, _, _)) = left
        && let Err(e) = c.remove()
    {
        tracing::warn!(error = %e, "removing task cgroup");
    }
}

/// Keep workers of `worker` started ahead of the next tasks (`on`; returns
/// once the first spares were tried, so the next task finds one), or stop
/// wanting them; the spares go when no sandbox wants them any more.
pub fn keep_spare(worker: &Path, on: bool) {
    let mut s = lock_spares();
    let entry = s.ready.entry(worker.to_path_buf()).or_default();
    if on {
        entry.0 += 1;
        drop(s);
        let (tx, rx) = mpsc::channel();
        if refill(worker, Some(tx)) {
            let _ = rx.recv();
        }
    } else {
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            let gone = std::mem::take(&mut entry.1);
            drop(s);
            gone.into_iter().for_each(Started::discard);
            // A spare being made now is discarded when it is done: wait for that,
            // so none outlives the last sandbox that wanted it.
            let (tx, rx) = mpsc::channel();
            if refill(worker, Some(tx)) {
                let _ = rx.recv();
            }
        }
    }
}

/// Ask for a new spare of `worker` if a sandbox wants one.
fn refill_if_wanted(worker: &Path) {
    if lock_spares().short_of(worker) {
        refill(worker, None);
    }
}

/// How many spares of `worker` are ready.
pub fn spares_ready(worker: &Path) -> usize {
    lock_spares()
        .ready
        .get(worker)
        .map_or(0, |(_, ready)| ready.len())
}

/// The oldest live spare of `worker` (the likeliest to have finished its
/// set-up), if one is ready. Its replacement is asked for once this task's
/// worker has its request ([`spawn`]), so it has the starts of the other
/// spares to be made in.
fn take_spare(worker: &Path) -> Option<Started> {
    let mut s = lock_spares();
    let (want, ready) = s.ready.get_mut(worker)?;
    if *want == 0 {
        return None;
    }
    let mut found = None;
    while !ready.is_empty() {
        let mut w = ready.remove(0);
        if matches!(w.child.try_wait(), Ok(None)) {
            found = Some(w);
            break;
        }
        w.discard();
    }
    found
}

/// Start the worker for `mode` in a fresh sandbox.
pub fn spawn(
    worker: &Path,
    work_dir: &Path,
    mode: WorkerMode,
    spec: &crate::types::TaskSpec,
) -> Result<Running, SandboxError> {
    // The root's mount point: every task mounts its own tmpfs there inside its
    // private mount namespace, so on the host it stays an empty directory that
    // all tasks share.
    let root_dir = work_dir.join("root");
    fs::create_dir_all(&root_dir).map_err(|source| SandboxError::Io {
        op: "create task root".into(),
        path: root_dir.clone(),
        source,
    })?;
    let is_wasm = matches!(mode, WorkerMode::Wasm { .. });
    let mut cg_limits = spec.limits.clone();
    cg_limits.memory_bytes = spec.limits.memory_bytes
        + spec.limits.storage_bytes
        + if is_wasm { WASM_RUNTIME_OVERHEAD } else { 0 };
    // A spare's cgroup takes the task's limits. A spare without one (making it
    // failed) is discarded where cgroups are enforced: it has made its namespaces
    // already and cannot join a cgroup any more.
    let enforcing = cached_layout().is_some_and(|l| l.enforcing_version().is_some());
    let mut spare = None;
    let mut ready_cgroup = None;
    if let Some(mut w) = take_spare(worker) {
        // The next spare's cgroup gets this task's limits, ready for the next
        // task (an unchanged limit is not written again: each write is a
        // cgroup file's open, write and close on this task's start).
        let written = w.written.take();
        lock_spares().last_limits = Some(cg_limits.clone());
        let apply = |cg: &TaskCgroup| match &written {
            Some(l) if same_cgroup_limits(l, &cg_limits) => Ok(()),
            _ => cg.apply_limits(&cg_limits),
        };
        match w.cgroup.take() {
            Some(cg) => match apply(&cg) {
                Ok(()) => {
                    set_idle(&cg, false);
                    ready_cgroup = Some(cg);
                    spare = Some(w);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "limits for a spare worker's cgroup");
                    Started {
                        cgroup: Some(cg),
                        ..w
                    }
                    .discard();
                }
            },
            None if enforcing => w.discard(),
            None => spare = Some(w),
        }
    }
    // A spare that prepared its root sees none of the host's paths: its input,
    // program or artifact go with the request. Failing that, a cold worker
    // takes the task.
    let mut passed = (Vec::new(), Vec::new());
    if spare.as_ref().is_some_and(|w| w.prepared) {
        match pass_to_prepared(&mode, spec.input_dir.as_deref()) {
            Ok(p) => passed = p,
            Err((path, e)) => {
                tracing::warn!(error = %e, path = %path.display(), "passing a mount to a spare worker");
                if let Some(w) = spare.take() {
                    Started {
                        cgroup: ready_cgroup.take(),
                        ..w
                    }
                    .discard();
                }
            }
        }
    }
    if let Some(w) = &spare {
        raise_priority(w.child.id());
        // A spare forks its inner worker ahead of the request, at `SCHED_IDLE`
        // (see `worker_main`); that one is raised too (inside its user namespace
        // it could not raise itself). Raised after the outer worker: an inner
        // worker forked after this read inherits the raised priority.
        if let Some(c) = &ready_cgroup {
            for pid in c.pids().unwrap_or_default() {
                raise_priority(pid);
            }
        }
    }
    let cgroup = match (ready_cgroup, cached_layout()) {
        (Some(c), _) => Some(c),
        (None, Some(l)) if l.enforcing_version().is_some() => {
            match task_cgroup(l, &cg_limits, false) {
                Ok(c) => Some(c),
                Err(e) => {
                    if let Some(w) = spare.take() {
                        w.discard();
                    }
                    return Err(e.into());
                }
            }
        }
        _ => {
            tracing::warn!("no usable cgroup hierarchy: limits rely on rlimits only");
            None
        }
    };
    // Neither a spare's own use until now (its start) nor a reused cgroup's
    // earlier tasks' is this task's.
    let baseline = cgroup.as_ref().map(TaskCgroup::usage).unwrap_or_default();
    let caps = crate::probe::probe_cached();
    let req = WorkerRequest {
        mode,
        args: spec.args.clone(),
        stdin: spec.stdin.clone(),
        input_dir: spec.input_dir.clone(),
        root_dir,
        limits: spec.limits.clone(),
        random_seed: spec.random_seed,
        cgroup_join: cgroup
            .as_ref()
            .map(TaskCgroup::join_files)
            .unwrap_or_default(),
        user_namespace: caps.user_namespaces,
        apparmor_profile: (caps.apparmor_enabled && caps.apparmor_profile_loaded)
            .then(|| APPARMOR_PROFILE.to_string()),
        passed: passed.0,
    };
    let req_json = serde_json::to_vec(&req).map_err(|e| SandboxError::Protocol {
        message: format!("encoding request: {e}"),
    })?;
    let started = match spare {
        Some(w) => Ok(w),
        None => start_worker(worker, false, None, cgroup.as_ref(), None),
    };
    let Started {
        mut child,
        report_r,
        ..
    } = match started {
        Ok(w) => w,
        Err(e) => {
            if let Some(c) = &cgroup {
                let _ = c.remove();
            }
            return Err(e);
        }
    };
    let worker_pid = child.id();
    let control = Arc::new(Control {
        cgroup: RwLock::new(cgroup),
        ended: AtomicBool::new(false),
        baseline,
        worker_pid,
        terminated: AtomicBool::new(false),
        truncated: AtomicBool::new(false),
        frozen_since: Mutex::new(None),
        frozen_total_ms: AtomicU64::new(0),
    });
    let mut request = None;
    if let Some(mut stdin) = child.stdin.take() {
        // The worker reads the whole request before doing anything; a failed write
        // means it died, which `wait` reports. The end of the stream ends the
        // request; the socket stays for what the worker hands back
        // (`hand_over_mount_namespace`).
        let _ = send_request(&mut stdin, &passed.1, &req_json);
        let _ = stdin.shutdown(std::net::Shutdown::Write);
        request = Some(stdin);
    }
    // The worker holds its own copies now; a detached mount is released with
    // the last.
    drop(passed.1);
    let out = child.stdout.take().ok_or(SandboxError::Protocol {
        message: "worker stdout missing".into(),
    })?;
    let err = child.stderr.take().ok_or(SandboxError::Protocol {
        message: "worker stderr missing".into(),
    })?;
    let output = Output {
        files: [
            Some(File::from(out)),
            Some(File::from(err)),
            Some(File::from(report_r)),
        ],
        bufs: Default::default(),
        caps: [spec.limits.stdout_bytes as usize, 64 << 10, usize::MAX],
    };
    refill_if_wanted(worker);
    Ok(Running {
        worker: worker.to_path_buf(),
        request,
        child,
        control,
        started: Instant::now(),
        wall: spec.limits.wall_time,
        cpu_time: spec.limits.cpu_time,
        output,
    })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Running {
    /// Shared control.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Wait for the end and classify it.
    pub fn wait(mut self) -> Result<(TaskOutcome, AppliedConfinement), SandboxError> {
        let pidfd = pidfd_open(self.control.worker_pid);
        let mut wall_killed = false;
        let mut status = None;
        let mut cgroup = None;
        let mut scratch = vec![0u8; 64 << 10];
        loop {
            let mut timeout = None;
            if status.is_none() && !wall_killed {
                let frozen_since = self
                    .control
                    .frozen_since
                    .lock()
                    .map(|f| *f)
                    .unwrap_or_default();
                let frozen =
                    Duration::from_millis(self.control.frozen_total_ms.load(Ordering::Relaxed))
                        + frozen_since.map(|t| t.elapsed()).unwrap_or_default();
                let deadline = self.started + self.wall + frozen;
                let now = Instant::now();
                if now < deadline {
                    timeout = Some((deadline - now).min(Duration::from_millis(250)));
                } else if frozen_since.is_some() {
                    // Frozen time does not count; wait for the thaw.
                    timeout = Some(Duration::from_millis(50));
                } else {
                    wall_killed = true;
                    self.control.kill_all();
                }
            }
            if status.is_none() && (wall_killed || pidfd.is_none()) {
                // Killed, or no pidfd to wake on: look again now and then.
                timeout = Some(Duration::from_millis(50));
            }
            if status.is_some() && !self.output.open() {
                break;
            }
            // Poll the open pipes and, until it has exited, the worker.
            let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(4);
            let mut which = Vec::with_capacity(4);
            for (i, f) in self.output.files.iter().enumerate() {
                if let Some(f) = f {
                    pfds.push(libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    which.push(Some(i));
                }
            }
            if let (None, Some(fd)) = (status, &pidfd) {
                pfds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(None);
            }
            let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
            // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            if n < 0 && errno().kind() != std::io::ErrorKind::Interrupted {
                return Err(SandboxError::Io {
                    op: "poll worker pipes".into(),
                    path: PathBuf::new(),
                    source: errno(),
                });
            }
            for (pfd, w) in pfds.iter().zip(&which) {
                if pfd.revents == 0 {
                    continue;
                }
                if let Some(i) = *w {
                    let within = self.output.read(i, &mut scratch);
                    if !within
                        && i == STDOUT
                        && !self.control.truncated.swap(true, Ordering::SeqCst)
                    {
                        self.control.kill_all();
                    }
                }
            }
            let worker_gone = match &pidfd {
                Some(_) => pfds
                    .iter()
                    .zip(&which)
                    .any(|(p, w)| w.is_none() && p.revents != 0),
                None => matches!(self.child.try_wait(), Ok(Some(_))),
            };
            if status.is_none() && worker_gone {
                status = Some(self.child.wait().map_err(|source| SandboxError::Io {
                    op: "wait for worker".into(),
                    path: PathBuf::new(),
                    source,
                })?);
                // Stragglers (e.g. a fork bomb's children when the worker died) go
                // too, and with them the last writers of the pipes. With the
                // worker reaped nothing can join the cgroup any more, so an empty
                // one needs no kill-all (on v1 that is a freeze and a thaw), and
                // the worker's own pid is not signalled: it may already be reused.
                cgroup = self.control.end();
                if let Some(cg) = &cgroup
                    && cg.pids().map_or(true, |p| !p.is_empty())
                    && let Err(e) = cg.kill_all()
                {
                    tracing::warn!(error = %e, "cgroup kill-all of stragglers failed");
                }
            }
        }
        let status = status.expect("the loop ends once the worker is reaped");
        let wall_time = self.started.elapsed();
        let [stdout, stderr, reports] = std::mem::take(&mut self.output.bufs);
        let cg_usage = cgroup
            .as_ref()
            .map(|c| c.usage().since(&self.control.baseline))
            .unwrap_or_default();
        let parsed = crate::proto::parse_reports(&reports);
        // What a spare handed back is let go of with its cgroup, off this path;
        // its network namespace may serve a later task.
        let mut held = self
            .request
            .take()
            .and_then(|s| receive_fds_on(s.as_raw_fd(), libc::MSG_DONTWAIT).ok())
            .unwrap_or_default();
        let confined = parsed.as_ref().ok().and_then(|rs| {
            rs.iter().find_map(|r| match r {
                WorkerReport::Confined(c) => Some(c),
                _ => None,
            })
        });
        let netns = NetnsFromTask::take(&mut held, confined);
        match cgroup {
            Some(c) => end_cgroup(&self.worker, c, held, netns),
            None => drop((held, netns)),
        }
        refill_if_wanted(&self.worker);

        let mut usage = Usage {
            wall_time,
            cpu_time: cg_usage.cpu_time,
            peak_memory_bytes: cg_usage.peak_memory_bytes,
            io_read_bytes: cg_usage.io_read_bytes,
            io_write_bytes: cg_usage.io_write_bytes,
            oom_kills: cg_usage.oom_kills,
            pids_limit_hits: cg_usage.pids_limit_hits,
            fuel_consumed: None,
        };
        let mut confinement = AppliedConfinement::default();
        let mut wasm = None;
        let mut exit = None;
        let parsed = parsed.map_err(|e| SandboxError::Protocol {
            message: format!("bad report line: {e}"),
        })?;
        for r in parsed {
            match r {
                WorkerReport::Confined(c) => confinement = c,
                WorkerReport::Wasm(w) => wasm = Some(w),
                WorkerReport::TaskExit { code, signal } => {
                    // The first report is the task's own (from the sandbox's init).
                    exit.get_or_insert((code, signal));
                }
                WorkerReport::SetupFailed { stage, message } => {
                    return Err(SandboxError::SetupFailed { stage, message });
                }
            }
        }
        if let Some(w) = &wasm {
            usage.fuel_consumed = Some(w.fuel_consumed);
        }
        let outcome = if self.control.terminated.load(Ordering::SeqCst) {
            TaskOutcome::Terminated { usage }
        } else if self.control.truncated.load(Ordering::SeqCst) {
            TaskOutcome::OutputTruncated { stdout, usage }
        } else if wall_killed {
            TaskOutcome::Killed {
                reason: KillReason::WallTime,
                usage,
            }
        } else if let Some(w) = wasm {
            match w.end {
                WasmEnd::Exited(code) => TaskOutcome::Completed {
                    exit_code: code,
                    digest: crate::digest::result_digest(code, &w.stdout, &w.outputs),
                    stdout: w.stdout,
                    outputs: w.outputs,
                    usage,
                },
                WasmEnd::Killed(reason) => TaskOutcome::Killed { reason, usage },
                WasmEnd::OutputTruncated => TaskOutcome::OutputTruncated {
                    stdout: w.stdout,
                    usage,
                },
                WasmEnd::Trapped(message) => TaskOutcome::Trapped { message, usage },
            }
        } else {
            use std::os::unix::process::ExitStatusExt;
            match exit {
                Some((_, Some(sig))) => classify_signal(sig, usage, self.cpu_time),
                Some((Some(code), None)) => TaskOutcome::Completed {
                    exit_code: code,
                    digest: crate::digest::result_digest(code, &stdout, &[]),
                    stdout,
                    outputs: Vec::new(),
                    usage,
                },
                // The task filled its cgroup and the kernel's OOM killer chose
                // a sandbox process (the largest) before the task: a fork
                // storm's kernel memory counts against the task's limit too.
                None if status.signal() == Some(libc::SIGKILL) && usage.oom_kills > 0 => {
                    TaskOutcome::Killed {
                        reason: KillReason::Memory,
                        usage,
                    }
                }
                _ => {
                    return Err(SandboxError::WorkerFailed {
                        status: status.to_string(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    });
                }
            }
        };
        Ok((outcome, confinement))
    }
}

fn classify_signal(sig: i32, usage: Usage, cpu_limit: Duration) -> TaskOutcome {
    let reason = match sig {
        libc::SIGSYS => {
            return TaskOutcome::Denied {
                operation: "system call outside the seccomp allowlist".into(),
                usage,
            };
        }
        libc::SIGXCPU => Some(KillReason::CpuTime),
        libc::SIGXFSZ => Some(KillReason::Storage),
        libc::SIGKILL if usage.oom_kills > 0 => Some(KillReason::Memory),
        libc::SIGKILL if usage.cpu_time.is_some_and(|t| t >= cpu_limit) => {
            Some(KillReason::CpuTime)
        }
        _ => None,
    };
    match reason {
        Some(reason) => TaskOutcome::Killed { reason, usage },
        None => TaskOutcome::Signaled { signal: sig, usage },
    }
}

// ---------------------------------------------------------------------------
// worker side

fn report(fd: &mut File, r: &WorkerReport) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = fd.write_all(&line);
    }
}

fn fail(fd: &mut File, stage: &str, message: impl std::fmt::Display) -> ! {
    report(
        fd,
        &WorkerReport::SetupFailed {
            stage: stage.into(),
            message: message.to_string(),
        },
    );
    std::process::exit(101)
}

fn check(ret: libc::c_int, what: &str) -> Result<(), String> {
    if ret < 0 {
        Err(format!("{what}: {}", errno()))
    } else {
        Ok(())
    }
}

/// Entry point of `askee-worker`. Returns the process exit code.
pub fn worker_main() -> i32 {
    // SAFETY: fd 3 is the report pipe the parent installed with dup2 before exec; this
    // process takes ownership of it here, once.
    let mut rep = unsafe { File::from_raw_fd(3) };
    // SAFETY: setting FD_CLOEXEC on our own fd 3.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut idle = std::env::var_os(IDLE_FD_ENV).map(|_| {
        // SAFETY: the parent installed its cgroup's cpu.idle as this fd before
        // exec and says so in the environment; taken here, once, and kept from
        // the task by FD_CLOEXEC.
        unsafe {
            libc::fcntl(IDLE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
            File::from_raw_fd(IDLE_FD)
        }
    });
    // A spare makes what it can before its request (see `EARLY_NAMESPACES`); if
    // that fails, the namespaces are made with the others below.
    let spare = std::env::var_os(EARLY_NAMESPACES_ENV);
    let netns = std::env::var_os(NETNS_FD_ENV).map(|_| {
        // SAFETY: the parent installed a network namespace as this fd before
        // exec and says so in the environment; taken here, once, and closed
        // below.
        unsafe { OwnedFd::from_raw_fd(NETNS_FD) }
    });
    // SAFETY: geteuid has no preconditions.
    let early = spare.is_some() && unsafe { libc::geteuid() } == 0 && {
        // SAFETY: setns with a namespace fd we own, and unshare, on this
        // single-threaded process.
        let entered = netns
            .as_ref()
            .is_some_and(|ns| unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0);
        let make = if entered {
            EARLY_NAMESPACES & !libc::CLONE_NEWNET
        } else {
            EARLY_NAMESPACES
        };
        // SAFETY: unshare on this single-threaded process.
        unsafe { libc::unshare(make) == 0 }
    };
    drop(netns);
    if early {
        // Now, while this process holds the UTS namespace's capabilities: with a
        // user namespace made later, the inner worker could not rename it.
        // SAFETY: sethostname with a valid buffer and length.
        unsafe { libc::sethostname(c"askee".as_ptr(), 5) };
    }
    // A spare joins its cgroup now; failing that, it joins (or reports why it
    // cannot) at its request, which names the cgroup again.
    let to_join: Vec<PathBuf> = std::env::var_os(CGROUP_JOIN_ENV)
        .map(|v| {
            v.as_bytes()
                .split(|&b| b == b'\n')
                .map(|f| PathBuf::from(OsStr::from_bytes(f)))
                .collect()
        })
        .unwrap_or_default();
    let joined_early = join_cgroup(&to_join).is_ok();
    let joined = if joined_early { to_join } else { Vec::new() };
    // A spare with its early namespaces and its cgroup makes the rest of its
    // namespaces and its inner worker before the request too; the inner worker
    // then reads the request. Otherwise this process reads it first.
    let ahead = early && joined_early;
    let prepare = ahead && std::env::var_os(PREPARE_ROOT_ENV).is_some();
    let req = (!ahead).then(|| read_request(&mut rep));
    if let Some((req, _)) = &req
        && req.cgroup_join != joined
        && let Err(e) = join_cgroup(&req.cgroup_join)
    {
        fail(&mut rep, "join cgroup", e);
    }
    let user_namespace = match &req {
        Some((r, _)) => r.user_namespace,
        None => spare.as_deref() == Some(OsStr::new(SPARE_WITH_USER_NAMESPACE)),
    };
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::setsid();
    }
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP;
    let mut namespaces: Vec<String> = ["mnt", "pid", "net", "uts", "ipc", "cgroup"]
        .into_iter()
        .map(String::from)
        .collect();
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
        namespaces.insert(0, "user".into());
    } else if uid != 0 {
        fail(
            &mut rep,
            "unshare",
            "user namespaces unavailable and not root",
        );
    }
    if early {
        flags &= !EARLY_NAMESPACES;
    }
    // Ahead of the request, the inner worker makes the mount namespace (see
    // `prepare_root`).
    if ahead {
        flags &= !libc::CLONE_NEWNS;
    }
    // SAFETY: unshare on this single-threaded process.
    if unsafe { libc::unshare(flags) } != 0 {
        fail(&mut rep, "unshare", errno());
    }
    if user_namespace {
        let maps = fs::write("/proc/self/setgroups", "deny")
            .and_then(|()| fs::write("/proc/self/uid_map", format!("0 {uid} 1")))
            .and_then(|()| fs::write("/proc/self/gid_map", format!("0 {gid} 1")));
        if let Err(e) = maps {
            fail(&mut rep, "user namespace id maps", e);
        }
    }
    // SAFETY: fork in a single-threaded process; the child only runs this crate's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(&mut rep, "fork", errno());
    }
    if pid == 0 {
        // Dies with the outer worker, also while it waits for its request (a
        // spare's inner worker). (Had the outer worker died already, the
        // request's pipe would close with the sandbox's end of it.)
        // SAFETY: plain prctl on this process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let (req, passed, prepared) = match req {
            Some((r, passed)) => (r, passed, None),
            None => {
                // SAFETY: unshare on this single-threaded process.
                if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                    fail(&mut rep, "unshare", errno());
                }
                let prepared = if prepare {
                    hand_over_namespaces();
                    prepare_root().unwrap_or_else(|(stage, m)| fail(&mut rep, &stage, m))
                } else {
                    None
                };
                let (r, passed) = read_request(&mut rep);
                // The parent names the cgroup and the user namespace it told the
                // spare about; anything else is a bug, refused rather than run
                // in the wrong cgroup or namespace.
                if r.cgroup_join != joined || r.user_namespace != user_namespace {
                    fail(
                        &mut rep,
                        "spare request",
                        "the request's cgroup or user namespace differs from the spare's",
                    );
                }
                (r, passed, prepared)
            }
        };
        let code = match inner(&req, &mut rep, namespaces, &mut idle, prepared, passed) {
            Ok(code) => code,
            Err((stage, message)) => fail(&mut rep, &stage, message),
        };
        std::process::exit(code);
    }
    // The inner worker has its own copies of the passed descriptors.
    drop(req);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno().kind() != std::io::ErrorKind::Interrupted {
            fail(&mut rep, "waitpid", errno());
        }
    }
    let (code, signal) = if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (Some(libc::WEXITSTATUS(status)), None)
    };
    report(&mut rep, &WorkerReport::TaskExit { code, signal });
    0
}

/// The request, read whole from stdin, and the descriptors it passed.
fn read_request(rep: &mut File) -> (WorkerRequest, PassedFds) {
    let fds = receive_fds().unwrap_or_else(|e| fail(rep, "read request", e));
    let mut buf = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
        fail(rep, "read request", e);
    }
    let req: WorkerRequest = match serde_json::from_slice(&buf) {
        Ok(r) => r,
        Err(e) => fail(rep, "parse request", e),
    };
    let passed = PassedFds::pair(&req.passed, fds).unwrap_or_else(|e| fail(rep, "read request", e));
    (req, passed)
}

/// Pass this process's mount and network namespaces to the parent over the
/// request's socket (fd 0), which keeps them until the task has ended.
///
/// The parent lets go of the mount namespace off the task's path. The last
/// process of a mount namespace to exit otherwise unmounts its tree, which
/// waits out an expedited RCU grace period: on a kernel without preemption
/// that waits for the other CPU to leave the kernel, and with tasks back to
/// back that CPU is making the next spare. The network namespace may serve a
/// later task ([`NetnsFromTask`], [`NETNS_FD_ENV`]). Best effort: without
/// this, the init's exit unmounts, as a cold worker's does, and the next spare
/// makes its own network namespace.
fn hand_over_namespaces() {
    let fds: Vec<OwnedFd> = ["/proc/self/ns/mnt", "/proc/self/ns/net"]
        .into_iter()
        .filter_map(|p| File::open(p).ok().map(OwnedFd::from))
        .collect();
    let _ = send_fds(0, &fds);
}

/// A spare's root, prepared ahead of its request ([`prepare_root`]).
struct PreparedRoot {
    /// `/proc/self/attr/current`, for the AppArmor profile change (there is no
    /// `/proc` in the root).
    apparmor: Option<File>,
}

/// Ahead of the request, in a fresh mount namespace: an empty tmpfs as the
/// root, the host's tree unmounted (see [`PREPARE_ROOT_ENV`]); the task's
/// mounts come with the request ([`Passed`]). `None` when that could not be
/// done and nothing has changed: the root is then made at the request, as a
/// cold worker makes it.
///
/// Copying the mount tree holds the kernel's namespace lock: a spare, at
/// `SCHED_IDLE`, holds it only while on the CPU (the copy does not sleep but
/// to allocate, and a kernel without preemption does not preempt it), and the
/// unmount waits out its grace period after letting go of it.
fn prepare_root() -> Result<Option<PreparedRoot>, Stage> {
    let at = Path::new(SPARE_MOUNT_POINT);
    let made =
        make_root(at).and_then(|()| std::env::set_current_dir(at).map_err(|e| e.to_string()));
    if made.is_err() {
        return Ok(None);
    }
    let apparmor = apparmor_attr();
    if pivot_root_here().is_err() {
        std::env::set_current_dir("/").map_err(st("chdir /"))?;
        return Ok(None);
    }
    detach_old_root().map_err(st("pivot_root"))?;
    Ok(Some(PreparedRoot { apparmor }))
}

/// Make the mounts of this mount namespace private, and mount the sandbox's
/// root, an empty 1 MiB tmpfs, on `at`.
fn make_root(at: &Path) -> Result<(), String> {
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount(
        Some(Path::new("tmpfs")),
        at,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("size=1m,mode=0755"),
    )
}

/// `/proc/self/attr/current`, through which the AppArmor profile is changed
/// (opened while `/proc` is still there).
fn apparmor_attr() -> Option<File> {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/attr/current")
        .ok()
}

/// `pivot_root(".", ".")`: the working directory's mount becomes the root, the
/// old root stacked on top of it (an idiom of pivot_root(2)).
fn pivot_root_here() -> Result<(), String> {
    let dot = cstr(".");
    // SAFETY: pivot_root with valid strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(r as libc::c_int, "pivot_root")
}

/// Detach the old root that [`pivot_root_here`] stacked, and go to the new root.
fn detach_old_root() -> Result<(), String> {
    let dot = cstr(".");
    // SAFETY: umount2 with a valid string.
    let r = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(r, "umount old root")?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// As the namespace's init: reap every child until `task` exits, report its status.
fn reap_until(task: i32, rep: &mut File) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waiting for any child with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            if errno().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return 0;
        }
        if r == task {
            let (code, signal) = if libc::WIFSIGNALED(status) {
                (None, Some(libc::WTERMSIG(status)))
            } else {
                (Some(libc::WEXITSTATUS(status)), None)
            };
            report(rep, &WorkerReport::TaskExit { code, signal });
            return 0;
        }
    }
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let s = src.map(cstr);
    let t = cstr(target);
    let f = fstype.map(|x| CString::new(x).unwrap_or_default());
    let d = data.map(|x| CString::new(x).unwrap_or_default());
    // SAFETY: all pointers are NULL or valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    };
    check(r, &format!("mount {:?} on {}", src, target.display()))
}

/// Flags of the mount holding `path` that a remount inside a user namespace must keep.
fn locked_flags(path: &Path) -> libc::c_ulong {
    let c = cstr(path);
    // SAFETY: valid path and writable statvfs buffer.
    let f = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_flag
    };
    let mut out = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st != 0 {
            out |= ms;
        }
    }
    out
}

fn bind_ro(src: &Path, dst: &Path, extra: libc::c_ulong) -> Result<(), String> {
    mount(Some(src), dst, None, libc::MS_BIND | libc::MS_REC, None)?;
    let keep = locked_flags(dst);
    mount(
        None,
        dst,
        None,
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | keep
            | extra,
        None,
    )
}

type Stage = (String, String);

fn st<E: std::fmt::Display>(stage: &str) -> impl Fn(E) -> Stage + '_ {
    move |e| (stage.to_string(), e.to_string())
}

/// The task's cgroup made idle, or not, through `file` ([`IDLE_FD`]); best
/// effort, as without the file.
fn cgroup_idle(file: &mut Option<File>, idle: bool) {
    if let Some(f) = file {
        let _ = f.write_all(if idle { b"1" } else { b"0" });
    }
}

/// A host path a worker with a prepared root no longer sees.
fn not_passed(what: &str) -> Stage {
    (
        "request".to_string(),
        format!("a prepared root needs the {what} passed with the request"),
    )
}

fn inner(
    req: &WorkerRequest,
    rep: &mut File,
    namespaces: Vec<String>,
    idle: &mut Option<File>,
    prepared: Option<PreparedRoot>,
    mut passed: PassedFds,
) -> Result<i32, Stage> {
    // A spare's root is `/` already ([`prepare_root`]); otherwise it is made
    // on `root_dir` now and pivoted into below.
    let pivoted = prepared.is_some();
    let root = if pivoted {
        PathBuf::from("/")
    } else {
        make_root(&req.root_dir).map_err(st("root tmpfs"))?;
        req.root_dir.clone()
    };
    for d in ["input", "scratch"] {
        fs::create_dir(root.join(d)).map_err(st("root layout"))?;
    }
    if let Some(input) = &req.input_dir {
        match passed.input.take() {
            Some(tree) => move_into(tree, &root.join("input")).map_err(st("mount input"))?,
            None if pivoted => return Err(not_passed("input directory")),
            None => {
                bind_ro(input, &root.join("input"), libc::MS_NOEXEC).map_err(st("bind input"))?
            }
        }
    }
    let storage = req.limits.storage_bytes.max(4096);
    mount(
        Some(Path::new("tmpfs")),
        &root.join("scratch"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&format!("size={storage},mode=0755")),
    )
    .map_err(st("scratch tmpfs"))?;
    fs::create_dir(root.join("scratch/output")).map_err(st("scratch layout"))?;
    let mut artifact = None;
    match &req.mode {
        WorkerMode::Native { program } => {
            let prog = root.join("prog");
            File::create(&prog).map_err(st("root layout"))?;
            match passed.program.take() {
                Some(tree) => move_into(tree, &prog).map_err(st("mount program"))?,
                None if pivoted => return Err(not_passed("program")),
                None => bind_ro(program, &prog, 0).map_err(st("bind program"))?,
            }
        }
        WorkerMode::Wasm { artifact: a, .. } => {
            let bytes = match passed.artifact.take() {
                Some(fd) => {
                    let mut bytes = Vec::new();
                    File::from(fd).read_to_end(&mut bytes).map(|_| bytes)
                }
                None if pivoted => return Err(not_passed("module artifact")),
                None => fs::read(a),
            };
            artifact = Some(bytes.map_err(st("read module artifact"))?);
        }
    }
    let apparmor_fd = match prepared {
        Some(p) => p.apparmor,
        None => req.apparmor_profile.as_ref().and_then(|_| apparmor_attr()),
    };
    if !pivoted {
        std::env::set_current_dir(&root).map_err(st("chdir root"))?;
        pivot_root_here()
            .and_then(|()| detach_old_root())
            .map_err(st("pivot_root"))?;
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(st("read-only root"))?;
    // SAFETY: sethostname with a valid buffer and length.
    unsafe { libc::sethostname(c"askee".as_ptr(), 5) };

    // Task stdin (native): a pipe holding the bytes; the wasm runtime takes them itself.
    if matches!(req.mode, WorkerMode::Native { .. }) {
        let (r, w) = pipe().map_err(st("stdin pipe"))?;
        let mut w = File::from(w);
        let n = req.stdin.len().min(60 << 10);
        w.write_all(&req.stdin[..n]).map_err(st("stdin pipe"))?;
        drop(w);
        // SAFETY: dup2 onto fd 0 of this process.
        unsafe { libc::dup2(r.as_raw_fd(), 0) };
    }

    set_rlimits(&req.limits).map_err(st("rlimits"))?;
    let mut applied = AppliedConfinement {
        namespaces,
        ..Default::default()
    };
    let abi = landlock_abi();
    let status =
        apply_landlock(matches!(req.mode, WorkerMode::Native { .. })).map_err(st("landlock"))?;
    applied.landlock_status = status.clone();
    if status != "not enforced" {
        applied.landlock_abi = abi;
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) on this process.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(nnp, "no_new_privs").map_err(st("no_new_privs"))?;
    applied.no_new_privs = true;
    drop_capabilities().map_err(st("drop capabilities"))?;
    if let (Some(profile), Some(mut f)) = (&req.apparmor_profile, apparmor_fd) {
        f.write_all(format!("changeprofile {profile}").as_bytes())
            .map_err(st("apparmor change_profile"))?;
        applied.apparmor_profile = Some(profile.clone());
    }

    // From here on everything is the task's: it runs at `SCHED_IDLE`. A native
    // task's init (this process) stays at the caller's priority: it only reaps
    // and reports, and its exit tears the namespaces down, which at `SCHED_IDLE`
    // could hold the kernel's mount lock while other work keeps it off the CPU.
    match &req.mode {
        WorkerMode::Native { .. } => {
            applied.seccomp = !SECCOMP_NATIVE.is_empty();
            // The task must not be PID 1: the kernel drops default-action signals
            // (SIGXCPU, SIGXFSZ) sent to a namespace's init. This process stays init,
            // reaps, and reports the task's status.
            let mut argv: Vec<CString> = vec![CString::from(c"task")];
            argv.extend(
                req.args
                    .iter()
                    .map(|a| CString::new(a.as_str()).unwrap_or_default()),
            );
            let child = exec_task(c"/prog", &argv)?;
            // The task runs now (at `SCHED_IDLE` since before its exec): its
            // whole cgroup is idle until it has exited and this process tears
            // the sandbox down.
            cgroup_idle(idle, true);
            report(rep, &WorkerReport::Confined(applied));
            let code = reap_until(child, rep);
            cgroup_idle(idle, false);
            Ok(code)
        }
        WorkerMode::Wasm { module_hash, .. } => {
            // This process runs the module: idle from here to its end, and the
            // means to lift that do not stay with the module's runtime.
            cgroup_idle(idle, true);
            *idle = None;
            lower_priority();
            run_wasm(req, rep, applied, artifact, *module_hash)
        }
    }
}

#[cfg(feature = "wasm")]
fn run_wasm(
    req: &WorkerRequest,
    rep: &mut File,
    mut applied: AppliedConfinement,
    artifact: Option<Vec<u8>>,
    hash: [u8; 32],
) -> Result<i32, Stage> {
    use crate::runtime::{Invocation, WasmEngine, Watchdog};
    // The parent enforces the wall-clock limit with a kill-all of the cgroup.
    let engine = WasmEngine::new(None, Watchdog::External).map_err(st("wasm engine"))?;
    let bytes = artifact.unwrap_or_default();
    let module = engine
        .load_artifact_bytes(&bytes)
        .map_err(st("load module"))?;
    let compiled = engine
        .prelink(hash, &module)
        .map_err(st("prelink module"))?;
    applied.seccomp = apply_seccomp(SECCOMP_WASM).map_err(st("seccomp"))?;
    report(rep, &WorkerReport::Confined(applied));
    let inv = Invocation {
        args: req.args.clone(),
        stdin: req.stdin.clone(),
        input_dir: req.input_dir.as_ref().map(|_| PathBuf::from("/input")),
        output_dir: Some(PathBuf::from("/scratch/output")),
        random_seed: req.random_seed,
        limits: req.limits.clone(),
    };
    let run = engine.run(&compiled, &inv).map_err(st("run module"))?;
    report(rep, &WorkerReport::Wasm(run));
    Ok(0)
}

#[cfg(not(feature = "wasm"))]
fn run_wasm(
    _req: &WorkerRequest,
    _rep: &mut File,
    _applied: AppliedConfinement,
    _artifact: Option<Vec<u8>>,
    _hash: [u8; 32],
) -> Result<i32, Stage> {
    Err(("wasm".into(), "built without the wasm feature".into()))
}

fn set_rlimits(l: &crate::types::Limits) -> Result<(), String> {
    let cpu = l.cpu_time.as_secs().max(1) + u64::from(l.cpu_time.subsec_nanos() > 0);
    let set = |res: libc::__rlimit_resource_t, soft: u64, hard: u64, name: &str| {
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid rlimit struct.
        check(unsafe { libc::setrlimit(res, &r) }, name)
    };
    // SIGXCPU at the limit, SIGKILL one second later.
    set(libc::RLIMIT_CPU, cpu, cpu + 1, "RLIMIT_CPU")?;
    set(
        libc::RLIMIT_FSIZE,
        l.storage_bytes,
        l.storage_bytes,
        "RLIMIT_FSIZE",
    )?;
    set(libc::RLIMIT_CORE, 0, 0, "RLIMIT_CORE")?;
    set(libc::RLIMIT_NOFILE, 256, 256, "RLIMIT_NOFILE")?;
    set(libc::RLIMIT_MEMLOCK, 0, 0, "RLIMIT_MEMLOCK")?;
    set(libc::RLIMIT_MSGQUEUE, 0, 0, "RLIMIT_MSGQUEUE")?;
    Ok(())
}

fn apply_landlock(native: bool) -> Result<String, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let e = |e: landlock::RulesetError| e.to_string();
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(e)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(e)?
        .scope(Scope::from_all(abi))
        .map_err(e)?
        .create()
        .map_err(e)?
        .add_rules(path_beneath_rules(["/input"], AccessFs::from_read(abi)))
        .map_err(e)?
        .add_rules(path_beneath_rules(["/scratch"], AccessFs::from_all(abi)))
        .map_err(e)?;
    if native {
        created = created
            .add_rules(path_beneath_rules(
                ["/prog"],
                AccessFs::from_file(abi) & AccessFs::from_read(abi),
            ))
            .map_err(e)?;
    }
    let status = created.restrict_self().map_err(e)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced".into(),
        RulesetStatus::PartiallyEnforced => "partially enforced".into(),
        RulesetStatus::NotEnforced => "not enforced".into(),
    })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn drop_capabilities() -> Result<(), String> {
    for cap in 0..64 {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap); EINVAL past the last capability is fine.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: prctl on this process.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a valid v3 header and two data structs, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    check(r as libc::c_int, "capset")
}

fn bpf(bytes: &[u8]) -> Vec<libc::sock_filter> {
    bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Install a prebuilt filter on every thread. Returns false when no filter was
/// built for this target. (The wasm runtime's; a native task installs its
/// filter in `task_child`.)
#[cfg(feature = "wasm")]
fn apply_seccomp(filter: &[u8]) -> Result<bool, String> {
    if filter.is_empty() {
        return Ok(false);
    }
    install_filter(&fprog(&bpf(filter))).map_err(|e| e.to_string())?;
    Ok(true)
}

fn fprog(filter: &[libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    }
}

/// Install one seccomp filter on every thread of this process; no allocation,
/// so a child sharing its parent's memory may call it (see [`exec_task`]).
fn install_filter(prog: &libc::sock_fprog) -> Result<(), std::io::Error> {
    // SAFETY: seccomp(2) with a filter program that outlives the call; the
    // caller has set no_new_privs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            prog as *const libc::sock_fprog,
        )
    };
    match r {
        0 => Ok(()),
        r if r > 0 => Err(std::io::Error::other(format!(
            "thread {r} could not be synchronised"
        ))),
        _ => Err(errno()),
    }
}

/// What the task's process needs between `clone` and `execve`, made ready
/// before: it shares this process's memory, so it must not allocate.
struct TaskExec {
    /// The native filter, when one was built for this target.
    filter: Option<libc::sock_fprog>,
    prog: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The step that failed (1 seccomp, 2 execve) and its errno, from the child.
    failed: AtomicU64,
    /// The CPUs the task may run on, when this process pinned itself (and so
    /// the child) to its CPU ([`pin_to_this_cpu`]); the child restores them.
    affinity: Option<libc::cpu_set_t>,
}

extern "C" fn task_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `TaskExec` that `exec_task` keeps alive until this
    // child has exec'd or exited (CLONE_VFORK suspends it until then).
    let t = unsafe { &*(arg as *const TaskExec) };
    if let Some(set) = &t.affinity {
        set_affinity(set);
    }
    let fail = |step: u64| {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u64;
        t.failed.store(step << 32 | e, Ordering::SeqCst);
        // SAFETY: _exit ends this child without running the parent's destructors.
        unsafe { libc::_exit(127) }
    };
    // The filter first, at the caller's priority (attaching it JIT-compiles
    // it: the sandbox's work, not the task's), then `SCHED_IDLE`, which the
    // native filter allows a process to set on itself and nothing more.
    if let Some(f) = &t.filter
        && install_filter(f).is_err()
    {
        fail(1);
    }
    lower_priority();
    // SAFETY: prog, argv and envp are valid NULL-terminated C data owned by the
    // suspended parent.
    unsafe { libc::execve(t.prog, t.argv, t.envp) };
    fail(2)
}

/// Pin this process to the CPU it runs on, so that a child it starts now runs
/// there as soon as this process waits for it (`CLONE_VFORK`); returns the CPUs
/// allowed before. A new process otherwise goes to the least busy CPU, and one
/// running only `SCHED_IDLE` work counts as idle: a spare being made there, in
/// a system call a kernel without preemption does not interrupt, held the
/// task's start back by up to a millisecond while this CPU sat idle.
fn pin_to_this_cpu() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity and sched_getcpu on
    // this process with a valid set.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) != 0 {
            return None;
        }
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return None;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut one);
        set_affinity(&one).then_some(before)
    }
}

/// `sched_setaffinity` on this process; whether it took.
fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: sched_setaffinity on this process with a valid set and its size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Start the native task: at `SCHED_IDLE`, under the seccomp filters, exec'd
/// from `prog` with `argv` and an empty environment. Started with `CLONE_VM |
/// CLONE_VFORK` rather than `fork`: copying this worker's page tables took
/// 0.25 ms at the median and up to 2 ms on the task's start path.
fn exec_task(prog: &std::ffi::CStr, argv: &[CString]) -> Result<i32, Stage> {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let filter = bpf(SECCOMP_NATIVE);
    let t = TaskExec {
        // The init stays on its CPU afterwards: it only reaps and reports, and
        // the task's exit then wakes it there rather than on a CPU counted
        // idle because a spare is being made on it.
        affinity: pin_to_this_cpu(),
        filter: (!filter.is_empty()).then(|| fprog(&filter)),
        prog: prog.as_ptr(),
        argv: ptrs.as_ptr(),
        envp: envp.as_ptr(),
        failed: AtomicU64::new(0),
    };
    let mut stack = vec![0u8; 256 << 10];
    // The stack grows down from its 16-byte-aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs `task_child` on its own stack with `t`, both alive
    // until clone returns (CLONE_VFORK: after the child's execve or exit).
    let child = unsafe {
        libc::clone(
            task_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &t as *const TaskExec as *mut libc::c_void,
        )
    };
    if child < 0 {
        return Err(("fork task".into(), errno().to_string()));
    }
    match t.failed.load(Ordering::SeqCst) {
        0 => Ok(child),
        f => {
            // Reap it here: it never became the task.
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let step = if f >> 32 == 1 { "seccomp" } else { "execve" };
            let e = std::io::Error::from_raw_os_error((f & 0xffff_ffff) as i32);
            Err((step.into(), e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's descriptors pair with the kinds it names: as many, and
    /// each kind once.
    #[test]
    fn passed_descriptors_pair_with_their_kinds_once_each() {
        let fd = || OwnedFd::from(File::open("/dev/null").unwrap());
        let e = PassedFds::pair(&[Passed::InputTree], Vec::new())
            .err()
            .unwrap();
        assert_eq!(e, "the request names 1 passed descriptors, 0 arrived");
        let e = PassedFds::pair(&[Passed::Artifact, Passed::Artifact], vec![fd(), fd()])
            .err()
            .unwrap();
        assert_eq!(e, "the request passes Artifact twice");
        let p =
            PassedFds::pair(&[Passed::ProgramTree, Passed::InputTree], vec![fd(), fd()]).unwrap();
        assert!(p.input.is_some() && p.program.is_some() && p.artifact.is_none());
    }

    /// Of what a worker hands back, only the network namespace is kept for a
    /// later task, and only when its task ran under the seccomp filter with
    /// `no_new_privs`; the rest stays to be let go of.
    #[test]
    fn only_a_confined_tasks_network_namespace_serves_again() {
        let open = |p: &str| OwnedFd::from(File::open(p).unwrap());
        let handed = || vec![open("/proc/self/ns/mnt"), open("/proc/self/ns/net")];
        let confined = AppliedConfinement {
            seccomp: true,
            no_new_privs: true,
            ..Default::default()
        };
        let mut held = handed();
        let ns = NetnsFromTask::take(&mut held, Some(&confined)).expect("kept");
        assert!(is_network_namespace(&ns.0));
        assert_eq!(held.len(), 1);
        assert!(!is_network_namespace(&held[0]));
        let unconfined = [
            None,
            Some(AppliedConfinement {
                seccomp: false,
                ..confined.clone()
            }),
            Some(AppliedConfinement {
                no_new_privs: false,
                ..confined.clone()
            }),
        ];
        for c in unconfined {
            let mut held = handed();
            assert!(
                NetnsFromTask::take(&mut held, c.as_ref()).is_none(),
                "{c:?}"
            );
            assert_eq!(held.len(), 2);
        }
        // Neither is a file that is no namespace.
        let mut held = vec![open("/dev/null"), open("/proc/self/ns/mnt")];
        assert!(NetnsFromTask::take(&mut held, Some(&confined)).is_none());
        assert_eq!(held.len(), 2);
    }

    /// Descriptors travel with the request's first byte, arrive close-on-exec,
    /// and the request is the rest of the stream.
    #[test]
    fn descriptors_travel_with_the_first_byte_of_a_request() {
        let (mut parent, worker) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_request(&mut parent, &[r], b"{\"request\":1}").unwrap();
        drop(parent);
        File::from(w).write_all(b"through the pipe").unwrap();
        let fds = receive_fds_on(worker.as_raw_fd(), 0).unwrap();
        assert_eq!(fds.len(), 1);
        // SAFETY: F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let mut rest = String::new();
        (&worker).read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "{\"request\":1}");
        let mut piped = String::new();
        File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut piped)
            .unwrap();
        assert_eq!(piped, "through the pipe");
        // Nothing waiting: a would-block error, not a hang.
        let (_a, b) = UnixStream::pair().unwrap();
        let e = receive_fds_on(b.as_raw_fd(), libc::MSG_DONTWAIT).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        // A request on a pipe passes no descriptors.
        let (r, _w) = pipe().unwrap();
        assert!(
            receive_fds_on(r.as_raw_fd(), libc::MSG_DONTWAIT)
                .unwrap()
                .is_empty()
        );
    }

    static WASM_CHAIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_wasm_chain.bpf"));
    static NATIVE_CHAIN: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_native_chain.bpf"));

    /// A classic BPF machine for seccomp programs: the kernel's semantics for
    /// the instructions seccomp allows (loads from `seccomp_data`, ALU and
    /// jumps with constants, returns).
    fn run(prog: &[libc::sock_filter], data: &[u32; 16]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let k = i.k;
            pc += 1;
            match i.code {
                0x20 => a = data[k as usize / 4],                        // ld [k]
                0x54 => a &= k,                                          // and #k
                0x05 => pc += k as usize,                                // ja
                0x15 => pc += if a == k { i.jt } else { i.jf } as usize, // jeq
                0x25 => pc += if a > k { i.jt } else { i.jf } as usize,  // jgt
                0x35 => pc += if a >= k { i.jt } else { i.jf } as usize, // jge
                0x45 => pc += if a & k != 0 { i.jt } else { i.jf } as usize, // jset
                0x06 => return k,                                        // ret #k
                c => panic!("instruction {c:#x} at {} not interpreted", pc - 1),
            }
        }
    }

    /// The search tree in front of seccompiler's chain decides every syscall
    /// number, and every argument value the rules name, as the chain does;
    /// only `clone3` differs: ENOSYS, so libc falls back to `clone`.
    #[test]
    fn the_search_tree_decides_as_seccompilers_chain() {
        for (name, tree, chain) in [
            ("wasm", SECCOMP_WASM, WASM_CHAIN),
            ("native", SECCOMP_NATIVE, NATIVE_CHAIN),
        ] {
            if tree.is_empty() {
                return; // no filters for this target
            }
            let (tree, chain) = (bpf(tree), bpf(chain));
            assert!(
                tree.len() < chain.len(),
                "{name}: {} vs {}",
                tree.len(),
                chain.len()
            );
            let arch = chain[1].k;
            // Argument values worth trying: every constant in the program, its
            // neighbours, and a few others.
            let mut values: Vec<u32> = vec![0, 1, u32::MAX, 0x8000_0000];
            for i in &chain {
                values.extend([i.k, i.k.wrapping_add(1), i.k.wrapping_sub(1)]);
            }
            values.sort_unstable();
            values.dedup();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let numbers = (0..1024).chain((0..1024).map(|n| n | 0x4000_0000));
            for nr in numbers {
                for round in 0..64 {
                    let mut data = [0u32; 16];
                    data[0] = nr;
                    data[1] = if round == 63 { 0x4000_0003 } else { arch };
                    for slot in &mut data[4..] {
                        let r = next();
                        *slot = values[(r % values.len() as u64) as usize];
                    }
                    let (t, c) = (run(&tree, &data), run(&chain, &data));
                    if nr == libc::SYS_clone3 as u32 && data[1] == arch {
                        assert_eq!(t, 0x0005_0000 | libc::ENOSYS as u32, "{name}: clone3");
                    } else {
                        assert_eq!(t, c, "{name}: syscall {nr:#x}, data {data:x?}");
                    }
                }
            }
        }
    }
}
