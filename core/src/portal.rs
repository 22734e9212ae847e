//! Pure parts of the browser consent portal: the session secret's format
//! and the check of a volunteer's choice against the manifest it is for.
//! Both read untrusted input (a header, a JSON body) and are fuzzed.

use crate::validate::{self, FieldError};
use crate::wire::v1::CapabilityManifest;

pub use crate::wire::v1::ChoiceRequest;

/// The header the page and the agent send the session secret in.
pub const SESSION_HEADER: &str = "askee-portal-session";

/// Why a session header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("header {SESSION_HEADER} is missing")]
    Missing,
    #[error("header {SESSION_HEADER} must be 64 lower-case hex characters")]
    Malformed,
}

/// Parses an untrusted session secret: exactly 64 lower-case hex digits.
pub fn parse_session(value: Option<&[u8]>) -> Result<&str, SessionError> {
    let bytes = value.ok_or(SessionError::Missing)?;
    if bytes.len() != 64 || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SessionError::Malformed);
    }
    std::str::from_utf8(bytes).map_err(|_| SessionError::Malformed)
}

/// Checks a choice against the manifest it is for: the same rules as a
/// grant's limits (never wider than proposed, only allowlisted task types,
/// an end inside the offer). Pure, so the fuzz target can drive it.
pub fn check_choice(
    choice: &ChoiceRequest,
    manifest: &CapabilityManifest,
    allowed: &[&str],
    now: i64,
) -> Vec<FieldError> {
    let mut out = Vec::new();
    if choice.grant_expires_at <= now {
        out.push(FieldError {
            field: "grant_expires_at".into(),
            problem: "must be in the future".into(),
        });
    } else if choice.grant_expires_at > manifest.grant_expires_at_max {
        out.push(FieldError {
            field: "grant_expires_at".into(),
            problem: format!(
                "{} is later than the proposed end {}",
                choice.grant_expires_at, manifest.grant_expires_at_max
            ),
        });
    }
    if now >= manifest.expires_at {
        out.push(FieldError {
            field: "manifest".into(),
            problem: "the manifest has expired; join again".into(),
        });
    }
    out.extend(validate::permissions(
        &choice.permissions,
        allowed,
        "permissions.",
    ));
    out.extend(validate::narrowing(
        &choice.permissions,
        &manifest.proposed,
        "permissions.",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_secrets_are_64_lower_hex() {
        let ok = "0123456789abcdef".repeat(4);
        assert_eq!(parse_session(Some(ok.as_bytes())), Ok(ok.as_str()));
        assert_eq!(parse_session(None), Err(SessionError::Missing));
        for bad in [
            "0123456789ABCDEF".repeat(4),
            "0".repeat(63),
            "0".repeat(65),
            format!("{}g", "0".repeat(63)),
            String::new(),
        ] {
            assert_eq!(
                parse_session(Some(bad.as_bytes())),
                Err(SessionError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_session(Some(&[0xff; 64])),
            Err(SessionError::Malformed)
        );
    }
}
