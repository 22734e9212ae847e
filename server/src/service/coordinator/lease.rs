//! Work leases: the node's facts (state, consent token, reputation, trust
//! streak) are built here, `core::coordinator::lease_choice` decides task
//! by task inside the store's lease transaction, and the leased replicas
//! come back as assignments.

use std::collections::HashMap;

use askee_core::coordinator::{BOOTSTRAP_RESULTS, LeaseCandidate, lease_choice, task_facts};
use askee_core::rules::{
    NodeFacts, NodeProfile, Reputation, SignatureFact, TaskTypePolicy, TokenFacts, Validity,
};
use askee_core::token::RevocationStatus;
use askee_core::wire::v1::{
    Assignment, ConsentTokenPayload, LeaseRequest, LeaseResponse, ModuleRef, NodeState,
    TaskStatement,
};

use super::exclusion::fold_node_events;
use super::registered;
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::state::AppState;
use crate::store::{AssignmentRecord, LeaseQuery, NodeRecord, TaskRecord};

/// Leases up to `req.max_tasks` replicas to a registered, active node whose
/// consent token allows work now.
pub async fn lease(
    state: &AppState,
    node_key: &str,
    req: &LeaseRequest,
) -> ServiceResult<LeaseResponse> {
    if !(1..=64).contains(&req.max_tasks) {
        return Err(ServiceError::field("max_tasks", "must be from 1 to 64"));
    }
    // The node's own pending verdicts first: its streak and trust (adaptive
    // replication) and a possible exclusion must be current before it is
    // given work, above all work trusted to it alone.
    fold_node_events(state, node_key).await?;
    let node = registered(state, node_key).await?;
    let now = state.clock.now();
    let worker = worker(state, &node, now).await?;
    let leased = lease_tasks(state, &node, &worker, req, now).await?;
    let assignments = assignments(state, leased).await?;
    state
        .metrics
        .add("askee_replicas_leased_total", assignments.len() as u64);
    Ok(LeaseResponse {
        retry_after_seconds: if assignments.is_empty() { 2 } else { 0 },
        assignments,
    })
}

/// What the lease decision knows of the asking node.
struct Worker {
    facts: NodeFacts,
    token: TokenFacts,
    /// The task types both its token and this coordinator allow.
    task_types: Vec<String>,
}

