//! The cgroup v2 and v1 file-writing logic against temporary trees laid out like
//! cgroupfs, and the host probe against the running system.

use std::fs;
use std::path::Path;

use askee_sandbox::Limits;
use askee_sandbox::cgroup::{CgroupLayout, CgroupMode, TaskCgroup};

fn limits() -> Limits {
    Limits {
        cpu_percent: 50,
        memory_bytes: 100 << 20,
        pids: 7,
        ..Limits::default()
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn v2_limits_freeze_and_usage_files() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("agent.scope");
    fs::create_dir(&parent).unwrap();
    fs::write(parent.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
    fs::write(parent.join("cgroup.subtree_control"), "").unwrap();
    let mi = format!(
        "30 23 0:26 / {} rw - cgroup2 cgroup2 rw\n",
        root.path().display()
    );
    let layout = CgroupLayout::from_proc(&mi, "0::/agent.scope\n");
    assert_eq!(layout.mode, CgroupMode::Unified);
    assert_eq!(layout.enforcing_version(), Some(2));
    // cgroup.idle exists in real cgroupfs when the kernel has it; emulate presence.
    let dir = parent.join("t1");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("cpu.idle"), "0").unwrap();
    let cg = TaskCgroup::create(&layout, "t1", &limits()).unwrap();
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("memory.max")), (100u64 << 20).to_string());
    assert_eq!(
        read(&dir.join("memory.high")),
        ((100u64 << 20) / 10 * 9).to_string()
    );
    assert_eq!(read(&dir.join("pids.max")), "7");
    assert_eq!(read(&dir.join("cpu.idle")), "1", "a new cgroup is idle");
    // Lifted for the sandbox's set-up and tear-down, set again for the task.
    assert!(cg.set_idle(false).unwrap());
    assert_eq!(read(&dir.join("cpu.idle")), "0");
    cg.set_idle(true).unwrap();
    assert_eq!(read(&dir.join("cpu.idle")), "1");
    cg.apply_limits(&limits()).unwrap();
    assert_eq!(
        read(&dir.join("cpu.idle")),
        "1",
        "limits leave idleness alone"
    );
    assert!(
        !dir.join("memory.swap.max").exists(),
        "absent files are not created"
    );
    assert_eq!(cg.join_files(), vec![dir.join("cgroup.procs")]);
    cg.freeze().unwrap();
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    cg.thaw().unwrap();
    assert_eq!(read(&dir.join("cgroup.freeze")), "0");
    fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
    fs::write(dir.join("memory.peak"), "4096\n").unwrap();
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 2\nmax 3\noom 1\noom_kill 1\n",
    )
    .unwrap();
    fs::write(dir.join("pids.events"), "max 4\n").unwrap();
    fs::write(
        dir.join("io.stat"),
        "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
    )
    .unwrap();
    let u = cg.usage();
    assert_eq!(u.cpu_time, Some(std::time::Duration::from_micros(1500)));
    assert_eq!(u.peak_memory_bytes, Some(4096));
    assert_eq!(u.oom_kills, 1);
    assert_eq!(u.pids_limit_hits, 4);
    assert_eq!((u.io_read_bytes, u.io_write_bytes), (Some(11), Some(22)));
}

#[test]
fn v1_limits_files() {
    let root = tempfile::tempdir().unwrap();
    let mut mi = String::new();
    for (i, c) in ["cpu", "memory", "pids", "freezer"].iter().enumerate() {
        let d = root.path().join(c);
        fs::create_dir(&d).unwrap();
        mi += &format!(
            "{} 31 0:{} / {} rw - cgroup cgroup rw,{c}\n",
            40 + i,
            30 + i,
            d.display()
        );
    }
    let layout = CgroupLayout::from_proc(&mi, "4:memory:/\n8:pids:/\n1:cpu:/\n6:freezer:/\n");
    assert_eq!(layout.mode, CgroupMode::Legacy);
    assert_eq!(layout.enforcing_version(), Some(1));
    // cpu.idle exists in v1's cpu controller too when the kernel has it.
    fs::create_dir(root.path().join("cpu/t")).unwrap();
    fs::write(root.path().join("cpu/t/cpu.idle"), "0").unwrap();
    let cg = TaskCgroup::create(&layout, "t", &limits()).unwrap();
    let p = root.path();
    assert_eq!(read(&p.join("cpu/t/cpu.idle")), "1", "a new cgroup is idle");
    assert!(cg.set_idle(false).unwrap());
    assert_eq!(read(&p.join("cpu/t/cpu.idle")), "0");
    assert_eq!(read(&p.join("cpu/t/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&p.join("cpu/t/cpu.cfs_period_us")), "100000");
    assert_eq!(
        read(&p.join("memory/t/memory.limit_in_bytes")),
        (100u64 << 20).to_string()
    );
    assert_eq!(read(&p.join("pids/t/pids.max")), "7");
    cg.freeze().unwrap();
    assert_eq!(read(&p.join("freezer/t/freezer.state")), "FROZEN");
    assert_eq!(
        cg.join_files(),
        ["cpu", "freezer", "memory", "pids"]
            .map(|c| p.join(c).join("t/tasks"))
            .to_vec()
    );
}

#[test]
fn probe_matches_the_running_host() {
    let caps = askee_sandbox::probe();
    assert_eq!(caps.os, "linux");
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let has_v1 = mi.lines().any(|l| l.contains(" - cgroup cgroup "));
    let has_v2 = mi.lines().any(|l| l.contains(" - cgroup2 "));
    let expected = match (has_v2, has_v1) {
        (true, false) => CgroupMode::Unified,
        (true, true) => CgroupMode::Hybrid,
        (false, true) => CgroupMode::Legacy,
        (false, false) => CgroupMode::None,
    };
    assert_eq!(caps.cgroup_mode, Some(expected));
    let seccomp_line = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Seccomp:"));
    assert_eq!(caps.seccomp, seccomp_line);
    // securityfs may be unmounted; only a readable LSM list without Landlock decides.
    if let Ok(lsm) = fs::read_to_string("/sys/kernel/security/lsm")
        && !lsm.contains("landlock")
    {
        assert_eq!(caps.landlock_abi, None);
    }
    let report = askee_sandbox::capability_report(&caps);
    let landlock = report.iter().find(|l| l.control == "landlock").unwrap();
    assert_eq!(landlock.enforced, caps.landlock_abi.is_some());
}
