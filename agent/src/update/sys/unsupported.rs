//! Platforms without a self-update yet (Windows: a running executable
//! cannot be replaced in place; the service manager must do it).

use std::ffi::OsString;
use std::path::Path;

use crate::update::UpdateError;

pub fn make_executable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

pub fn exec(_binary: &Path, _args: &[OsString]) -> UpdateError {
    UpdateError::Unsupported
}

pub fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "symbolic links are not used for the install layout on this platform",
    ))
}
