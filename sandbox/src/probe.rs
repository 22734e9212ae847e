//! Host capability probe and the per-OS capability report.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupMode;

/// What the host offers: the input to the resource profiler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapabilities {
    /// `linux`, `windows`, `macos` or another name.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// cgroup hierarchy mode (Linux).
    pub cgroup_mode: Option<CgroupMode>,
    /// cgroup version that enforces limits (Linux): 2, 1 or none.
    pub cgroup_enforcing_version: Option<u8>,
    /// v1 controllers mounted.
    pub cgroup_v1_controllers: Vec<String>,
    /// v2 controllers available to this process's cgroup.
    pub cgroup_v2_controllers: Vec<String>,
    /// User namespaces can be created.
    pub user_namespaces: bool,
    /// seccomp filtering is available.
    pub seccomp: bool,
    /// The seccomp programs were compiled for this target at build time.
    pub seccomp_filters_built: bool,
    /// Landlock ABI version, if Landlock is enabled.
    pub landlock_abi: Option<i32>,
    /// AppArmor is enabled.
    pub apparmor_enabled: bool,
    /// The `askee-task` AppArmor profile is loaded.
    pub apparmor_profile_loaded: bool,
    /// Running as root (or Administrator).
    pub running_as_root: bool,
    /// Windows Job Objects available.
    pub job_objects: bool,
    /// Windows AppContainer available.
    pub appcontainer: bool,
    /// macOS `sandbox_init` available.
    pub sandbox_init: bool,
}

/// Probe the running host.
pub fn probe() -> HostCapabilities {
    crate::sys::probe()
}

/// The probe, computed once per process.
pub fn probe_cached() -> &'static HostCapabilities {
    static P: OnceLock<HostCapabilities> = OnceLock::new();
    P.get_or_init(probe)
}

/// One line of the capability report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityLine {
    /// The control.
    pub control: String,
    /// Whether this build enforces it on this host.
    pub enforced: bool,
    /// How, or why not.
    pub detail: String,
}

fn line(control: &str, enforced: bool, detail: impl Into<String>) -> CapabilityLine {
    CapabilityLine {
        control: control.into(),
        enforced,
        detail: detail.into(),
    }
}

/// Why Windows and macOS refuse tasks, in their reports.
const PROTOCOL_LINUX_ONLY: &str =
    "the parent-worker request and report protocol is Linux only: tasks are refused";

