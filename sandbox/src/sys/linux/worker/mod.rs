//! `askee-worker`: runs after its exec, single-threaded until the wasm runtime
//! starts (see the rule in [`super`]). The outer worker ([`worker_main`])
//! takes over the fds the parent installed, makes the namespaces, joins the
//! cgroup and forks the inner worker, the sandbox's init ([`init`]), which
//! builds the root ([`root`]), confines itself ([`confine`], [`seccomp`]) and
//! runs the task (in-process wasm, or [`exec`] of a native program).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::contract::{
    CGROUP_JOIN_ENV, EARLY_NAMESPACES_ENV, IDLE_FD, IDLE_FD_ENV, NETNS_FD, NETNS_FD_ENV,
    PREPARE_ROOT_ENV, PassedFds, REPORT_FD, SPARE_WITH_USER_NAMESPACE, receive_fds, report,
    send_fds,
};
use super::errno;
use crate::proto::{WorkerReport, WorkerRequest};

mod confine;
mod exec;
mod init;
mod root;
mod seccomp;

/// The namespaces a spare makes early, as root only (unprivileged, they need the
/// user namespace made first). With a user namespace made later they belong to
/// the initial one, so the task holds no capability over them at all.
const EARLY_NAMESPACES: libc::c_int = libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;

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
    // SAFETY: fd 3 (REPORT_FD) is the report pipe the parent installed with
    // dup2 before exec; this process takes ownership of it here, once.
    let mut rep = unsafe { File::from_raw_fd(REPORT_FD) };
    // SAFETY: setting FD_CLOEXEC on our own fd 3 (REPORT_FD).
    unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
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
    let early = spare.is_some() && make_early_namespaces(netns.as_ref());
    drop(netns);
    // A spare joins its cgroup now; failing that, it joins (or reports why it
    // cannot) at its request, which names the cgroup again.
    let to_join = cgroup_join_env();
    let joined_early = join_cgroup(&to_join).is_ok();
    let joined = if joined_early { to_join } else { Vec::new() };
    // A spare with its early namespaces and its cgroup makes the rest of its
    // namespaces and its inner worker before the request too; the inner worker
    // then reads the request. Otherwise this process reads it first.
    let ahead = early && joined_early;
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
    let namespaces = unshare_namespaces(&mut rep, user_namespace, early, ahead);
    // SAFETY: fork in a single-threaded process; the child only runs this crate's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(&mut rep, "fork", errno());
    }
    if pid == 0 {
        let inner = Inner {
            namespaces,
            joined,
            user_namespace,
            prepare: ahead && std::env::var_os(PREPARE_ROOT_ENV).is_some(),
        };
        inner.run(req, &mut rep, &mut idle);
    }
    // The inner worker has its own copies of the passed descriptors.
    drop(req);
    let (code, signal) = wait_for_init(pid, &mut rep);
    report(&mut rep, &WorkerReport::TaskExit { code, signal });
    0
}

/// As root, a spare's namespaces that do not depend on its request
/// ([`EARLY_NAMESPACES`]; the network namespace `netns` entered rather than
/// made when the parent passed one, [`NETNS_FD_ENV`]); whether they were made.
fn make_early_namespaces(netns: Option<&OwnedFd>) -> bool {
    // SAFETY: geteuid has no preconditions.
    let early = unsafe { libc::geteuid() } == 0 && {
        // SAFETY: setns with a namespace fd we own, and unshare, on this
        // single-threaded process.
        let entered =
            netns.is_some_and(|ns| unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0);
        let make = if entered {
            EARLY_NAMESPACES & !libc::CLONE_NEWNET
        } else {
            EARLY_NAMESPACES
        };
        // SAFETY: unshare on this single-threaded process.
        unsafe { libc::unshare(make) == 0 }
    };
    if early {
        // Now, while this process holds the UTS namespace's capabilities: with a
        // user namespace made later, the inner worker could not rename it.
        // SAFETY: sethostname with a valid buffer and length.
        unsafe { libc::sethostname(c"askee".as_ptr(), 5) };
    }
    early
}

