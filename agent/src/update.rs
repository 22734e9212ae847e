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

mod sys;

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

/// Why the repository or a release was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Metadata past its expiry: a freeze attack or an unmaintained repository.
    Expired { role: String },
    /// Metadata older than what this agent already trusted.
    Rollback { role: String },
    /// Metadata not signed by a threshold of the keys the root names.
    Signature { role: String },
    /// A file that does not match the length and hash its parent role signed.
    Mismatch { what: String },
    /// The repository could not be reached or a file is missing.
    Unreachable,
    /// Anything else tough refused.
    Invalid,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Expired { role } => write!(f, "expired {role} metadata (freeze attack?)"),
            Refusal::Rollback { role } => write!(
                f,
                "rollback: {role} metadata older than the metadata already trusted"
            ),
            Refusal::Signature { role } => write!(
                f,
                "bad signature: {role} metadata is not signed by the trusted {role} key(s)"
            ),
            Refusal::Mismatch { what } => {
                write!(f, "{what} does not match its signed length and hash")
            }
            Refusal::Unreachable => write!(f, "repository unreachable"),
            Refusal::Invalid => write!(f, "invalid repository"),
        }
    }
}

/// Classifies a tough error.
pub fn classify(e: &tough::error::Error) -> Refusal {
    use tough::error::Error as E;
    match e {
        E::ExpiredMetadata { role, .. } => Refusal::Expired {
            role: role.to_string(),
        },
        E::OlderMetadata { role, .. } => Refusal::Rollback {
            role: role.to_string(),
        },
        E::OlderSnapshotInTimestamp { .. } => Refusal::Rollback {
            role: "snapshot".into(),
        },
        E::SnapshotRoleRollback { role, .. } => Refusal::Rollback { role: role.clone() },
        E::VerifyMetadata { role, .. } => Refusal::Signature {
            role: role.to_string(),
        },
        E::VerifyRoleMetadata { role, .. } => Refusal::Signature { role: role.clone() },
        E::VerifyTrustedMetadata { .. } => Refusal::Signature {
            role: "trusted root".into(),
        },
        E::HashMismatch { context, .. } => Refusal::Mismatch {
            what: context.clone(),
        },
        E::MaxSizeExceeded { specifier, .. } => Refusal::Mismatch {
            what: format!("a file (limit from {specifier})"),
        },
        E::VersionMismatch { role, .. } => Refusal::Mismatch {
            what: format!("{role} metadata version"),
        },
        // A target's stream reports its hash or length check as a transport
        // error wrapping tough's own: classify the innermost tough error.
        E::Transport { .. } => {
            let mut cur = std::error::Error::source(e);
            while let Some(c) = cur {
                if let Some(inner) = c.downcast_ref::<tough::error::Error>() {
                    return classify(inner);
                }
                cur = c.source();
            }
            Refusal::Unreachable
        }
        _ => Refusal::Invalid,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(
        "no update repository configured: set update.repository in config.toml or pass --repository"
    )]
    NoRepository,
    #[error(
        "no trusted root configured: set update.trusted_root in config.toml or pass --trusted-root"
    )]
    NoTrustedRoot,
    #[error("update repository URL {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read the trusted root {path}: {source}")]
    TrustedRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refused the update repository {repository}: {refusal} ({detail})")]
    Refused {
        repository: String,
        refusal: Refusal,
        detail: String,
    },
    #[error("refused release {target}: {refusal} ({detail})")]
    Target {
        target: String,
        refusal: Refusal,
        detail: String,
    },
    #[error("release {target} is listed but the repository does not serve it")]
    TargetMissing { target: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "release {target} failed its self-check ({reason}); rolled back to the previous binary"
    )]
    SelfCheck { target: String, reason: String },
    #[error("cannot put the previous binary {prev} back over {binary}: {source}")]
    Rollback {
        prev: PathBuf,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent daemon holds {lock}; it applies updates itself between tasks")]
    DaemonRunning { lock: PathBuf },
    #[error("update state {path} is not valid: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("cannot restart as {binary}: {source}")]
    Restart {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restarting is not supported on this platform")]
    Unsupported,
    #[error(
        "{binary} is not installed in a versioned layout (<dir>/versions/<version>/askee-agent with <dir>/current pointing at it); reinstall with deploy/install-agent.sh"
    )]
    NotVersioned { binary: PathBuf },
    #[error("cannot point {link} at {target}: {source}")]
    Switch {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

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
        let tmp = home.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).expect("the update state serialises");
        write_synced(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path).map_err(|source| UpdateError::Write { path, source })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), UpdateError> {
    use std::io::Write as _;
    let err = |source| UpdateError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, UpdateError> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let err = |source| UpdateError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The version this agent was built as.
pub fn build_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is MAJOR.MINOR.PATCH")
}