/// What is enforced and what is not, for the OS described by `caps`.
pub fn capability_report(caps: &HostCapabilities) -> Vec<CapabilityLine> {
    match caps.os.as_str() {
        "linux" => {
            let cg = caps.cgroup_enforcing_version;
            vec![
                line(
                    "namespaces (user, pid, net, mnt, uts, ipc, cgroup)",
                    caps.user_namespaces || caps.running_as_root,
                    if caps.user_namespaces {
                        "user namespace created"
                    } else if caps.running_as_root {
                        "root without a user namespace"
                    } else {
                        "cannot create namespaces"
                    },
                ),
                line(
                    "network",
                    caps.user_namespaces || caps.running_as_root,
                    "empty network namespace (loopback down) and Landlock TCP rules",
                ),
                line(
                    "read-only minimal root",
                    true,
                    "tmpfs root, read-only; /input read-only bind; /scratch tmpfs sized to the storage limit",
                ),
                line(
                    "cpu quota",
                    cg.is_some(),
                    match cg {
                        Some(2) => "cpu.max",
                        Some(_) => "cpu.cfs_quota_us",
                        None => "no cgroup",
                    },
                ),
                line(
                    "memory limit",
                    cg.is_some(),
                    match cg {
                        Some(2) => "memory.max with memory.high at 90 %",
                        Some(_) => "memory.limit_in_bytes with soft limit at 90 %",
                        None => "no cgroup",
                    },
                ),
                line("pids limit", cg.is_some(), "pids.max"),
                line(
                    "freeze / thaw",
                    cg.is_some()
                        && (cg == Some(2)
                            || caps.cgroup_v1_controllers.iter().any(|c| c == "freezer")),
                    "cgroup freezer",
                ),
                line(
                    "seccomp allowlist",
                    caps.seccomp && caps.seccomp_filters_built,
                    "BPF compiled at build time, kill-process on anything else",
                ),
                line(
                    "landlock",
                    caps.landlock_abi.is_some(),
                    match caps.landlock_abi {
                        Some(v) => {
                            format!("kernel ABI {v}, ruleset written for ABI 6 (best effort)")
                        }
                        None => "not available".into(),
                    },
                ),
                line(
                    "apparmor",
                    caps.apparmor_enabled && caps.apparmor_profile_loaded,
                    if !caps.apparmor_enabled {
                        "AppArmor not enabled on this host"
                    } else if caps.apparmor_profile_loaded {
                        "askee-task profile"
                    } else {
                        "profile deploy/apparmor/askee-task not loaded"
                    },
                ),
                line(
                    "no_new_privs and capability drop",
                    true,
                    "prctl(PR_SET_NO_NEW_PRIVS), empty bounding and permitted sets",
                ),
                line(
                    "rlimits",
                    true,
                    "RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0",
                ),
                line(
                    "scheduling priority",
                    true,
                    "SCHED_IDLE and the idle I/O class; cpu.idle where the cgroup has it",
                ),
            ]
        }
        "windows" => vec![
            line(
                "job object",
                true,
                "hard CPU rate cap, job memory limit, one active process, kill on close",
            ),
            line(
                "appcontainer",
                caps.appcontainer,
                "the worker starts in app container askee.task without capabilities: no network, only files granted to it",
            ),
            line(
                "child processes",
                true,
                "PROCESS_CREATION_CHILD_PROCESS_RESTRICTED, and one active process in the job",
            ),
            line("idle priority", true, "IDLE_PRIORITY_CLASS"),
            line("task runs", false, PROTOCOL_LINUX_ONLY),
            line(
                "wdac",
                false,
                "policy shipped in deploy/windows; applying it is an administrator's step",
            ),
            line(
                "storage limit",
                false,
                "not enforced by the OS layer; the wasm runtime checks output size",
            ),
        ],
        "macos" => vec![
            line(
                "sandbox_init",
                caps.sandbox_init,
                "deny-by-default profile deploy/macos/askee-task.sb",
            ),
            line("background priority", true, "PRIO_DARWIN_BG"),
            line(
                "rlimits",
                true,
                "RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC",
            ),
            line(
                "memory limit",
                false,
                "no kernel memory cap for a process group; the wasm store limit applies",
            ),
            line("tcc", true, "no privacy permission is ever requested"),
            line("task runs", false, PROTOCOL_LINUX_ONLY),
        ],
        _ => vec![line("sandbox", false, "unsupported operating system")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(os: &str, appcontainer: bool) -> Vec<(String, bool)> {
        let caps = HostCapabilities {
            os: os.into(),
            job_objects: os == "windows",
            appcontainer,
            sandbox_init: os == "macos",
            ..Default::default()
        };
        capability_report(&caps)
            .into_iter()
            .map(|l| (l.control, l.enforced))
            .collect()
    }

    /// Regression test for issue 3: the Windows report claimed the app container
    /// while the worker was started outside one. It is enforced exactly when the
    /// host has app containers (the worker starts in one or not at all), and
    /// neither portable OS claims to run tasks.
    #[test]
    fn issue_3_portable_reports_claim_only_what_is_applied() {
        let win = report("windows", true);
        for control in [
            "job object",
            "appcontainer",
            "child processes",
            "idle priority",
        ] {
            assert!(win.contains(&(control.into(), true)), "{control}: {win:?}");
        }
        assert!(report("windows", false).contains(&("appcontainer".into(), false)));
        for os in ["windows", "macos"] {
            let r = report(os, true);
            assert!(r.contains(&("task runs".into(), false)), "{os}: {r:?}");
        }
    }
}
