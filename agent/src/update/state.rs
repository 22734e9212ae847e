//! The update state kept in the home: the installed, pending and refused releases.

use super::*;

/// The update state kept in the home.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateState {
    /// The release the binary came from, once confirmed by a start.
    pub installed: Option<Installed>,
    /// A release installed but not yet confirmed by a daemon start.
    pub pending: Option<Pending>,
    /// Releases that failed their self-check or start here (never retried).
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// The worker installed with it.
    #[serde(default)]
    pub worker_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub name: String,
    pub version: String,
    pub sha256: String,
    #[serde(default)]
    pub worker_sha256: String,
    /// The version directory `current` pointed at before (rolled back to).
    #[serde(default)]
    pub previous: Option<String>,
    /// Daemon starts of this version so far.
    pub starts: u32,
}

impl UpdateState {
    pub fn path(home: &Path) -> PathBuf {
        home.join(STATE_FILE)
    }

    pub fn load(home: &Path) -> Result<Self, UpdateError> {
        let path = Self::path(home);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| UpdateError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(UpdateError::Read { path, source }),
        }
    }

    pub fn save(&self, home: &Path) -> Result<(), UpdateError> {
        let path = Self::path(home);
        let bytes = serde_json::to_vec_pretty(self).expect("the update state serialises");
        crate::private_file::write(&path, &bytes)
            .map_err(|source| UpdateError::Write { path, source })
    }
}
