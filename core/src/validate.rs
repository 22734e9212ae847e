//! Field-by-field validation of what volunteers and operators send. Every
//! error names the field (as a JSON path) and what is wrong with it, so the
//! HTTP layer can answer with a problem document that points at the input.

use crate::signing::manifest_digest;
use crate::token::MAX_CLOCK_SKEW_SECS;
use crate::wire::v1::{CapabilityManifest, GrantStatement, Permissions};

#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    thiserror::Error,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `permissions.resources.cpu_percent_max`.
    pub field: String,
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Why an untrusted JSON body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON of the expected shape as a whole.
    #[error("body is not the expected json: {0}")]
    Shape(String),
    /// One field is wrong: its path and what is wrong.
    #[error("{0}")]
    Field(FieldError),
}

/// Parses an untrusted JSON body, naming the path of the offending field.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            BodyError::Shape(inner)
        } else {
            BodyError::Field(err(&path, inner))
        }
    })?;
    Ok(value)
}

/// Checks permissions on their own: ranges, and task types from `allowed`.
pub fn permissions(p: &Permissions, allowed: &[&str], prefix: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let f = |name: &str| format!("{prefix}{name}");
    let r = &p.resources;
    if !(1..=100).contains(&r.cpu_percent_max) {
        out.push(err(
            &f("resources.cpu_percent_max"),
            format!("must be from 1 to 100, got {}", r.cpu_percent_max),
        ));
    }
    for (name, value) in [
        ("resources.ram_mb_max", r.ram_mb_max),
        ("resources.storage_gb_max", r.storage_gb_max),
        ("resources.bandwidth_mbps_max", r.bandwidth_mbps_max),
    ] {
        if value == 0 {
            out.push(err(&f(name), "must be positive"));
        }
    }
    let t = &p.tasks;
    if t.allowlist.is_empty() {
        out.push(err(
            &f("tasks.allowlist"),
            "must name at least one task type",
        ));
    }
    for (i, ty) in t.allowlist.iter().enumerate() {
        if !allowed.contains(&ty.as_str()) {
            out.push(err(
                &f(&format!("tasks.allowlist[{i}]")),
                format!(
                    "task type {ty:?} is not offered (offered: {})",
                    allowed.join(", ")
                ),
            ));
        } else if t.allowlist[..i].contains(ty) {
            out.push(err(
                &f(&format!("tasks.allowlist[{i}]")),
                format!("task type {ty:?} is listed twice"),
            ));
        }
    }
    if !(t.min_reputation.is_finite() && (0.0..=1.0).contains(&t.min_reputation)) {
        out.push(err(
            &f("tasks.min_reputation"),
            format!("must be from 0 to 1, got {}", t.min_reputation),
        ));
    }
    if t.max_duration_hours == 0 {
        out.push(err(&f("tasks.max_duration_hours"), "must be positive"));
    }
    out
}

/// Checks that `chosen` is no wider than `proposed`: every ceiling at most
/// the proposed one, task types a subset, the reputation floor and the
/// monitoring promises at least as strict.
pub fn narrowing(chosen: &Permissions, proposed: &Permissions, prefix: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let f = |name: &str| format!("{prefix}{name}");
    let (c, p) = (&chosen.resources, &proposed.resources);
    for (name, got, max) in [
        (
            "resources.cpu_percent_max",
            u64::from(c.cpu_percent_max),
            u64::from(p.cpu_percent_max),
        ),
        ("resources.ram_mb_max", c.ram_mb_max, p.ram_mb_max),
        (
            "resources.storage_gb_max",
            c.storage_gb_max,
            p.storage_gb_max,
        ),
        (
            "resources.bandwidth_mbps_max",
            c.bandwidth_mbps_max,
            p.bandwidth_mbps_max,
        ),
        (
            "tasks.max_duration_hours",
            u64::from(chosen.tasks.max_duration_hours),
            u64::from(proposed.tasks.max_duration_hours),
        ),
    ] {
        if got > max {
            out.push(err(
                &f(name),
                format!("{got} widens the proposed limit of {max}"),
            ));
        }
    }
    for (i, ty) in chosen.tasks.allowlist.iter().enumerate() {
        if !proposed.tasks.allowlist.contains(ty) {
            out.push(err(
                &f(&format!("tasks.allowlist[{i}]")),
                format!("task type {ty:?} was not proposed"),
            ));
        }
    }
    if chosen.tasks.min_reputation < proposed.tasks.min_reputation {
        out.push(err(
            &f("tasks.min_reputation"),
            format!(
                "{} is below the proposed floor of {}",
                chosen.tasks.min_reputation, proposed.tasks.min_reputation
            ),
        ));
    }
    let (cm, pm) = (&chosen.monitoring, &proposed.monitoring);
    for (name, got, promised) in [
        (
            "monitoring.user_activity_yield",
            cm.user_activity_yield,
            pm.user_activity_yield,
        ),
        (
            "monitoring.resource_monitoring",
            cm.resource_monitoring,
            pm.resource_monitoring,
        ),
        (
            "monitoring.audit_logging",
            cm.audit_logging,
            pm.audit_logging,
        ),
    ] {
        if promised && !got {
            out.push(err(
                &f(name),
                "cannot be switched off: it protects the volunteer",
            ));
        }
    }
    out
}

