use super::*;

#[test]
fn state_round_trips_and_refuses_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        UpdateState::load(dir.path()).unwrap(),
        UpdateState::default()
    );
    let s = UpdateState {
        installed: None,
        pending: Some(Pending {
            name: "askee-agent-2.0.0-x86_64-linux".into(),
            version: "2.0.0".into(),
            sha256: "ab".into(),
            worker_sha256: "cd".into(),
            previous: Some("1.0.0".into()),
            starts: 1,
        }),
        refused: vec!["x".into()],
    };
    s.save(dir.path()).unwrap();
    assert_eq!(UpdateState::load(dir.path()).unwrap(), s);
    std::fs::write(UpdateState::path(dir.path()), br#"{"surprise":1}"#).unwrap();
    assert!(matches!(
        UpdateState::load(dir.path()),
        Err(UpdateError::State { .. })
    ));
}

/// A layout with versions `names`, `current` at the first.
fn layout(dir: &Path, names: &[&str]) -> Layout {
    let l = Layout {
        dir: dir.join("install"),
    };
    for n in names {
        let v = l.versions().join(n);
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join(exe_name(rel::Component::Agent)), n.as_bytes()).unwrap();
    }
    l.switch(names[0]).unwrap();
    l
}

#[test]
fn the_layout_is_found_from_the_resolved_binary_and_switches_whole() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path(), &["1.0.0", "2.0.0"]);
    let resolved = std::fs::canonicalize(l.binary()).unwrap();
    assert_eq!(
        resolved,
        std::fs::canonicalize(&l.dir)
            .unwrap()
            .join("versions/1.0.0/askee-agent")
    );
    let found = Layout::of_binary(&resolved).unwrap();
    assert_eq!(
        std::fs::canonicalize(found.dir).unwrap(),
        std::fs::canonicalize(&l.dir).unwrap()
    );
    assert_eq!(
        current_version(&l).unwrap(),
        Version::parse("1.0.0").unwrap()
    );
    l.switch("2.0.0").unwrap();
    assert_eq!(std::fs::read(l.binary()).unwrap(), b"2.0.0");
    // The old version's binary is no longer the current one.
    assert!(matches!(
        Layout::of_binary(&resolved),
        Err(UpdateError::NotVersioned { .. })
    ));
    l.prune(&["2.0.0"]);
    assert!(!l.versions().join("1.0.0").exists());
    assert!(Layout::of_binary(&dir.path().join("askee-agent")).is_err());
    assert!(std::fs::read_dir(&l.dir).unwrap().all(|e| {
        let n = e.unwrap().file_name();
        n == "versions" || n == "current"
    }));
}

#[test]
fn a_pending_version_that_starts_twice_unconfirmed_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let journal = Journal::open(&home.join("journal.jsonl")).unwrap();
    let l = layout(dir.path(), &["2.0.0", "1.0.0"]);
    let state = UpdateState {
        pending: Some(Pending {
            name: "askee-agent-2.0.0-x86_64-linux".into(),
            version: "2.0.0".into(),
            sha256: "ab".into(),
            worker_sha256: "cd".into(),
            previous: Some("1.0.0".into()),
            starts: 0,
        }),
        ..Default::default()
    };
    state.save(&home).unwrap();
    assert_eq!(
        on_start(&home, Some(&l), &journal).unwrap(),
        StartVerdict::Continue
    );
    assert_eq!(std::fs::read(l.binary()).unwrap(), b"2.0.0");
    assert_eq!(
        on_start(&home, Some(&l), &journal).unwrap(),
        StartVerdict::RolledBack
    );
    assert_eq!(std::fs::read(l.binary()).unwrap(), b"1.0.0");
    let s = UpdateState::load(&home).unwrap();
    assert_eq!(s.pending, None);
    assert_eq!(s.refused, ["askee-agent-2.0.0-x86_64-linux"]);
    // A confirmed start makes the release the installed one instead.
    let l = layout(dir.path(), &["3.0.0"]);
    let state = UpdateState {
        pending: Some(Pending {
            name: "askee-agent-3.0.0-x86_64-linux".into(),
            version: "3.0.0".into(),
            sha256: "ef".into(),
            worker_sha256: "01".into(),
            previous: Some("1.0.0".into()),
            starts: 0,
        }),
        ..Default::default()
    };
    state.save(&home).unwrap();
    assert_eq!(
        on_start(&home, Some(&l), &journal).unwrap(),
        StartVerdict::Continue
    );
    confirm(&home, Some(&l), &journal).unwrap();
    let s = UpdateState::load(&home).unwrap();
    let installed = s.installed.unwrap();
    assert_eq!(
        (installed.version.as_str(), installed.worker_sha256.as_str()),
        ("3.0.0", "01")
    );
    assert_eq!(s.pending, None);
}
