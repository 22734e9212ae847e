//! The tamper-evident audit log: signed checkpoints over the RFC 6962 tree
//! of all entries, inclusion and consistency proofs, and the offline check
//! behind `askee-server audit verify`.

use askee_core::merkle::{self, Hash};
use askee_core::note::{self, Checkpoint};
use askee_core::{audit, b64};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::keys::KeySet;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{CheckpointRecord, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointResponse {
    pub size: u64,
    /// base64url root hash.
    pub root: String,
    /// The C2SP signed note.
    pub note: String,
    /// The verifier key in signed-note form, for clients that pin it.
    pub verifier_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    /// base64url hashes, leaf to root.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub first: u64,
    pub second: u64,
    pub proof: Vec<String>,
}

/// One entry as served by the API: the entry and its leaf hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryResponse {
    pub entry: askee_core::wire::v1::AuditEntry,
    pub leaf_hash: String,
}

fn response(state: &AppState, cp: CheckpointRecord) -> CheckpointResponse {
    let origin = state.config.log_origin();
    CheckpointResponse {
        size: cp.size,
        root: b64::encode(cp.root),
        note: cp.note,
        verifier_key: note::verifier_key(&origin, &state.keys.signer().verifying_key()),
    }
}

/// Signs a checkpoint of the whole log if the latest one is behind.
pub async fn checkpoint_now(
    store: &dyn Store,
    keys: &KeySet,
    origin: &str,
    now_ms: i64,
) -> Result<CheckpointRecord, StoreError> {
    let size = store.audit_size().await?;
    if let Some(latest) = store.latest_checkpoint().await?
        && latest.size == size
    {
        return Ok(latest);
    }
    let leaves = store.audit_leaf_hashes(size).await?;
    let root = merkle::root(&leaves);
    let body = Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    }
    .body();
    let record = CheckpointRecord {
        size,
        root,
        note: note::sign(&body, origin, keys.signer().signing_key()),
        created_at_ms: now_ms,
    };
    store.save_checkpoint(&record).await?;
    Ok(record)
}

pub async fn latest(state: &AppState) -> ServiceResult<CheckpointResponse> {
    let cp = checkpoint_now(
        state.store.as_ref(),
        &state.keys,
        &state.config.log_origin(),
        state.clock.now_ms(),
    )
    .await?;
    Ok(response(state, cp))
}

pub async fn entries(
    state: &AppState,
    start: u64,
    end: Option<u64>,
) -> ServiceResult<Vec<AuditEntryResponse>> {
    let size = state.store.audit_size().await?;
    let end = end
        .unwrap_or(size)
        .min(size)
        .min(start.saturating_add(1000));
    if start > end {
        return Err(ServiceError::field(
            "start",
            format!("{start} is past the end of the log ({size})"),
        ));
    }
    Ok(state
        .store
        .audit_entries(start, end)
        .await?
        .into_iter()
        .map(|e| AuditEntryResponse {
            entry: e.entry,
            leaf_hash: b64::encode(e.leaf_hash),
        })
        .collect())
}

fn check_size(size: u64, current: u64, field: &str) -> ServiceResult<()> {
    if size > current {
        return Err(ServiceError::field(
            field,
            format!("{size} is larger than the log ({current})"),
        ));
    }
    Ok(())
}

pub async fn inclusion(state: &AppState, index: u64, size: u64) -> ServiceResult<InclusionProof> {
    check_size(size, state.store.audit_size().await?, "size")?;
    let leaves = state.store.audit_leaf_hashes(size).await?;
    let proof = merkle::inclusion_proof(index, &leaves)
        .map_err(|e| ServiceError::field("index", e.to_string()))?;
    Ok(InclusionProof {
        index,
        size,
        leaf_hash: b64::encode(leaves[index as usize]),
        proof: proof.iter().map(b64::encode).collect(),
    })
}

pub async fn consistency(
    state: &AppState,
    first: u64,
    second: u64,
) -> ServiceResult<ConsistencyProof> {
    check_size(second, state.store.audit_size().await?, "second")?;
    let leaves = state.store.audit_leaf_hashes(second).await?;
    let proof = merkle::consistency_proof(first, &leaves)
        .map_err(|e| ServiceError::field("first", e.to_string()))?;
    Ok(ConsistencyProof {
        first,
        second,
        proof: proof.iter().map(b64::encode).collect(),
    })
}

