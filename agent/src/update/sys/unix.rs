//! Linux and macOS: mode 0755 and `execv`.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use crate::update::UpdateError;

/// Makes `path` executable by everyone, writable only by its owner.
pub fn make_executable(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Replaces this process with `binary`, keeping the pid; `args[0]` is the
/// program name as started. Returns only on failure.
pub fn exec(binary: &Path, args: &[OsString]) -> UpdateError {
    let mut cmd = std::process::Command::new(binary);
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1));
    let source = cmd.exec();
    UpdateError::Restart {
        binary: binary.to_owned(),
        source,
    }
}

/// Creates the symbolic link `link` pointing at `target`.
pub fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}
