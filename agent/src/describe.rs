//! What the volunteer reads, in plain words: a capability manifest and the
//! limits of a grant, the local journal's entries and what its check found.

use crate::journal::{Finding, JournalEntry};
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

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One journal entry as a line of plain words.
pub fn journal_entry(e: &JournalEntry) -> String {
    let s = |k: &str| {
        e.data
            .get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_else(|| "?".into())
    };
    let what = match e.kind.as_str() {
        "consent.join" => format!(
            "joined {} ({}), manifest {}",
            s("coordinator"),
            s("operator"),
            s("manifest_id")
        ),
        "consent.grant" => format!(
            "consent granted under grant {}: token {} until {} (unix time); {}",
            s("grant_id"),
            s("token_id"),
            s("expires_at"),
            s("limits")
        ),
        "consent.renew" => format!("consent renewed: token {}", s("token_id")),
        "consent.revoke" => format!("consent revoked: token {} ({})", s("token_id"), s("reason")),
        "task.yield" => format!("paused task {}: {}", s("task"), s("reason")),
        "task.resume" => format!("resumed task {}", s("task")),
        other => format!("{other}: {}", e.data),
    };
    format!("{:>4}  {}  {what}", e.seq + 1, utc(e.timestamp_ms))
}

/// A chain finding in plain words.
pub fn finding(f: &Finding) -> String {
    match f {
        Finding::BrokenLink { line } => format!(
            "line {line} does not follow the line before it (a line was deleted, inserted or moved here)"
        ),
        Finding::Edited { line } => format!("line {line} was edited after it was written"),
        Finding::BadSequence {
            line,
            expected,
            found,
        } => format!("line {line} carries number {found} where {expected} belongs"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_795_436_701_999), "2026-11-23 12:25:01 UTC");
    }
}
