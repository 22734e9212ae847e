//! Consent tokens as EdDSA (Ed25519) JWTs.
//!
//! The algorithm is pinned: the header must say `EdDSA`, must name a key id
//! the verifier already knows, and must not carry its own key material
//! (`jwk`, `jku`, `x5u`, `x5c`), per RFC 8725. Expiry and revocation are
//! checked by [`SignatureChecked::accept`], which needs the current time and a
//! known revocation status: a missing fact is a rejection, never a pass.

use std::collections::HashMap;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::b64;
use crate::signing::sha256;
use crate::wire::v1::{ConsentToken, ConsentTokenPayload, Jwk, Permissions, TOKEN_VERSION};

/// Clock skew tolerated on `issued_at`.
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum TokenError {
    #[error("token is not a compact jwt of three base64url segments")]
    Malformed,
    #[error("token header is not valid json: {0}")]
    Header(String),
    #[error("token algorithm {found:?} is not allowed, only EdDSA is")]
    Algorithm { found: String },
    #[error("token header carries key material ({field}), which is never trusted")]
    EmbeddedKey { field: &'static str },
    #[error("token header has no kid")]
    MissingKid,
    #[error("token key id {kid:?} is not a key of this coordinator")]
    UnknownKid { kid: String },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token payload is invalid: {0}")]
    Payload(String),
    #[error("token version {found:?} is not supported, expected {TOKEN_VERSION:?}")]
    Version { found: String },
    #[error("token issuer does not match the key that signed it")]
    Issuer,
    #[error("token expired at {expires_at} (now {now})")]
    Expired { expires_at: i64, now: i64 },
    #[error("token is issued in the future ({issued_at}, now {now})")]
    NotYetValid { issued_at: i64, now: i64 },
    #[error("token expires ({expires_at}) before it is issued ({issued_at})")]
    Lifetime { issued_at: i64, expires_at: i64 },
    #[error("token was revoked at {revoked_at}: {reason}")]
    Revoked { revoked_at: i64, reason: String },
    #[error("token revocation status is unknown, so it is refused")]
    RevocationUnknown,
    #[error("token signing failed: {0}")]
    Signing(String),
}

/// A coordinator signing key with its key id (the RFC 7638 JWK thumbprint).
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
    encoding: EncodingKey,
}

impl TokenSigner {
    pub fn new(key: SigningKey) -> Result<Self, TokenError> {
        let der = key
            .to_pkcs8_der()
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(Self {
            kid: key_id(&key.verifying_key()),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The issuer string tokens carry: the public key in base64url.
    pub fn issuer(&self) -> String {
        b64::encode(self.key.verifying_key().as_bytes())
    }

    /// Signs the payload as a JWT and returns the seed's `ConsentToken`.
    pub fn issue(&self, payload: ConsentTokenPayload) -> Result<ConsentToken, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = JwtClaims::of(&payload);
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        let signature = token
            .rsplit('.')
            .next()
            .expect("a jwt has segments")
            .to_owned();
        Ok(ConsentToken {
            revocation_url: payload.revocation_url.clone(),
            token,
            payload,
            signature,
        })
    }
}

/// The JWT's claims set: the seed's payload, mirrored in the registered
/// claims of RFC 7519 (`iss`, `sub`, `iat`, `exp`, `jti`) so that any JWT
/// library sees who issued the token, for whom, and when it expires. A token
/// whose two copies disagree, or that lacks either, is refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtClaims {
    iss: Option<String>,
    sub: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    version: String,
    token_id: String,
    grant_id: String,
    issuer: String,
    subject: String,
    issued_at: i64,
    expires_at: i64,
    permissions: Permissions,
    revocation_url: String,
}

impl JwtClaims {
    fn of(p: &ConsentTokenPayload) -> Self {
        Self {
            iss: Some(p.issuer.clone()),
            sub: Some(p.subject.clone()),
            iat: Some(p.issued_at),
            exp: Some(p.expires_at),
            jti: Some(p.token_id.clone()),
            version: p.version.clone(),
            token_id: p.token_id.clone(),
            grant_id: p.grant_id.clone(),
            issuer: p.issuer.clone(),
            subject: p.subject.clone(),
            issued_at: p.issued_at,
            expires_at: p.expires_at,
            permissions: p.permissions.clone(),
            revocation_url: p.revocation_url.clone(),
        }
    }

