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

const ATTESTATION_CONTEXT: &[u8] = b"askee-node-attestation-v1\0";
const TASK_CONTEXT: &[u8] = b"askee-task-v1\0";
const TASK_ID_CONTEXT: &[u8] = b"askee-task-id-v1\0";
const RESULT_CONTEXT: &[u8] = b"askee-result-v1\0";

/// SHA-256 of a system profile's canonical JSON: what an attestation names.
pub fn profile_digest(profile: &crate::wire::v1::SystemProfile) -> [u8; 32] {
    sha256(&canonical_json(profile))
}

/// The bytes a node signs to register: the challenge, the consent token's
/// id, the profile digest (hex) and the node key, so an attestation cannot
/// be moved to another challenge, token, profile or node.
pub fn attestation_bytes(
    challenge: &str,
    token_id: &str,
    profile_digest: &[u8; 32],
    node_key: &str,
) -> Vec<u8> {
    let text = format!(
        "{challenge}\n{token_id}\n{}\n{node_key}",
        hex::encode(profile_digest)
    );
    with_context(ATTESTATION_CONTEXT, text.as_bytes())
}

/// Signs a registration attestation with the node key.
pub fn sign_attestation(
    key: &SigningKey,
    challenge: &str,
    token_id: &str,
    profile: &crate::wire::v1::SystemProfile,
) -> String {
    let node_key = b64::encode(key.verifying_key().as_bytes());
    let bytes = attestation_bytes(challenge, token_id, &profile_digest(profile), &node_key);
    b64::encode(key.sign(&bytes).to_bytes())
}

pub fn verify_attestation(
    key: &VerifyingKey,
    challenge: &str,
    token_id: &str,
    profile: &crate::wire::v1::SystemProfile,
    signature: &str,
) -> Result<(), SignatureError> {
    let node_key = b64::encode(key.as_bytes());
    let bytes = attestation_bytes(challenge, token_id, &profile_digest(profile), &node_key);
    let sig = b64::signature(signature).map_err(|cause| SignatureError::Malformed {
        field: "signature",
        cause,
    })?;
    key.verify_strict(&bytes, &sig)
        .map_err(|_| SignatureError::Invalid {
            what: "attestation",
        })
}

/// The canonical bytes of a task statement (what the operator signs).
pub fn task_statement_bytes(statement: &crate::wire::v1::TaskStatement) -> Vec<u8> {
    canonical_json(statement)
}

/// Signs a task statement with the operator's key.
pub fn sign_task(key: &SigningKey, statement: &crate::wire::v1::TaskStatement) -> String {
    let bytes = with_context(TASK_CONTEXT, &task_statement_bytes(statement));
    b64::encode(key.sign(&bytes).to_bytes())
}

/// Checks an operator's signature over a task statement, and its version.
pub fn verify_task(
    key: &VerifyingKey,
    statement: &crate::wire::v1::TaskStatement,
    signature: &str,
) -> Result<(), SignatureError> {
    if statement.version != crate::wire::v1::TASK_STATEMENT_VERSION {
        return Err(SignatureError::Version {
            what: "task statement",
            found: statement.version.clone(),
            expected: crate::wire::v1::TASK_STATEMENT_VERSION,
        });
    }
    verify(
        key,
        TASK_CONTEXT,
        &task_statement_bytes(statement),
        signature,
        "task statement",
    )
}

/// A task's id: lower-case hex SHA-256 of its domain-separated statement
/// bytes, so one statement is one task however often it is submitted.
pub fn task_id(statement: &crate::wire::v1::TaskStatement) -> String {
    hex::encode(sha256(&with_context(
        TASK_ID_CONTEXT,
        &task_statement_bytes(statement),
    )))
}

fn result_bytes(r: &crate::wire::v1::ResultStatement<'_>) -> Vec<u8> {
    let text = format!(
        "{}\n{}\n{}\n{}\n{}",
        r.assignment_id,
        r.task_id,
        r.node_id,
        r.status.as_str(),
        r.result_digest
    );
    with_context(RESULT_CONTEXT, text.as_bytes())
}

