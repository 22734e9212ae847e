//! Why an update was refused, and every failed update operation.

use super::*;

/// Why the repository or a release was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Metadata past its expiry: a freeze attack or an unmaintained repository.
    Expired { role: String },
    /// Metadata older than what this agent already trusted.
    Rollback { role: String },
    /// Metadata not signed by a threshold of the keys the root names.
    Signature { role: String },
    /// A file that does not match the length and hash its parent role signed.
    Mismatch { what: String },
    /// The repository could not be reached or a file is missing.
    Unreachable,
    /// Anything else tough refused.
    Invalid,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Expired { role } => write!(f, "expired {role} metadata (freeze attack?)"),
            Refusal::Rollback { role } => write!(
                f,
                "rollback: {role} metadata older than the metadata already trusted"
            ),
            Refusal::Signature { role } => write!(
                f,
                "bad signature: {role} metadata is not signed by the trusted {role} key(s)"
            ),
            Refusal::Mismatch { what } => {
                write!(f, "{what} does not match its signed length and hash")
            }
            Refusal::Unreachable => write!(f, "repository unreachable"),
            Refusal::Invalid => write!(f, "invalid repository"),
        }
    }
}

/// Classifies a tough error.
pub fn classify(e: &tough::error::Error) -> Refusal {
    use tough::error::Error as E;
    match e {
        E::ExpiredMetadata { role, .. } => Refusal::Expired {
            role: role.to_string(),
        },
        E::OlderMetadata { role, .. } => Refusal::Rollback {
            role: role.to_string(),
        },
        E::OlderSnapshotInTimestamp { .. } => Refusal::Rollback {
            role: "snapshot".into(),
        },
        E::SnapshotRoleRollback { role, .. } => Refusal::Rollback { role: role.clone() },
        E::VerifyMetadata { role, .. } => Refusal::Signature {
            role: role.to_string(),
        },
        E::VerifyRoleMetadata { role, .. } => Refusal::Signature { role: role.clone() },
        E::VerifyTrustedMetadata { .. } => Refusal::Signature {
            role: "trusted root".into(),
        },
        E::HashMismatch { context, .. } => Refusal::Mismatch {
            what: context.clone(),
        },
        E::MaxSizeExceeded { specifier, .. } => Refusal::Mismatch {
            what: format!("a file (limit from {specifier})"),
        },
        E::VersionMismatch { role, .. } => Refusal::Mismatch {
            what: format!("{role} metadata version"),
        },
        // A target's stream reports its hash or length check as a transport
        // error wrapping tough's own: classify the innermost tough error.
        E::Transport { .. } => {
            let mut cur = std::error::Error::source(e);
            while let Some(c) = cur {
                if let Some(inner) = c.downcast_ref::<tough::error::Error>() {
                    return classify(inner);
                }
                cur = c.source();
            }
            Refusal::Unreachable
        }
        _ => Refusal::Invalid,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(
        "no update repository configured: set update.repository in config.toml or pass --repository"
    )]
    NoRepository,
    #[error(
        "no trusted root configured: set update.trusted_root in config.toml or pass --trusted-root"
    )]
    NoTrustedRoot,
    #[error("update repository URL {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read the trusted root {path}: {source}")]
    TrustedRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refused the update repository {repository}: {refusal} ({detail})")]
    Refused {
        repository: String,
        refusal: Refusal,
        detail: String,
    },
    #[error("refused release {target}: {refusal} ({detail})")]
    Target {
        target: String,
        refusal: Refusal,
        detail: String,
    },
    #[error("release {target} is listed but the repository does not serve it")]
    TargetMissing { target: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "release {target} failed its self-check ({reason}); rolled back to the previous binary"
    )]
    SelfCheck { target: String, reason: String },
    #[error("cannot put the previous binary {prev} back over {binary}: {source}")]
    Rollback {
        prev: PathBuf,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent daemon holds {lock}; it applies updates itself between tasks")]
    DaemonRunning { lock: PathBuf },
    #[error("update state {path} is not valid: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("cannot restart as {binary}: {source}")]
    Restart {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restarting is not supported on this platform")]
    Unsupported,
    #[error(
        "{binary} is not installed in a versioned layout (<dir>/versions/<version>/askee-agent with <dir>/current pointing at it); reinstall with deploy/install-agent.sh"
    )]
    NotVersioned { binary: PathBuf },
    #[error("cannot point {link} at {target}: {source}")]
    Switch {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// An error and its causes in one line, each cause once.
pub(super) fn detail(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}
