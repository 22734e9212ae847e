//! A task cgroup whose owner died while its members were frozen (a volunteer
//! came back, the agent crashed) is ended by the next sandbox's start: frozen
//! members never act on their SIGKILL or parent-death signal, so without this
//! they outlived their owner (seen on this project's v1/hybrid CI host).

use std::fs;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use askee_sandbox::Limits;
use askee_sandbox::cgroup::{CgroupLayout, TaskCgroup, remove_stale};

/// A pid that no process has now: a child's, once reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_frozen_task_of_a_dead_owner_is_ended_when_the_next_sandbox_starts() {
    let layout = CgroupLayout::detect().expect("cgroups are mounted on test hosts");
    assert!(
        layout.enforcing_version().is_some(),
        "the sandbox tests run as root on a host with cgroups: {layout:?}"
    );
    let name = format!("askee-{}-stale-test", dead_pid());
    let limits = Limits {
        memory_bytes: 64 << 20,
        pids: 8,
        ..Limits::default()
    };
    let group = TaskCgroup::create(&layout, &name, &limits).unwrap();
    let mut member = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    for file in group.join_files() {
        fs::write(&file, member.id().to_string()).unwrap();
    }
    group.freeze().unwrap();
    assert_eq!(group.pids().unwrap(), vec![member.id() as i32]);

    remove_stale(&layout);

    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || done.send(member.wait()).unwrap());
    let status = ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the frozen member of a dead owner's cgroup was not ended")
        .unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    let dirs = match &group {
        TaskCgroup::V2 { dir } => vec![dir.clone()],
        TaskCgroup::V1 { dirs } => dirs.values().cloned().collect(),
    };
    for dir in dirs {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}
