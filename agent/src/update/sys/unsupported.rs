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