/// The running binary's path, resolved once at start (after an update
/// renames files, `/proc/self/exe` no longer names it).
pub fn current_binary() -> Result<PathBuf, UpdateError> {
    let exe = std::env::current_exe().map_err(|source| UpdateError::Read {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    std::fs::canonicalize(&exe).map_err(|source| UpdateError::Read { path: exe, source })
}

/// The versioned install directory: `<dir>/versions/<version>/` holds one
/// release's `askee-agent` and `askee-agent-worker`, `<dir>/current` is a
/// relative symlink to `versions/<version>`, and the agent runs as
/// `<dir>/current/askee-agent` (so its worker is the one beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
}

/// The versions directory in the install directory.
pub const VERSIONS: &str = "versions";
/// The symlink to the running version.
pub const CURRENT: &str = "current";

impl Layout {
    /// The layout `binary` (a resolved path, e.g. [`current_binary`]) is
    /// installed in: its directory is `<dir>/versions/<v>` and
    /// `<dir>/current` resolves to it.
    pub fn of_binary(binary: &Path) -> Result<Self, UpdateError> {
        let not = || UpdateError::NotVersioned {
            binary: binary.to_owned(),
        };
        let version_dir = binary.parent().ok_or_else(not)?;
        let versions = version_dir.parent().ok_or_else(not)?;
        if versions.file_name() != Some(std::ffi::OsStr::new(VERSIONS)) {
            return Err(not());
        }
        let dir = versions.parent().ok_or_else(not)?.to_owned();
        match std::fs::canonicalize(dir.join(CURRENT)) {
            Ok(c) if c == version_dir => Ok(Self { dir }),
            _ => Err(not()),
        }
    }

    /// The layout of the running agent.
    pub fn of_running() -> Result<Self, UpdateError> {
        Self::of_binary(&current_binary()?)
    }

    /// The agent as the service starts it (through `current`).
    pub fn binary(&self) -> PathBuf {
        self.dir.join(CURRENT).join(exe_name(rel::Component::Agent))
    }

    fn versions(&self) -> PathBuf {
        self.dir.join(VERSIONS)
    }

    /// The version directory `current` points at (its name).
    pub fn current(&self) -> Result<String, UpdateError> {
        let link = self.dir.join(CURRENT);
        let target = std::fs::read_link(&link).map_err(|source| UpdateError::Read {
            path: link.clone(),
            source,
        })?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or(UpdateError::NotVersioned { binary: link })
    }

    /// Points `current` at `versions/<name>`: a new symlink renamed over
    /// the old one, so `current` always names one whole version.
    pub fn switch(&self, name: &str) -> Result<(), UpdateError> {
        let link = self.dir.join(CURRENT);
        let target = Path::new(VERSIONS).join(name);
        let tmp = self
            .dir
            .join(format!(".{CURRENT}.{}", uuid::Uuid::new_v4().simple()));
        let err = |source| UpdateError::Switch {
            link: link.clone(),
            target: target.clone(),
            source,
        };
        sys::symlink(&target, &tmp).map_err(err)?;
        if let Err(e) = std::fs::rename(&tmp, &link) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes every version directory (and stale staging directory)
    /// except `keep`.
    fn prune(&self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.versions()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !keep.contains(&name.as_ref()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn exe_name(c: rel::Component) -> String {
    format!("{}{}", c.file_name(), std::env::consts::EXE_SUFFIX)
}

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

/// tough transport over reqwest (plain HTTP is fine: TUF metadata carries
/// its own signatures, hashes and expiry).
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
}

#[tough::async_trait]
impl tough::Transport for Http {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind as K};
        let other = |e: String| TransportError::new_with_cause(K::Other, url.as_str(), e);
        let mut resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| other(e.to_string()))?;
        if matches!(resp.status().as_u16(), 404 | 410) {
            return Err(TransportError::new(K::FileNotFound, url.as_str()));
        }
        if !resp.status().is_success() {
            return Err(other(format!("HTTP status {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| other(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX_FETCH_BYTES {
                return Err(other(format!(
                    "response larger than {MAX_FETCH_BYTES} bytes"
                )));
            }
        }
        let item: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(body));
        Ok(Box::pin(futures_util::stream::once(std::future::ready(
            item,
        ))))
    }
}

fn detail(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

fn root_version(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v["signed"]["version"].as_u64()
}

/// The release installed in `layout`: the name of the version directory
/// `current` points at, else (an installer that named it otherwise) the
/// build version.
pub fn current_version(layout: &Layout) -> Result<Version, UpdateError> {
    Ok(Version::parse(&layout.current()?).unwrap_or_else(|_| build_version()))
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

    /// The trusted root: the shipped one or the newer one already verified.
    fn trusted_root(&self) -> Result<Vec<u8>, UpdateError> {
        let shipped = std::fs::read(&self.settings.trusted_root).map_err(|source| {
            UpdateError::TrustedRoot {
                path: self.settings.trusted_root.clone(),
                source,
            }
        })?;
        let verified = std::fs::read(self.home.join(DATASTORE).join("root.json")).ok();
        Ok(match verified {
            Some(v) if root_version(&v) > root_version(&shipped) => v,
            _ => shipped,
        })
    }

    async fn load(&self) -> Result<tough::Repository, UpdateError> {
        let base = self.settings.repository.trim_end_matches('/');
        let url = |sub: &str| {
            url::Url::parse(&format!("{base}/{sub}/")).map_err(|e| UpdateError::BadUrl {
                url: self.settings.repository.clone(),
                reason: e.to_string(),
            })
        };
        let (meta, targets) = (url("metadata")?, url("targets")?);
        let root = self.trusted_root()?;
        let store = self.home.join(DATASTORE);
        std::fs::create_dir_all(&store).map_err(|source| UpdateError::Write {
            path: store.clone(),
            source,
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| UpdateError::BadUrl {
                url: self.settings.repository.clone(),
                reason: e.to_string(),
            })?;
        tough::RepositoryLoader::new(&root, meta, targets)
            .transport(Http { client })
            .datastore(store)
            .expiration_enforcement(tough::ExpirationEnforcement::Safe)
            .load()
            .await
            .map_err(|e| UpdateError::Refused {
                repository: self.settings.repository.clone(),
                refusal: classify(&e),
                detail: detail(&e),
            })
    }

    /// Loads and verifies the repository and picks the newest applicable
    /// release (journalled as `update.check`, or `update.refused`).
    pub async fn check(&self) -> Result<(Check, Option<tough::Repository>), UpdateError> {
        let current = self.current_version()?;
        let repo = match self.load().await {
            Ok(r) => r,
            Err(e) => {
                self.refused(&e)?;
                return Err(e);
            }
        };
        let releases: Vec<Release> = repo
            .all_targets()
            .filter_map(|(name, t)| {
                let v = t.custom.get("version").and_then(|v| v.as_str());
                rel::parse_target(name.raw(), v).ok()
            })
            .collect();
        let state = UpdateState::load(&self.home)?;
        let pick = rel::choose(&releases, &self.settings.platform, current, &state.refused);
        let timestamp = repo.timestamp().signed.version.get();
        let snapshot = repo.snapshot().signed.version.get();
        let found = match pick {
            Some(r) => Check::Available {
                current,
                release: r.clone(),
            },
            None => Check::UpToDate { current },
        };
        self.journal(
            "update.check",
            json!({
                "repository": self.settings.repository,
                "current": current.to_string(),
                "available": pick.map(|r| r.version.to_string()),
                "target": pick.map(|r| r.name.clone()),
                "timestamp_version": timestamp,
                "snapshot_version": snapshot,
            }),
        )?;
        Ok((found, Some(repo)))
    }

    fn refused(&self, e: &UpdateError) -> Result<(), UpdateError> {
        let (refusal, detail) = match e {
            UpdateError::Refused {
                refusal, detail, ..
            }
            | UpdateError::Target {
                refusal, detail, ..
            } => (refusal.to_string(), detail.clone()),
            other => ("error".to_owned(), other.to_string()),
        };
        self.journal(
            "update.refused",
            json!({"repository": self.settings.repository, "reason": refusal, "detail": detail}),
        )
    }

    /// Downloads both binaries of `release` (its agent target and the
    /// worker target of the same version) into a staging directory in
    /// `versions/`; nothing is kept unless both verified.
    pub async fn download(
        &self,
        repo: &tough::Repository,
        release: &Release,
    ) -> Result<Staged, UpdateError> {
        let versions = self.settings.layout.versions();
        let dir = versions.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            std::fs::create_dir_all(&dir).map_err(|source| UpdateError::Write {
                path: dir.clone(),
                source,
            })?;
            let agent = self
                .download_to(
                    repo,
                    &release.name,
                    &dir.join(exe_name(rel::Component::Agent)),
                )
                .await?;
            let worker = self
                .download_to(
                    repo,
                    &release.worker_name(),
                    &dir.join(exe_name(rel::Component::Worker)),
                )
                .await?;
            Ok::<_, UpdateError>((agent, worker))
        }
        .await;
        if let Err(e) = &result {
            let _ = std::fs::remove_dir_all(&dir);
            self.refused(e)?;
        }
        let ((sha, len), (worker_sha, worker_len)) = result?;
        self.journal(
            "update.downloaded",
            json!({"target": release.name, "sha256": sha, "length": len,
                   "worker_target": release.worker_name(), "worker_sha256": worker_sha,
                   "worker_length": worker_len}),
        )?;
        Ok(Staged {
            dir,
            sha256: sha,
            worker_sha256: worker_sha,
        })
    }

    async fn download_to(
        &self,
        repo: &tough::Repository,
        target: &str,
        staged: &Path,
    ) -> Result<(String, u64), UpdateError> {
        use sha2::Digest as _;
        use std::io::Write as _;
        let target_err = |e: tough::error::Error| UpdateError::Target {
            target: target.to_owned(),
            refusal: classify(&e),
            detail: detail(&e),
        };
        let name = tough::TargetName::new(target).map_err(target_err)?;
        let signed = repo
            .targets()
            .signed
            .find_target(&name, false)
            .map_err(|_| UpdateError::TargetMissing {
                target: target.to_owned(),
            })?
            .clone();
        let stream = repo
            .read_target(&name)
            .await
            .map_err(target_err)?
            .ok_or_else(|| UpdateError::TargetMissing {
                target: target.to_owned(),
            })?;
        let mut stream = std::pin::pin!(stream);
        let werr = |source| UpdateError::Write {
            path: staged.to_owned(),
            source,
        };
        let mut file = std::fs::File::create(staged).map_err(werr)?;
        let mut h = sha2::Sha256::new();
        let mut len = 0u64;
        // tough checks the length and hash as the stream ends: nothing is
        // used unless the whole stream succeeded.
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(target_err)?;
            h.update(&chunk);
            len += chunk.len() as u64;
            file.write_all(&chunk).map_err(werr)?;
        }
        let sha = hex::encode(h.finalize());
        if sha != hex::encode(signed.hashes.sha256.as_ref()) || len != signed.length {
            return Err(UpdateError::Target {
                target: target.to_owned(),
                refusal: Refusal::Mismatch {
                    what: "target".into(),
                },
                detail: format!(
                    "got {len} bytes with sha256 {sha}, signed {} bytes with sha256 {}",
                    signed.length,
                    hex::encode(signed.hashes.sha256.as_ref())
                ),
            });
        }
        file.sync_all().map_err(werr)?;
        drop(file);
        sys::make_executable(staged).map_err(werr)?;
        Ok((sha, len))
    }

    /// Installs the staged pair as `versions/<version>` and switches
    /// `current` to it (the previous version stays), runs the new agent's
    /// self-check (which checks the new worker too) and switches back if it
    /// fails. On success the release is pending until a start confirms it.
    pub async fn install(&self, staged: &Staged, release: &Release) -> Result<(), UpdateError> {
        let layout = &self.settings.layout;
        let name = release.version.to_string();
        let previous = layout.current()?;
        let dest = layout.versions().join(&name);
        if name == previous {
            return Err(UpdateError::Write {
                path: dest,
                source: std::io::Error::other("this version is the running one"),
            });
        }
        // A leftover of an earlier attempt is replaced whole.
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&staged.dir, &dest).map_err(|source| UpdateError::Write {
            path: dest.clone(),
            source,
        })?;
        layout.switch(&name)?;
        let bin = layout.binary();
        self.journal(
            "update.installed",
            json!({"target": release.name, "version": name,
                   "sha256": staged.sha256, "worker_target": release.worker_name(),
                   "worker_sha256": staged.worker_sha256, "binary": bin,
                   "directory": dest, "previous": layout.versions().join(&previous)}),
        )?;
        match self_check(&bin).await {
            Ok(report) => {
                self.journal(
                    "update.self_check",
                    json!({"target": release.name, "ok": true, "report": report}),
                )?;
                let mut state = UpdateState::load(&self.home)?;
                state.pending = Some(Pending {
                    name: release.name.clone(),
                    version: name.clone(),
                    sha256: staged.sha256.clone(),
                    worker_sha256: staged.worker_sha256.clone(),
                    previous: Some(previous.clone()),
                    starts: 0,
                });
                state.save(&self.home)?;
                layout.prune(&[&name, &previous]);
                Ok(())
            }
            Err(reason) => {
                self.journal(
                    "update.self_check",
                    json!({"target": release.name, "ok": false, "reason": reason}),
                )?;
                layout
                    .switch(&previous)
                    .map_err(|e| UpdateError::Rollback {
                        prev: layout.versions().join(&previous),
                        binary: bin.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                let _ = std::fs::remove_dir_all(&dest);
                let mut state = UpdateState::load(&self.home)?;
                if !state.refused.contains(&release.name) {
                    state.refused.push(release.name.clone());
                }
                state.save(&self.home)?;
                self.journal(
                    "update.rolled_back",
                    json!({"target": release.name, "reason": reason, "binary": bin,
                           "current": layout.versions().join(&previous)}),
                )?;
                Err(UpdateError::SelfCheck {
                    target: release.name.clone(),
                    reason,
                })
            }
        }
    }

    /// Check, download and install (one shot). Refused while a daemon holds
    /// the home's lock: the daemon updates itself between tasks.
    pub async fn apply(&self) -> Result<Applied, UpdateError> {
        let _lock = DaemonLock::acquire(&self.home)?;
        let (found, repo) = self.check().await?;
        let (release, repo) = match (found, repo) {
            (Check::Available { release, .. }, Some(repo)) => (release, repo),
            (Check::UpToDate { current } | Check::Available { current, .. }, _) => {
                return Ok(Applied::UpToDate { current });
            }
        };
        let staged = self.download(&repo, &release).await?;
        self.install(&staged, &release).await?;
        Ok(Applied::Installed {
            release,
            sha256: staged.sha256,
        })
    }
}

/// Runs `<binary> self-check`; its JSON report, or why it failed.
pub async fn self_check(binary: &Path) -> Result<serde_json::Value, String> {
    let child = tokio::process::Command::new(binary)
        .arg("self-check")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(SELF_CHECK_TIMEOUT, child).await {
        Err(_) => return Err(format!("no answer within {SELF_CHECK_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", binary.display())),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("its report is not JSON: {e}"))?;
    if report["ok"] != true {
        return Err(format!("it reports a failure: {report}"));
    }
    Ok(report)
}

/// What a daemon start decided about a pending release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Nothing pending, or the pending binary gets its first start.
    Continue,
    /// The pending binary started before without confirming: the previous
    /// binary is back in place; restart into it.
    RolledBack,
}

/// Called first when the daemon starts (`layout`: where the running agent
/// is installed, none when it runs outside a versioned layout).
pub fn on_start(
    home: &Path,
    layout: Option<&Layout>,
    journal: &Journal,
) -> Result<StartVerdict, UpdateError> {
    let mut state = UpdateState::load(home)?;
    let Some(mut pending) = state.pending.clone() else {
        return Ok(StartVerdict::Continue);
    };
    let running = match layout {
        Some(l) => Some(l.current()?),
        None => None,
    };
    let (Some(layout), Some(previous)) = (layout, pending.previous.clone()) else {
        state.pending = None;
        state.save(home)?;
        return Ok(StartVerdict::Continue);
    };
    if running.as_deref() != Some(pending.version.as_str()) {
        // Replaced by other means (the installer): nothing to confirm.
        state.pending = None;
        state.save(home)?;
        return Ok(StartVerdict::Continue);
    }
    pending.starts += 1;
    if pending.starts < 2 {
        state.pending = Some(pending);
        state.save(home)?;
        return Ok(StartVerdict::Continue);
    }
    layout
        .switch(&previous)
        .map_err(|e| UpdateError::Rollback {
            prev: layout.versions().join(&previous),
            binary: layout.binary(),
            source: std::io::Error::other(e.to_string()),
        })?;
    if !state.refused.contains(&pending.name) {
        state.refused.push(pending.name.clone());
    }
    state.pending = None;
    state.save(home)?;
    journal.append(
        "update.rolled_back",
        json!({"target": pending.name, "reason": "the new release started without confirming a successful start",
               "binary": layout.binary(), "current": layout.versions().join(&previous)}),
    )?;
    Ok(StartVerdict::RolledBack)
}

/// Called once the daemon has started successfully: the pending release
/// becomes the installed one.
pub fn confirm(home: &Path, layout: Option<&Layout>, journal: &Journal) -> Result<(), UpdateError> {
    let mut state = UpdateState::load(home)?;
    let Some(p) = state.pending.take() else {
        return Ok(());
    };
    let running = match layout {
        Some(l) => Some(l.current()?),
        None => None,
    };
    if running.as_deref() != Some(p.version.as_str()) {
        state.save(home)?;
        return Ok(());
    }
    journal.append(
        "update.confirmed",
        json!({"target": p.name, "version": p.version, "pid": std::process::id()}),
    )?;
    state.installed = Some(Installed {
        name: p.name,
        version: p.version,
        sha256: p.sha256,
        worker_sha256: p.worker_sha256,
    });
    state.save(home)
}

/// Replaces this process with `binary` and the same arguments (the pid
/// stays, so systemd sees one service). Returns only on failure.
pub fn restart(binary: &Path, args: &[OsString]) -> UpdateError {
    sys::exec(binary, args)
}

/// The home's daemon lock: held by `run` for its lifetime, tried by
/// `update apply`. Released on exit and on exec (close-on-exec).
pub struct DaemonLock {
    _file: std::fs::File,
}

impl DaemonLock {
    pub fn acquire(home: &Path) -> Result<Self, UpdateError> {
        let path = home.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| UpdateError::Write {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(UpdateError::DaemonRunning { lock: path })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(UpdateError::Write { path, source }),
        }
    }
}

/// The daemon's scheduled check: every `interval`, check; when a release is
/// available, download it, then take every work slot (`slots`, waiting for
/// running tasks to finish and keeping new ones from starting), install,
/// and restart into the new binary. Failures are journalled and retried at
/// the next interval.
pub async fn schedule(
    updater: Updater,
    interval: Duration,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    slot_count: u32,
    args: Vec<OsString>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let (found, repo) = match updater.check().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "update check failed");
                continue;
            }
        };
        let (Check::Available { release, .. }, Some(repo)) = (found, repo) else {
            continue;
        };
        let staged = match updater.download(&repo, &release).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "update download failed");
                continue;
            }
        };
        // Updates never happen while a task runs: hold every slot.
        let Ok(permits) = slots.clone().acquire_many_owned(slot_count).await else {
            return;
        };
        if let Err(e) = updater.journal("update.quiesced", json!({"target": release.name})) {
            tracing::warn!(error = %e, "cannot journal");
        }
        match updater.install(&staged, &release).await {
            Ok(()) => {
                let binary = updater.settings.layout.binary();
                let _ = updater.journal(
                    "update.restart",
                    json!({"target": release.name, "binary": binary}),
                );
                let e = restart(&binary, &args);
                tracing::error!(error = %e, "cannot restart after the update");
                let _ = updater.journal("update.restart_failed", json!({"error": e.to_string()}));
            }
            Err(e) => tracing::warn!(error = %e, "update not installed"),
        }
        drop(permits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            UpdateState::load(dir.path()).unwrap(),
            UpdateState::default()
        );
        let s = UpdateState {
            installed: None,
            pending: Some(Pending {
                name: "askee-agent-2.0.0-x86_64-linux".into(),
                version: "2.0.0".into(),
                sha256: "ab".into(),
                worker_sha256: "cd".into(),
                previous: Some("1.0.0".into()),
                starts: 1,
            }),
            refused: vec!["x".into()],
        };
        s.save(dir.path()).unwrap();
        assert_eq!(UpdateState::load(dir.path()).unwrap(), s);
        std::fs::write(UpdateState::path(dir.path()), br#"{"surprise":1}"#).unwrap();
        assert!(matches!(
            UpdateState::load(dir.path()),
            Err(UpdateError::State { .. })
        ));
    }

    /// A layout with versions `names`, `current` at the first.
    fn layout(dir: &Path, names: &[&str]) -> Layout {
        let l = Layout {
            dir: dir.join("install"),
        };
        for n in names {
            let v = l.versions().join(n);
            std::fs::create_dir_all(&v).unwrap();
            std::fs::write(v.join(exe_name(rel::Component::Agent)), n.as_bytes()).unwrap();
        }
        l.switch(names[0]).unwrap();
        l
    }

    #[test]
    fn the_layout_is_found_from_the_resolved_binary_and_switches_whole() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path(), &["1.0.0", "2.0.0"]);
        let resolved = std::fs::canonicalize(l.binary()).unwrap();
        assert_eq!(
            resolved,
            std::fs::canonicalize(&l.dir)
                .unwrap()
                .join("versions/1.0.0/askee-agent")
        );
        let found = Layout::of_binary(&resolved).unwrap();
        assert_eq!(
            std::fs::canonicalize(found.dir).unwrap(),
            std::fs::canonicalize(&l.dir).unwrap()
        );
        assert_eq!(
            current_version(&l).unwrap(),
            Version::parse("1.0.0").unwrap()
        );
        l.switch("2.0.0").unwrap();
        assert_eq!(std::fs::read(l.binary()).unwrap(), b"2.0.0");
        // The old version's binary is no longer the current one.
        assert!(matches!(
            Layout::of_binary(&resolved),
            Err(UpdateError::NotVersioned { .. })
        ));
        l.prune(&["2.0.0"]);
        assert!(!l.versions().join("1.0.0").exists());
        assert!(Layout::of_binary(&dir.path().join("askee-agent")).is_err());
        assert!(std::fs::read_dir(&l.dir).unwrap().all(|e| {
            let n = e.unwrap().file_name();
            n == "versions" || n == "current"
        }));
    }

    #[test]
    fn a_pending_version_that_starts_twice_unconfirmed_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let journal = Journal::open(&home.join("journal.jsonl")).unwrap();
        let l = layout(dir.path(), &["2.0.0", "1.0.0"]);
        let state = UpdateState {
            pending: Some(Pending {
                name: "askee-agent-2.0.0-x86_64-linux".into(),
                version: "2.0.0".into(),
                sha256: "ab".into(),
                worker_sha256: "cd".into(),
                previous: Some("1.0.0".into()),
                starts: 0,
            }),
            ..Default::default()
        };
        state.save(&home).unwrap();
        assert_eq!(
            on_start(&home, Some(&l), &journal).unwrap(),
            StartVerdict::Continue
        );
        assert_eq!(std::fs::read(l.binary()).unwrap(), b"2.0.0");
        assert_eq!(
            on_start(&home, Some(&l), &journal).unwrap(),
            StartVerdict::RolledBack
        );
        assert_eq!(std::fs::read(l.binary()).unwrap(), b"1.0.0");
        let s = UpdateState::load(&home).unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.refused, ["askee-agent-2.0.0-x86_64-linux"]);
        // A confirmed start makes the release the installed one instead.
        let l = layout(dir.path(), &["3.0.0"]);
        let state = UpdateState {
            pending: Some(Pending {
                name: "askee-agent-3.0.0-x86_64-linux".into(),
                version: "3.0.0".into(),
                sha256: "ef".into(),
                worker_sha256: "01".into(),
                previous: Some("1.0.0".into()),
                starts: 0,
            }),
            ..Default::default()
        };
        state.save(&home).unwrap();
        assert_eq!(
            on_start(&home, Some(&l), &journal).unwrap(),
            StartVerdict::Continue
        );
        confirm(&home, Some(&l), &journal).unwrap();
        let s = UpdateState::load(&home).unwrap();
        let installed = s.installed.unwrap();
        assert_eq!(
            (installed.version.as_str(), installed.worker_sha256.as_str()),
            ("3.0.0", "01")
        );
        assert_eq!(s.pending, None);
    }
}
