//! Signed agent self-update, end to end with real processes: the real
//! `askee-server` serves a TUF repository over loopback (`serve
//! --tuf-repo`), releases are published with the real `askee-server
//! release` CLI, and a copy of the real `askee-agent` updates itself.
//!
//! Releases are distinct real binaries: copies of the built agent and of
//! its sandbox worker with a marker appended (an ELF runs the same with
//! trailing bytes), published as pairs under different versions, and
//! installed in the versioned layout the installer lays out
//! (`install/versions/<v>/`, `install/current -> versions/<v>`). Attacks use what an attacker would hold: a
//! copy of old metadata, the online snapshot/timestamp keys, a key of
//! their own (built with the `tough` library, as an attacker's tool).

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use askee_testkit::process::{ServerProcess, binary, built_agent_version};
use askee_testkit::work::wait_for;
use serde_json::Value;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{
    Hashes, KeyHolder, Metafile, RoleType, Root, Signed, Snapshot, Target, Targets, Timestamp,
};

const AVAILABLE: i32 = 10;

/// Runs `askee-server` with `args`; panics unless it succeeds.
fn release(args: &[&str]) -> String {
    let out = Command::new(binary("askee-server"))
        .args(args)
        .env("ASKEE_LOG", "warn")
        .output()
        .expect("run askee-server");
    assert!(
        out.status.success(),
        "askee-server {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    server: ServerProcess,
    /// The installed agent as the service runs it: `install/current/askee-agent`.
    agent: PathBuf,
    /// Its original bytes.
    original: Vec<u8>,
    /// The original worker's bytes.
    original_worker: Vec<u8>,
    /// The version directory the agent was installed as.
    first: String,
    home: PathBuf,
}

impl Fixture {
    /// Keys (3 root keys, threshold 2), the root ceremony, a server serving
    /// the repository, an agent installed in its own directory with the
    /// shipped root, and the agent's config pointing at the repository.
    fn new(extra_serve: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        release(&["release", "keys", "generate", "--dir", s(&d.join("keys"))]);
        let out = release(&[
            "release",
            "init",
            "--repo",
            s(&d.join("repo")),
            "--keys",
            s(&d.join("keys")),
            "--root-threshold",
            "2",
        ]);
        assert!(out.contains("2-of-3"), "{out}");
        // The publisher holds only the online keys.
        std::fs::create_dir(d.join("online")).unwrap();
        for k in ["targets", "snapshot", "timestamp"] {
            std::fs::copy(
                d.join("keys").join(format!("{k}.pk8")),
                d.join("online").join(format!("{k}.pk8")),
            )
            .unwrap();
        }
        let url = format!("sqlite://{}", d.join("askee.db").display());
        let repo = d.join("repo");
        let mut args = vec!["--tuf-repo", s(&repo)];
        args.extend_from_slice(extra_serve);
        let server =
            ServerProcess::start_with(&url, &d.join("data"), Duration::from_secs(60), &args);

        let first = built_agent_version();
        let bin = d.join("install/versions").join(&first);
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["askee-agent", "askee-agent-worker"] {
            std::fs::copy(binary(name), bin.join(name)).unwrap();
        }
        std::os::unix::fs::symlink(
            Path::new("versions").join(&first),
            d.join("install/current"),
        )
        .unwrap();
        let home = d.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::copy(
            d.join("repo/metadata/1.root.json"),
            home.join("update-root.json"),
        )
        .unwrap();
        let f = Self {
            original: std::fs::read(bin.join("askee-agent")).unwrap(),
            original_worker: std::fs::read(bin.join("askee-agent-worker")).unwrap(),
            agent: d.join("install/current/askee-agent"),
            first,
            server,
            home,
            dir,
        };
        f.write_config(0);
        f
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    fn write_config(&self, interval: u64) {
        std::fs::write(
            self.home.join("config.toml"),
            format!(
                "[update]\nrepository = \"{}/tuf\"\ntrusted_root = \"update-root.json\"\ncheck_interval_secs = {interval}\n",
                self.server.url()
            ),
        )
        .unwrap();
    }

    /// A distinct real agent binary for release `tag`.
    fn build(&self, tag: &str) -> PathBuf {
        let p = self.path(&format!("release-{tag}"));
        let mut bytes = self.original.clone();
        bytes.extend_from_slice(format!("\naskee-test-release {tag}\n").as_bytes());
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A distinct real worker binary for release `tag`.
    fn build_worker(&self, tag: &str) -> PathBuf {
        let p = self.path(&format!("worker-{tag}"));
        let mut bytes = self.original_worker.clone();
        bytes.extend_from_slice(format!("\naskee-test-worker {tag}\n").as_bytes());
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Publishes `file` with a worker built for `version`.
    fn publish(&self, file: &Path, version: &str, expiry: &[&str]) -> String {
        self.publish_pair(file, &self.build_worker(version), version, expiry)
    }

    fn publish_pair(&self, file: &Path, worker: &Path, version: &str, expiry: &[&str]) -> String {
        let (repo, online) = (self.path("repo"), self.path("online"));
        let mut args = vec![
            "release",
            "publish",
            "--agent",
            s(file),
            "--worker",
            s(worker),
            "--version",
            version,
            "--repo",
            s(&repo),
            "--keys",
            s(&online),
        ];
        args.extend_from_slice(expiry);
        release(&args)
    }

    /// Runs the installed agent; (exit code, stdout, stderr).
    fn agent(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.agent)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the installed agent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn installed(&self) -> Vec<u8> {
        std::fs::read(&self.agent).unwrap()
    }

    /// The worker beside the installed agent.
    fn installed_worker(&self) -> Vec<u8> {
        std::fs::read(self.path("install/current/askee-agent-worker")).unwrap()
    }

    /// The version directory `current` points at.
    fn current(&self) -> String {
        std::fs::read_link(self.path("install/current"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The entries of `install/versions` (sorted).
    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("install/versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    fn journal(&self) -> Vec<Value> {
        std::fs::read_to_string(self.home.join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.journal()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `update apply` must be refused naming `reason`, leaving the binary
    /// byte for byte as `expect`.
    fn refused(&self, reason: &str, expect: &[u8]) {
        let (worker, current, versions) =
            (self.installed_worker(), self.current(), self.versions());
        let (code, out, err) = self.agent(&["update", "apply"]);
        assert_eq!(code, 1, "apply was not refused: {out}{err}");
        assert!(err.contains(reason), "expected {reason:?} in: {err}");
        assert!(self.installed() == expect, "the running binary changed");
        assert!(self.installed_worker() == worker, "the worker changed");
        assert_eq!(self.current(), current);
        assert_eq!(self.versions(), versions, "a download was left behind");
        let last = self.journal();
        let refusal = last
            .iter()
            .rev()
            .find(|e| e["kind"] == "update.refused")
            .expect("the refusal is journalled");
        assert!(
            refusal["data"]["reason"]
                .as_str()
                .unwrap()
                .contains(reason.split(':').next().unwrap()),
            "{refusal}"
        );
    }
}

fn target_file(repo: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(repo.join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no target file for {name}"))
}

fn platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

#[test]
fn apply_refuses_a_tampered_binary_then_installs_and_rolls_back_a_broken_release() {
    let f = Fixture::new(&[]);
    let (code, out, err) = f.agent(&["update", "check"]);
    assert!(code == 1 && err.contains("unreachable"), "{out}{err}");

    let r1 = f.build("1.0.0");
    f.publish(&r1, "1.0.0", &[]);
    let (code, out, err) = f.agent(&["update", "check"]);
    assert_eq!(code, AVAILABLE, "{out}{err}");
    assert!(out.contains("release 1.0.0 available"), "{out}");

    // The repository serves the binary, not a listing, with plain types.
    let name = format!("askee-agent-1.0.0-{}", platform());
    let file = target_file(&f.repo(), &name);
    let url = format!(
        "{}/tuf/targets/{}",
        f.server.url(),
        file.file_name().unwrap().to_str().unwrap()
    );
    let base = f.server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/octet-stream",
            "{url}"
        );
        let resp = http
            .get(format!("{base}/tuf/metadata/timestamp.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "application/json");
        for listing in ["/tuf/metadata/", "/tuf/targets/", "/tuf/metadata"] {
            let resp = http.get(format!("{base}{listing}")).send().await.unwrap();
            assert_eq!(resp.status(), 404, "{listing} answered");
        }
        let resp = http.put(&url).body("x").send().await.unwrap();
        assert!(
            resp.status().is_client_error(),
            "PUT answered {}",
            resp.status()
        );
    });

    // A tampered binary (same length, one byte changed) is refused.
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&file, &bad).unwrap();
    f.refused(
        "does not match its signed length and hash",
        &f.original.clone(),
    );
    assert_eq!(f.versions(), std::slice::from_ref(&f.first));
    std::fs::write(&file, &good).unwrap();
    // So is a tampered worker: neither binary is installed.
    let wfile = target_file(
        &f.repo(),
        &format!("askee-agent-worker-1.0.0-{}", platform()),
    );
    let wgood = std::fs::read(&wfile).unwrap();
    let mut wbad = wgood.clone();
    let mid = wbad.len() / 2;
    wbad[mid] ^= 0xff;
    std::fs::write(&wfile, &wbad).unwrap();
    f.refused(
        "does not match its signed length and hash",
        &f.original.clone(),
    );
    assert!(f.installed_worker() == f.original_worker);
    std::fs::write(&wfile, &wgood).unwrap();

    // The good release installs both binaries; the previous version is kept.
    let (code, out, err) = f.agent(&["update", "apply"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("installed 1.0.0"), "{out}");
    assert!(f.installed() == std::fs::read(&r1).unwrap());
    assert!(f.installed_worker() == std::fs::read(f.build_worker("1.0.0")).unwrap());
    assert_eq!(f.current(), "1.0.0");
    let kept = f.path("install/versions").join(&f.first);
    assert!(std::fs::read(kept.join("askee-agent")).unwrap() == f.original);
    assert!(std::fs::read(kept.join("askee-agent-worker")).unwrap() == f.original_worker);
    let kinds = f.kinds();
    for k in [
        "update.check",
        "update.downloaded",
        "update.installed",
        "update.self_check",
    ] {
        assert!(kinds.contains(&k.to_owned()), "{k} missing from {kinds:?}");
    }
    let (code, out, _) = f.agent(&["update", "check"]);
    assert_eq!(code, 0);
    assert!(out.contains("up to date: 1.0.0"), "{out}");

    // A release that verifies but cannot run fails its self-check: rolled
    // back to 1.0.0 and never tried again.
    let garbage = f.path("garbage");
    std::fs::write(&garbage, b"#!/nonexistent/interpreter\nnot an agent\n").unwrap();
    f.publish(&garbage, "2.0.0", &[]);
    let (code, out, err) = f.agent(&["update", "apply"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("failed its self-check") && err.contains("rolled back"),
        "{err}"
    );
    assert!(f.installed() == std::fs::read(&r1).unwrap());
    assert!(f.installed_worker() == std::fs::read(f.build_worker("1.0.0")).unwrap());
    let kinds = f.kinds();
    assert!(
        kinds.contains(&"update.rolled_back".to_owned()),
        "{kinds:?}"
    );
    let (code, out, _) = f.agent(&["update", "check"]);
    assert_eq!(code, 0, "the refused release is offered again");
    assert!(out.contains("up to date: 1.0.0"), "{out}");

    // A good agent with a worker that does not work: the new agent's
    // self-check asks the new worker, so the pair is rolled back together.
    let broken_worker = f.path("broken-worker");
    std::fs::write(&broken_worker, b"#!/bin/sh\necho 999\n").unwrap();
    f.publish_pair(&f.build("3.0.0"), &broken_worker, "3.0.0", &[]);
    let (code, out, err) = f.agent(&["update", "apply"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("failed its self-check") && err.contains("protocol 999"),
        "{err}"
    );
    assert!(f.installed() == std::fs::read(&r1).unwrap());
    assert!(f.installed_worker() == std::fs::read(f.build_worker("1.0.0")).unwrap());
    assert_eq!(f.current(), "1.0.0");
    assert_eq!(f.versions(), [f.first.clone(), "1.0.0".into()]);
    let (code, out, _) = f.agent(&["update", "check"]);
    assert_eq!(code, 0, "the refused release is offered again");
    assert!(out.contains("up to date: 1.0.0"), "{out}");
    let (_, status, _) = f.agent(&["update", "status"]);
    assert!(
        status.contains(&format!("askee-agent-2.0.0-{}", platform())),
        "{status}"
    );
    let (code, out, err) = f.agent(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn an_expired_timestamp_is_refused_until_the_operator_refreshes_it() {
    let f = Fixture::new(&[]);
    let r1 = f.build("1.0.0");
    f.publish(&r1, "1.0.0", &["--timestamp-expires", "-1h"]);
    f.refused("expired timestamp metadata", &f.original.clone());
    release(&[
        "release",
        "refresh-timestamp",
        "--repo",
        s(&f.repo()),
        "--keys",
        s(&f.path("online")),
        "--expires",
        "1d",
    ]);
    let (code, out, err) = f.agent(&["update", "check"]);
    assert_eq!(code, AVAILABLE, "{out}{err}");
}

#[test]
fn a_rolled_back_snapshot_is_refused_across_restarts() {
    let f = Fixture::new(&[]);
    f.publish(&f.build("1.0.0"), "1.0.0", &[]);
    let old_timestamp = std::fs::read(f.repo().join("metadata/timestamp.json")).unwrap();
    f.publish(&f.build("2.0.0"), "2.0.0", &[]);
    // This agent process sees snapshot 2 and exits; the metadata it
    // trusted stays in its home.
    let (code, out, err) = f.agent(&["update", "check"]);
    assert_eq!(code, AVAILABLE, "{out}{err}");
    assert!(out.contains("2.0.0"), "{out}");

    // A mirror re-serves the old timestamp (pointing at snapshot 1).
    std::fs::write(f.repo().join("metadata/timestamp.json"), &old_timestamp).unwrap();
    f.refused("rollback: timestamp", &f.original.clone());

    // With the online timestamp key, a fresh timestamp over the old
    // snapshot: the snapshot rollback itself is caught.
    release(&[
        "release",
        "refresh-timestamp",
        "--repo",
        s(&f.repo()),
        "--keys",
        s(&f.path("online")),
    ]);
    f.refused("rollback: snapshot", &f.original.clone());

    // It is the persisted metadata that refuses: an agent with no history
    // would take the old snapshot (and only see 1.0.0).
    let fresh = f.path("fresh-home");
    std::fs::create_dir(&fresh).unwrap();
    for file in ["config.toml", "update-root.json"] {
        std::fs::copy(f.home.join(file), fresh.join(file)).unwrap();
    }
    let out = Command::new(&f.agent)
        .args(["--home", s(&fresh), "update", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(AVAILABLE));
    assert!(String::from_utf8_lossy(&out.stdout).contains("release 1.0.0 available"));
}

#[test]
fn frozen_metadata_is_refused_once_it_expires() {
    let f = Fixture::new(&[]);
    // Release 1.0.0 with metadata that lives 20 seconds.
    let short = [
        "--targets-expires",
        "20s",
        "--snapshot-expires",
        "20s",
        "--timestamp-expires",
        "20s",
    ];
    f.publish(&f.build("1.0.0"), "1.0.0", &short);
    let frozen = std::fs::read(f.repo().join("metadata/timestamp.json")).unwrap();
    let expires: jiff::Timestamp =
        serde_json::from_slice::<Value>(&frozen).unwrap()["signed"]["expires"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let (code, out, err) = f.agent(&["update", "check"]);
    assert_eq!(code, AVAILABLE, "{out}{err}");
    // 2.0.0 is published, but the mirror keeps serving the old metadata.
    f.publish(&f.build("2.0.0"), "2.0.0", &[]);
    std::fs::write(f.repo().join("metadata/timestamp.json"), &frozen).unwrap();
    // The freeze hides 2.0.0 only until the frozen metadata expires.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for(
        "the frozen metadata to expire",
        Duration::from_secs(60),
        async || (jiff::Timestamp::now() > expires).then_some(()),
    ));
    f.refused("expired", &f.original.clone());
}

/// An attacker holding the online snapshot and timestamp keys, but not the
/// targets key, lists a malicious release signed with a key of their own.
#[test]
fn a_target_signed_by_the_wrong_key_is_refused() {
    let f = Fixture::new(&[]);
    f.publish(&f.build("1.0.0"), "1.0.0", &[]);
    let (code, out, err) = f.agent(&["update", "apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let r1 = f.installed();

    let attacker = f.path("attacker");
    release(&["release", "keys", "generate", "--dir", s(&attacker)]);
    let evil = f.build("6.6.6");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(sign_with_wrong_targets_key(
        &f.repo(),
        &f.path("online"),
        &attacker.join("targets.pk8"),
        &evil,
        "6.6.6",
    ));
    f.refused("bad signature: targets metadata", &r1);
}

fn read<T: serde::de::DeserializeOwned>(p: &Path) -> T {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn key(p: &Path) -> Box<dyn KeySource> {
    Box::new(LocalKeySource { path: p.to_owned() })
}

fn metafile(buffer: &[u8], version: NonZeroU64) -> Metafile {
    use sha2::Digest as _;
    Metafile {
        length: Some(buffer.len() as u64),
        hashes: Some(Hashes {
            sha256: sha2::Sha256::digest(buffer).to_vec().into(),
            _extra: Default::default(),
        }),
        version,
        _extra: Default::default(),
    }
}

async fn sign_with_wrong_targets_key(
    repo: &Path,
    online: &Path,
    wrong: &Path,
    binary: &Path,
    version: &str,
) {
    let meta = repo.join("metadata");
    let root: Signed<Root> = read(&meta.join("1.root.json"));
    let ts: Signed<Timestamp> = read(&meta.join("timestamp.json"));
    let snap_v = ts.signed.meta["snapshot.json"].version;
    let snap: Signed<Snapshot> = read(&meta.join(format!("{snap_v}.snapshot.json")));
    let targets_v = snap.signed.meta["targets.json"].version;
    let targets: Signed<Targets> = read(&meta.join(format!("{targets_v}.targets.json")));
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);

    let name = format!("askee-agent-{version}-{}", platform());
    let mut target = Target::from_path(binary).await.unwrap();
    target
        .custom
        .insert("version".into(), serde_json::json!(version));
    let sha = hex::encode(target.hashes.sha256.as_ref());
    std::fs::copy(binary, repo.join("targets").join(format!("{sha}.{name}"))).unwrap();
    let mut new_targets = targets.signed.clone();
    new_targets.add_target(name.as_str().try_into().unwrap(), target);
    new_targets.version = targets_v.saturating_add(1);
    new_targets.expires = later;
    // Sign as "targets" with the attacker's key.
    let wrong_key = key(wrong).as_sign().await.unwrap().tuf_key();
    let wrong_id = wrong_key.key_id().unwrap();
    let mut theirs = root.signed.clone();
    theirs.keys.insert(wrong_id.clone(), wrong_key);
    theirs.roles.get_mut(&RoleType::Targets).unwrap().keyids = vec![wrong_id];
    let signed_targets = SignedRole::new(
        new_targets.clone(),
        &KeyHolder::Root(theirs),
        &[key(wrong)],
        &rng,
    )
    .await
    .unwrap();
    std::fs::write(
        meta.join(format!("{}.targets.json", new_targets.version)),
        signed_targets.buffer(),
    )
    .unwrap();
    // Snapshot and timestamp with the real (stolen) online keys.
    let mut new_snap = Snapshot::new("1.0.0".into(), snap_v.saturating_add(1), later);
    new_snap.meta.insert(
        "targets.json".into(),
        metafile(signed_targets.buffer(), new_targets.version),
    );
    let signed_snap = SignedRole::new(
        new_snap.clone(),
        &KeyHolder::Root(root.signed.clone()),
        &[key(&online.join("snapshot.pk8"))],
        &rng,
    )
    .await
    .unwrap();
    std::fs::write(
        meta.join(format!("{}.snapshot.json", new_snap.version)),
        signed_snap.buffer(),
    )
    .unwrap();
    let mut new_ts = Timestamp::new("1.0.0".into(), ts.signed.version.saturating_add(1), later);
    new_ts.meta.insert(
        "snapshot.json".into(),
        metafile(signed_snap.buffer(), new_snap.version),
    );
    let signed_ts = SignedRole::new(
        new_ts,
        &KeyHolder::Root(root.signed.clone()),
        &[key(&online.join("timestamp.pk8"))],
        &rng,
    )
    .await
    .unwrap();
    std::fs::write(meta.join("timestamp.json"), signed_ts.buffer()).unwrap();
}

/// Root rotation needs the old root's threshold: one stolen root key
/// cannot rotate the root, two of three can.
#[test]
fn a_new_root_needs_a_threshold_of_root_signatures() {
    let f = Fixture::new(&[]);
    f.publish(&f.build("1.0.0"), "1.0.0", &[]);
    let keys = f.path("keys");
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root: Signed<Root> = read(&f.repo().join("metadata/1.root.json"));
    let mut next = root.signed.clone();
    next.version = NonZeroU64::new(2).unwrap();
    let sign = |keys: Vec<Box<dyn KeySource>>| {
        let next = next.clone();
        rt.block_on(async {
            SignedRole::new(next.clone(), &KeyHolder::Root(next), &keys, &rng)
                .await
                .unwrap()
                .buffer()
                .clone()
        })
    };
    let two = f.repo().join("metadata/2.root.json");
    std::fs::write(&two, sign(vec![key(&keys.join("root-1.pk8"))])).unwrap();
    f.refused("bad signature: root metadata", &f.original.clone());
    std::fs::write(
        &two,
        sign(vec![
            key(&keys.join("root-1.pk8")),
            key(&keys.join("root-3.pk8")),
        ]),
    )
    .unwrap();
    let (code, out, err) = f.agent(&["update", "check"]);
    assert_eq!(code, AVAILABLE, "{out}{err}");
    let trusted: Value = read(&f.home.join("tuf/root.json"));
    assert_eq!(trusted["signed"]["version"], 2);
}

/// The daemon applies a release between tasks and restarts into it (same
/// pid: it re-executes itself), then confirms it.
#[test]
fn the_daemon_installs_a_release_and_restarts_on_it() {
    let f = Fixture::new(&["--heartbeat-seconds", "2"]);
    askee_testkit::work::consent(&f.home, &f.server.url());
    f.write_config(1);
    let r1 = f.build("1.0.0");
    f.publish(&r1, "1.0.0", &[]);

    let log = std::fs::File::create(f.home.join("agent.log")).unwrap();
    let child = Command::new(&f.agent)
        .args(["--home", s(&f.home), "run", "--when", "always"])
        .env("ASKEE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let pid = daemon.0.id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let confirmed = rt.block_on(wait_for(
        "the daemon to restart on 1.0.0",
        Duration::from_secs(120),
        async || {
            f.journal()
                .into_iter()
                .find(|e| e["kind"] == "update.confirmed")
        },
    ));
    let log = std::fs::read_to_string(f.home.join("agent.log")).unwrap_or_default();
    assert_eq!(confirmed["data"]["version"], "1.0.0", "{log}");
    assert_eq!(confirmed["data"]["pid"], pid, "not the same process");
    assert!(f.installed() == std::fs::read(&r1).unwrap());
    assert!(f.installed_worker() == std::fs::read(f.build_worker("1.0.0")).unwrap());
    let kept = f.path("install/versions").join(&f.first);
    assert!(std::fs::read(kept.join("askee-agent")).unwrap() == f.original);
    let kinds = f.kinds();
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap_or(usize::MAX);
    assert!(at("update.quiesced") < at("update.installed"), "{kinds:?}");
    assert!(at("update.self_check") < at("update.restart"), "{kinds:?}");
    assert!(at("update.restart") < at("update.confirmed"), "{kinds:?}");
    let starts = kinds.iter().filter(|k| *k == "agent.start").count();
    assert_eq!(starts, 2, "{kinds:?}");
    assert!(daemon.0.try_wait().unwrap().is_none(), "{log}");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A release that passed its self-check but never gets through a daemon
/// start (here: this home has no consent, so `run` stops before confirming)
/// is rolled back at the next start, and the daemon re-executes the
/// previous binary.
#[test]
fn a_release_that_never_confirms_a_start_is_rolled_back_at_the_next_start() {
    let f = Fixture::new(&[]);
    let r1 = f.build("1.0.0");
    f.publish(&r1, "1.0.0", &[]);
    let (code, out, err) = f.agent(&["init"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = f.agent(&["update", "apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = f.agent(&["run", "--when", "always"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("consent"), "{err}");
    assert!(
        f.installed() == std::fs::read(&r1).unwrap(),
        "rolled back too early"
    );
    let (code, out, err) = f.agent(&["run", "--when", "always"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(f.installed() == f.original, "not rolled back");
    assert!(
        f.installed_worker() == f.original_worker,
        "worker not rolled back"
    );
    assert_eq!(f.current(), f.first);
    let rolled = f
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "update.rolled_back")
        .expect("the rollback is journalled");
    assert!(
        rolled["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("without confirming"),
        "{rolled}"
    );
    let (_, status, _) = f.agent(&["update", "status"]);
    assert!(
        status.contains(&format!("askee-agent-1.0.0-{}", platform())),
        "{status}"
    );
    // And it is not offered again.
    let (code, out, _) = f.agent(&["update", "check"]);
    assert_eq!(code, 0, "{out}");
}

/// Updates never happen while a task runs: a release published while the
/// daemon runs a task is downloaded at once but installed only after the
/// task ended. After the restart tasks run in the new worker: the old one
/// is made unusable and a task with a known result still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_waits_for_the_running_task_before_installing() {
    use askee_testkit::work::{CAT, Coordinator, SPIN, consent, statement, submit, task};
    let f = Fixture::new(&[]);
    let work_dir = f.path("coordinator");
    std::fs::create_dir(&work_dir).unwrap();
    let coord = Coordinator::start(&work_dir, 9, &[SPIN, CAT]).await;
    consent(&f.home, &coord.server.url());
    f.write_config(1);
    let log = std::fs::File::create(f.home.join("agent.log")).unwrap();
    let _daemon = Daemon(
        Command::new(&f.agent)
            .args(["--home", s(&f.home), "run", "--when", "always"])
            .env("ASKEE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // A bootstrap challenge that spins until its 15 s wall-clock limit.
    let spin = submit(
        &coord.api,
        &coord.op,
        statement(SPIN, b"", 15, u64::MAX / 4, "spin"),
        Some("00".repeat(32)),
    )
    .await;
    wait_for("the task to start", Duration::from_secs(60), async || {
        f.journal()
            .iter()
            .any(|e| e["kind"] == "task.start" && e["data"]["task_id"] == spin)
            .then_some(())
    })
    .await;
    f.publish(&f.build("1.0.0"), "1.0.0", &[]);
    assert!(
        !f.kinds()
            .iter()
            .any(|k| k == "task.finish" || k == "task.terminated"),
        "the task ended before the release was published"
    );
    wait_for(
        "the daemon to restart on 1.0.0",
        Duration::from_secs(120),
        async || {
            f.kinds()
                .contains(&"update.confirmed".to_owned())
                .then_some(())
        },
    )
    .await;
    let kinds = f.kinds();
    let log = std::fs::read_to_string(f.home.join("agent.log")).unwrap_or_default();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}\n{log}"))
    };
    // The task ends by its limit or by the coordinator calling it off;
    // either way the install comes after.
    let ended = kinds
        .iter()
        .position(|k| k == "task.finish" || k == "task.terminated")
        .unwrap_or_else(|| panic!("the task never ended: {kinds:?}\n{log}"));
    assert!(at("update.downloaded") < ended, "{kinds:?}\n{log}");
    assert!(ended < at("update.quiesced"), "{kinds:?}");
    assert!(at("update.quiesced") < at("update.installed"), "{kinds:?}");
    assert!(f.installed_worker() == std::fs::read(f.build_worker("1.0.0")).unwrap());

    // The old worker cannot run anything any more; a task still verifies,
    // so the restarted agent uses the worker of its own release.
    let old_worker = f
        .path("install/versions")
        .join(&f.first)
        .join("askee-agent-worker");
    std::fs::write(&old_worker, b"#!/bin/sh\nexit 1\n").unwrap();
    let input = b"after the update\n";
    let known = hex::encode(askee_sandbox::digest::result_digest(0, input, &[]));
    let id = submit(
        &coord.api,
        &coord.op,
        statement(CAT, input, 60, 100_000_000, "after"),
        Some(known),
    )
    .await;
    let t = wait_for(
        "the task after the update",
        Duration::from_secs(120),
        async || {
            let t = task(&coord.api, &coord.op, &id).await;
            (t["state"] != "pending").then_some(t)
        },
    )
    .await;
    let log = std::fs::read_to_string(f.home.join("agent.log")).unwrap_or_default();
    assert_eq!(t["state"], "verified", "{t}\n{log}");
}

/// An agent outside a versioned layout (a development build run from
/// target/) with updates configured still runs; it says why it does not
/// check, and `update apply` refuses naming the layout.
#[test]
fn an_agent_outside_the_versioned_layout_runs_without_updating() {
    let f = Fixture::new(&[]);
    askee_testkit::work::consent(&f.home, &f.server.url());
    f.write_config(1);
    f.publish(&f.build("1.0.0"), "1.0.0", &[]);
    let flat = binary("askee-agent");
    let out = Command::new(&flat)
        .args(["--home", s(&f.home), "update", "apply"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not installed in a versioned layout"),
        "{err}"
    );
    let log_path = f.home.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Daemon(
        Command::new(&flat)
            .args(["--home", s(&f.home), "run", "--when", "always"])
            .env("ASKEE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for(
        "the daemon to say it does not check",
        Duration::from_secs(60),
        async || {
            // "running" is printed only once past the update set-up.
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            (log.contains("not installed in a versioned layout")
                && log.contains("askee-agent running (pid"))
            .then_some(())
        },
    ));
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon stopped");
    assert!(
        f.kinds().contains(&"agent.start".to_owned()),
        "{:?}",
        f.kinds()
    );
    assert!(
        !f.kinds().iter().any(|k| k.starts_with("update.")),
        "{:?}",
        f.kinds()
    );
    assert!(f.installed() == f.original);
}
