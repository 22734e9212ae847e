//! Windows: the worker starts inside an AppContainer without capabilities (so no
//! network, and only the files granted to app containers), already a member of a
//! Job Object (hard CPU rate cap, job memory limit, one active process, kill on job
//! close), at idle priority class. The WDAC policy in `deploy/windows/` completes the
//! profile; see the capability report for what this build enforces.
//!
//! Only `cargo check` proves this file on CI (cross target x86_64-pc-windows-msvc).

use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::Path;
use std::sync::Arc;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_ALREADY_EXISTS, HANDLE};
use windows_sys::Win32::Security::Isolation::{
    CreateAppContainerProfile, DeriveAppContainerSidFromAppContainerName,
};
use windows_sys::Win32::Security::{FreeSid, PSID, SECURITY_CAPABILITIES};
use windows_sys::Win32::System::JobObjects::{
    CreateJobObjectW, JOB_OBJECT_CPU_RATE_CONTROL_ENABLE, JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP,
    JOB_OBJECT_LIMIT_ACTIVE_PROCESS, JOB_OBJECT_LIMIT_JOB_MEMORY,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, JOBOBJECT_CPU_RATE_CONTROL_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectCpuRateControlInformation,
    JobObjectExtendedLimitInformation, SetInformationJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NO_WINDOW, CREATE_UNICODE_ENVIRONMENT, CreateProcessW, DeleteProcThreadAttributeList,
    EXTENDED_STARTUPINFO_PRESENT, IDLE_PRIORITY_CLASS, InitializeProcThreadAttributeList,
    LPPROC_THREAD_ATTRIBUTE_LIST, PROC_THREAD_ATTRIBUTE_CHILD_PROCESS_POLICY,
    PROC_THREAD_ATTRIBUTE_JOB_LIST, PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES,
    PROCESS_INFORMATION, STARTUPINFOEXW, TerminateProcess, UpdateProcThreadAttribute,
};
use windows_sys::Win32::System::WindowsProgramming::PROCESS_CREATION_CHILD_PROCESS_RESTRICTED;

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
        // Every supported Windows (10 and later) has app containers; the worker is
        // started in one or not at all.
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

/// The name of the app container every task runs in. Its SID, derived from the
/// name, is what an installer grants read and execute on the worker's directory
/// (deploy/README.md); nothing else on the machine is granted to it.
pub const APP_CONTAINER_NAME: &str = "askee.task";

/// NUL-terminated UTF-16.
fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// The failed call `op`, with the thread's last OS error.
fn os_err(op: &str) -> SandboxError {
    SandboxError::Io {
        op: op.into(),
        path: Default::default(),
        source: std::io::Error::last_os_error(),
    }
}

/// The app container's SID, freed on drop.
struct AppContainerSid(PSID);

impl Drop for AppContainerSid {
    fn drop(&mut self) {
        // SAFETY: the SID came from CreateAppContainerProfile or
        // DeriveAppContainerSidFromAppContainerName, whose documented release is
        // FreeSid, and is freed once.
        unsafe { FreeSid(self.0) };
    }
}

/// The tasks' app container, created on first use, with no capabilities: no
/// network (client or server), no user libraries, no devices.
fn app_container_sid() -> Result<AppContainerSid, SandboxError> {
    let name = wide(std::ffi::OsStr::new(APP_CONTAINER_NAME));
    let display = wide(std::ffi::OsStr::new("askee task"));
    let description = wide(std::ffi::OsStr::new(
        "askee volunteer-computing tasks: no capabilities",
    ));
    let hresult_already_exists = (0x8007_0000u32 | ERROR_ALREADY_EXISTS) as i32;
    let failed = |op: &str, hr: i32| SandboxError::Io {
        op: op.into(),
        path: Default::default(),
        source: std::io::Error::from_raw_os_error(hr),
    };
    let mut sid: PSID = std::ptr::null_mut();
    // SAFETY: the strings are NUL-terminated and outlive the call; no capabilities
    // are passed (null, 0); `sid` receives an allocated SID on success.
    let hr = unsafe {
        CreateAppContainerProfile(
            name.as_ptr(),
            display.as_ptr(),
            description.as_ptr(),
            std::ptr::null(),
            0,
            &mut sid,
        )
    };
    if hr == hresult_already_exists {
        // SAFETY: as above; the profile exists, so only its SID is derived.
        let hr = unsafe { DeriveAppContainerSidFromAppContainerName(name.as_ptr(), &mut sid) };
        if hr < 0 {
            return Err(failed("DeriveAppContainerSidFromAppContainerName", hr));
        }
    } else if hr < 0 {
        return Err(failed("CreateAppContainerProfile", hr));
    }
    Ok(AppContainerSid(sid))
}

/// A process attribute list, deleted on drop.
struct AttributeList {
    buf: Vec<usize>,
}

