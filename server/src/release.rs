//! Agent releases published as a TUF repository (The Update Framework):
//! key generation, the root ceremony, publishing a release, refreshing the
//! timestamp, and serving the repository read-only under `/tuf/`.
//!
//! Layout of a repository directory:
//!
//! - `metadata/N.root.json` (every root version, for the client's chain
//!   walk), `metadata/N.targets.json`, `metadata/N.snapshot.json`
//!   (consistent snapshots) and `metadata/timestamp.json`, the one file
//!   rewritten in place (atomically, last).
//! - `targets/<sha256>.askee-agent-<version>-<platform>`: the binaries.
//! - `.staging/`: files being written; never served.
//!
//! Keys (`release keys generate`): `root-1.pk8` … `root-N.pk8`,
//! `targets.pk8`, `snapshot.pk8`, `timestamp.pk8`, Ed25519 PKCS#8 DER,
//! mode 0600. `release init` needs the root keys (an offline ceremony);
//! `publish` needs only the targets, snapshot and timestamp keys, and
//! `refresh-timestamp` only the timestamp key.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use askee_core::release::{self as rel, ReleaseError as NameError, Version};
use aws_lc_rs::rand::SystemRandom;
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{Hashes, KeyHolder, Metafile, RoleKeys, RoleType, Root, Timestamp};
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader};

/// The TUF specification version the metadata declares.
const SPEC_VERSION: &str = "1.0.0";
/// Directory (inside the repository) for files being written.
const STAGING: &str = ".staging";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path} already exists; refusing to overwrite signing keys")]
    KeyExists { path: PathBuf },
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
    #[error("cannot generate an ed25519 key")]
    Generate,
    #[error("key file {path} is not a usable signing key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "{dir} holds {found} root key(s) (root-N.pk8); the threshold {threshold} needs at least that many"
    )]
    TooFewRootKeys {
        dir: PathBuf,
        found: usize,
        threshold: u64,
    },
    #[error("root threshold must be at least 1")]
    ZeroThreshold,
    #[error("{path} already exists: the repository is initialised")]
    AlreadyInitialised { path: PathBuf },
    #[error("{dir} has no N.root.json: run `askee-server release init` first")]
    NotInitialised { dir: PathBuf },
    #[error("cannot sign the {role} metadata: {reason}")]
    Sign { role: &'static str, reason: String },
    #[error("the existing repository in {dir} does not verify: {reason}")]
    Load { dir: PathBuf, reason: String },
    #[error("cannot build the {what}: {reason}")]
    Build { what: &'static str, reason: String },
    #[error("release {name} is already published; releases are immutable, publish a new version")]
    ReleaseExists { name: String },
    #[error("release {version} is not newer than the newest published, {newest}")]
    NotNewer { version: Version, newest: Version },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(
        "{what} {value:?} is neither an RFC 3339 time nor a duration like 30d, 12h, 90s or -1h"
    )]
    Expiry { what: &'static str, value: String },
}

/// Where a role's key lives in a key directory.
pub fn key_path(dir: &Path, role: &str) -> PathBuf {
    dir.join(format!("{role}.pk8"))
}

fn root_key_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("root-{n}.pk8"))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ReleaseError::KeyExists {
                path: path.to_owned(),
            }
        } else {
            ReleaseError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|source| ReleaseError::Write {
            path: path.to_owned(),
            source,
        })
}

/// The TUF key (public half) and key id of a key file.
async fn public_key(path: &Path) -> Result<(String, tough::schema::key::Key), ReleaseError> {
    let bad = |reason: String| ReleaseError::BadKey {
        path: path.to_owned(),
        reason,
    };
    let signer = LocalKeySource {
        path: path.to_owned(),
    }
    .as_sign()
    .await
    .map_err(|e| bad(e.to_string()))?;
    let key = signer.tuf_key();
    let id = key.key_id().map_err(|e| bad(e.to_string()))?;
    Ok((hex::encode(id.as_ref()), key))
}

/// One generated key: its file and key id.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub role: String,
    pub path: PathBuf,
    pub key_id: String,
}