/// One thing `audit verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// No entry is stored at this index though later ones are.
    Missing { index: u64 },
    /// The stored body does not parse as an entry.
    Unreadable { index: u64, detail: String },
    /// The body names another index: entries were moved.
    Moved { index: u64, claims: u64 },
    /// The body is not the canonical form of its entry, or does not hash to
    /// the stored leaf hash: the entry was edited.
    Edited { index: u64 },
    /// A checkpoint's signature does not verify.
    BadCheckpointSignature { size: u64, detail: String },
    /// A checkpoint covers more entries than are stored: entries deleted.
    Truncated { checkpoint_size: u64, stored: u64 },
    /// The recomputed root for a signed checkpoint differs.
    RootMismatch { size: u64 },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { index } => write!(f, "entry {index}: missing (deleted)"),
            Self::Unreadable { index, detail } => write!(f, "entry {index}: unreadable: {detail}"),
            Self::Moved { index, claims } => write!(
                f,
                "entry {index}: holds the entry of index {claims} (reordered)"
            ),
            Self::Edited { index } => write!(
                f,
                "entry {index}: content does not match its leaf hash (edited)"
            ),
            Self::BadCheckpointSignature { size, detail } => {
                write!(f, "checkpoint at size {size}: signature invalid: {detail}")
            }
            Self::Truncated {
                checkpoint_size,
                stored,
            } => write!(
                f,
                "checkpoint at size {checkpoint_size} covers more than the {stored} stored entries (entries deleted)"
            ),
            Self::RootMismatch { size } => {
                write!(
                    f,
                    "checkpoint at size {size}: root differs from the stored entries"
                )
            }
        }
    }
}

/// Re-derives every leaf from its entry and every checkpoint root from the
/// leaves, and checks each checkpoint's signature with the known keys.
pub async fn verify_log(
    store: &dyn Store,
    keys: &KeySet,
    origin: &str,
) -> Result<(u64, Vec<Finding>), StoreError> {
    let size = store.audit_size().await?;
    let mut findings = Vec::new();
    let mut leaves: Vec<Hash> = Vec::with_capacity(size as usize);
    let mut expected = 0u64;
    let mut start = 0u64;
    loop {
        let batch = store.audit_entries(start, start + 10_000).await?;
        if batch.is_empty() {
            break;
        }
        start += 10_000;
        for stored in batch {
            let at = stored.index;
            while expected < at {
                findings.push(Finding::Missing { index: expected });
                leaves.push(merkle::leaf_hash(b""));
                expected += 1;
            }
            let parsed: Result<askee_core::wire::v1::AuditEntry, _> =
                serde_json::from_str(&stored.body);
            match parsed {
                Err(e) => findings.push(Finding::Unreadable {
                    index: at,
                    detail: e.to_string(),
                }),
                Ok(entry) => {
                    let (canonical, hash) = audit::leaf(&entry);
                    if entry.index != at {
                        findings.push(Finding::Moved {
                            index: at,
                            claims: entry.index,
                        });
                    } else if canonical != stored.body
                        || hash != stored.leaf_hash
                        || entry != stored.entry
                    {
                        findings.push(Finding::Edited { index: at });
                    }
                }
            }
            // The root is recomputed from the bodies, not the stored hashes.
            leaves.push(merkle::leaf_hash(stored.body.as_bytes()));
            expected = at + 1;
        }
    }
    let stored = leaves.len() as u64;
    for cp in store.checkpoints().await? {
        // The key authenticates a checkpoint; its origin line names the log
        // (which follows the public URL, so it may differ from `origin`).
        let name = cp.note.lines().next().unwrap_or(origin);
        let signed = keys
            .history_keys()
            .iter()
            .find_map(|k| note::open(&cp.note, name, k).ok().map(|t| t.to_owned()));
        match signed.as_deref().map(Checkpoint::parse) {
            None => findings.push(Finding::BadCheckpointSignature {
                size: cp.size,
                detail: "no known key signed it".into(),
            }),
            Some(Err(e)) => findings.push(Finding::BadCheckpointSignature {
                size: cp.size,
                detail: e.to_string(),
            }),
            Some(Ok(body)) => {
                if body.size > stored {
                    findings.push(Finding::Truncated {
                        checkpoint_size: body.size,
                        stored,
                    });
                } else if merkle::root(&leaves[..body.size as usize]) != body.root {
                    findings.push(Finding::RootMismatch { size: body.size });
                }
            }
        }
    }
    Ok((stored, findings))
}
