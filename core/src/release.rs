//! Agent releases as the update repository names them: target names
//! (`askee-agent-<version>-<platform>` for the agent and
//! `askee-agent-worker-<version>-<platform>` for its sandbox worker; a
//! release is the pair), release versions and the choice of the newest
//! applicable release. Pure: the TUF client (the agent's
//! `update` module) verifies the metadata and hands the target names and
//! their signed `custom` fields here.

use std::fmt;

/// Prefix of every agent release target name.
pub const TARGET_PREFIX: &str = "askee-agent-";
/// Prefix of every worker release target name (checked before
/// [`TARGET_PREFIX`], which it extends).
pub const WORKER_PREFIX: &str = "askee-agent-worker-";

/// Which binary of a release a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// `askee-agent`.
    Agent,
    /// `askee-agent-worker`, the sandbox worker that must sit beside it.
    Worker,
}

impl Component {
    /// The installed file name (without the platform's executable suffix).
    pub fn file_name(self) -> &'static str {
        match self {
            Component::Agent => "askee-agent",
            Component::Worker => "askee-agent-worker",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Component::Agent => TARGET_PREFIX,
            Component::Worker => WORKER_PREFIX,
        }
    }
}

/// Longest target name accepted (anything longer is not ours).
pub const MAX_TARGET_NAME: usize = 200;

/// A release version: `MAJOR.MINOR.PATCH`, decimal, no leading zeros, each
/// part at most `u32::MAX`. Ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("release version {0:?} is not MAJOR.MINOR.PATCH")]
    Version(String),
    #[error("platform {0:?} is not ARCH-OS in lower-case letters, digits and underscores")]
    Platform(String),
    #[error("target name {0:?} is not askee-agent[-worker]-<version>-<platform>")]
    TargetName(String),
    #[error(
        "target {name:?} says version {custom:?} in its signed metadata but {named} in its name"
    )]
    VersionMismatch {
        name: String,
        named: Version,
        custom: String,
    },
    #[error("target {name:?} has no signed version in its custom metadata")]
    MissingVersion { name: String },
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, ReleaseError> {
        let bad = || ReleaseError::Version(s.chars().take(64).collect());
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, ReleaseError> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty()
                || p.len() > 10
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// This host's platform as release names spell it, e.g. `x86_64-linux`.
pub fn host_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

fn check_platform(p: &str) -> Result<(), ReleaseError> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match p.split_once('-') {
        Some((arch, os)) if ok_part(arch) && ok_part(os) => Ok(()),
        _ => Err(ReleaseError::Platform(p.chars().take(64).collect())),
    }
}

/// The target name of a release's agent: `askee-agent-<version>-<platform>`.
pub fn target_name(version: Version, platform: &str) -> Result<String, ReleaseError> {
    component_target_name(Component::Agent, version, platform)
}

/// The target name of one binary of a release:
/// `askee-agent-<version>-<platform>` or
/// `askee-agent-worker-<version>-<platform>`.
pub fn component_target_name(
    component: Component,
    version: Version,
    platform: &str,
) -> Result<String, ReleaseError> {
    check_platform(platform)?;
    Ok(format!("{}{version}-{platform}", component.prefix()))
}

/// A release target as read from a target name and its signed custom
/// metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub version: Version,
    pub platform: String,
    pub component: Component,
}

impl Release {
    /// The target name of the other binary of the same release.
    pub fn worker_name(&self) -> String {
        format!("{WORKER_PREFIX}{}-{}", self.version, self.platform)
    }
}

/// Parses a target name; the version in `custom_version` (the signed
/// `custom.version`) must agree with the one in the name.
pub fn parse_target(name: &str, custom_version: Option<&str>) -> Result<Release, ReleaseError> {
    let bad = || ReleaseError::TargetName(name.chars().take(64).collect());
    if name.len() > MAX_TARGET_NAME {
        return Err(bad());
    }
    let (component, rest) = if let Some(rest) = name.strip_prefix(WORKER_PREFIX) {
        (Component::Worker, rest)
    } else {
        (
            Component::Agent,
            name.strip_prefix(TARGET_PREFIX).ok_or_else(bad)?,
        )
    };
    // version has no '-', platform is ARCH-OS: split at the first '-'.
    let (v, platform) = rest.split_once('-').ok_or_else(bad)?;
    let version = Version::parse(v).map_err(|_| bad())?;
    check_platform(platform).map_err(|_| bad())?;
    let custom = custom_version.ok_or_else(|| ReleaseError::MissingVersion {
        name: name.to_owned(),
    })?;
    if Version::parse(custom).ok() != Some(version) {
        return Err(ReleaseError::VersionMismatch {
            name: name.to_owned(),
            named: version,
            custom: custom.chars().take(64).collect(),
        });
    }
    Ok(Release {
        name: name.to_owned(),
        version,
        platform: platform.to_owned(),
        component,
    })
}