/// The cgroup join files the parent named in [`CGROUP_JOIN_ENV`], if any.
fn cgroup_join_env() -> Vec<PathBuf> {
    std::env::var_os(CGROUP_JOIN_ENV)
        .map(|v| {
            v.as_bytes()
                .split(|&b| b == b'\n')
                .map(|f| PathBuf::from(OsStr::from_bytes(f)))
                .collect()
        })
        .unwrap_or_default()
}

/// Make the task's namespaces (but those made `early`, and the mount
/// namespace when the inner worker makes it `ahead` of the request) and map
/// the ids of a user namespace; their names, for the report.
fn unshare_namespaces(
    rep: &mut File,
    user_namespace: bool,
    early: bool,
    ahead: bool,
) -> Vec<String> {
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
        fail(rep, "unshare", "user namespaces unavailable and not root");
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
        fail(rep, "unshare", errno());
    }
    if user_namespace {
        let maps = fs::write("/proc/self/setgroups", "deny")
            .and_then(|()| fs::write("/proc/self/uid_map", format!("0 {uid} 1")))
            .and_then(|()| fs::write("/proc/self/gid_map", format!("0 {gid} 1")));
        if let Err(e) = maps {
            fail(rep, "user namespace id maps", e);
        }
    }
    namespaces
}

/// What the outer worker tells the inner worker it forks.
struct Inner {
    /// The namespaces made, for the report.
    namespaces: Vec<String>,
    /// The cgroup join files joined early, which a spare's request must name.
    joined: Vec<PathBuf>,
    user_namespace: bool,
    /// Prepare the root before the request ([`PREPARE_ROOT_ENV`]).
    prepare: bool,
}

impl Inner {
    /// The inner worker, in the child of the fork: read the request if the
    /// outer worker has not (`req`), then run the sandbox's init; exits.
    fn run(
        self,
        req: Option<(WorkerRequest, PassedFds)>,
        rep: &mut File,
        idle: &mut Option<File>,
    ) -> ! {
        // Dies with the outer worker, also while it waits for its request (a
        // spare's inner worker). (Had the outer worker died already, the
        // request's pipe would close with the sandbox's end of it.)
        // SAFETY: plain prctl on this process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let (req, passed, prepared) = match req {
            Some((r, passed)) => (r, passed, None),
            None => {
                // SAFETY: unshare on this single-threaded process (the child
                // of a fork of a single-threaded one).
                if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                    fail(rep, "unshare", errno());
                }
                let prepared = if self.prepare {
                    hand_over_namespaces();
                    root::prepare_root().unwrap_or_else(|s| fail(rep, &s.name, s.message))
                } else {
                    None
                };
                let (r, passed) = read_request(rep);
                // The parent names the cgroup and the user namespace it told the
                // spare about; anything else is a bug, refused rather than run
                // in the wrong cgroup or namespace.
                if r.cgroup_join != self.joined || r.user_namespace != self.user_namespace {
                    fail(
                        rep,
                        "spare request",
                        "the request's cgroup or user namespace differs from the spare's",
                    );
                }
                (r, passed, prepared)
            }
        };
        let code = match init::run_as_init(&req, rep, self.namespaces, idle, prepared, passed) {
            Ok(code) => code,
            Err(s) => fail(rep, &s.name, s.message),
        };
        std::process::exit(code);
    }
}

/// Wait for the inner worker `pid`; its exit code or signal.
fn wait_for_init(pid: i32, rep: &mut File) -> (Option<i32>, Option<i32>) {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno().kind() != std::io::ErrorKind::Interrupted {
            fail(rep, "waitpid", errno());
        }
    }
    if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (Some(libc::WEXITSTATUS(status)), None)
    }
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

/// A failed step of the set-up: its name and what went wrong.
struct Stage {
    name: String,
    message: String,
}

impl Stage {
    fn new(name: &str, message: impl std::fmt::Display) -> Stage {
        Stage {
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}

/// An error of step `name` as a [`Stage`], for `map_err`.
fn failed_at<E: std::fmt::Display>(name: &str) -> impl Fn(E) -> Stage + '_ {
    move |e| Stage::new(name, e)
}

/// The task's cgroup made idle, or not, through `file` ([`IDLE_FD`]); best
/// effort, as without the file.
fn cgroup_idle(file: &mut Option<File>, idle: bool) {
    if let Some(f) = file {
        let _ = f.write_all(if idle { b"1" } else { b"0" });
    }
}
