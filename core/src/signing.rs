//! Domain-separated Ed25519 signatures: every signed byte string starts with
//! a context label, so a signature made for one purpose can never be replayed
//! as another (a grant as a request, a certificate as a list).

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::b64;
use crate::wire::v1::{
    GRANT_STATEMENT_VERSION, GrantStatement, REVOCATION_CERT_VERSION, RevocationCertificate,
    RevocationList, SignedGrant, SignedRevocationList,
};

const GRANT_CONTEXT: &[u8] = b"askee-grant-v1\0";
const REQUEST_CONTEXT: &[u8] = b"askee-request-v1\0";
const REVOCATION_CERT_CONTEXT: &[u8] = b"askee-revocation-cert-v1\0";
const REVOCATION_LIST_CONTEXT: &[u8] = b"askee-crl-v1\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("{field} is malformed: {cause}")]
    Malformed {
        field: &'static str,
        cause: b64::DecodeError,
    },
    #[error("{what} is not valid json: {cause}")]
    Json { what: &'static str, cause: String },
    #[error("{what} has version {found:?}, expected {expected:?}")]
    Version {
        what: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("signature over {what} does not verify")]
    Invalid { what: &'static str },
}

fn with_context(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + body.len());
    out.extend_from_slice(context);
    out.extend_from_slice(body);
    out
}

fn verify(
    key: &VerifyingKey,
    context: &[u8],
    body: &[u8],
    signature: &str,
    what: &'static str,
) -> Result<(), SignatureError> {
    let sig = b64::signature(signature).map_err(|cause| SignatureError::Malformed {
        field: "signature",
        cause,
    })?;
    key.verify_strict(&with_context(context, body), &sig)
        .map_err(|_| SignatureError::Invalid { what })
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The canonical bytes of a JSON-serialisable value: serde_json's compact
/// form with the struct's declared field order, which both sides share.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types serialise infallibly")
}

/// base64url SHA-256 of the manifest's canonical JSON: what a grant names.
pub fn manifest_digest(manifest: &crate::wire::v1::CapabilityManifest) -> String {
    b64::encode(sha256(&canonical_json(manifest)))
}

/// Signs a grant statement with the volunteer's node key.
pub fn sign_grant(key: &SigningKey, statement: &GrantStatement) -> SignedGrant {
    let bytes = canonical_json(statement);
    let sig = key.sign(&with_context(GRANT_CONTEXT, &bytes));
    SignedGrant {
        statement: b64::encode(&bytes),
        signature: b64::encode(sig.to_bytes()),
    }
}

/// Decodes a signed grant and checks its signature against the node key the
/// statement names. Returns the statement and its exact signed bytes.
pub fn open_grant(signed: &SignedGrant) -> Result<(GrantStatement, Vec<u8>), SignatureError> {
    let bytes = b64::decode(&signed.statement).map_err(|cause| SignatureError::Malformed {
        field: "statement",
        cause,
    })?;
    let statement: GrantStatement =
        serde_json::from_slice(&bytes).map_err(|e| SignatureError::Json {
            what: "grant statement",
            cause: e.to_string(),
        })?;
    if statement.version != GRANT_STATEMENT_VERSION {
        return Err(SignatureError::Version {
            what: "grant statement",
            found: statement.version,
            expected: GRANT_STATEMENT_VERSION,
        });
    }
    let key =
        b64::public_key(&statement.node_public_key).map_err(|cause| SignatureError::Malformed {
            field: "node_public_key",
            cause,
        })?;
    verify(
        &key,
        GRANT_CONTEXT,
        &bytes,
        &signed.signature,
        "grant statement",
    )?;
    Ok((statement, bytes))
}

/// The parts of an HTTP request a node signs, so a signature cannot be moved
/// to another method, path, body or moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub timestamp: i64,
    pub nonce: &'a str,
    pub body: &'a [u8],
}