/// Creates `root-1.pk8` … `root-<root_keys>.pk8`, `targets.pk8`,
/// `snapshot.pk8` and `timestamp.pk8` in `dir` (created 0700 if absent).
/// Never overwrites an existing key file.
pub async fn generate_keys(
    dir: &Path,
    root_keys: usize,
) -> Result<Vec<GeneratedKey>, ReleaseError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| ReleaseError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut planned: Vec<(String, PathBuf)> = (1..=root_keys.max(1))
        .map(|n| (format!("root-{n}"), root_key_path(dir, n)))
        .collect();
    for role in ["targets", "snapshot", "timestamp"] {
        planned.push((role.to_owned(), key_path(dir, role)));
    }
    // Refuse before writing anything.
    if let Some((_, p)) = planned.iter().find(|(_, p)| p.exists()) {
        return Err(ReleaseError::KeyExists { path: p.clone() });
    }
    let rng = SystemRandom::new();
    let mut out = Vec::new();
    for (role, path) in planned {
        let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| ReleaseError::Generate)?;
        write_private(&path, doc.as_ref())?;
        let (key_id, _) = public_key(&path).await?;
        out.push(GeneratedKey { role, path, key_id });
    }
    Ok(out)
}

fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect()
}

fn root_key_files(dir: &Path) -> Result<Vec<PathBuf>, ReleaseError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ReleaseError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("root-") && n.ends_with(".pk8"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Expiry times of the four roles.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    pub targets: jiff::Timestamp,
    pub snapshot: jiff::Timestamp,
    pub timestamp: jiff::Timestamp,
}

/// Parses an expiry: an RFC 3339 time, or a duration from `now` written as
/// an optionally negative integer with a unit `s`, `m`, `h` or `d`.
pub fn parse_expiry(
    what: &'static str,
    value: &str,
    now: jiff::Timestamp,
) -> Result<jiff::Timestamp, ReleaseError> {
    let bad = || ReleaseError::Expiry {
        what,
        value: value.to_owned(),
    };
    if let Ok(t) = value.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let unit = value.chars().last().ok_or_else(bad)?;
    let n: i64 = value[..value.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)?;
    let span = jiff::SignedDuration::from_secs(secs);
    now.checked_add(span).map_err(|_| bad())
}

pub fn metadata_dir(repo: &Path) -> PathBuf {
    repo.join("metadata")
}

pub fn targets_dir(repo: &Path) -> PathBuf {
    repo.join("targets")
}

/// The highest `N.root.json` in the metadata directory.
fn latest_root(repo: &Path) -> Result<(u64, PathBuf), ReleaseError> {
    let meta = metadata_dir(repo);
    let not_init = || ReleaseError::NotInitialised { dir: meta.clone() };
    let rd = std::fs::read_dir(&meta).map_err(|_| not_init())?;
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_suffix(".root.json")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .ok_or_else(not_init)
}

fn file_url(path: &Path) -> Result<url::Url, ReleaseError> {
    let abs = std::path::absolute(path).map_err(|source| ReleaseError::Read {
        path: path.to_owned(),
        source,
    })?;
    url::Url::from_directory_path(&abs).map_err(|()| ReleaseError::Load {
        dir: path.to_owned(),
        reason: "not an absolute path".into(),
    })
}

