//! The sandbox's root: an empty tmpfs made the root with `pivot_root`, the
//! input and program bound (or moved, when passed) read-only, a scratch tmpfs.

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::super::cstr;
use super::{Stage, check, failed_at};

/// Where a spare mounts its root before `pivot_root`, inside its own mount
/// namespace (the host's directory is untouched): a directory every Linux
/// system has and nothing removes (a directory removed on the host is unmounted
/// in every namespace, a spare's root with it).
pub(super) const SPARE_MOUNT_POINT: &str = "/tmp";

// The new mount API's flag (linux/mount.h), which the libc crate lacks.
pub(super) const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// Move the detached mount `tree` onto `target` (`move_mount`).
pub(super) fn move_into(tree: OwnedFd, target: &Path) -> Result<(), String> {
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

/// A spare's root, prepared ahead of its request ([`prepare_root`]).
pub(super) struct PreparedRoot {
    /// `/proc/self/attr/current`, for the AppArmor profile change (there is no
    /// `/proc` in the root).
    pub(super) apparmor: Option<File>,
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
pub(super) fn prepare_root() -> Result<Option<PreparedRoot>, Stage> {
    let at = Path::new(SPARE_MOUNT_POINT);
    let made =
        make_root(at).and_then(|()| std::env::set_current_dir(at).map_err(|e| e.to_string()));
    if made.is_err() {
        return Ok(None);
    }
    let apparmor = apparmor_attr();
    if pivot_root_here().is_err() {
        std::env::set_current_dir("/").map_err(failed_at("chdir /"))?;
        return Ok(None);
    }
    detach_old_root().map_err(failed_at("pivot_root"))?;
    Ok(Some(PreparedRoot { apparmor }))
}

/// Make the mounts of this mount namespace private, and mount the sandbox's
/// root, an empty 1 MiB tmpfs, on `at`.
pub(super) fn make_root(at: &Path) -> Result<(), String> {
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
pub(super) fn apparmor_attr() -> Option<File> {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/attr/current")
        .ok()
}

/// `pivot_root(".", ".")`: the working directory's mount becomes the root, the
/// old root stacked on top of it (an idiom of pivot_root(2)).
pub(super) fn pivot_root_here() -> Result<(), String> {
    let dot = cstr(".");
    // SAFETY: pivot_root with valid strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(r as libc::c_int, "pivot_root")
}

/// Detach the old root that [`pivot_root_here`] stacked, and go to the new root.
pub(super) fn detach_old_root() -> Result<(), String> {
    let dot = cstr(".");
    // SAFETY: umount2 with a valid string.
    let r = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(r, "umount old root")?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

pub(super) fn mount(
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
pub(super) fn locked_flags(path: &Path) -> libc::c_ulong {
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

pub(super) fn bind_ro(src: &Path, dst: &Path, extra: libc::c_ulong) -> Result<(), String> {
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

/// A host path a worker with a prepared root no longer sees.
pub(super) fn not_passed(what: &str) -> Stage {
    Stage::new(
        "request",
        format!("a prepared root needs the {what} passed with the request"),
    )
}
