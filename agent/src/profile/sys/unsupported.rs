//! Windows and macOS profilers are not written yet (GetSystemInfo /
//! sysctl): the agent says so rather than send a guessed profile.

use std::path::Path;

use super::Host;
use crate::profile::ProfileError;

pub fn host(_scratch: &Path) -> Result<Host, ProfileError> {
    Err(ProfileError::Unsupported {
        os: std::env::consts::OS,
    })
}