    /// The seed's payload, once every registered claim is present and equal
    /// to its seed counterpart.
    fn into_payload(self) -> Result<ConsentTokenPayload, TokenError> {
        let mismatch = |claim: &str| {
            TokenError::Payload(format!(
                "registered claim {claim} is missing or disagrees with the payload"
            ))
        };
        if self.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(mismatch("iss"));
        }
        if self.sub.as_deref() != Some(self.subject.as_str()) {
            return Err(mismatch("sub"));
        }
        if self.iat != Some(self.issued_at) {
            return Err(mismatch("iat"));
        }
        if self.exp != Some(self.expires_at) {
            return Err(mismatch("exp"));
        }
        if self.jti.as_deref() != Some(self.token_id.as_str()) {
            return Err(mismatch("jti"));
        }
        Ok(ConsentTokenPayload {
            version: self.version,
            token_id: self.token_id,
            grant_id: self.grant_id,
            issuer: self.issuer,
            subject: self.subject,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            permissions: self.permissions,
            revocation_url: self.revocation_url,
        })
    }
}

/// RFC 7638 thumbprint of an Ed25519 key: the key id askee uses.
pub fn key_id(key: &VerifyingKey) -> String {
    let x = b64::encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    b64::encode(sha256(canonical.as_bytes()))
}

pub fn jwk(key: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: b64::encode(key.as_bytes()),
        kid: key_id(key),
        alg: "EdDSA".into(),
        use_: "sig".into(),
    }
}

struct KnownKey {
    issuer: String,
    decoding: DecodingKey,
}

/// The coordinator keys a verifier trusts, by key id. Old keys stay here
/// until every token they signed has expired.
#[derive(Default)]
pub struct Keyring {
    keys: HashMap<String, KnownKey>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: &VerifyingKey) {
        let issuer = b64::encode(key.as_bytes());
        let decoding = DecodingKey::from_ed_components(&issuer)
            .expect("a base64url ed25519 key is a valid decoding key");
        self.keys.insert(key_id(key), KnownKey { issuer, decoding });
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Checks the header and the signature; expiry and revocation come next,
    /// in [`SignatureChecked::accept`].
    pub fn check_signature(&self, token: &str) -> Result<SignatureChecked, TokenError> {
        let header = parse_header(token)?;
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let known = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKid { kid: kid.clone() })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // askee's own claims carry the times; they are checked in `accept`,
        // which cannot be skipped to reach the payload.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<JwtClaims>(token, &known.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::Json(err) => TokenError::Payload(err.to_string()),
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm {
                    found: "non-EdDSA".into(),
                },
                _ => TokenError::Payload(e.to_string()),
            },
        )?;
        let payload = data.claims.into_payload()?;
        if payload.version != TOKEN_VERSION {
            return Err(TokenError::Version {
                found: payload.version,
            });
        }
        if payload.issuer != known.issuer {
            return Err(TokenError::Issuer);
        }
        Ok(SignatureChecked { payload })
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    kid: Option<String>,
    jwk: Option<serde_json::Value>,
    jku: Option<serde_json::Value>,
    x5u: Option<serde_json::Value>,
    x5c: Option<serde_json::Value>,
}

struct ParsedHeader {
    kid: Option<String>,
}

fn parse_header(token: &str) -> Result<ParsedHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = b64::decode(h).map_err(|_| TokenError::Malformed)?;
    let raw: RawHeader =
        serde_json::from_slice(&bytes).map_err(|e| TokenError::Header(e.to_string()))?;
    match raw.alg {
        Some(serde_json::Value::String(ref alg)) if alg == "EdDSA" => {}
        Some(serde_json::Value::String(alg)) => return Err(TokenError::Algorithm { found: alg }),
        other => {
            return Err(TokenError::Algorithm {
                found: other.map(|v| v.to_string()).unwrap_or_default(),
            });
        }
    }
    for (field, present) in [
        ("jwk", raw.jwk.is_some()),
        ("jku", raw.jku.is_some()),
        ("x5u", raw.x5u.is_some()),
        ("x5c", raw.x5c.is_some()),
    ] {
        if present {
            return Err(TokenError::EmbeddedKey { field });
        }
    }
    Ok(ParsedHeader { kid: raw.kid })
}

/// What is known about a token's revocation. `Unknown` (the store could not
/// answer, or the cached list is stale) is refused like `Revoked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStatus {
    Active,
    Revoked { revoked_at: i64, reason: String },
    Unknown,
}

/// A token whose signature verified. Its payload is reachable only through
/// [`accept`](Self::accept), which checks time and revocation.
#[derive(Debug)]
pub struct SignatureChecked {
    payload: ConsentTokenPayload,
}

