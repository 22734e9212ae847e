//! The one way the agent writes its state files (the node key, the consent
//! state, queued results, the run and update status; its settings through
//! [`write_shared`]): readable by the volunteer's account only, and replaced
//! whole or not at all, so a crash or a full disk never leaves a
//! half-written file behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};

mod sys;

/// Writes `bytes` to a temporary file beside `path` (owner-only, synced),
/// then renames it over `path`.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_whole(path, bytes, true)
}

/// The same for a file others may read (the settings and the update's
/// trusted root, which an installer may write for another account): the
/// mode follows the umask.
pub fn write_shared(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_whole(path, bytes, false)
}

fn write_whole(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = temporary(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        sys::owner_only(&mut opts);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `.<name>.tmp` beside `path`: hidden, and never mistaken for the file
/// itself by a reader that lists the directory (the outbox reads `*.json`).
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
