//! Tidy checks over askee's source tree, in the spirit of rust-analyzer's
//! `tidy` tests: `tests/tidy.rs` runs them as ordinary tests. This library
//! lists the tree's files and holds the checks' logic as pure functions over
//! one file's text (or a few files'), so each is unit-tested on small inputs.

pub mod items;
pub mod modules;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One file of the tree: its path from the workspace root (with `/`) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// The workspace root: this crate sits in `tests/tidy`. `ASKEE_TIDY_ROOT`
/// points the checks at another tree (an exported commit, say).
pub fn workspace_root() -> PathBuf {
    match std::env::var_os("ASKEE_TIDY_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// Upstream and generated code the checks do not judge.
pub fn is_skipped(path: &str) -> bool {
    path.starts_with("vendor/")
        || path.starts_with("fuzz/target/")
        || path.split('/').any(|c| c == "target" || c == ".git")
}

/// Whether a path is a crate's integration tests (`server/tests/..`,
/// `tests/tests/..`): a `tests` folder below the top level, since the
/// top-level `tests/` is the testkit crate, whose library is ordinary code.
pub fn is_test_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts[..parts.len() - 1]
        .iter()
        .skip(1)
        .any(|c| *c == "tests")
}

/// Whether a path sits in a platform module (`sys/` folder or `sys.rs`),
/// the one place `unsafe` belongs.
pub fn is_sys_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts[..parts.len() - 1].contains(&"sys") || parts.last() == Some(&"sys.rs")
}

/// The tree's files (tracked, or new and not ignored), as paths from the
/// root, present on disk and not skipped. Without git, the tree is walked.
pub fn tree_files(root: &Path) -> Vec<String> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let mut files: Vec<String> = match listed {
        Some(out) => String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        None => walk(root, ""),
    };
    files.retain(|p| !is_skipped(p) && root.join(p).is_file());
    files.sort();
    files.dedup();
    files
}

fn walk(root: &Path, rel: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if is_skipped(&format!("{path}/")) || name_is_hidden(&path) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(root, &path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out
}

fn name_is_hidden(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|n| n.starts_with('.'))
}

/// The tree's Rust files with their text.
pub fn rust_files(root: &Path) -> Vec<SourceFile> {
    tree_files(root)
        .into_iter()
        .filter(|p| p.ends_with(".rs"))
        .filter_map(|path| {
            // A file another change removed since the listing is simply gone.
            let text = std::fs::read_to_string(root.join(&path)).ok()?;
            Some(SourceFile { path, text })
        })
        .collect()
}

/// A check's result: every violation, one a line, or nothing.
pub fn report(check: &str, violations: &[String]) -> Result<(), String> {
    if violations.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{check}: {} violation(s)\n  {}\n",
        violations.len(),
        violations.join("\n  ")
    ))
}

/// Where the out-of-line modules of the file at `path` live: beside it for a
/// crate root or `mod.rs`, else in the folder named after it.
pub fn child_module_dir(path: &str) -> String {
    let (parent, file) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let dir_name = parent.rsplit('/').next().unwrap_or("");
    let is_root = matches!(stem, "mod" | "lib" | "main" | "build")
        || matches!(
            dir_name,
            "tests" | "benches" | "examples" | "bin" | "fuzz_targets"
        );
    match (is_root, parent.is_empty()) {
        (true, _) => parent.to_string(),
        (false, true) => stem.to_string(),
        (false, false) => format!("{parent}/{stem}"),
    }
}

/// Paths of the files and folders of modules declared `#[cfg(test)] mod x;`
/// (`core/src/rules/tests.rs`, `x/`): test code, though nothing in them says so.
pub fn test_module_paths(files: &[SourceFile]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let Ok(file) = syn::parse_file(&f.text) else {
            continue;
        };
        let dir = child_module_dir(&f.path);
        for name in items::test_module_decls(&file) {
            let base = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            out.push(format!("{base}.rs"));
            out.push(format!("{base}/"));
        }
    }
    out
}

/// Whether `path` is test code: integration tests, or a test-only module.
pub fn is_test_code(path: &str, test_modules: &[String]) -> bool {
    is_test_path(path)
        || test_modules
            .iter()
            .any(|m| path == m || (m.ends_with('/') && path.starts_with(m.as_str())))
}
