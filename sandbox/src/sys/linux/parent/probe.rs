//! What the host offers ([`HostCapabilities`]), read by the parent.

use std::fs;

use super::super::{APPARMOR_PROFILE, SECCOMP_WASM, landlock_abi};
use crate::cgroup::CgroupLayout;
use crate::probe::HostCapabilities;

pub(super) fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

pub(super) fn apparmor_profile_loaded(name: &str) -> bool {
    fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .map(|s| s.lines().any(|l| l.split_whitespace().next() == Some(name)))
        .unwrap_or(false)
}

pub(super) fn user_namespaces_available() -> bool {
    let max: u64 = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unpriv_ok = fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
        && fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .map(|s| s.trim() != "1")
            .unwrap_or(true);
    max > 0 && (root || unpriv_ok)
}

pub(super) fn seccomp_available() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false)
}

/// Probe the host.
pub fn probe() -> HostCapabilities {
    let layout = CgroupLayout::detect().ok();
    HostCapabilities {
        os: "linux".into(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cgroup_mode: layout.as_ref().map(|l| l.mode),
        cgroup_enforcing_version: layout.as_ref().and_then(|l| l.enforcing_version()),
        cgroup_v1_controllers: layout
            .as_ref()
            .map(|l| l.v1_dirs.keys().cloned().collect())
            .unwrap_or_default(),
        cgroup_v2_controllers: layout
            .as_ref()
            .map(|l| l.v2_controllers.clone())
            .unwrap_or_default(),
        user_namespaces: user_namespaces_available(),
        seccomp: seccomp_available(),
        seccomp_filters_built: !SECCOMP_WASM.is_empty(),
        landlock_abi: landlock_abi(),
        apparmor_enabled: apparmor_enabled(),
        apparmor_profile_loaded: apparmor_profile_loaded(APPARMOR_PROFILE),
        // SAFETY: geteuid has no preconditions.
        running_as_root: unsafe { libc::geteuid() } == 0,
        job_objects: false,
        appcontainer: false,
        sandbox_init: false,
    }
}
