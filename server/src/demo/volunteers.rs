//! The demo's local volunteers: the `askee-agent` binary beside this one,
//! each agent's home, consent through the agent's own CLI and its daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// One local volunteer: its home and, once started, its daemon.
pub(super) struct Agent {
    pub(super) name: String,
    pub(super) home: PathBuf,
    pub(super) node_id: String,
    pub(super) byzantine: bool,
    pub(super) daemon: Option<Child>,
}

impl Agent {
    pub(super) fn journal_count(&self, kind: &str) -> usize {
        std::fs::read_to_string(self.home.join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == kind)
            .count()
    }
}

impl Drop for Agent {
    /// SIGTERM first, so the daemon stops its sandboxed tasks cleanly.
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            sys::terminate(&mut child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(unix)]
mod sys {
    /// Asks a child to stop (SIGTERM) through kill(1).
    pub fn terminate(child: &mut std::process::Child) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
}

#[cfg(not(unix))]
mod sys {
    pub fn terminate(child: &mut std::process::Child) {
        let _ = child.kill();
    }
}

/// `askee-agent` beside this executable.
pub(super) fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let name = format!("askee-agent{}", std::env::consts::EXE_SUFFIX);
    let path = exe
        .parent()
        .map(|d| d.join(&name))
        .context("this executable has no directory")?;
    if !path.exists() {
        bail!(
            "{} is missing: build the agent next to the server first, e.g. \
             `cargo build --release -p askee-server -p askee-agent` (examples/demo.sh does it all)",
            path.display()
        );
    }
    Ok(path)
}

/// Creates `dir` fresh: an earlier demo's directory (it holds the marker
/// file) is wiped, anything else that exists is refused.
pub(super) fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    const MARKER: &str = ".askee-demo-dir";
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not an earlier demo's directory; choose another with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "created by `askee-server demo`; wiped by the next one\n",
    )
    .with_context(|| format!("writing the marker in {}", dir.display()))?;
    Ok(())
}

/// Runs one agent command to completion, printing it first.
pub(super) async fn agent_cli(
    bin: &Path,
    home: &Path,
    args: &[&str],
    show_output: bool,
) -> anyhow::Result<String> {
    println!(
        "  $ askee-agent --home {} {}",
        home.display(),
        args.join(" ")
    );
    let out = tokio::process::Command::new(bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .env("ASKEE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "askee-agent {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if show_output {
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            println!("      {line}");
        }
    }
    Ok(stdout)
}
