//! Spare workers: started ahead of their tasks on a thread of their own, with
//! the cgroups and network namespaces of ended tasks kept for reuse.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::cached_layout;
use super::process::{Started, start_worker};
use crate::SandboxError;
use crate::cgroup::{CgroupLayout, TaskCgroup};
use crate::proto::AppliedConfinement;

pub(super) static TASK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A spare: a worker at `SCHED_IDLE` in the cgroup it will run its task in (an
/// ended task's, reset, or a new one), with the last task's limits
/// ([`spare_limits`]) until its own task's differ, and idle until taken.
pub(super) fn start_spare(worker: &Path) -> Result<Started, SandboxError> {
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
pub(super) fn task_cgroup(
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
pub(super) fn set_idle(cgroup: &TaskCgroup, idle: bool) {
    if let Err(e) = cgroup.set_idle(idle) {
        tracing::warn!(error = %e, idle, "cpu.idle of a task cgroup");
    }
}

/// A spare's cgroup limits: the last task's (the next task mostly has the same,
/// and finds them written), but never so low that the spare itself, a
/// worker with its inner worker, could not start in them.
pub(super) fn spare_limits(last: Option<crate::types::Limits>) -> crate::types::Limits {
    let mut l = last.unwrap_or_default();
    l.memory_bytes = l.memory_bytes.max(32 << 20);
    l.pids = l.pids.max(8);
    l
}

/// Whether `a` and `b` write the same values into a task cgroup (the fields
/// [`TaskCgroup::apply_limits`] reads).
pub(super) fn same_cgroup_limits(a: &crate::types::Limits, b: &crate::types::Limits) -> bool {
    (a.cpu_percent, a.memory_bytes, a.pids) == (b.cpu_percent, b.memory_bytes, b.pids)
}

/// Ended tasks' cgroups kept for reuse, at most; as many network namespaces.
pub(super) const FREE_CGROUPS: usize = 4;

/// Spare workers per worker binary, for the sandboxes that asked for them.
#[derive(Default)]
pub(super) struct Spares {
    /// Per binary: how many sandboxes want a spare, and the spares ready.
    pub(super) ready: HashMap<PathBuf, (usize, Vec<Started>)>,
    /// Ended tasks' cgroups, empty and reset, for the next spares.
    pub(super) free: Vec<TaskCgroup>,
    /// Ended tasks' network namespaces, left by every process, for the next
    /// spares ([`NETNS_FD_ENV`]).
    pub(super) free_netns: Vec<OwnedFd>,
    /// The cgroup limits of the last task that took a spare: the next spare's.
    pub(super) last_limits: Option<crate::types::Limits>,
}

impl Spares {
    /// Some sandbox wants spares of `worker` and fewer than
    /// [`crate::SPARE_WORKERS`] are ready.
    pub(super) fn short_of(&self, worker: &Path) -> bool {
        self.ready
            .get(worker)
            .is_some_and(|(want, ready)| *want > 0 && ready.len() < crate::SPARE_WORKERS)
    }

    pub(super) fn any_wanted(&self) -> bool {
        self.ready.values().any(|(want, _)| *want > 0)
    }

    /// Put a spare (back) into the pool, or discard it if no sandbox wants one.
    pub(super) fn put(&mut self, worker: &Path, w: Started) -> Option<Started> {
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
pub(super) enum Job {
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
pub(super) struct NetnsFromTask(OwnedFd);

impl NetnsFromTask {
    /// The network namespace among `held` (what a worker handed back), if
    /// its task ran under the seccomp filter and without capabilities.
    pub(super) fn take(
        held: &mut Vec<OwnedFd>,
        confinement: Option<&AppliedConfinement>,
    ) -> Option<Self> {
        if !confinement.is_some_and(|c| c.seccomp && c.no_new_privs) {
            return None;
        }
        let i = held.iter().position(is_network_namespace)?;
        Some(NetnsFromTask(held.swap_remove(i)))
    }
}

/// The spares, and the channel to the thread that makes them (none when that
/// thread could not start).
pub(super) struct SparePool {
    spares: Mutex<Spares>,
    /// To the spare thread; `None` when it could not start.
    jobs: Option<Mutex<mpsc::Sender<Job>>>,
}

/// `ioctl(NS_GET_NSTYPE)` (linux/nsfs.h, Linux 4.11): a namespace file's
/// `CLONE_NEW*` type.
pub(super) const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Whether `fd` is a network namespace.
pub(super) fn is_network_namespace(fd: &OwnedFd) -> bool {
    // SAFETY: an ioctl without argument on an fd we own; on a file that is not a
    // namespace it fails.
    unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) == libc::CLONE_NEWNET }
}

/// The spare thread's loop: make spares when asked, and keep or remove ended
/// tasks' cgroups.
pub(super) fn spare_thread(rx: mpsc::Receiver<Job>) {
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

pub(super) fn spares() -> &'static SparePool {
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
            Ok(_) => SparePool {
                spares: Mutex::new(Spares::default()),
                jobs: Some(Mutex::new(tx)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no spare-worker thread: every task starts its worker");
                SparePool {
                    spares: Mutex::new(Spares::default()),
                    jobs: None,
                }
            }
        }
    })
}

pub(super) fn lock_spares() -> std::sync::MutexGuard<'static, Spares> {
    spares().spares.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn send_job(job: Job) -> Result<(), Job> {
    match &spares().jobs {
        Some(tx) => tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|e| e.0),
        None => Err(job),
    }
}

pub(super) fn refill(worker: &Path, done: Option<mpsc::Sender<()>>) -> bool {
    send_job(Job::Refill(worker.to_path_buf(), done)).is_ok()
}

/// An ended task's cgroup: kept for a later spare or removed, on the spare thread
/// when a sandbox wants spares of `worker` (dropping the last such sandbox waits
/// for the thread, so no cgroup outlives it); removed here otherwise.
pub(super) fn end_cgroup(
    worker: &Path,
    cgroup: TaskCgroup,
    held: Vec<OwnedFd>,
    netns: Option<NetnsFromTask>,
) {
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
pub(super) fn refill_if_wanted(worker: &Path) {
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
pub(super) fn take_spare(worker: &Path) -> Option<Started> {
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

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

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
}