impl AttributeList {
    fn new(count: u32) -> Result<Self, SandboxError> {
        let mut size = 0usize;
        // SAFETY: a null list with a size pointer only asks for the size needed; the
        // call fails with ERROR_INSUFFICIENT_BUFFER by design, so its result is unused.
        unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), count, 0, &mut size) };
        // usize elements keep the list pointer-aligned.
        let mut buf = vec![0usize; size.div_ceil(std::mem::size_of::<usize>())];
        // SAFETY: `buf` has at least `size` bytes, as the first call asked.
        let ok = unsafe {
            InitializeProcThreadAttributeList(buf.as_mut_ptr().cast(), count, 0, &mut size)
        };
        if ok == 0 {
            return Err(os_err("InitializeProcThreadAttributeList"));
        }
        Ok(AttributeList { buf })
    }

    fn as_ptr(&mut self) -> LPPROC_THREAD_ATTRIBUTE_LIST {
        self.buf.as_mut_ptr().cast()
    }

    /// Set one attribute. The value must outlive the process creation that uses
    /// the list (the list keeps a pointer to it).
    fn set<T>(&mut self, attribute: u32, value: &T) -> Result<(), SandboxError> {
        // SAFETY: the list was initialized by `new`; `value` points to a `T` of the
        // size given, kept alive by the caller until CreateProcessW returns.
        let ok = unsafe {
            UpdateProcThreadAttribute(
                self.as_ptr(),
                0,
                attribute as usize,
                (value as *const T).cast(),
                std::mem::size_of::<T>(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(os_err("UpdateProcThreadAttribute"));
        }
        Ok(())
    }
}

impl Drop for AttributeList {
    fn drop(&mut self) {
        // SAFETY: the list was initialized by `new` and is deleted once.
        unsafe { DeleteProcThreadAttributeList(self.as_ptr()) };
    }
}

/// The worker process, by handle.
#[derive(Debug)]
pub struct WorkerProcess {
    handle: OwnedHandle,
    pid: u32,
}

impl WorkerProcess {
    /// Terminate the worker (the job's kill-on-close takes the rest).
    pub fn kill(&mut self) -> std::io::Result<()> {
        // SAFETY: the handle is a process handle this struct owns.
        if unsafe { TerminateProcess(self.handle.as_raw_handle() as HANDLE, 1) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The worker's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }
}

/// Start the worker in the tasks' app container, a member of the task's Job
/// Object from its first instruction (no window between creation and
/// assignment), at idle priority, with an empty environment and no inherited
/// handles.
pub fn spawn(
    worker: &Path,
    _work_dir: &Path,
    _mode: WorkerMode,
    spec: &TaskSpec,
) -> Result<Running, SandboxError> {
    let job = create_job(spec)?;
    let sid = app_container_sid()?;
    let caps = SECURITY_CAPABILITIES {
        AppContainerSid: sid.0,
        Capabilities: std::ptr::null_mut(),
        CapabilityCount: 0,
        Reserved: 0,
    };
    let jobs: [HANDLE; 1] = [job.0];
    let child_policy: u32 = PROCESS_CREATION_CHILD_PROCESS_RESTRICTED;
    let mut attrs = AttributeList::new(3)?;
    attrs.set(PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES, &caps)?;
    attrs.set(PROC_THREAD_ATTRIBUTE_JOB_LIST, &jobs)?;
    attrs.set(PROC_THREAD_ATTRIBUTE_CHILD_PROCESS_POLICY, &child_policy)?;

    let application = wide(worker.as_os_str());
    // CreateProcessW may write to the command line buffer.
    let mut command_line: Vec<u16> = std::iter::once(u16::from(b'"'))
        .chain(worker.as_os_str().encode_wide())
        .chain([u16::from(b'"'), 0])
        .collect();
    // An empty environment block: two NULs.
    let environment: [u16; 2] = [0, 0];
    // SAFETY: zeroed is a valid initial value of these plain C structs.
    let mut startup: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
    startup.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
    startup.lpAttributeList = attrs.as_ptr();
    // SAFETY: as above.
    let mut info: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: every pointer is valid for the call: NUL-terminated application
    // name, a writable NUL-terminated command line, a Unicode environment block,
    // a STARTUPINFOEXW whose size is set and whose attribute list (and the values
    // it points to: `caps`, `jobs`, `child_policy`, `sid`) lives until the call
    // returns.
    let ok = unsafe {
        CreateProcessW(
            application.as_ptr(),
            command_line.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            EXTENDED_STARTUPINFO_PRESENT
                | CREATE_UNICODE_ENVIRONMENT
                | CREATE_NO_WINDOW
                | IDLE_PRIORITY_CLASS,
            environment.as_ptr().cast(),
            std::ptr::null(),
            &startup.StartupInfo,
            &mut info,
        )
    };
    if ok == 0 {
        return Err(SandboxError::Spawn {
            path: worker.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    drop(attrs);
    drop(sid);
    // SAFETY: CreateProcessW returned two new handles that nothing else owns; the
    // thread handle is not needed.
    let process = unsafe {
        CloseHandle(info.hThread);
        OwnedHandle::from_raw_handle(info.hProcess as _)
    };
    Ok(Running {
        control: Arc::new(Control {
            child: std::sync::Mutex::new(Some(WorkerProcess {
                handle: process,
                pid: info.dwProcessId,
            })),
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
            what: "running tasks on windows (worker started in its app container and job, worker protocol pending)".into(),
        })
    }
}

/// The worker's entry point on Windows.
pub fn worker_main() -> i32 {
    eprintln!("askee-worker: the windows worker protocol is not implemented");
    2
}