/// Loads the repository as it is on disk, verifying every signature
/// (expiry is not enforced: the publisher may be renewing expired metadata).
async fn load_existing(repo: &Path) -> Result<tough::Repository, ReleaseError> {
    let meta = metadata_dir(repo);
    let first = meta.join("1.root.json");
    let root = std::fs::read(&first).map_err(|source| ReleaseError::Read {
        path: first.clone(),
        source,
    })?;
    RepositoryLoader::new(&root, file_url(&meta)?, file_url(&targets_dir(repo))?)
        .transport(FilesystemTransport)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(|e| ReleaseError::Load {
            dir: repo.to_owned(),
            reason: chain(&e),
        })
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn staging(repo: &Path) -> Result<PathBuf, ReleaseError> {
    let dir = repo.join(STAGING).join(format!(
        "{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| ReleaseError::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn rename(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    std::fs::rename(from, to).map_err(|source| ReleaseError::Write {
        path: to.to_owned(),
        source,
    })
}

/// What `init` wrote.
#[derive(Debug)]
pub struct Initialised {
    pub root: PathBuf,
    pub root_keys: usize,
    pub threshold: u64,
}

/// The root ceremony: builds `1.root.json` naming every root key found in
/// `keys` (threshold `threshold`) and the targets, snapshot and timestamp
/// keys (threshold 1 each), signed by every root key present.
pub async fn init(
    repo: &Path,
    keys: &Path,
    threshold: u64,
    expires: jiff::Timestamp,
) -> Result<Initialised, ReleaseError> {
    let threshold_nz = NonZeroU64::new(threshold).ok_or(ReleaseError::ZeroThreshold)?;
    let meta = metadata_dir(repo);
    let first = meta.join("1.root.json");
    if first.exists() {
        return Err(ReleaseError::AlreadyInitialised { path: first });
    }
    let root_files = root_key_files(keys)?;
    if (root_files.len() as u64) < threshold {
        return Err(ReleaseError::TooFewRootKeys {
            dir: keys.to_owned(),
            found: root_files.len(),
            threshold,
        });
    }
    let mut all_keys = HashMap::new();
    let mut roles = HashMap::new();
    let mut role_ids = Vec::new();
    for p in &root_files {
        let (id, key) = public_key(p).await?;
        let id: tough::schema::decoded::Decoded<tough::schema::decoded::Hex> =
            hex::decode(&id).expect("hex we wrote").into();
        role_ids.push(id.clone());
        all_keys.insert(id, key);
    }
    roles.insert(
        RoleType::Root,
        RoleKeys {
            keyids: role_ids,
            threshold: threshold_nz,
            _extra: HashMap::new(),
        },
    );
    for (role, ty) in [
        ("targets", RoleType::Targets),
        ("snapshot", RoleType::Snapshot),
        ("timestamp", RoleType::Timestamp),
    ] {
        let (id, key) = public_key(&key_path(keys, role)).await?;
        let id: tough::schema::decoded::Decoded<tough::schema::decoded::Hex> =
            hex::decode(&id).expect("hex we wrote").into();
        all_keys.insert(id.clone(), key);
        roles.insert(
            ty,
            RoleKeys {
                keyids: vec![id],
                threshold: NonZeroU64::MIN,
                _extra: HashMap::new(),
            },
        );
    }
    let root = Root {
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires,
        keys: all_keys,
        roles,
        _extra: HashMap::new(),
    };
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root),
        &sources(&root_files),
        &SystemRandom::new(),
    )
    .await
    .map_err(|e| ReleaseError::Sign {
        role: "root",
        reason: chain(&e),
    })?;
    let sigs = signed.signed().signatures.len() as u64;
    if sigs < threshold {
        return Err(ReleaseError::Sign {
            role: "root",
            reason: format!("{sigs} signature(s), threshold {threshold}"),
        });
    }
    std::fs::create_dir_all(&meta).map_err(|source| ReleaseError::Write {
        path: meta.clone(),
        source,
    })?;
    std::fs::create_dir_all(targets_dir(repo)).map_err(|source| ReleaseError::Write {
        path: targets_dir(repo),
        source,
    })?;
    let stage = staging(repo)?;
    let staged = stage.join("1.root.json");
    std::fs::write(&staged, signed.buffer()).map_err(|source| ReleaseError::Write {
        path: staged.clone(),
        source,
    })?;
    rename(&staged, &first)?;
    let _ = std::fs::remove_dir(&stage);
    Ok(Initialised {
        root: first,
        root_keys: root_files.len(),
        threshold,
    })
}

/// What `publish` wrote.
#[derive(Debug)]
pub struct Published {
    /// The agent's target name.
    pub name: String,
    pub sha256: String,
    pub length: u64,
    /// The worker's target name.
    pub worker_name: String,
    pub worker_sha256: String,
    pub worker_length: u64,
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
}

