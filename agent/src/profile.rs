//! The resource profiler: what this machine offers, as the seed's
//! [`SystemProfile`] (sent to the coordinator at registration).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use askee_core::wire::v1::{ContainerCapabilities, NetworkInfo, SystemProfile};

use crate::config::{Config, ConfigError};

mod sys;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot measure free space at {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the resource profiler is not written for {os} yet")]
    Unsupported { os: &'static str },
}

/// Profiles the machine for the agent whose home is `home`: storage is
/// measured where the agent keeps task scratch space (the configured
/// `scratch_dir`, or its nearest existing parent), network from the
/// configuration (the agent does not probe the volunteer's link).
pub fn assess(home: &Path) -> Result<SystemProfile, ProfileError> {
    let config = Config::load(home)?;
    let host = sys::host(&config.scratch(home))?;
    let caps = askee_sandbox::probe();
    let isolation = match caps.os.as_str() {
        "linux" if caps.user_namespaces => "linux-namespaces",
        "windows" if caps.job_objects => "windows-job-objects",
        "macos" if caps.sandbox_init => "macos-sandbox",
        _ => "none",
    };
    Ok(SystemProfile {
        os: std::env::consts::OS.to_owned(),
        cpu: host.cpu,
        memory: host.memory,
        storage: host.storage,
        network: NetworkInfo {
            bandwidth_mbps: config.network.bandwidth_mbps,
            metered: config.network.metered,
        },
        gpus: host.gpus,
        container_support: ContainerCapabilities {
            isolation: isolation.to_owned(),
            cgroup_version: caps.cgroup_enforcing_version,
            user_namespaces: caps.user_namespaces,
            seccomp: caps.seccomp && caps.seccomp_filters_built,
            landlock_abi: caps.landlock_abi.and_then(|a| u32::try_from(a).ok()),
            // The agent depends on askee-sandbox with its default `wasm` feature.
            wasm: true,
        },
    })
}

/// The profile in plain words.
pub fn words(p: &SystemProfile) -> String {
    let mut out = String::new();
    let c = &p.cpu;
    let freq = if c.frequency_mhz > 0 {
        format!(" at up to {} MHz", c.frequency_mhz)
    } else {
        String::new()
    };
    let _ = writeln!(out, "This {} computer has:", p.os);
    let _ = writeln!(
        out,
        "  - {} processors ({}, {}){freq}",
        c.cores, c.model, c.arch
    );
    let _ = writeln!(
        out,
        "  - {} MiB of memory, {} MiB of it available now",
        p.memory.total_mb, p.memory.available_mb
    );
    let _ = writeln!(
        out,
        "  - {} GiB free of {} GiB where task scratch space would live",
        p.storage.free_gb, p.storage.total_gb
    );
    let bw = match p.network.bandwidth_mbps {
        0 => "network bandwidth not configured".to_owned(),
        b => format!("{b} Mbit/s network"),
    };
    let metered = match p.network.metered {
        Some(true) => ", metered",
        Some(false) => ", not metered",
        None => "",
    };
    let _ = writeln!(out, "  - {bw}{metered}");
    if p.gpus.is_empty() {
        let _ = writeln!(out, "  - no graphics processor found");
    }
    for g in &p.gpus {
        let _ = writeln!(out, "  - graphics: {} {}", g.vendor, g.model);
    }
    let s = &p.container_support;
    let _ = writeln!(
        out,
        "  - sandbox: {} isolation, cgroup v{}, seccomp {}, landlock {}",
        s.isolation,
        s.cgroup_version
            .map_or("none".to_owned(), |v| v.to_string()),
        if s.seccomp { "yes" } else { "no" },
        s.landlock_abi
            .map_or("no".to_owned(), |a| format!("ABI {a}"))
    );
    out
}
