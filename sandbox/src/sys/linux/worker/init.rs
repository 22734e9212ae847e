//! The inner worker: PID 1 of the task's pid namespace. It builds the root,
//! confines itself and runs the task, then reaps and reports.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[cfg(feature = "wasm")]
use super::super::SECCOMP_WASM;
use super::super::contract::{PassedFds, report};
use super::super::{SECCOMP_NATIVE, landlock_abi, pipe};
use super::confine::{apply_landlock, drop_capabilities, lower_priority, set_rlimits};
use super::exec::exec_task;
use super::root::{
    PreparedRoot, apparmor_attr, bind_ro, detach_old_root, make_root, mount, move_into, not_passed,
    pivot_root_here,
};
#[cfg(feature = "wasm")]
use super::seccomp::apply_seccomp;
use super::{Stage, cgroup_idle, check, failed_at, reap_until};
use crate::proto::{AppliedConfinement, WorkerMode, WorkerReport, WorkerRequest};

/// The sandbox's init (the inner worker, PID 1 of the task's pid namespace):
/// build the root, confine this process and run the task; the exit code.
pub(super) fn run_as_init(
    req: &WorkerRequest,
    rep: &mut File,
    namespaces: Vec<String>,
    idle: &mut Option<File>,
    prepared: Option<PreparedRoot>,
    passed: PassedFds,
) -> Result<i32, Stage> {
    let BuiltRoot {
        artifact,
        apparmor_fd,
    } = build_root(req, prepared, passed)?;
    if matches!(req.mode, WorkerMode::Native { .. }) {
        native_stdin(req)?;
    }
    let mut applied = confine(req, namespaces, apparmor_fd)?;

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

/// The root, built and pivoted into.
struct BuiltRoot {
    /// A module's artifact, read before the root hid the host's files.
    artifact: Option<Vec<u8>>,
    /// `/proc/self/attr/current`, opened while `/proc` was there.
    apparmor_fd: Option<File>,
}

/// Build the task's root (`/input`, `/scratch`, `/prog`), pivot into it and
/// make it read-only.
fn build_root(
    req: &WorkerRequest,
    prepared: Option<PreparedRoot>,
    mut passed: PassedFds,
) -> Result<BuiltRoot, Stage> {
    // A spare's root is `/` already ([`prepare_root`]); otherwise it is made
    // on `root_dir` now and pivoted into below.
    let pivoted = prepared.is_some();
    let root = if pivoted {
        PathBuf::from("/")
    } else {
        make_root(&req.root_dir).map_err(failed_at("root tmpfs"))?;
        req.root_dir.clone()
    };
    for d in ["input", "scratch"] {
        fs::create_dir(root.join(d)).map_err(failed_at("root layout"))?;
    }
    if let Some(input) = &req.input_dir {
        match passed.input.take() {
            Some(tree) => move_into(tree, &root.join("input")).map_err(failed_at("mount input"))?,
            None if pivoted => return Err(not_passed("input directory")),
            None => bind_ro(input, &root.join("input"), libc::MS_NOEXEC)
                .map_err(failed_at("bind input"))?,
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
    .map_err(failed_at("scratch tmpfs"))?;
    fs::create_dir(root.join("scratch/output")).map_err(failed_at("scratch layout"))?;
    let mut artifact = None;
    match &req.mode {
        WorkerMode::Native { program } => {
            let prog = root.join("prog");
            File::create(&prog).map_err(failed_at("root layout"))?;
            match passed.program.take() {
                Some(tree) => move_into(tree, &prog).map_err(failed_at("mount program"))?,
                None if pivoted => return Err(not_passed("program")),
                None => bind_ro(program, &prog, 0).map_err(failed_at("bind program"))?,
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
            artifact = Some(bytes.map_err(failed_at("read module artifact"))?);
        }
    }
    let apparmor_fd = match prepared {
        Some(p) => p.apparmor,
        None => req.apparmor_profile.as_ref().and_then(|_| apparmor_attr()),
    };
    if !pivoted {
        std::env::set_current_dir(&root).map_err(failed_at("chdir root"))?;
        pivot_root_here()
            .and_then(|()| detach_old_root())
            .map_err(failed_at("pivot_root"))?;
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(failed_at("read-only root"))?;
    // SAFETY: sethostname with a valid buffer and length.
    unsafe { libc::sethostname(c"askee".as_ptr(), 5) };

    Ok(BuiltRoot {
        artifact,
        apparmor_fd,
    })
}

/// A native task's stdin: a pipe holding the bytes, as fd 0 (the wasm runtime
/// takes them itself).
fn native_stdin(req: &WorkerRequest) -> Result<(), Stage> {
    let (r, w) = pipe().map_err(failed_at("stdin pipe"))?;
    let mut w = File::from(w);
    let n = req.stdin.len().min(60 << 10);
    w.write_all(&req.stdin[..n])
        .map_err(failed_at("stdin pipe"))?;
    drop(w);
    // SAFETY: dup2 onto fd 0 of this process.
    unsafe { libc::dup2(r.as_raw_fd(), 0) };
    Ok(())
}

/// Confine this process, which becomes the task or runs it: rlimits,
/// Landlock, `no_new_privs`, no capabilities, the AppArmor profile.
fn confine(
    req: &WorkerRequest,
    namespaces: Vec<String>,
    apparmor_fd: Option<File>,
) -> Result<AppliedConfinement, Stage> {
    set_rlimits(&req.limits).map_err(failed_at("rlimits"))?;
    let mut applied = AppliedConfinement {
        namespaces,
        ..Default::default()
    };
    let abi = landlock_abi();
    let status = apply_landlock(matches!(req.mode, WorkerMode::Native { .. }))
        .map_err(failed_at("landlock"))?;
    applied.landlock_status = status.clone();
    if status != "not enforced" {
        applied.landlock_abi = abi;
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) on this process.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(nnp, "no_new_privs").map_err(failed_at("no_new_privs"))?;
    applied.no_new_privs = true;
    drop_capabilities().map_err(failed_at("drop capabilities"))?;
    if let (Some(profile), Some(mut f)) = (&req.apparmor_profile, apparmor_fd) {
        f.write_all(format!("changeprofile {profile}").as_bytes())
            .map_err(failed_at("apparmor change_profile"))?;
        applied.apparmor_profile = Some(profile.clone());
    }

    Ok(applied)
}

#[cfg(feature = "wasm")]
pub(super) fn run_wasm(
    req: &WorkerRequest,
    rep: &mut File,
    mut applied: AppliedConfinement,
    artifact: Option<Vec<u8>>,
    hash: [u8; 32],
) -> Result<i32, Stage> {
    use crate::runtime::{Invocation, WasmEngine, Watchdog};
    // The parent enforces the wall-clock limit with a kill-all of the cgroup.
    let engine = WasmEngine::new(None, Watchdog::External).map_err(failed_at("wasm engine"))?;
    let bytes = artifact.unwrap_or_default();
    let module = engine
        .load_artifact_bytes(&bytes)
        .map_err(failed_at("load module"))?;
    let compiled = engine
        .prelink(hash, &module)
        .map_err(failed_at("prelink module"))?;
    applied.seccomp = apply_seccomp(SECCOMP_WASM).map_err(failed_at("seccomp"))?;
    report(rep, &WorkerReport::Confined(applied));
    let inv = Invocation {
        args: req.args.clone(),
        stdin: req.stdin.clone(),
        input_dir: req.input_dir.as_ref().map(|_| PathBuf::from("/input")),
        output_dir: Some(PathBuf::from("/scratch/output")),
        random_seed: req.random_seed,
        limits: req.limits.clone(),
    };
    let run = engine
        .run(&compiled, &inv)
        .map_err(failed_at("run module"))?;
    report(rep, &WorkerReport::Wasm(run));
    Ok(0)
}

#[cfg(not(feature = "wasm"))]
pub(super) fn run_wasm(
    _req: &WorkerRequest,
    _rep: &mut File,
    _applied: AppliedConfinement,
    _artifact: Option<Vec<u8>>,
    _hash: [u8; 32],
) -> Result<i32, Stage> {
    Err(Stage::new("wasm", "built without the wasm feature"))
}
