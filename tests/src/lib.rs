//! Shared test harness: golden files through one [`check`] helper, free
//! ports, and a throwaway PostgreSQL cluster per test.

pub mod browser;
pub mod dns;
pub mod pg;
pub mod process;
pub mod sim;
pub mod volunteer;
pub mod work;

use std::path::{Path, PathBuf};

/// Compares `actual` with the golden file at `path` (relative to the
/// workspace root). With `ASKEE_BLESS=1` the file is rewritten instead.
pub fn check(path: impl AsRef<Path>, actual: &str) {
    let path = workspace_root().join(path);
    if std::env::var_os("ASKEE_BLESS").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create golden dir");
        }
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        panic!(
            "{} differs from what the code produces; review the change and run with ASKEE_BLESS=1 to accept it\n--- first differing line: {:?}",
            path.display(),
            expected
                .lines()
                .zip(actual.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on loopback")
}