impl RequestToSign<'_> {
    pub fn signing_bytes(&self) -> Vec<u8> {
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.path_and_query,
            self.timestamp,
            self.nonce,
            hex::encode(sha256(self.body))
        );
        with_context(REQUEST_CONTEXT, text.as_bytes())
    }

    pub fn sign(&self, key: &SigningKey) -> String {
        b64::encode(key.sign(&self.signing_bytes()).to_bytes())
    }

    pub fn verify(&self, key: &VerifyingKey, signature: &str) -> Result<(), SignatureError> {
        let sig = b64::signature(signature).map_err(|cause| SignatureError::Malformed {
            field: "signature",
            cause,
        })?;
        key.verify_strict(&self.signing_bytes(), &sig)
            .map_err(|_| SignatureError::Invalid { what: "request" })
    }
}

/// The four headers that carry a node signature, ready to attach to a
/// request (`askee-node-key`, `askee-timestamp`, `askee-nonce`,
/// `askee-signature`).
pub fn signed_headers(
    key: &SigningKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> [(&'static str, String); 4] {
    let signature = RequestToSign {
        method,
        path_and_query,
        timestamp,
        nonce,
        body,
    }
    .sign(key);
    [
        (
            "askee-node-key",
            b64::encode(key.verifying_key().as_bytes()),
        ),
        ("askee-timestamp", timestamp.to_string()),
        ("askee-nonce", nonce.to_owned()),
        ("askee-signature", signature),
    ]
}

fn certificate_bytes(cert: &RevocationCertificate) -> Vec<u8> {
    // Everything but the signature, in a fixed order.
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        cert.version, cert.grant_id, cert.token_id, cert.subject, cert.issued_at, cert.kid
    );
    with_context(REVOCATION_CERT_CONTEXT, text.as_bytes())
}

/// Makes the revocation certificate handed to a volunteer with their token.
pub fn sign_revocation_certificate(
    key: &SigningKey,
    kid: &str,
    grant_id: &str,
    token_id: &str,
    subject: &str,
    issued_at: i64,
) -> RevocationCertificate {
    let mut cert = RevocationCertificate {
        version: REVOCATION_CERT_VERSION.to_owned(),
        grant_id: grant_id.to_owned(),
        token_id: token_id.to_owned(),
        subject: subject.to_owned(),
        issued_at,
        kid: kid.to_owned(),
        signature: String::new(),
    };
    cert.signature = b64::encode(key.sign(&certificate_bytes(&cert)).to_bytes());
    cert
}

pub fn verify_revocation_certificate(
    key: &VerifyingKey,
    cert: &RevocationCertificate,
) -> Result<(), SignatureError> {
    if cert.version != REVOCATION_CERT_VERSION {
        return Err(SignatureError::Version {
            what: "revocation certificate",
            found: cert.version.clone(),
            expected: REVOCATION_CERT_VERSION,
        });
    }
    let sig = b64::signature(&cert.signature).map_err(|cause| SignatureError::Malformed {
        field: "signature",
        cause,
    })?;
    key.verify_strict(&certificate_bytes(cert), &sig)
        .map_err(|_| SignatureError::Invalid {
            what: "revocation certificate",
        })
}

pub fn sign_revocation_list(key: &SigningKey, list: &RevocationList) -> SignedRevocationList {
    let bytes = canonical_json(list);
    let sig = key.sign(&with_context(REVOCATION_LIST_CONTEXT, &bytes));
    SignedRevocationList {
        list: b64::encode(&bytes),
        signature: b64::encode(sig.to_bytes()),
    }
}

/// Verifies a revocation list; the caller still checks `next_update` against
/// its clock and fails closed once the list is stale.
pub fn open_revocation_list(
    key: &VerifyingKey,
    signed: &SignedRevocationList,
) -> Result<RevocationList, SignatureError> {
    let bytes = b64::decode(&signed.list).map_err(|cause| SignatureError::Malformed {
        field: "list",
        cause,
    })?;
    verify(
        key,
        REVOCATION_LIST_CONTEXT,
        &bytes,
        &signed.signature,
        "revocation list",
    )?;
    serde_json::from_slice(&bytes).map_err(|e| SignatureError::Json {
        what: "revocation list",
        cause: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v1::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn statement(node: &SigningKey) -> GrantStatement {
        GrantStatement {
            version: GRANT_STATEMENT_VERSION.into(),
            manifest_id: "m1".into(),
            manifest_digest: b64::encode([0u8; 32]),
            node_public_key: b64::encode(node.verifying_key().as_bytes()),
            permissions: Permissions {
                resources: Resources {
                    cpu_percent_max: 50,
                    ram_mb_max: 2048,
                    storage_gb_max: 10,
                    bandwidth_mbps_max: 10,
                },
                tasks: TaskPermissions {
                    allowlist: vec!["data-processing".into()],
                    min_reputation: 0.8,
                    max_duration_hours: 8,
                },
                monitoring: Monitoring {
                    user_activity_yield: true,
                    resource_monitoring: true,
                    audit_logging: true,
                },
            },
            grant_expires_at: 2_000,
            signed_at: 1_000,
            nonce: "n".into(),
        }
    }

    #[test]
    fn grant_round_trip() {
        let node = key(1);
        let signed = sign_grant(&node, &statement(&node));
        let (opened, bytes) = open_grant(&signed).unwrap();
        assert_eq!(opened, statement(&node));
        assert_eq!(b64::encode(bytes), signed.statement);
    }

    #[test]
    fn grant_signed_by_another_key_is_rejected() {
        let node = key(1);
        let other = key(2);
        // The statement names `node`, but `other` signs it.
        let signed = sign_grant(&other, &statement(&node));
        assert_eq!(
            open_grant(&signed),
            Err(SignatureError::Invalid {
                what: "grant statement"
            })
        );
    }

    #[test]
    fn grant_statement_edited_after_signing_is_rejected() {
        let node = key(1);
        let signed = sign_grant(&node, &statement(&node));
        let mut widened = statement(&node);
        widened.permissions.resources.cpu_percent_max = 100;
        let forged = SignedGrant {
            statement: b64::encode(canonical_json(&widened)),
            signature: signed.signature,
        };
        assert!(matches!(
            open_grant(&forged),
            Err(SignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn request_signature_binds_every_part() {
        let node = key(3);
        let req = RequestToSign {
            method: "POST",
            path_and_query: "/v1/tokens/t/revoke",
            timestamp: 10,
            nonce: "abc",
            body: b"{}",
        };
        let sig = req.sign(&node);
        req.verify(&node.verifying_key(), &sig).unwrap();
        for changed in [
            RequestToSign {
                method: "GET",
                ..req.clone()
            },
            RequestToSign {
                path_and_query: "/v1/tokens/u/revoke",
                ..req.clone()
            },
            RequestToSign {
                timestamp: 11,
                ..req.clone()
            },
            RequestToSign {
                nonce: "abd",
                ..req.clone()
            },
            RequestToSign {
                body: b"{ }",
                ..req.clone()
            },
        ] {
            assert!(changed.verify(&node.verifying_key(), &sig).is_err());
        }
    }

    #[test]
    fn certificate_and_list_signatures_are_not_interchangeable() {
        let coord = key(4);
        let cert = sign_revocation_certificate(&coord, "k1", "g", "t", "s", 5);
        verify_revocation_certificate(&coord.verifying_key(), &cert).unwrap();
        let mut tampered = cert.clone();
        tampered.grant_id = "g2".into();
        assert!(verify_revocation_certificate(&coord.verifying_key(), &tampered).is_err());

        let list = RevocationList {
            version: REVOCATION_LIST_VERSION.into(),
            issuer: "i".into(),
            kid: "k1".into(),
            issued_at: 1,
            next_update: 2,
            revoked: vec![],
        };
        let signed = sign_revocation_list(&coord, &list);
        assert_eq!(
            open_revocation_list(&coord.verifying_key(), &signed).unwrap(),
            list
        );
        // A certificate signature presented as the list signature fails.
        let swapped = SignedRevocationList {
            signature: cert.signature,
            ..signed
        };
        assert!(open_revocation_list(&coord.verifying_key(), &swapped).is_err());
    }
}
