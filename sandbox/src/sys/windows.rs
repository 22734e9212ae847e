//! Windows: the worker runs in a Job Object (hard CPU rate cap, job memory limit, one
//! active process, kill on job close). AppContainer launch (no capabilities, hence no
//! network) and the WDAC policy in `deploy/windows/` complete the profile; see the
//! capability report for what this build enforces.
//!
//! Only `cargo check` proves this file on CI (cross target x86_64-pc-windows-msvc).

use std::path::Path;
use std::sync::Arc;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_CPU_RATE_CONTROL_ENABLE,
    JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP, JOB_OBJECT_LIMIT_ACTIVE_PROCESS,
    JOB_OBJECT_LIMIT_JOB_MEMORY, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_CPU_RATE_CONTROL_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectCpuRateControlInformation, JobObjectExtendedLimitInformation, SetInformationJobObject,
};

use crate::SandboxError;
use crate::probe::HostCapabilities;
use crate::proto::{AppliedConfinement, WorkerMode};
use crate::types::{TaskOutcome, TaskSpec};

include!("portable_parent.rs");

/// Not used on Windows (cgroups are Linux only).
pub fn kill_process(_pid: i32) {}

/// Free bytes on the volume of `path` (not measured on Windows).
pub fn available_bytes(_path: &Path) -> Option<u64> {
    None
}

/// Probe the host.
pub fn probe() -> HostCapabilities {
    HostCapabilities {
        os: "windows".into(),
        job_objects: true,
        appcontainer: true,
        ..Default::default()
    }
}

/// An owned job handle, closed (killing the job) on drop.
#[derive(Debug)]
struct Job(HANDLE);

// SAFETY: a job handle is a kernel object reference usable from any thread.
unsafe impl Send for Job {}
// SAFETY: see above; the handle is only read.
unsafe impl Sync for Job {}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the handle was returned by CreateJobObjectW and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

fn create_job(spec: &TaskSpec) -> Result<Job, SandboxError> {
    let os_err = |op: &str| SandboxError::Io {
        op: op.into(),
        path: Default::default(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: NULL security attributes and name create an anonymous job.
    let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if h.is_null() {
        return Err(os_err("CreateJobObjectW"));
    }
    let job = Job(h);
    // SAFETY: zeroed is a valid initial value of this plain C struct.
    let mut ext: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    ext.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        | JOB_OBJECT_LIMIT_JOB_MEMORY
        | JOB_OBJECT_LIMIT_ACTIVE_PROCESS;
    ext.BasicLimitInformation.ActiveProcessLimit = 1;
    ext.JobMemoryLimit = spec.limits.memory_bytes as usize;
    // SAFETY: `ext` is a valid struct of the size passed for this information class.
    let ok = unsafe {
        SetInformationJobObject(
            job.0,
            JobObjectExtendedLimitInformation,
            (&ext as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(os_err("SetInformationJobObject limits"));
    }
    // SAFETY: zeroed is a valid initial value of this plain C struct.
    let mut cpu: JOBOBJECT_CPU_RATE_CONTROL_INFORMATION = unsafe { std::mem::zeroed() };
    cpu.ControlFlags = JOB_OBJECT_CPU_RATE_CONTROL_ENABLE | JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP;
    // CpuRate is in 1/100 of a percent of the whole machine.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    cpu.Anonymous.CpuRate = (spec.limits.cpu_percent * 100 / cores).clamp(1, 10_000);
    // SAFETY: as above, for the CPU rate information class.
    let ok = unsafe {
        SetInformationJobObject(
            job.0,
            JobObjectCpuRateControlInformation,
            (&cpu as *const JOBOBJECT_CPU_RATE_CONTROL_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_CPU_RATE_CONTROL_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(os_err("SetInformationJobObject cpu rate"));
    }
    Ok(job)
}

/// A task started by [`spawn`].
pub struct Running {
    control: Arc<Control>,
    _job: Job,
    wall: std::time::Duration,
}

/// Workers are not started ahead of their tasks on this platform: every task
/// starts its own.
pub fn keep_spare(_worker: &Path, _on: bool) {}

/// No spares on this platform.
pub fn spares_ready(_worker: &Path) -> usize {
    0
}

/// Start the worker inside a Job Object.
pub fn spawn(
    worker: &Path,
    _work_dir: &Path,
    _mode: WorkerMode,
    spec: &TaskSpec,
) -> Result<Running, SandboxError> {
    use std::os::windows::io::AsRawHandle;
    let job = create_job(spec)?;
    let child = std::process::Command::new(worker)
        .env_clear()
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            path: worker.to_path_buf(),
            source,
        })?;
    // SAFETY: both handles are valid for the duration of the call.
    if unsafe { AssignProcessToJobObject(job.0, child.as_raw_handle() as HANDLE) } == 0 {
        return Err(SandboxError::Io {
            op: "AssignProcessToJobObject".into(),
            path: worker.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Running {
        control: Arc::new(Control {
            child: std::sync::Mutex::new(Some(child)),
            terminated: Default::default(),
        }),
        _job: job,
        wall: spec.limits.wall_time,
    })
}

impl Running {
    /// Shared control.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The Windows worker protocol is not implemented yet: the task is stopped and the
    /// call reports it as unsupported.
    pub fn wait(self) -> Result<(TaskOutcome, AppliedConfinement), SandboxError> {
        let _ = self.wall;
        self.control.terminate();
        Err(SandboxError::Unsupported {
            what: "running tasks on windows (job object created, worker protocol pending)".into(),
        })
    }
}

/// The worker's entry point on Windows.
pub fn worker_main() -> i32 {
    eprintln!("askee-worker: the windows worker protocol is not implemented");
    2
}
