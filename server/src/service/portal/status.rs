//! The portal's status page: the volunteer's grants and tokens, usage,
//! recent task runs and audit trail.

use super::{
    PortalAuditEntry, PortalGrant, PortalStatus, PortalTaskRun, PortalToken, PortalUsage,
    STATUS_ROWS, pairing_of,
};
use crate::service::error::ServiceResult;
use crate::state::AppState;
use crate::store::GrantRecord;

/// The status of the session node.
pub async fn status(state: &AppState, session: Option<&[u8]>) -> ServiceResult<PortalStatus> {
    let (_, p) = pairing_of(state, session)?;
    let node_key = &p.node_key;
    let now = state.clock.now();
    let mut grants = Vec::new();
    for g in state.store.grants_of_node(node_key).await? {
        grants.push(grant(state, g, now).await?);
    }
    grants.sort_by_key(|g| std::cmp::Reverse(g.granted_at));
    let dash = state.store.dashboard();
    let assignments = dash.assignments_of_node(node_key, STATUS_ROWS).await?;
    let running = assignments.iter().filter(|a| a.state == "leased").count() as u64;
    let usage = state.store.node(node_key).await?.map(|n| PortalUsage {
        state: n.state.as_str().into(),
        reputation: f64::from(n.reputation_micros) / 1e6,
        last_heartbeat: n.last_heartbeat,
        heartbeats: n.stats.heartbeats,
        running,
        assigned: n.stats.assigned,
        completed: n.stats.completed,
        failed: n.stats.failed,
        agreed: n.stats.agreed,
        wrong: n.stats.wrong,
    });
    let tasks = assignments
        .into_iter()
        .map(|a| PortalTaskRun {
            task_id: a.task_id,
            task_type: a.task_type,
            state: a.state,
            verdict: a.verdict,
            leased_at: a.leased_at,
            reported_at_ms: a.reported_at_ms,
        })
        .collect();
    Ok(PortalStatus {
        node_public_key: node_key.clone(),
        session_expires_at: p.expires_at,
        grants,
        usage,
        tasks,
        audit: audit_trail(state, node_key).await?,
    })
}

/// A grant with its tokens, each active, expired or revoked.
async fn grant(state: &AppState, g: GrantRecord, now: i64) -> ServiceResult<PortalGrant> {
    let tokens = state
        .store
        .tokens_of_grant(&g.grant_id)
        .await?
        .into_iter()
        .map(|t| PortalToken {
            status: if g.revoked_at.is_some() {
                "revoked"
            } else if now >= t.expires_at {
                "expired"
            } else {
                "active"
            }
            .into(),
            token_id: t.token_id,
            issued_at: t.issued_at,
            expires_at: t.expires_at,
        })
        .collect();
    Ok(PortalGrant {
        permissions: serde_json::from_str(&g.permissions_json).ok(),
        grant_id: g.grant_id,
        manifest_id: g.manifest_id,
        granted_at: g.granted_at,
        expires_at: g.expires_at,
        revoked_at: g.revoked_at,
        revoke_reason: g.revoke_reason,
        revoked_by: g.revoked_by,
        tokens,
    })
}

/// The node's latest audit entries.
async fn audit_trail(state: &AppState, node_key: &str) -> ServiceResult<Vec<PortalAuditEntry>> {
    Ok(state
        .store
        .dashboard()
        .audit_of_subject(node_key, STATUS_ROWS)
        .await?
        .into_iter()
        .map(|e| PortalAuditEntry {
            // The leaf body is `{"data":…,"index":…,…}`; show its data.
            data: serde_json::from_str::<serde_json::Value>(&e.body)
                .map(|v| v.get("data").cloned().unwrap_or(serde_json::Value::Null))
                .unwrap_or(serde_json::Value::Null),
            index: e.index,
            timestamp_ms: e.timestamp_ms,
            kind: e.kind,
        })
        .collect())
}