/// Checks a signed grant's statement against the manifest it names and the
/// coordinator's offer. The signature itself is checked by
/// [`crate::signing::open_grant`] before this.
pub fn grant(
    statement: &GrantStatement,
    manifest: &CapabilityManifest,
    allowed: &[&str],
    now: i64,
) -> Vec<FieldError> {
    let mut out = Vec::new();
    if statement.manifest_id != manifest.manifest_id {
        out.push(err("manifest_id", "does not name this manifest"));
    }
    if statement.manifest_digest != manifest_digest(manifest) {
        out.push(err(
            "manifest_digest",
            "does not match the manifest that was shown",
        ));
    }
    if statement.node_public_key != manifest.node_public_key {
        out.push(err(
            "node_public_key",
            "is not the key the manifest was made for",
        ));
    }
    if now >= manifest.expires_at {
        out.push(err("manifest_id", "the manifest has expired; join again"));
    }
    if (statement.signed_at - now).abs() > MAX_CLOCK_SKEW_SECS * 5 {
        out.push(err(
            "signed_at",
            format!(
                "{} is too far from the server time {now}",
                statement.signed_at
            ),
        ));
    }
    if statement.grant_expires_at <= now {
        out.push(err("grant_expires_at", "must be in the future"));
    } else if statement.grant_expires_at > manifest.grant_expires_at_max {
        out.push(err(
            "grant_expires_at",
            format!(
                "{} is later than the proposed end {}",
                statement.grant_expires_at, manifest.grant_expires_at_max
            ),
        ));
    }
    if statement.nonce.len() < 8 || statement.nonce.len() > 128 {
        out.push(err("nonce", "must be 8 to 128 characters"));
    }
    out.extend(permissions(&statement.permissions, allowed, "permissions."));
    out.extend(narrowing(
        &statement.permissions,
        &manifest.proposed,
        "permissions.",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v1::*;

    fn perms() -> Permissions {
        Permissions {
            resources: Resources {
                cpu_percent_max: 50,
                ram_mb_max: 2048,
                storage_gb_max: 10,
                bandwidth_mbps_max: 10,
            },
            tasks: TaskPermissions {
                allowlist: vec!["ml-training".into(), "data-processing".into()],
                min_reputation: 0.8,
                max_duration_hours: 8,
            },
            monitoring: Monitoring {
                user_activity_yield: true,
                resource_monitoring: true,
                audit_logging: true,
            },
        }
    }

    const ALLOWED: &[&str] = &["ml-training", "data-processing", "scientific-compute"];

    #[test]
    fn valid_permissions_pass() {
        assert!(permissions(&perms(), ALLOWED, "").is_empty());
        assert!(narrowing(&perms(), &perms(), "").is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut p = perms();
        p.resources.cpu_percent_max = 0;
        p.resources.ram_mb_max = 0;
        p.tasks.allowlist = vec!["crypto-mining".into()];
        p.tasks.min_reputation = f64::NAN;
        let fields: Vec<String> = permissions(&p, ALLOWED, "permissions.")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "permissions.resources.cpu_percent_max",
                "permissions.resources.ram_mb_max",
                "permissions.tasks.allowlist[0]",
                "permissions.tasks.min_reputation"
            ]
        );
        p = perms();
        p.resources.cpu_percent_max = 101;
        assert_eq!(permissions(&p, ALLOWED, "").len(), 1);
    }

    #[test]
    fn widening_any_limit_is_refused() {
        let proposed = perms();
        let mut chosen = perms();
        chosen.resources.cpu_percent_max = 51;
        chosen.resources.storage_gb_max = 11;
        chosen.tasks.allowlist.push("scientific-compute".into());
        chosen.tasks.min_reputation = 0.5;
        chosen.monitoring.user_activity_yield = false;
        let fields: Vec<String> = narrowing(&chosen, &proposed, "")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "resources.cpu_percent_max",
                "resources.storage_gb_max",
                "tasks.allowlist[2]",
                "tasks.min_reputation",
                "monitoring.user_activity_yield"
            ]
        );
    }

    #[test]
    fn narrowing_is_accepted() {
        let mut chosen = perms();
        chosen.resources.cpu_percent_max = 10;
        chosen.tasks.allowlist.truncate(1);
        chosen.tasks.min_reputation = 0.9;
        assert!(narrowing(&chosen, &perms(), "").is_empty());
    }
}
