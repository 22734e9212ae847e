//! Signed self-update from the agent release repository (TUF, served by
//! `askee-server serve --tuf-repo`).
//!
//! - Trust: the root shipped with the agent (`update.trusted_root`) or the
//!   newer root the agent already verified, whichever has the higher
//!   version, and the metadata it last trusted (`tuf/` in the home, tough's
//!   datastore): a repository serving older metadata is refused across
//!   restarts; expired metadata is refused (freeze).
//! - A release is a pair of targets, `askee-agent-<version>-<platform>`
//!   and `askee-agent-worker-<version>-<platform>`, whose signed
//!   `custom.version` agrees with their names (`askee_core::release`).
//! - Install layout ([`Layout`]): `<dir>/versions/<version>/{askee-agent,
//!   askee-agent-worker}` and `<dir>/current -> versions/<version>`; the
//!   service runs `<dir>/current/askee-agent`.
//! - Apply: download both (length and hash checked by tough, the hash again
//!   here) into a staging directory beside the versions, rename it to
//!   `versions/<version>`, then switch `current` with one `rename(2)` of a
//!   new symlink over it (the pair changes at once), run the new
//!   `self-check` (which asks the new worker its protocol version); on
//!   failure switch `current` back and never retry that release. The new
//!   version is *pending* until a daemon start confirms it; a pending
//!   version that starts twice without confirming is rolled back. Only the
//!   current and the previous version directories are kept.
//! - Every step is journalled (`update.*`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use askee_core::release::{self as rel, Release, Version};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::journal::{Journal, JournalError};

mod apply;
mod check;
mod error;
mod install;
mod lifecycle;
mod state;
mod sys;
#[cfg(test)]
mod tests;

pub use apply::*;
pub use error::*;
pub use install::*;
pub use lifecycle::*;
pub use state::*;

/// The update state in the home.
pub const STATE_FILE: &str = "update-state.json";
/// tough's datastore (the metadata last trusted) in the home.
pub const DATASTORE: &str = "tuf";
/// The daemon's lock file in the home (held while `run` runs).
pub const LOCK_FILE: &str = "agent.lock";
/// The largest response the transport reads (tough's own limits are lower
/// for metadata; targets are bounded by their signed length).
pub const MAX_FETCH_BYTES: u64 = 1 << 30;
/// How long a new binary's self-check may take.
pub const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to update.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the repository (`…/tuf`; metadata under `metadata/`,
    /// binaries under `targets/`).
    pub repository: String,
    /// The root shipped with the agent.
    pub trusted_root: PathBuf,
    /// Where the versions are installed.
    pub layout: Layout,
    /// This host's platform (`x86_64-linux`).
    pub platform: String,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    UpToDate { current: Version },
    Available { current: Version, release: Release },
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    UpToDate { current: Version },
    Installed { release: Release, sha256: String },
}

/// A downloaded, verified release pair in its staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub dir: PathBuf,
    pub sha256: String,
    pub worker_sha256: String,
}

/// The update client for one home.
pub struct Updater {
    home: PathBuf,
    settings: Settings,
    journal: std::sync::Arc<Journal>,
}

impl Updater {
    pub fn new(home: &Path, settings: Settings, journal: std::sync::Arc<Journal>) -> Self {
        Self {
            home: home.to_owned(),
            settings,
            journal,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn journal(&self, kind: &str, data: serde_json::Value) -> Result<(), UpdateError> {
        self.journal.append(kind, data)?;
        Ok(())
    }

    /// The release installed (see [`current_version`]).
    pub fn current_version(&self) -> Result<Version, UpdateError> {
        current_version(&self.settings.layout)
    }
}
