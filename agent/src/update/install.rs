//! The versioned install layout (`versions/<version>/`, the `current` symlink)
//! and the binaries in it.

use super::*;

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

    pub(super) fn versions(&self) -> PathBuf {
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
    pub(super) fn prune(&self, keep: &[&str]) {
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

pub(super) fn exe_name(c: rel::Component) -> String {
    format!("{}{}", c.file_name(), std::env::consts::EXE_SUFFIX)
}

/// The release installed in `layout`: the name of the version directory
/// `current` points at, else (an installer that named it otherwise) the
/// build version.
pub fn current_version(layout: &Layout) -> Result<Version, UpdateError> {
    Ok(Version::parse(&layout.current()?).unwrap_or_else(|_| build_version()))
}
