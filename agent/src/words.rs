//! A capability manifest in plain words, for a person deciding whether to
//! lend their computer.

use askee_core::wire::v1::{CapabilityManifest, Permissions};
use std::fmt::Write as _;

pub fn limits(p: &Permissions) -> String {
    let r = &p.resources;
    format!(
        "at most {}% of your CPU, {} MiB of memory, {} GiB of disk and {} Mbit/s of network; tasks of type {}, each at most {} hours",
        r.cpu_percent_max,
        r.ram_mb_max,
        r.storage_gb_max,
        r.bandwidth_mbps_max,
        p.tasks.allowlist.join(", "),
        p.tasks.max_duration_hours
    )
}

pub fn manifest(m: &CapabilityManifest) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} asks to use this computer.", m.operator.name);
    let _ = writeln!(
        out,
        "  contact: {}  coordinator: {}",
        m.operator.contact, m.operator.coordinator_url
    );
    let _ = writeln!(out, "\nWhat kind of work:");
    for t in &m.task_types {
        let _ = writeln!(
            out,
            "  - {}: {} (at most {} hours per task)",
            t.name, t.description, t.max_duration_hours
        );
    }
    let _ = writeln!(out, "\nThe most it may use: {}.", limits(&m.proposed));
    let _ = writeln!(out, "When: {}.", m.execution);
    let _ = writeln!(out, "\nTasks can use only:");
    for d in &m.data_access {
        let _ = writeln!(out, "  - {d}");
    }
    let _ = writeln!(out, "Tasks can never touch:");
    for d in &m.never_accessed {
        let _ = writeln!(out, "  - {d}");
    }
    let _ = writeln!(out, "\nHow to stop: {}.", m.revocation);
    let _ = writeln!(
        out,
        "Consent lasts until you revoke it or until {} (unix time), and is renewed hourly.",
        m.grant_expires_at_max
    );
    out
}