/// The 32-byte seed of a task's deterministic randomness, derived from the
/// statement's `random_seed` so that every replica gets the same bytes.
pub fn task_random_seed(seed: u64) -> [u8; 32] {
    let mut bytes = b"askee-task-seed-v1\0".to_vec();
    bytes.extend_from_slice(&seed.to_be_bytes());
    sha256(&bytes)
}

/// Signs a result statement with the node key (`node_id` must be that
/// key's base64url).
pub fn sign_result(key: &SigningKey, statement: &crate::wire::v1::ResultStatement<'_>) -> String {
    b64::encode(key.sign(&result_bytes(statement)).to_bytes())
}

pub fn verify_result(
    key: &VerifyingKey,
    statement: &crate::wire::v1::ResultStatement<'_>,
    signature: &str,
) -> Result<(), SignatureError> {
    let sig = b64::signature(signature).map_err(|cause| SignatureError::Malformed {
        field: "signature",
        cause,
    })?;
    key.verify_strict(&result_bytes(statement), &sig)
        .map_err(|_| SignatureError::Invalid { what: "result" })
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
    fn task_statement() -> TaskStatement {
        TaskStatement {
            version: TASK_STATEMENT_VERSION.into(),
            module_sha256: "00".repeat(32),
            task_type: "data-processing".into(),
            inputs: TaskInputs {
                args: vec!["a".into()],
                stdin: String::new(),
                files: Default::default(),
            },
            requirements: TaskRequirements {
                cpu_cores: 1,
                ram_mb: 64,
                storage_gb: 0,
                bandwidth_mbps: 0,
            },
            limits: TaskLimits {
                fuel: 1_000,
                memory_mb: 64,
                wall_seconds: 10,
                cpu_percent: 50,
            },
            random_seed: 7,
            deadline: 100,
            f: 1,
            max_replicas: 5,
            adaptive: false,
            nonce: "n".into(),
        }
    }

    #[test]
    fn task_signature_binds_the_statement_and_the_id_is_stable() {
        let op = key(5);
        let st = task_statement();
        let sig = sign_task(&op, &st);
        verify_task(&op.verifying_key(), &st, &sig).unwrap();
        let mut changed = st.clone();
        changed.f = 0;
        assert!(verify_task(&op.verifying_key(), &changed, &sig).is_err());
        assert_eq!(task_id(&st), task_id(&st.clone()));
        assert_ne!(task_id(&st), task_id(&changed));
        // A task signature is not a grant or request signature.
        assert!(verify_task(&key(6).verifying_key(), &st, &sig).is_err());
    }

    #[test]
    fn result_and_attestation_signatures_bind_their_fields() {
        let node = key(7);
        let node_id = b64::encode(node.verifying_key().as_bytes());
        let st = ResultStatement {
            assignment_id: "a1",
            task_id: "t1",
            node_id: &node_id,
            status: ReportStatus::Completed,
            result_digest: "ab",
        };
        let sig = sign_result(&node, &st);
        verify_result(&node.verifying_key(), &st, &sig).unwrap();
        let other = ResultStatement {
            result_digest: "ac",
            ..st.clone()
        };
        assert!(verify_result(&node.verifying_key(), &other, &sig).is_err());
        // The same key's attestation signature never verifies as a result.
        let profile: SystemProfile = serde_json::from_str(
            r#"{"os":"linux","cpu":{"arch":"x86_64","model":"m","cores":2,"frequency_mhz":0},
            "memory":{"total_mb":1024,"available_mb":512},"storage":{"free_gb":1,"total_gb":2},
            "network":{"bandwidth_mbps":0,"metered":null},"gpus":[],
            "containerSupport":{"isolation":"none","cgroup_version":null,"user_namespaces":false,
            "seccomp":false,"landlock_abi":null,"wasm":true}}"#,
        )
        .unwrap();
        let att = sign_attestation(&node, "c", "tok", &profile);
        verify_attestation(&node.verifying_key(), "c", "tok", &profile, &att).unwrap();
        assert!(verify_attestation(&node.verifying_key(), "d", "tok", &profile, &att).is_err());
        assert!(verify_result(&node.verifying_key(), &st, &att).is_err());
        let mut bigger = profile.clone();
        bigger.cpu.cores = 64;
        assert!(verify_attestation(&node.verifying_key(), "c", "tok", &bigger, &att).is_err());
    }
}
