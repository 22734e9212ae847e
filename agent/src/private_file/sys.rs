//! Platform part of the private-file writer: owner-only permissions.

use std::fs::OpenOptions;

/// New files are created with mode 0600.
#[cfg(unix)]
pub fn owner_only(opts: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt as _;
    opts.mode(0o600);
}

/// Elsewhere the agent's home sits in the volunteer's profile, whose
/// inherited access list already keeps it to that account.
#[cfg(not(unix))]
pub fn owner_only(_opts: &mut OpenOptions) {}
