//! Signed self-update from the agent release repository (TUF, served by
//! `askee-server serve --tuf-repo`).
//!
//! - Trust: the root shipped with the agent (`update.trusted_root`) or the
//!   newer root the agent already verified, whichever has the higher
//!   version, and the metadata it last trusted (`tuf/` in the home, tough's
//!   datastore): a repository serving older metadata is refused across
//!   restarts; expired metadata is refused (freeze).
//! - A release is a target `askee-agent-<version>-<platform>` whose signed
//!   `custom.version` agrees with its name (`askee_core::release`).
//! - Apply: download (length and hash checked by tough, the hash again
//!   here) beside the binary, keep the current binary as `<bin>.prev`,
//!   rename the new one over `<bin>`, run `<bin> self-check`; on failure
//!   put `<bin>.prev` back and never retry that release. The new binary is
//!   *pending* until a daemon start confirms it; a pending binary that
//!   starts twice without confirming is rolled back.
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Daemon starts of this binary so far.
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

fn prev_path(binary: &Path) -> PathBuf {
    let mut s = binary.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

/// Where and how to update.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the repository (`…/tuf`; metadata under `metadata/`,
    /// binaries under `targets/`).
    pub repository: String,
    /// The root shipped with the agent.
    pub trusted_root: PathBuf,
    /// The binary to replace.
    pub binary: PathBuf,
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

/// The release the binary at `binary` is: the installed (or pending)
/// release when the binary's hash matches it, else the build version.
pub fn current_version(home: &Path, binary: &Path) -> Result<Version, UpdateError> {
    let state = UpdateState::load(home)?;
    let sha = file_sha256(binary)?;
    let from_state = state
        .pending
        .as_ref()
        .filter(|p| p.sha256 == sha)
        .map(|p| p.version.clone())
        .or_else(|| {
            state
                .installed
                .as_ref()
                .filter(|i| i.sha256 == sha)
                .map(|i| i.version.clone())
        });
    Ok(from_state
        .and_then(|v| Version::parse(&v).ok())
        .unwrap_or_else(build_version))
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

    /// The release this binary is: the installed (or pending) release when
    /// the binary's hash matches it, else the build version.
    pub fn current_version(&self) -> Result<Version, UpdateError> {
        current_version(&self.home, &self.settings.binary)
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
        // Hashing the binary takes a moment: off the async worker threads.
        let (home, binary) = (self.home.clone(), self.settings.binary.clone());
        let current = tokio::task::spawn_blocking(move || current_version(&home, &binary))
            .await
            .map_err(|e| UpdateError::Read {
                path: self.settings.binary.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
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

    /// Downloads `release` next to the binary; returns the staged file.
    pub async fn download(
        &self,
        repo: &tough::Repository,
        release: &Release,
    ) -> Result<(PathBuf, String), UpdateError> {
        let dir = self
            .settings
            .binary
            .parent()
            .unwrap_or(Path::new("."))
            .to_owned();
        let staged = dir.join(format!(
            ".{}.update-{}",
            release.name,
            uuid::Uuid::new_v4().simple()
        ));
        let result = self.download_to(repo, release, &staged).await;
        if let Err(e) = &result {
            let _ = std::fs::remove_file(&staged);
            self.refused(e)?;
        }
        let (sha, len) = result?;
        self.journal(
            "update.downloaded",
            json!({"target": release.name, "sha256": sha, "length": len}),
        )?;
        Ok((staged, sha))
    }

    async fn download_to(
        &self,
        repo: &tough::Repository,
        release: &Release,
        staged: &Path,
    ) -> Result<(String, u64), UpdateError> {
        use sha2::Digest as _;
        use std::io::Write as _;
        let target_err = |e: tough::error::Error| UpdateError::Target {
            target: release.name.clone(),
            refusal: classify(&e),
            detail: detail(&e),
        };
        let name = tough::TargetName::new(release.name.as_str()).map_err(target_err)?;
        let signed = repo
            .targets()
            .signed
            .find_target(&name, false)
            .map_err(|_| UpdateError::TargetMissing {
                target: release.name.clone(),
            })?
            .clone();
        let stream = repo
            .read_target(&name)
            .await
            .map_err(target_err)?
            .ok_or_else(|| UpdateError::TargetMissing {
                target: release.name.clone(),
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
                target: release.name.clone(),
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

    /// Replaces the binary with `staged` (the current one kept as
    /// `<bin>.prev`), runs the new binary's self-check and rolls back if it
    /// fails. On success the release is pending until a start confirms it.
    pub async fn install(
        &self,
        staged: &Path,
        release: &Release,
        sha256: &str,
    ) -> Result<(), UpdateError> {
        let bin = &self.settings.binary;
        let prev = prev_path(bin);
        copy_aside(bin, &prev)?;
        std::fs::rename(staged, bin).map_err(|source| UpdateError::Write {
            path: bin.clone(),
            source,
        })?;
        self.journal(
            "update.installed",
            json!({"target": release.name, "version": release.version.to_string(),
                   "sha256": sha256, "binary": bin, "previous": prev}),
        )?;
        match self_check(bin).await {
            Ok(report) => {
                self.journal(
                    "update.self_check",
                    json!({"target": release.name, "ok": true, "report": report}),
                )?;
                let mut state = UpdateState::load(&self.home)?;
                state.pending = Some(Pending {
                    name: release.name.clone(),
                    version: release.version.to_string(),
                    sha256: sha256.to_owned(),
                    starts: 0,
                });
                state.save(&self.home)?;
                Ok(())
            }
            Err(reason) => {
                self.journal(
                    "update.self_check",
                    json!({"target": release.name, "ok": false, "reason": reason}),
                )?;
                restore(&prev, bin)?;
                let mut state = UpdateState::load(&self.home)?;
                if !state.refused.contains(&release.name) {
                    state.refused.push(release.name.clone());
                }
                state.save(&self.home)?;
                self.journal(
                    "update.rolled_back",
                    json!({"target": release.name, "reason": reason, "binary": bin}),
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
        let (staged, sha256) = self.download(&repo, &release).await?;
        self.install(&staged, &release, &sha256).await?;
        Ok(Applied::Installed { release, sha256 })
    }
}

/// Links (or copies) `bin` to `prev` atomically.
fn copy_aside(bin: &Path, prev: &Path) -> Result<(), UpdateError> {
    let mut tmp = prev.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(bin, &tmp).is_err() {
        std::fs::copy(bin, &tmp).map_err(|source| UpdateError::Write {
            path: tmp.clone(),
            source,
        })?;
    }
    std::fs::rename(&tmp, prev).map_err(|source| UpdateError::Write {
        path: prev.to_owned(),
        source,
    })
}

/// Puts `prev` back over `bin` (keeping `prev`).
fn restore(prev: &Path, bin: &Path) -> Result<(), UpdateError> {
    let mut tmp = bin.as_os_str().to_owned();
    tmp.push(".rollback");
    let tmp = PathBuf::from(tmp);
    let err = |source| UpdateError::Rollback {
        prev: prev.to_owned(),
        binary: bin.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(prev, &tmp).is_err() {
        std::fs::copy(prev, &tmp).map_err(err)?;
    }
    std::fs::rename(&tmp, bin).map_err(err)
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

/// Called first when the daemon starts.
pub fn on_start(
    home: &Path,
    binary: &Path,
    journal: &Journal,
) -> Result<StartVerdict, UpdateError> {
    let mut state = UpdateState::load(home)?;
    let Some(mut pending) = state.pending.clone() else {
        return Ok(StartVerdict::Continue);
    };
    if file_sha256(binary)? != pending.sha256 {
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
    restore(&prev_path(binary), binary)?;
    if !state.refused.contains(&pending.name) {
        state.refused.push(pending.name.clone());
    }
    state.pending = None;
    state.save(home)?;
    journal.append(
        "update.rolled_back",
        json!({"target": pending.name, "reason": "the new release started without confirming a successful start", "binary": binary}),
    )?;
    Ok(StartVerdict::RolledBack)
}

/// Called once the daemon has started successfully: the pending release
/// becomes the installed one.
pub fn confirm(home: &Path, binary: &Path, journal: &Journal) -> Result<(), UpdateError> {
    let mut state = UpdateState::load(home)?;
    let Some(p) = state.pending.take() else {
        return Ok(());
    };
    if file_sha256(binary)? != p.sha256 {
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
        let (staged, sha) = match updater.download(&repo, &release).await {
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
        match updater.install(&staged, &release, &sha).await {
            Ok(()) => {
                let _ = updater.journal(
                    "update.restart",
                    json!({"target": release.name, "binary": updater.settings.binary}),
                );
                let e = restart(&updater.settings.binary, &args);
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

    #[test]
    fn a_pending_binary_that_starts_twice_unconfirmed_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let journal = Journal::open(&home.join("journal.jsonl")).unwrap();
        let bin = dir.path().join("agent");
        std::fs::write(&bin, b"new").unwrap();
        std::fs::write(prev_path(&bin), b"old").unwrap();
        let state = UpdateState {
            pending: Some(Pending {
                name: "askee-agent-2.0.0-x86_64-linux".into(),
                version: "2.0.0".into(),
                sha256: file_sha256(&bin).unwrap(),
                starts: 0,
            }),
            ..Default::default()
        };
        state.save(&home).unwrap();
        assert_eq!(
            on_start(&home, &bin, &journal).unwrap(),
            StartVerdict::Continue
        );
        assert_eq!(std::fs::read(&bin).unwrap(), b"new");
        assert_eq!(
            on_start(&home, &bin, &journal).unwrap(),
            StartVerdict::RolledBack
        );
        assert_eq!(std::fs::read(&bin).unwrap(), b"old");
        let s = UpdateState::load(&home).unwrap();
        assert_eq!(s.pending, None);
        assert_eq!(s.refused, ["askee-agent-2.0.0-x86_64-linux"]);
        // A confirmed start makes the release the installed one instead.
        std::fs::write(&bin, b"newer").unwrap();
        let state = UpdateState {
            pending: Some(Pending {
                name: "askee-agent-3.0.0-x86_64-linux".into(),
                version: "3.0.0".into(),
                sha256: file_sha256(&bin).unwrap(),
                starts: 0,
            }),
            ..Default::default()
        };
        state.save(&home).unwrap();
        assert_eq!(
            on_start(&home, &bin, &journal).unwrap(),
            StartVerdict::Continue
        );
        confirm(&home, &bin, &journal).unwrap();
        let s = UpdateState::load(&home).unwrap();
        assert_eq!(s.installed.unwrap().version, "3.0.0");
        assert_eq!(s.pending, None);
    }
}
