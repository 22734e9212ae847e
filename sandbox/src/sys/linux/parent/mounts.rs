//! Detached mounts (the new mount API) that the parent passes to a spare
//! worker which prepared its root ahead of its request.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::super::cstr;
use crate::proto::{Passed, WorkerMode};

// The new mount API's flags (linux/mount.h), which the libc crate lacks.
pub(super) const OPEN_TREE_CLONE: libc::c_uint = 1;
pub(super) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(super) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(super) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(super) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Whether this process can make detached mounts (`open_tree`, Linux 5.2, with
/// `mount_setattr`, 5.12, and `CAP_SYS_ADMIN`), the condition for passing a
/// spare its input and program; probed once.
pub(super) fn mount_api() -> bool {
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
pub(super) fn detached_mount(path: &Path, recursive: bool, attr: u64) -> std::io::Result<OwnedFd> {
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

/// What a request to a worker that prepared its root passes: the input
/// directory and a native program as detached read-only mounts, a module's
/// artifact as an open file.
pub(super) fn pass_to_prepared(
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
