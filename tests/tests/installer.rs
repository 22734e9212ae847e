//! deploy/install-agent.sh and the systemd units, with the real script, the
//! real binaries and the real `systemd-analyze verify`: everything goes into
//! temporary root directories, nothing on the host is touched.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use askee_testkit::process::{ServerProcess, agent_command, binary};
use askee_testkit::workspace_root;

/// Where `askee-agent` and `askee-agent-worker` were built.
fn bin_dir() -> PathBuf {
    let agent = binary("askee-agent");
    let dir = agent.parent().unwrap().to_path_buf();
    assert!(
        dir.join("askee-agent-worker").exists(),
        "askee-agent-worker is not built beside {}",
        agent.display()
    );
    dir
}

/// Runs the installer without a terminal (stdin is /dev/null).
fn install(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(workspace_root().join("deploy/install-agent.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/install-agent.sh")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether two files hold the same bytes (read in chunks: debug binaries
/// are large).
fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read as _;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).unwrap();
            if n == 0 {
                return false;
            }
            nb += n;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

/// What a re-run must leave alone: every path under `dir` with its mode,
/// length and modification time, and the content of the small files (the
/// binaries are hundreds of MB in debug builds: an unchanged mtime shows
/// they were not rewritten).
type Entry = (PathBuf, u32, u64, std::time::SystemTime, Option<Vec<u8>>);

fn snapshot(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let small = meta.is_file() && meta.len() < 1 << 20;
            let content = small.then(|| std::fs::read(&p).unwrap());
            out.push((
                p.clone(),
                meta.permissions().mode() & 0o7777,
                meta.len(),
                meta.modified().unwrap(),
                content,
            ));
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `systemd-analyze verify` of `unit` (a path inside `root`, as the booted
/// system sees it) against `root`, which gets a copy of the host's systemd
/// unit tree (the targets the unit refers to). Returns its complaints, if any:
/// verify exits 0 on unknown keys and bad values and only warns on stderr,
/// so any output counts as a failure.
fn verify_unit(root: &Path, unit: &str) -> Result<(), String> {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: run tests/setup (tests/setup.d/deploy.sh installs systemd)"
    );
    let units = root.join("usr/lib/systemd/system");
    if !units.exists() {
        std::fs::create_dir_all(units.parent().unwrap()).unwrap();
        let host = ["/usr/lib/systemd/system", "/lib/systemd/system"]
            .into_iter()
            .find(|d| Path::new(d).join("multi-user.target").exists())
            .expect("the host's systemd unit directory");
        let cp = Command::new("cp")
            .arg("-a")
            .arg(host)
            .arg(&units)
            .output()
            .unwrap();
        assert!(cp.status.success(), "copy the unit tree: {}", text(&cp));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

#[test]
fn installs_into_a_root_and_runs_again_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let bins = bin_dir();
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--bin",
        bins.to_str().unwrap(),
        "--no-consent",
    ];
    let out = install(&args);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("consent grant") && stdout.contains("join"),
        "the next steps are printed: {}",
        text(&out)
    );

    for b in ["askee-agent", "askee-agent-worker"] {
        let installed = root.join("usr/local/bin").join(b);
        assert_eq!(mode(&installed), 0o755, "{}", installed.display());
        assert!(
            same_content(&installed, &bins.join(b)),
            "{b} is a copy of the built binary"
        );
    }
    let unit_path = root.join("etc/systemd/system/askee-agent.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(mode(&unit_path), 0o644);
    assert!(!unit.contains("@BINDIR@"), "{unit}");
    for line in [
        "ExecStart=/usr/local/bin/askee-agent run",
        "User=askee",
        "StateDirectory=askee",
        "Delegate=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}:\n{unit}");
    }
    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/askee.conf")).unwrap();
    let entry: Vec<&str> = sysusers
        .lines()
        .find(|l| l.starts_with("u "))
        .expect("a sysusers user line")
        .split_whitespace()
        .collect();
    assert_eq!(&entry[..3], &["u", "askee", "-"], "{sysusers}");
    assert!(
        sysusers.contains("/var/lib/askee /usr/sbin/nologin"),
        "{sysusers}"
    );
    let state = root.join("var/lib/askee");
    assert_eq!(mode(&state), 0o700);
    assert!(
        !state.join("node.key").exists(),
        "--no-consent creates no identity"
    );

    // The installed unit is one systemd accepts.
    verify_unit(&root, "/etc/systemd/system/askee-agent.service")
        .unwrap_or_else(|e| panic!("systemd-analyze rejects the agent unit: {e}"));

    // A second run changes nothing.
    let before = snapshot(&root);
    let again = install(&args);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        before == snapshot(&root),
        "a re-run changed the installed files"
    );

    // Another prefix lands in the unit too (same root: the unit is replaced).
    let out = install(&[
        "--root",
        root.to_str().unwrap(),
        "--prefix",
        "/opt/askee",
        "--bin",
        bins.to_str().unwrap(),
        "--no-consent",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/askee/bin/askee-agent run"),
        "{unit}"
    );
    assert_eq!(mode(&root.join("opt/askee/bin/askee-agent-worker")), 0o755);
    verify_unit(&root, "/etc/systemd/system/askee-agent.service")
        .unwrap_or_else(|e| panic!("systemd-analyze rejects the agent unit: {e}"));
}

#[test]
fn installer_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let root_s = root.to_str().unwrap();
    let bins = bin_dir();
    let bins_s = bins.to_str().unwrap();

    // No binaries in --bin.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = install(&[
        "--root",
        root_s,
        "--bin",
        empty.to_str().unwrap(),
        "--no-consent",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("askee-agent is missing"),
        "{}",
        text(&out)
    );
    // Neither a coordinator nor --no-consent.
    let out = install(&["--root", root_s, "--bin", bins_s]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--coordinator URL is needed"),
        "{}",
        text(&out)
    );
    // An unknown option.
    let out = install(&["--root", root_s, "--bin", bins_s, "--frobnicate"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown option: --frobnicate"),
        "{}",
        text(&out)
    );
    // Nothing was installed by the refused runs.
    assert!(!root.join("usr").exists(), "a refused run installed files");
}

#[test]
fn consent_is_never_granted_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("askee.db").display());
    let server = ServerProcess::start(&db, &tmp.path().join("data"), Duration::from_secs(60));
    let root = tmp.path().join("root");
    let home = root.join("var/lib/askee");
    let bins = bin_dir();
    let url = server.url();
    let base = [
        "--root",
        root.to_str().unwrap(),
        "--bin",
        bins.to_str().unwrap(),
        "--coordinator",
        url.as_str(),
    ];
    let status = || agent_command(&home, &["status"]);

    // No terminal, no limits: installed, identity created, joined, and then
    // it stops before granting, saying how to grant.
    let out = install(&base);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consent needs an explicit answer") && err.contains("consent grant"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Tasks can never touch"),
        "the manifest was shown: {}",
        text(&out)
    );
    assert_eq!(mode(&home.join("node.key")), 0o600);
    let (ok, out_s, _) = status();
    assert!(ok && out_s.starts_with("no consent granted"), "{out_s}");

    // --yes without every limit is refused, naming the missing ones.
    let mut partial = base.to_vec();
    partial.extend(["--yes", "--cpu-percent", "20"]);
    let out = install(&partial);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ram-mb") && err.contains("--task-types"),
        "{}",
        text(&out)
    );
    let (ok, out_s, _) = status();
    assert!(ok && out_s.starts_with("no consent granted"), "{out_s}");

    // Every limit spelled out: granted, with exactly those limits.
    let mut full = base.to_vec();
    full.extend([
        "--yes",
        "--cpu-percent",
        "20",
        "--ram-mb",
        "512",
        "--storage-gb",
        "1",
        "--bandwidth-mbps",
        "1",
        "--task-types",
        "data-processing",
        "--days",
        "7",
    ]);
    let out = install(&full);
    assert!(out.status.success(), "{}", text(&out));
    let (ok, out_s, err_s) = status();
    assert!(ok && out_s.contains(": active"), "{out_s}{err_s}");
    assert!(out_s.contains("at most 20% of your CPU"), "{out_s}");

    // Running it again neither joins nor grants again.
    let out = install(&full);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("consent already granted"),
        "{}",
        text(&out)
    );
    let journal = std::fs::read_to_string(home.join("journal.jsonl")).unwrap();
    let grants = journal
        .lines()
        .filter(|l| l.contains("\"consent.grant\""))
        .count();
    assert_eq!(grants, 1, "{journal}");

    // After a revocation, a re-run asks again, and again not silently.
    let (ok, _, err_s) = agent_command(&home, &["revoke"]);
    assert!(ok, "{err_s}");
    let out = install(&base);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (ok, out_s, _) = status();
    assert!(ok && out_s.contains(": revoked"), "{out_s}");
    server.kill();
}

#[test]
fn server_unit_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(binary("askee-server"), bin.join("askee-server")).unwrap();
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    let unit =
        std::fs::read_to_string(workspace_root().join("deploy/askee-server.service")).unwrap();
    for line in [
        "EnvironmentFile=-/etc/askee/server.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=askee-server",
        "ExecStart=/usr/local/bin/askee-server serve $ASKEE_SERVE_ARGS",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    std::fs::write(units.join("askee-server.service"), &unit).unwrap();
    verify_unit(root, "/etc/systemd/system/askee-server.service")
        .unwrap_or_else(|e| panic!("systemd-analyze rejects deploy/askee-server.service: {e}"));
}