/// The versions the next targets, snapshot and timestamp metadata get.
#[derive(Debug, Clone, Copy)]
struct MetaVersions {
    targets: NonZeroU64,
    snapshot: NonZeroU64,
    timestamp: NonZeroU64,
}

/// A binary copied into the staging directory, with its target entry.
struct StagedTarget {
    path: PathBuf,
    name: String,
    target: tough::schema::Target,
}

/// The repository's editor and the next metadata versions; refuses a
/// release that exists or is not newer than the newest for `platform`.
async fn open_editor(
    repo: &Path,
    names: [&str; 2],
    version: Version,
    platform: &str,
) -> Result<(RepositoryEditor, MetaVersions), ReleaseError> {
    let (_, root_path) = latest_root(repo)?;
    if !metadata_dir(repo).join("timestamp.json").exists() {
        let editor = RepositoryEditor::new(&root_path)
            .await
            .map_err(|e| ReleaseError::Load {
                dir: repo.to_owned(),
                reason: chain(&e),
            })?;
        let first = MetaVersions {
            targets: NonZeroU64::MIN,
            snapshot: NonZeroU64::MIN,
            timestamp: NonZeroU64::MIN,
        };
        return Ok((editor, first));
    }
    let existing = load_existing(repo).await?;
    let mut newest = None::<Version>;
    for (n, t) in existing.all_targets() {
        if names.contains(&n.raw()) {
            return Err(ReleaseError::ReleaseExists {
                name: n.raw().to_owned(),
            });
        }
        let custom = t.custom.get("version").and_then(|v| v.as_str());
        if let Ok(r) = rel::parse_target(n.raw(), custom)
            && r.platform == platform
        {
            newest = newest.max(Some(r.version));
        }
    }
    if let Some(newest) = newest
        && version <= newest
    {
        return Err(ReleaseError::NotNewer { version, newest });
    }
    let next = |v: NonZeroU64| v.saturating_add(1);
    let versions = MetaVersions {
        targets: next(existing.targets().signed.version),
        snapshot: next(existing.snapshot().signed.version),
        timestamp: next(existing.timestamp().signed.version),
    };
    let editor = RepositoryEditor::from_repo(&root_path, existing)
        .await
        .map_err(|e| ReleaseError::Load {
            dir: repo.to_owned(),
            reason: chain(&e),
        })?;
    Ok((editor, versions))
}

/// Copies the agent and the worker into `stage` under their target names
/// and builds their entries, each naming the other: the pair is one signed
/// release. Copy first, then hash the copy: what is signed is what is
/// served.
async fn stage_targets(
    stage: &Path,
    files: [(&Path, &str); 2],
    version: Version,
    platform: &str,
) -> Result<[StagedTarget; 2], ReleaseError> {
    let mut entries = Vec::new();
    for (file, target_name) in files {
        let staged_target = stage.join(target_name);
        std::fs::copy(file, &staged_target).map_err(|source| ReleaseError::Read {
            path: file.to_owned(),
            source,
        })?;
        let mut target = tough::schema::Target::from_path(&staged_target)
            .await
            .map_err(|e| ReleaseError::Build {
                what: "target entry",
                reason: chain(&e),
            })?;
        target
            .custom
            .insert("version".into(), serde_json::json!(version.to_string()));
        target
            .custom
            .insert("platform".into(), serde_json::json!(platform));
        entries.push(StagedTarget {
            path: staged_target,
            name: target_name.to_owned(),
            target,
        });
    }
    let [mut agent, mut worker]: [StagedTarget; 2] = entries
        .try_into()
        .unwrap_or_else(|_| unreachable!("two files staged"));
    let (agent_sha, worker_sha) = (target_sha(&agent.target), target_sha(&worker.target));
    agent.target.custom.insert(
        "worker".into(),
        serde_json::json!({"name": worker.name, "sha256": worker_sha}),
    );
    worker.target.custom.insert(
        "agent".into(),
        serde_json::json!({"name": agent.name, "sha256": agent_sha}),
    );
    Ok([agent, worker])
}

