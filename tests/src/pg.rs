//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `pg_ctl -w
//! start` on a free loopback port, `pg_ctl -m immediate stop` and removal on
//! drop. Needs the PostgreSQL server binaries (`tests/setup` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// Write end of the reaper's stdin: when this process ends in any way
    /// (even SIGKILL) the pipe closes and the reaper stops the cluster.
    reaper: Option<(std::process::Child, std::process::ChildStdin)>,
}

const SETUP_HINT: &str = "run tests/setup (tests/setup.d/postgres.sh installs Debian's postgresql)";

fn find_bindir() -> PathBuf {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return d;
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|d| has(d))
            .collect();
        dirs.sort();
        if let Some(d) = dirs.pop() {
            return d;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has(&d) {
                return d;
            }
        }
    }
    panic!(
        "postgresql server binaries (initdb, pg_ctl) not found via pg_config, /usr/lib/postgresql/*/bin or PATH: {SETUP_HINT}"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Starts a fresh cluster; panics with a clear message when it cannot.
    pub fn start() -> PgCluster {
        let bindir = find_bindir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("askee-pg-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temp dir for the postgresql cluster");
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown of {} to the postgres user failed (is there a postgres system user? {SETUP_HINT})",
                dir.path().display()
            );
        }
        let mut cluster = PgCluster {
            bindir,
            dir,
            port: 0,
            as_postgres,
            reaper: None,
        };
        let data = cluster.data_dir();
        let out = cluster
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "askee",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let out = cluster
                .command("pg_ctl")
                .arg("-w")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200 -c autovacuum_naptime=1",
                    cluster.dir.path().display()
                ))
                .arg("start")
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                cluster.port = port;
                cluster.reaper = Some(cluster.spawn_reaper());
                return cluster;
            }
            last_error = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(cluster.dir.path().join("log")).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed five times: {last_error}");
    }

    /// A shell that waits for EOF on its stdin, then stops the cluster and
    /// removes its directory. Statics are never dropped, so a cluster shared
    /// by a test binary relies on this.
    fn spawn_reaper(&self) -> (std::process::Child, std::process::ChildStdin) {
        let runas = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "trap '' INT TERM HUP; read -r _ignored; {runas}\"$1/pg_ctl\" -m immediate -w -D \"$2\" stop >/dev/null 2>&1; rm -rf \"$3\""
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("askee-pg-reaper")
            .arg(&self.bindir)
            .arg(self.data_dir())
            .arg(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the postgresql reaper shell");
        let stdin = child.stdin.take().expect("reaper stdin is piped");
        (child, stdin)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bindir.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://askee@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "askee",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://askee@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Closing the pipe makes the reaper stop the cluster (immediate
        // mode) and remove its directory; wait until it has.
        if let Some((mut child, stdin)) = self.reaper.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