impl SignatureChecked {
    pub fn token_id(&self) -> &str {
        &self.payload.token_id
    }

    pub fn grant_id(&self) -> &str {
        &self.payload.grant_id
    }

    pub fn subject(&self) -> &str {
        &self.payload.subject
    }

    pub fn accept(
        self,
        now: i64,
        revocation: RevocationStatus,
    ) -> Result<ConsentTokenPayload, TokenError> {
        check_lifetime(&self.payload, now)?;
        match revocation {
            RevocationStatus::Active => Ok(self.payload),
            RevocationStatus::Revoked { revoked_at, reason } => {
                Err(TokenError::Revoked { revoked_at, reason })
            }
            RevocationStatus::Unknown => Err(TokenError::RevocationUnknown),
        }
    }
}

/// The time rule of `valid_consent_token`: issued, not yet expired, sane.
pub fn check_lifetime(payload: &ConsentTokenPayload, now: i64) -> Result<(), TokenError> {
    if payload.expires_at <= payload.issued_at {
        return Err(TokenError::Lifetime {
            issued_at: payload.issued_at,
            expires_at: payload.expires_at,
        });
    }
    if payload.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(TokenError::NotYetValid {
            issued_at: payload.issued_at,
            now,
        });
    }
    if now >= payload.expires_at {
        return Err(TokenError::Expired {
            expires_at: payload.expires_at,
            now,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v1::*;
    use base64::Engine as _;

    fn payload(signer: &TokenSigner) -> ConsentTokenPayload {
        ConsentTokenPayload {
            version: TOKEN_VERSION.into(),
            token_id: "tok-1".into(),
            grant_id: "grant-1".into(),
            issuer: signer.issuer(),
            subject: "node".into(),
            issued_at: 1_000,
            expires_at: 4_600,
            permissions: Permissions {
                resources: Resources {
                    cpu_percent_max: 50,
                    ram_mb_max: 2048,
                    storage_gb_max: 10,
                    bandwidth_mbps_max: 10,
                },
                tasks: TaskPermissions {
                    allowlist: vec!["ml-training".into()],
                    min_reputation: 0.8,
                    max_duration_hours: 8,
                },
                monitoring: Monitoring {
                    user_activity_yield: true,
                    resource_monitoring: true,
                    audit_logging: true,
                },
            },
            revocation_url: "http://127.0.0.1/revoke/tok-1".into(),
        }
    }

    fn setup() -> (TokenSigner, Keyring) {
        let signer = TokenSigner::new(SigningKey::from_bytes(&[7; 32])).unwrap();
        let mut ring = Keyring::new();
        ring.insert(&signer.verifying_key());
        (signer, ring)
    }

    fn b64json(v: serde_json::Value) -> String {
        b64::encode(serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn issued_token_verifies_and_has_the_seed_shape() {
        let (signer, ring) = setup();
        let issued = signer.issue(payload(&signer)).unwrap();
        assert_eq!(issued.token.rsplit('.').next().unwrap(), issued.signature);
        let got = ring
            .check_signature(&issued.token)
            .unwrap()
            .accept(2_000, RevocationStatus::Active)
            .unwrap();
        assert_eq!(got, payload(&signer));
        let json = serde_json::to_value(&issued).unwrap();
        assert!(json.get("revocationUrl").is_some());
    }

    #[test]
    fn expiry_and_revocation_fail_closed() {
        let (signer, ring) = setup();
        let token = signer.issue(payload(&signer)).unwrap().token;
        let check = |now, status| ring.check_signature(&token).unwrap().accept(now, status);
        assert!(matches!(
            check(4_600, RevocationStatus::Active),
            Err(TokenError::Expired { .. })
        ));
        assert!(matches!(
            check(
                2_000,
                RevocationStatus::Revoked {
                    revoked_at: 1_500,
                    reason: "user".into()
                }
            ),
            Err(TokenError::Revoked { .. })
        ));
        assert_eq!(
            check(2_000, RevocationStatus::Unknown),
            Err(TokenError::RevocationUnknown)
        );
        assert!(matches!(
            check(900, RevocationStatus::Active),
            Err(TokenError::NotYetValid { .. })
        ));
    }

    #[test]
    fn alg_none_is_rejected() {
        let (signer, ring) = setup();
        let token = signer.issue(payload(&signer)).unwrap().token;
        let body = token.split('.').nth(1).unwrap();
        let forged = format!(
            "{}.{body}.",
            b64json(serde_json::json!({"alg":"none","kid":signer.kid()}))
        );
        // An empty signature segment still has three parts.
        assert_eq!(
            ring.check_signature(&forged).unwrap_err(),
            TokenError::Algorithm {
                found: "none".into()
            }
        );
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_rejected() {
        let (signer, ring) = setup();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(signer.kid().into());
        let forged = jsonwebtoken::encode(
            &header,
            &payload(&signer),
            &EncodingKey::from_secret(signer.verifying_key().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            ring.check_signature(&forged).unwrap_err(),
            TokenError::Algorithm {
                found: "HS256".into()
            }
        );
    }

    #[test]
    fn unknown_kid_and_foreign_key_are_rejected() {
        let (_, ring) = setup();
        let stranger = TokenSigner::new(SigningKey::from_bytes(&[9; 32])).unwrap();
        let token = stranger.issue(payload(&stranger)).unwrap().token;
        assert!(matches!(
            ring.check_signature(&token),
            Err(TokenError::UnknownKid { .. })
        ));
    }

    #[test]
    fn tampered_payload_and_signature_are_rejected() {
        let (signer, ring) = setup();
        let token = signer.issue(payload(&signer)).unwrap().token;
        let parts: Vec<&str> = token.split('.').collect();
        let mut widened = payload(&signer);
        widened.permissions.resources.cpu_percent_max = 100;
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64json(serde_json::to_value(&widened).unwrap()),
            parts[2]
        );
        assert_eq!(
            ring.check_signature(&tampered).unwrap_err(),
            TokenError::BadSignature
        );
        let mut sig = b64::decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], b64::encode(sig));
        assert_eq!(
            ring.check_signature(&bad_sig).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn embedded_keys_and_missing_kid_are_rejected() {
        let (signer, ring) = setup();
        let token = signer.issue(payload(&signer)).unwrap().token;
        let rest: Vec<&str> = token.splitn(2, '.').collect();
        let with_jku = format!(
            "{}.{}",
            b64json(serde_json::json!({"alg":"EdDSA","kid":signer.kid(),"jku":"http://x"})),
            rest[1]
        );
        assert_eq!(
            ring.check_signature(&with_jku).unwrap_err(),
            TokenError::EmbeddedKey { field: "jku" }
        );
        let no_kid = format!(
            "{}.{}",
            b64json(serde_json::json!({"alg":"EdDSA"})),
            rest[1]
        );
        assert_eq!(
            ring.check_signature(&no_kid).unwrap_err(),
            TokenError::MissingKid
        );
        assert_eq!(
            ring.check_signature("a.b").unwrap_err(),
            TokenError::Malformed
        );
        let padded = base64::engine::general_purpose::URL_SAFE.encode(b"{}");
        assert!(ring.check_signature(&format!("{padded}.x.y")).is_err());
    }

    #[test]
    fn key_id_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3 gives this thumbprint for its example key.
        let x = b64::decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(key_id(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    /// Issue 28: a third-party JWT library sees the registered claims, equal
    /// to the seed's; a token whose copies disagree is refused.
    #[test]
    fn issue_28_registered_claims_mirror_the_seed_claims() {
        let (signer, ring) = setup();
        let p = payload(&signer);
        let token = signer.issue(p.clone()).unwrap().token;
        let body = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&b64::decode(body).unwrap()).unwrap();
        assert_eq!(claims["iss"], serde_json::json!(p.issuer));
        assert_eq!(claims["sub"], serde_json::json!(p.subject));
        assert_eq!(claims["iat"], serde_json::json!(p.issued_at));
        assert_eq!(claims["exp"], serde_json::json!(p.expires_at));
        assert_eq!(claims["jti"], serde_json::json!(p.token_id));

        for (claim, value) in [
            ("iss", serde_json::json!("someone-else")),
            ("sub", serde_json::json!("another-node")),
            ("iat", serde_json::json!(1)),
            ("exp", serde_json::json!(999_999)),
            ("jti", serde_json::json!("tok-2")),
            ("exp", serde_json::Value::Null),
        ] {
            let mut forged = claims.clone();
            forged[claim] = value;
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(signer.kid().into());
            let token = jsonwebtoken::encode(&header, &forged, &signer.encoding).unwrap();
            let err = ring.check_signature(&token).unwrap_err();
            assert!(
                matches!(&err, TokenError::Payload(m) if m.contains(claim)),
                "{claim}: {err}"
            );
        }
    }
}