fn target_sha(t: &tough::schema::Target) -> String {
    hex::encode(t.hashes.sha256.as_ref())
}

/// Adds the targets, signs targets, snapshot and timestamp with the role
/// keys in `keys`, and writes them to `stage/metadata`.
async fn sign_metadata(
    mut editor: RepositoryEditor,
    entries: &[StagedTarget],
    versions: MetaVersions,
    expiries: Expiries,
    keys: &Path,
    stage: &Path,
) -> Result<PathBuf, ReleaseError> {
    let build = |e: tough::error::Error| ReleaseError::Build {
        what: "repository metadata",
        reason: chain(&e),
    };
    for e in entries {
        editor
            .add_target(e.name.as_str(), e.target.clone())
            .map_err(build)?;
    }
    editor
        .targets_version(versions.targets)
        .map_err(build)?
        .targets_expires(expiries.targets)
        .map_err(build)?;
    editor
        .snapshot_version(versions.snapshot)
        .snapshot_expires(expiries.snapshot)
        .timestamp_version(versions.timestamp)
        .timestamp_expires(expiries.timestamp);
    let role_keys: Vec<PathBuf> = ["targets", "snapshot", "timestamp"]
        .iter()
        .map(|r| key_path(keys, r))
        .collect();
    for p in &role_keys {
        public_key(p).await?;
    }
    let signed = editor
        .sign(&sources(&role_keys))
        .await
        .map_err(|e| ReleaseError::Sign {
            role: "targets/snapshot/timestamp",
            reason: chain(&e),
        })?;
    let staged_meta = stage.join("metadata");
    signed
        .write(&staged_meta)
        .await
        .map_err(|e| ReleaseError::Write {
            path: staged_meta.clone(),
            source: std::io::Error::other(chain(&e)),
        })?;
    Ok(staged_meta)
}

/// Signs and publishes the pair `agent` + `worker` as release `version` for
/// `platform`: copies each to `targets/<sha256>.<name>` (names from
/// `askee_core::release::component_target_name`), then writes new targets
/// (both entries in one signed targets version, each naming the other in
/// its custom metadata) and snapshot metadata and, last, the timestamp
/// (each by rename, so a client never sees a half-written file or half a
/// release).
pub async fn publish(
    repo: &Path,
    keys: &Path,
    agent: &Path,
    worker: &Path,
    version: Version,
    platform: &str,
    expiries: Expiries,
) -> Result<Published, ReleaseError> {
    let name = rel::target_name(version, platform)?;
    let worker_name = rel::component_target_name(rel::Component::Worker, version, platform)?;
    let meta = metadata_dir(repo);
    let (editor, versions) = open_editor(repo, [&name, &worker_name], version, platform).await?;
    let stage = staging(repo)?;
    let entries = stage_targets(
        &stage,
        [(agent, &name), (worker, &worker_name)],
        version,
        platform,
    )
    .await?;
    let staged_meta = sign_metadata(editor, &entries, versions, expiries, keys, &stage).await?;

    // Publish: the binaries, then targets and snapshot, the timestamp last.
    for e in &entries {
        rename(
            &e.path,
            &targets_dir(repo).join(format!("{}.{}", target_sha(&e.target), e.name)),
        )?;
    }
    let (tv, sv) = (versions.targets.get(), versions.snapshot.get());
    for file in [format!("{tv}.targets.json"), format!("{sv}.snapshot.json")] {
        rename(&staged_meta.join(&file), &meta.join(&file))?;
    }
    rename(
        &staged_meta.join("timestamp.json"),
        &meta.join("timestamp.json"),
    )?;
    let _ = std::fs::remove_dir_all(&stage);
    let [agent_entry, worker_entry] = entries;
    Ok(Published {
        name,
        sha256: target_sha(&agent_entry.target),
        length: agent_entry.target.length,
        worker_name,
        worker_sha256: target_sha(&worker_entry.target),
        worker_length: worker_entry.target.length,
        targets_version: tv,
        snapshot_version: sv,
        timestamp_version: versions.timestamp.get(),
    })
}

