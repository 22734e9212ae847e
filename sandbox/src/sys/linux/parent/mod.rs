//! The library's side: runs in the caller's process, which is multithreaded
//! (see the rule in [`super`]). Nothing here forks or changes this process's
//! namespaces, credentials or limits; a worker is started with `posix_spawn`
//! ([`process`]) and everything process-wide happens in the worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Instant;

use super::kill_process;
use crate::SandboxError;
use crate::cgroup::{CgroupLayout, TaskCgroup};

mod mounts;
pub(super) mod probe;
mod process;
pub(super) mod running;
pub(super) mod spares;
pub(super) mod spawn;

fn cached_layout() -> Option<&'static CgroupLayout> {
    static L: OnceLock<Option<CgroupLayout>> = OnceLock::new();
    L.get_or_init(|| {
        let layout = CgroupLayout::detect().ok()?;
        crate::cgroup::remove_stale(&layout);
        Some(layout)
    })
    .as_ref()
}

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