/// The node's facts, once it is active and its token allows work now; says
/// why not otherwise, rather than silently handing out nothing.
async fn worker(state: &AppState, node: &NodeRecord, now: i64) -> ServiceResult<Worker> {
    if node.state != NodeState::Active {
        return Err(ServiceError::new(
            ErrorKind::Forbidden,
            "node-not-active",
            "the node may not take work",
            format!(
                "node state is {}{}",
                node.state.as_str(),
                node.exclusion_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        )
        .with_reason(node.state.as_str()));
    }
    let payload: ConsentTokenPayload = serde_json::from_str(&node.token_payload_json)
        .map_err(|e| ServiceError::internal(format!("stored token payload is corrupt: {e}")))?;
    let revocation = match state.store.grant(&node.grant_id).await {
        Ok(Some(g)) => match g.revoked_at {
            Some(at) => RevocationStatus::Revoked {
                revoked_at: at,
                reason: g.revoke_reason.unwrap_or_default(),
            },
            None => RevocationStatus::Active,
        },
        _ => RevocationStatus::Unknown,
    };
    let task_types: Vec<String> = payload
        .permissions
        .tasks
        .allowlist
        .iter()
        .filter(|t| state.config.task_types.iter().any(|o| &o.name == *t))
        .cloned()
        .collect();
    let token = TokenFacts {
        payload,
        signature: SignatureFact::Verified,
        revocation,
    };
    if let Validity::Invalid(reasons) = askee_core::rules::valid_consent_token(&token, now) {
        return Err(ServiceError::new(
            ErrorKind::Forbidden,
            "token-not-valid",
            "the consent token no longer allows work",
            format!("{reasons:?}; renew the token and register again"),
        )
        .with_reason("token_invalid"));
    }
    let facts = NodeFacts {
        node_id: node.node_key.clone(),
        reputation: Reputation::from_micros(node.reputation_micros),
        byzantine: node.state == NodeState::Byzantine,
        profile: Some(node_profile(node)),
    };
    Ok(Worker {
        facts,
        token,
        task_types,
    })
}

fn node_profile(n: &NodeRecord) -> NodeProfile {
    NodeProfile {
        cpu_cores: n.cpu_cores,
        ram_mb: n.ram_mb,
        storage_gb: n.storage_gb,
        bandwidth_mbps: n.bandwidth_mbps,
    }
}

/// The configured task types as the lease rules see them.
fn policies(state: &AppState) -> Vec<TaskTypePolicy> {
    state
        .config
        .task_types
        .iter()
        .filter_map(|t| {
            Some(TaskTypePolicy {
                name: t.name.clone(),
                max_duration_hours: t.max_duration_hours,
                min_reputation: Reputation::from_f64(t.min_reputation)?,
                resource_profile: askee_core::rules::ResourceProfile::CpuIntensive,
            })
        })
        .collect()
}

/// A stored task as the lease decision sees it: the signed statement is
/// the source of its facts (limits such as the CPU share are checked
/// against the token too).
fn lease_candidate(t: &TaskRecord) -> LeaseCandidate {
    LeaseCandidate {
        facts: serde_json::from_str::<TaskStatement>(&t.statement_json)
            .ok()
            .map(|statement| task_facts(&statement)),
        bootstrap: t.bootstrap,
        adaptive: t.adaptive,
        replicas_total: t.replicas_total,
    }
}

/// Leases in the store, each task decided by `lease_choice`. A node still
/// bootstrapping takes the challenges it needs first.
async fn lease_tasks(
    state: &AppState,
    node: &NodeRecord,
    worker: &Worker,
    req: &LeaseRequest,
    now: i64,
) -> ServiceResult<Vec<(AssignmentRecord, TaskRecord)>> {
    let task_types: Vec<String> = worker
        .task_types
        .iter()
        .filter(|t| req.task_types.is_empty() || req.task_types.contains(t))
        .cloned()
        .collect();
    let types = policies(state);
    let adaptive = state.config.adaptive_policy;
    let record = askee_core::coordinator::TrustRecord {
        streak: node.stats.streak,
        wrong: node.stats.wrong,
    };
    let choose_fn = move |t: &TaskRecord| {
        lease_choice(
            &worker.facts,
            &worker.token,
            &types,
            &adaptive,
            record,
            now,
            &lease_candidate(t),
            rand::random(),
        )
    };
    let new_id = || uuid::Uuid::new_v4().to_string();
    let lease_until = now + state.config.lease_duration.as_secs() as i64;
    let bootstrapping = node.stats.agreed < BOOTSTRAP_RESULTS;
    // A bootstrapping node takes only the challenges it still needs, so
    // one node cannot drain the challenges others need.
    let needed = u32::try_from(BOOTSTRAP_RESULTS - node.stats.agreed.min(BOOTSTRAP_RESULTS))
        .unwrap_or(1)
        .max(1);
    let query = |challenges_only: bool| LeaseQuery {
        node_key: &node.node_key,
        owner: &node.owner,
        network_prefix: &node.network_prefix,
        max_tasks: if challenges_only {
            req.max_tasks.min(needed)
        } else {
            req.max_tasks
        },
        task_types: &task_types,
        challenges_only,
        now,
        lease_expires_at: lease_until,
        new_id: &new_id,
        choose: &choose_fn,
    };
    let mut leased = state.store.lease(query(bootstrapping)).await?;
    if leased.is_empty() && bootstrapping {
        // Nodes past the floors anyway (a lenient token and type) may take
        // ordinary work too; the floors are checked per task.
        leased = state.store.lease(query(false)).await?;
    }
    Ok(leased)
}

/// The leased replicas as the agent receives them, with each module's size.
async fn assignments(
    state: &AppState,
    leased: Vec<(AssignmentRecord, TaskRecord)>,
) -> ServiceResult<Vec<Assignment>> {
    let mut assignments = Vec::with_capacity(leased.len());
    let mut sizes = HashMap::new();
    for (a, t) in leased {
        let statement: TaskStatement = serde_json::from_str(&t.statement_json)
            .map_err(|e| ServiceError::internal(format!("stored statement is corrupt: {e}")))?;
        let size = match sizes.get(&t.module_sha256) {
            Some(size) => *size,
            None => {
                let size = state
                    .store
                    .module_size(&t.module_sha256)
                    .await?
                    .unwrap_or(0);
                sizes.insert(t.module_sha256.clone(), size);
                size
            }
        };
        assignments.push(Assignment {
            assignment_id: a.assignment_id,
            task_id: t.task_id,
            module: ModuleRef {
                url: format!("/v1/modules/{}", t.module_sha256),
                sha256: t.module_sha256,
                size_bytes: size,
            },
            statement,
            operator_public_key: t.operator_key,
            operator_signature: t.signature,
            lease_expires_at: a.lease_expires_at,
        });
    }
    Ok(assignments)
}
