//! deploy/install-agent.sh and the systemd units, with the real script, the
//! real binaries and the real `systemd-analyze verify`: everything goes into
//! temporary root directories, nothing on the host is touched.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use askee_testkit::process::{ServerProcess, agent_command, binary, built_agent_version};
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

    // One version in the agent's own install directory, `current` at it.
    let version = built_agent_version();
    let install_dir = root.join("var/lib/askee-agent");
    assert_eq!(mode(&install_dir), 0o700);
    assert_eq!(
        std::fs::read_link(install_dir.join("current")).unwrap(),
        Path::new("versions").join(&version)
    );
    for b in ["askee-agent", "askee-agent-worker"] {
        let installed = install_dir.join("versions").join(&version).join(b);
        assert_eq!(mode(&installed), 0o755, "{}", installed.display());
        assert!(
            same_content(&installed, &bins.join(b)),
            "{b} is a copy of the built binary"
        );
    }
    // The command line goes through current; no stale worker in PREFIX/bin.
    assert_eq!(
        std::fs::read_link(root.join("usr/local/bin/askee-agent")).unwrap(),
        Path::new("/var/lib/askee-agent/current/askee-agent")
    );
    assert!(!root.join("usr/local/bin/askee-agent-worker").exists());
    assert!(
        stdout.contains("updates: off"),
        "the installer says updates are off: {}",
        text(&out)
    );
    assert!(!root.join("var/lib/askee/config.toml").exists());
    let unit_path = root.join("etc/systemd/system/askee-agent.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(mode(&unit_path), 0o644);
    assert!(!unit.contains("@INSTALLDIR@"), "{unit}");
    for line in [
        "ExecStart=/var/lib/askee-agent/current/askee-agent run",
        "User=askee",
        "StateDirectory=askee askee-agent",
        "ReadWritePaths=/var/lib/askee /var/lib/askee-agent",
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

    // Another prefix moves only the command-line symlink.
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
    assert_eq!(
        std::fs::read_link(root.join("opt/askee/bin/askee-agent")).unwrap(),
        Path::new("/var/lib/askee-agent/current/askee-agent")
    );
    verify_unit(&root, "/etc/systemd/system/askee-agent.service")
        .unwrap_or_else(|e| panic!("systemd-analyze rejects the agent unit: {e}"));
}

/// `--update-repo` with `--trusted-root` installs the root and turns updates
/// on in config.toml; the installed agent then checks that repository (a
/// real server publishing a real release pair) from the installed layout,
/// and installs the pair there.
#[test]
fn installs_update_settings_and_the_installed_agent_updates_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let server_bin = binary("askee-server");
    let run = |args: &[&str]| {
        let out = Command::new(&server_bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "askee-server {args:?}: {}",
            text(&out)
        );
    };
    let (keys, repo) = (d.join("keys"), d.join("repo"));
    let (keys_s, repo_s) = (keys.to_str().unwrap(), repo.to_str().unwrap());
    run(&["release", "keys", "generate", "--dir", keys_s]);
    run(&["release", "init", "--repo", repo_s, "--keys", keys_s]);
    let db = format!("sqlite://{}", d.join("askee.db").display());
    let server = ServerProcess::start_with(
        &db,
        &d.join("data"),
        Duration::from_secs(60),
        &["--tuf-repo", repo_s],
    );
    let url = format!("{}/tuf", server.url());
    let root = d.join("root");
    let bins = bin_dir();
    let trusted = repo.join("metadata/1.root.json");
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--bin",
        bins.to_str().unwrap(),
        "--no-consent",
        "--update-repo",
        url.as_str(),
        "--trusted-root",
        trusted.to_str().unwrap(),
    ];
    let out = install(&args);
    assert!(out.status.success(), "{}", text(&out));
    let home = root.join("var/lib/askee");
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    let parsed: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(parsed["update"]["repository"].as_str(), Some(url.as_str()));
    assert_eq!(
        parsed["update"]["trusted_root"].as_str(),
        Some("update-root.json")
    );
    assert!(
        std::fs::read(home.join("update-root.json")).unwrap() == std::fs::read(&trusted).unwrap()
    );
    // Idempotent with the update settings too.
    let before = snapshot(&root);
    let again = install(&args);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        before == snapshot(&root),
        "a re-run changed the installed files"
    );
    verify_unit(&root, "/etc/systemd/system/askee-agent.service")
        .unwrap_or_else(|e| panic!("systemd-analyze rejects the agent unit: {e}"));

    // Only one of the pair, or something that is not root metadata: refused.
    let out = install(&[
        "--root",
        root.to_str().unwrap(),
        "--bin",
        bins.to_str().unwrap(),
        "--no-consent",
        "--update-repo",
        url.as_str(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("go together"),
        "{}",
        text(&out)
    );
    let not_root = d.join("not-root.json");
    std::fs::write(&not_root, br#"{"signed":{"_type":"targets","version":1}}"#).unwrap();
    let out = install(&[
        "--root",
        root.to_str().unwrap(),
        "--bin",
        bins.to_str().unwrap(),
        "--no-consent",
        "--update-repo",
        url.as_str(),
        "--trusted-root",
        not_root.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not TUF root metadata"),
        "{}",
        text(&out)
    );

    // The installed agent updates itself inside the installed layout.
    let marked = |src: &Path, name: &str| {
        let p = d.join(name);
        let mut b = std::fs::read(src).unwrap();
        b.extend_from_slice(b"\ninstaller-test release\n");
        std::fs::write(&p, b).unwrap();
        p
    };
    let agent = marked(&bins.join("askee-agent"), "agent-9");
    let worker = marked(&bins.join("askee-agent-worker"), "worker-9");
    run(&[
        "release",
        "publish",
        "--agent",
        agent.to_str().unwrap(),
        "--worker",
        worker.to_str().unwrap(),
        "--version",
        "9.0.0",
        "--repo",
        repo_s,
        "--keys",
        keys_s,
    ]);
    let installed = root.join("var/lib/askee-agent");
    let out = Command::new(installed.join("current/askee-agent"))
        .arg("--home")
        .arg(&home)
        .args(["update", "apply"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_link(installed.join("current")).unwrap(),
        Path::new("versions/9.0.0")
    );
    assert!(same_content(
        &installed.join("current/askee-agent-worker"),
        &worker
    ));
    assert!(same_content(&installed.join("current/askee-agent"), &agent));
    let kept = installed.join("versions").join(built_agent_version());
    assert!(same_content(
        &kept.join("askee-agent"),
        &bins.join("askee-agent")
    ));
    // Running the installer again (say, for consent) does not downgrade.
    let out = install(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keeping the newer version 9.0.0"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_link(installed.join("current")).unwrap(),
        Path::new("versions/9.0.0")
    );
    server.kill();
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
