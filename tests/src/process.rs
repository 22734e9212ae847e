//! Real askee processes for end-to-end tests: the workspace's built
//! binaries, started on a free loopback port and stopped (or killed) at will.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a binary built by this workspace (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (tests/run does)",
        path.display()
    );
    path
}

/// The version the built agent reports (`askee-agent --version`).
pub fn built_agent_version() -> String {
    let out = Command::new(binary("askee-agent"))
        .arg("--version")
        .output()
        .expect("askee-agent --version runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .expect("askee-agent --version prints a version")
        .to_owned()
}

/// A running `askee-server serve`.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on `database_url` with keys in `data_dir`, and
    /// returns once it accepts connections (it binds only after the store
    /// is open and migrated), or panics after `timeout`.
    pub fn start(database_url: &str, data_dir: &Path, timeout: Duration) -> Self {
        Self::start_with(database_url, data_dir, timeout, &[])
    }

    /// Like [`start`](Self::start), with extra `serve` arguments.
    pub fn start_with(
        database_url: &str,
        data_dir: &Path,
        timeout: Duration,
        serve_args: &[&str],
    ) -> Self {
        let port = crate::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(binary("askee-server"))
            .args(["--database-url", database_url])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--listen", &addr.to_string()])
            .args(serve_args)
            .env("ASKEE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn askee-server");
        let mut server = Self { child, addr };
        let deadline = Instant::now() + timeout;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = server.child.try_wait().expect("poll askee-server") {
                panic!("askee-server exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "askee-server did not listen on {addr} within {timeout:?}"
            );
            // Wait on the socket itself, briefly, before asking again.
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, as systemd stops a service; waits for the exit at most
    /// `limit` (then SIGKILLs and panics).
    pub fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll askee-server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "askee-server did not stop within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill askee-server");
        self.child.wait().expect("reap askee-server");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an `askee-server` command to completion; returns (success, stdout).
pub fn server_command(database_url: &str, data_dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("askee-server"))
        .args(["--database-url", database_url])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("ASKEE_LOG", "warn")
        .output()
        .expect("run askee-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `askee-agent` with `home` as its home; returns (success, stdout, stderr).
pub fn agent_command(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("askee-agent"))
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run askee-agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `askee-agent run` daemon.
pub struct AgentProcess {
    child: Child,
    pub home: PathBuf,
}

impl AgentProcess {
    /// Starts `askee-agent run` with `home` (already initialised and granted)
    /// and extra `run` arguments; its log goes to `home/agent.log`.
    pub fn start(home: &Path, run_args: &[&str]) -> Self {
        let log = std::fs::File::create(home.join("agent.log")).expect("agent log");
        let child = Command::new(binary("askee-agent"))
            .arg("--home")
            .arg(home)
            .arg("run")
            .args(run_args)
            .env("ASKEE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn askee-agent");
        Self {
            child,
            home: home.to_owned(),
        }
    }

    /// The agent's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("agent.log")).unwrap_or_default()
    }

    /// The agent's local journal entries so far.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.home.join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for AgentProcess {
    /// SIGTERM first, so the daemon terminates its sandboxed tasks (a
    /// SIGKILLed agent would leave them to their own wall-clock limit).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
