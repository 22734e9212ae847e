//! Starting a task: a spare worker or a new one, its cgroup, the request.

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::super::APPARMOR_PROFILE;
use super::super::WASM_RUNTIME_OVERHEAD;
use super::super::contract::send_request;
use super::mounts::pass_to_prepared;
use super::process::{Started, start_worker};
use super::running::{Output, Running};
use super::spares::{
    lock_spares, refill_if_wanted, same_cgroup_limits, set_idle, take_spare, task_cgroup,
};
use super::{Control, cached_layout};
use crate::SandboxError;
use crate::cgroup::TaskCgroup;
use crate::proto::{WorkerMode, WorkerRequest};

/// A spare was made at `SCHED_IDLE`; its task's set-up runs at the caller's
/// priority, as a cold worker's does (the task itself drops to `SCHED_IDLE`).
/// Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (or a high enough `RLIMIT_NICE`);
/// without it the set-up just stays at `SCHED_IDLE`.
pub(super) fn raise_priority(pid: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a process of our task, with a valid parameter.
    unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &param) };
}

/// Start the worker for `mode` in a fresh sandbox.
pub fn spawn(
    worker: &Path,
    work_dir: &Path,
    mode: WorkerMode,
    spec: &crate::types::TaskSpec,
) -> Result<Running, SandboxError> {
    let root_dir = task_root(work_dir)?;
    let is_wasm = matches!(mode, WorkerMode::Wasm { .. });
    let mut cg_limits = spec.limits.clone();
    cg_limits.memory_bytes = spec.limits.memory_bytes
        + spec.limits.storage_bytes
        + if is_wasm { WASM_RUNTIME_OVERHEAD } else { 0 };
    let Taken {
        mut spare,
        cgroup: mut ready_cgroup,
    } = take_ready_spare(worker, &cg_limits);
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
        raise_spare(w, ready_cgroup.as_ref());
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
        user_namespace: crate::probe::probe_cached().user_namespaces,
        apparmor_profile: apparmor_profile(),
        passed: passed.0,
    };
    start_task(worker, spec, spare, cgroup, &req, passed.1)
}

/// The root's mount point: every task mounts its own tmpfs there inside its
/// private mount namespace, so on the host it stays an empty directory that
/// all tasks share.
fn task_root(work_dir: &Path) -> Result<PathBuf, SandboxError> {
    let root_dir = work_dir.join("root");
    fs::create_dir_all(&root_dir).map_err(|source| SandboxError::Io {
        op: "create task root".into(),
        path: root_dir.clone(),
        source,
    })?;
    Ok(root_dir)
}

/// The AppArmor profile a task changes to, when AppArmor is on and ours loaded.
fn apparmor_profile() -> Option<String> {
    let caps = crate::probe::probe_cached();
    (caps.apparmor_enabled && caps.apparmor_profile_loaded).then(|| APPARMOR_PROFILE.to_string())
}

/// A spare taken for a task, with its cgroup set to the task's limits.
struct Taken {
    spare: Option<Started>,
    /// The spare's cgroup, with `cg_limits` applied and no longer idle.
    cgroup: Option<TaskCgroup>,
}

/// A ready spare of `worker` for a task whose cgroup has `cg_limits`.
///
/// A spare's cgroup takes the task's limits. A spare without one (making it
/// failed) is discarded where cgroups are enforced: it has made its namespaces
/// already and cannot join a cgroup any more.
fn take_ready_spare(worker: &Path, cg_limits: &crate::types::Limits) -> Taken {
    let enforcing = cached_layout().is_some_and(|l| l.enforcing_version().is_some());
    let mut taken = Taken {
        spare: None,
        cgroup: None,
    };
    let Some(mut w) = take_spare(worker) else {
        return taken;
    };
    // The next spare's cgroup gets this task's limits, ready for the next
    // task (an unchanged limit is not written again: each write is a
    // cgroup file's open, write and close on this task's start).
    let written = w.written.take();
    lock_spares().last_limits = Some(cg_limits.clone());
    let apply = |cg: &TaskCgroup| match &written {
        Some(l) if same_cgroup_limits(l, cg_limits) => Ok(()),
        _ => cg.apply_limits(cg_limits),
    };
    match w.cgroup.take() {
        Some(cg) => match apply(&cg) {
            Ok(()) => {
                set_idle(&cg, false);
                taken.cgroup = Some(cg);
                taken.spare = Some(w);
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
        None => taken.spare = Some(w),
    }
    taken
}

/// Raise a spare taken for a task to the caller's priority ([`raise_priority`]).
fn raise_spare(w: &Started, cgroup: Option<&TaskCgroup>) {
    raise_priority(w.child.id());
    // A spare forks its inner worker ahead of the request, at `SCHED_IDLE`
    // (see `worker_main`); that one is raised too (inside its user namespace
    // it could not raise itself). Raised after the outer worker: an inner
    // worker forked after this read inherits the raised priority.
    if let Some(c) = cgroup {
        for pid in c.pids().unwrap_or_default() {
            raise_priority(pid);
        }
    }
}

/// Send `req` to the worker (`spare`, or a new one) with the descriptors
/// `passed`, and hand back the running task.
fn start_task(
    worker: &Path,
    spec: &crate::types::TaskSpec,
    spare: Option<Started>,
    cgroup: Option<TaskCgroup>,
    req: &WorkerRequest,
    passed: Vec<OwnedFd>,
) -> Result<Running, SandboxError> {
    // Neither a spare's own use until now (its start) nor a reused cgroup's
    // earlier tasks' is this task's.
    let baseline = cgroup.as_ref().map(TaskCgroup::usage).unwrap_or_default();
    let req_json = serde_json::to_vec(req).map_err(|e| SandboxError::Protocol {
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
        // (`hand_over_namespaces`).
        let _ = send_request(&mut stdin, &passed, &req_json);
        let _ = stdin.shutdown(std::net::Shutdown::Write);
        request = Some(stdin);
    }
    // The worker holds its own copies now; a detached mount is released with
    // the last.
    drop(passed);
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