/// The newest complete release for `platform` newer than `current`: its
/// agent target, whose worker target (same version and platform) is also
/// listed; releases whose agent target name is in `refused` (failed their
/// self-check here) are skipped. A release without its worker is never
/// chosen: an agent must not be installed beside an older worker.
pub fn choose<'a>(
    releases: &'a [Release],
    platform: &str,
    current: Version,
    refused: &[String],
) -> Option<&'a Release> {
    let has_worker = |a: &Release| {
        releases.iter().any(|w| {
            w.component == Component::Worker && w.version == a.version && w.platform == a.platform
        })
    };
    releases
        .iter()
        .filter(|r| r.component == Component::Agent)
        .filter(|r| r.platform == platform && r.version > current)
        .filter(|r| has_worker(r))
        .filter(|r| !refused.contains(&r.name))
        .max_by(|a, b| a.version.cmp(&b.version).then_with(|| b.name.cmp(&a.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_strictly_and_order_numerically() {
        assert_eq!(
            v("1.10.0"),
            Version {
                major: 1,
                minor: 10,
                patch: 0
            }
        );
        assert!(v("1.10.0") > v("1.9.99"));
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.x",
            "1..3",
            "-1.2.3",
            "1.2.3-rc1",
            "4294967296.0.0",
            " 1.2.3",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(v("4294967295.0.0").major, u32::MAX);
    }

    #[test]
    fn target_names_round_trip_and_must_agree_with_custom() {
        let name = target_name(v("2.0.1"), "x86_64-linux").unwrap();
        assert_eq!(name, "askee-agent-2.0.1-x86_64-linux");
        let r = parse_target(&name, Some("2.0.1")).unwrap();
        assert_eq!(r.version, v("2.0.1"));
        assert_eq!(r.platform, "x86_64-linux");
        assert!(matches!(
            parse_target(&name, Some("2.0.2")),
            Err(ReleaseError::VersionMismatch { .. })
        ));
        assert!(matches!(
            parse_target(&name, None),
            Err(ReleaseError::MissingVersion { .. })
        ));
        for bad in [
            "askee-agent-2.0.1",
            "askee-agent-2.0.1-x86_64",
            "askee-agent-2.0.1-X86-linux",
            "other-2.0.1-x86_64-linux",
            "askee-agent-2.0.1-x86_64-linux/../x",
        ] {
            assert!(
                parse_target(bad, Some("2.0.1")).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(target_name(v("1.0.0"), "x86 64-linux").is_err());
        let w = component_target_name(Component::Worker, v("2.0.1"), "x86_64-linux").unwrap();
        assert_eq!(w, "askee-agent-worker-2.0.1-x86_64-linux");
        let r = parse_target(&w, Some("2.0.1")).unwrap();
        assert_eq!((r.component, r.version), (Component::Worker, v("2.0.1")));
        assert_eq!(r.platform, "x86_64-linux");
        assert_eq!(parse_target(&name, Some("2.0.1")).unwrap().worker_name(), w);
        for bad in [
            "askee-agent-worker-2.0.1",
            "askee-agent-worker--2.0.1-x86_64-linux",
            "askee-agent-workers-2.0.1-x86_64-linux",
        ] {
            assert!(
                parse_target(bad, Some("2.0.1")).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn choose_takes_the_newest_newer_release_for_this_platform() {
        let part = |c: Component, ver: &str, p: &str| Release {
            name: component_target_name(c, v(ver), p).unwrap(),
            version: v(ver),
            platform: p.into(),
            component: c,
        };
        let rel = |ver: &str, p: &str| part(Component::Agent, ver, p);
        let wrk = |ver: &str, p: &str| part(Component::Worker, ver, p);
        let all = [
            rel("1.0.0", "x86_64-linux"),
            wrk("1.0.0", "x86_64-linux"),
            rel("3.0.0", "aarch64-linux"),
            wrk("3.0.0", "aarch64-linux"),
            rel("2.0.0", "x86_64-linux"),
            wrk("2.0.0", "x86_64-linux"),
            rel("2.1.0", "x86_64-linux"),
            wrk("2.1.0", "x86_64-linux"),
            // An agent without its worker, and a worker without its agent.
            rel("4.0.0", "x86_64-linux"),
            wrk("5.0.0", "x86_64-linux"),
        ];
        let pick = choose(&all, "x86_64-linux", v("1.0.0"), &[]).unwrap();
        assert_eq!(pick.version, v("2.1.0"));
        assert_eq!(pick.component, Component::Agent);
        assert_eq!(pick.worker_name(), all[7].name);
        let refused = vec![all[6].name.clone()];
        let pick = choose(&all, "x86_64-linux", v("1.0.0"), &refused).unwrap();
        assert_eq!(pick.version, v("2.0.0"));
        assert!(choose(&all, "x86_64-linux", v("2.1.0"), &[]).is_none());
        assert!(choose(&all, "riscv64-linux", v("0.0.1"), &[]).is_none());
    }
}