/// Signs a new timestamp (version + 1, expiring at `expires`) for the
/// snapshot the repository serves now; needs only the timestamp key.
pub async fn refresh_timestamp(
    repo: &Path,
    keys: &Path,
    expires: jiff::Timestamp,
) -> Result<u64, ReleaseError> {
    let existing = load_existing(repo).await?;
    let meta = metadata_dir(repo);
    let snap_version = existing.snapshot().signed.version;
    let snap_file = if existing.root().signed.consistent_snapshot {
        meta.join(format!("{snap_version}.snapshot.json"))
    } else {
        meta.join("snapshot.json")
    };
    let snap = std::fs::read(&snap_file).map_err(|source| ReleaseError::Read {
        path: snap_file.clone(),
        source,
    })?;
    let version = existing.timestamp().signed.version.saturating_add(1);
    let mut ts = Timestamp::new(SPEC_VERSION.into(), version, expires);
    ts.meta.insert(
        "snapshot.json".into(),
        Metafile {
            length: Some(snap.len() as u64),
            hashes: Some(Hashes {
                sha256: askee_core::signing::sha256(&snap).to_vec().into(),
                _extra: HashMap::new(),
            }),
            version: snap_version,
            _extra: HashMap::new(),
        },
    );
    let key = key_path(keys, "timestamp");
    public_key(&key).await?;
    let signed = SignedRole::new(
        ts,
        &KeyHolder::Root(existing.root().signed.clone()),
        &sources(&[key]),
        &SystemRandom::new(),
    )
    .await
    .map_err(|e| ReleaseError::Sign {
        role: "timestamp",
        reason: chain(&e),
    })?;
    let stage = staging(repo)?;
    let staged = stage.join("timestamp.json");
    std::fs::write(&staged, signed.buffer()).map_err(|source| ReleaseError::Write {
        path: staged.clone(),
        source,
    })?;
    rename(&staged, &meta.join("timestamp.json"))?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(version.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_times_or_signed_durations() {
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let at = |s| parse_expiry("x", s, now).unwrap().to_string();
        assert_eq!(at("1d"), "2030-01-02T00:00:00Z");
        assert_eq!(at("-1h"), "2029-12-31T23:00:00Z");
        assert_eq!(at("90s"), "2030-01-01T00:01:30Z");
        assert_eq!(at("2031-05-06T07:08:09Z"), "2031-05-06T07:08:09Z");
        for bad in ["", "d", "1w", "1.5h", "soon", "99999999999999999d"] {
            assert!(parse_expiry("x", bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn init_needs_the_threshold_of_root_keys_and_never_overwrites_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let made = generate_keys(&keys, 3).await.unwrap();
        assert_eq!(made.len(), 6);
        assert!(matches!(
            generate_keys(&keys, 3).await,
            Err(ReleaseError::KeyExists { .. })
        ));
        let far = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
        let repo = dir.path().join("repo");
        assert!(matches!(
            init(&repo, &keys, 4, far).await,
            Err(ReleaseError::TooFewRootKeys { found: 3, .. })
        ));
        let done = init(&repo, &keys, 2, far).await.unwrap();
        let root: tough::schema::Signed<Root> =
            serde_json::from_slice(&std::fs::read(&done.root).unwrap()).unwrap();
        assert_eq!(root.signatures.len(), 3);
        assert_eq!(root.signed.roles[&RoleType::Root].threshold.get(), 2);
        // The root verifies against itself with two of its three signatures,
        // not with one.
        let mut two = root.clone();
        two.signatures.truncate(2);
        assert!(root.signed.verify_role(&two).is_ok());
        let mut one = root.clone();
        one.signatures.truncate(1);
        assert!(root.signed.verify_role(&one).is_err());
        assert!(matches!(
            init(&repo, &keys, 2, far).await,
            Err(ReleaseError::AlreadyInitialised { .. })
        ));
    }
}
