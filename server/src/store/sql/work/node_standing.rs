//! A node's standing on its row: pending node events and misbehaviour counted
//! into its counters, its reputation recomputed and exclusion evaluated
//! (`verdict::node_standing`), the outcome written back and audited.

use sqlx::{AnyConnection, Row};

use askee_core::rules::ByzantinePolicy;

use super::rows::{backend_of_conn, corrupt, load_node, u64_of};
use crate::store::sql::{SqlStore, append_in, db, to_i64};
use crate::store::{AuditDraft, Exclusion, Misbehaviour, NodeRecord, StoreError};
use crate::verdict::{NodeEventKind, NodeFacts, NodeStanding, node_standing};

/// How a node is judged: the server's heartbeat interval (seconds, for the
/// uptime rate) and the exclusion policy.
#[derive(Clone, Copy)]
pub(super) struct Judging<'a> {
    pub now_ms: i64,
    pub heartbeat_interval: u64,
    pub policy: &'a ByzantinePolicy,
}

/// Takes a node's pending events, oldest first: `DELETE … RETURNING`, so
/// what is counted is exactly what is removed, even with reports committing
/// meanwhile.
async fn take_events(
    conn: &mut AnyConnection,
    node_key: &str,
    op: &'static str,
) -> Result<Vec<(NodeEventKind, u64)>, StoreError> {
    let rows =
        sqlx::query("DELETE FROM node_events WHERE node_key = $1 RETURNING event_id, kind, times")
            .bind(node_key)
            .fetch_all(&mut *conn)
            .await
            .map_err(db(op))?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get("event_id").map_err(db(op))?;
        let kind: String = r.try_get("kind").map_err(db(op))?;
        let times: i64 = r.try_get("times").map_err(db(op))?;
        events.push((id, kind, u64_of(times)));
    }
    events.sort();
    events
        .into_iter()
        .map(|(id, kind, times)| match NodeEventKind::parse(&kind) {
            Some(kind) => Ok((kind, times)),
            None => Err(corrupt(
                format!("node event {id}"),
                format!("unknown kind {kind:?}"),
            )),
        })
        .collect()
}

/// Folds a node's pending events (and `extra` misbehaviour) into its row,
/// under the row's lock: counters in event order (a wrong verdict resets the
/// streak), reputation recomputed, exclusion evaluated.
pub(super) async fn fold_into_node(
    conn: &mut AnyConnection,
    node_key: &str,
    lock: &str,
    judging: Judging<'_>,
    extra: Option<Misbehaviour>,
    op: &'static str,
) -> Result<Option<Exclusion>, StoreError> {
    let Some(mut node) = load_node(conn, node_key, lock, op).await? else {
        return Ok(None);
    };
    let events = take_events(conn, node_key, op).await?;
    for &(kind, times) in &events {
        node.stats.apply_event(kind, times);
    }
    match extra {
        Some(kind) => node.stats.count_misbehaviour(kind),
        None if events.is_empty() => return Ok(None),
        None => {}
    }
    let standing = node_standing(
        &NodeFacts {
            state: node.state,
            exclusion_reason: node.exclusion_reason.as_deref(),
            registered_at: node.registered_at,
            stats: &node.stats,
        },
        judging.now_ms.div_euclid(1000),
        judging.heartbeat_interval,
        judging.policy,
    );
    save_standing(conn, &node, &standing, op).await?;
    if !standing.newly_excluded {
        return Ok(None);
    }
    let reason = standing.exclusion_reason.unwrap_or_default();
    audit_exclusion(conn, &node, &reason, judging.now_ms).await?;
    Ok(Some(Exclusion {
        node_key: node.node_key.clone(),
        token_id: node.token_id.clone(),
        reason,
    }))
}

/// Writes a node's counters and standing back.
async fn save_standing(
    conn: &mut AnyConnection,
    node: &NodeRecord,
    standing: &NodeStanding,
    op: &'static str,
) -> Result<(), StoreError> {
    let s = &node.stats;
    sqlx::query(
        "UPDATE nodes SET assigned = $2, completed = $3, failed = $4, agreed = $5, wrong = $6, \
         invalid_signatures = $7, consensus_failures = $8, streak = $9, reputation_micros = $10, \
         state = $11, exclusion_reason = $12, policy_violations = $13, malicious_patterns = $14 \
         WHERE node_key = $1",
    )
    .bind(&node.node_key)
    .bind(to_i64(s.assigned))
    .bind(to_i64(s.completed))
    .bind(to_i64(s.failed))
    .bind(to_i64(s.agreed))
    .bind(to_i64(s.wrong))
    .bind(to_i64(s.invalid_signatures))
    .bind(to_i64(s.consensus_failures))
    .bind(to_i64(s.streak))
    .bind(i64::from(standing.reputation_micros))
    .bind(standing.state.as_str())
    .bind(&standing.exclusion_reason)
    .bind(to_i64(s.policy_violations))
    .bind(to_i64(s.malicious_patterns))
    .execute(&mut *conn)
    .await
    .map_err(db(op))?;
    Ok(())
}

/// The audit entry of a new exclusion. Its outstanding leases go back to the
/// pool at the next sweep (which locks task before assignment, like every
/// other path).
async fn audit_exclusion(
    conn: &mut AnyConnection,
    node: &NodeRecord,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let s = &node.stats;
    append_in(
        conn,
        backend_of_conn(conn),
        vec![AuditDraft {
            timestamp_ms: now_ms,
            kind: "node.byzantine".into(),
            subject: node.node_key.clone(),
            data: serde_json::json!({
                "reason": reason,
                "token_id": node.token_id,
                "grant_id": node.grant_id,
                "wrong_results": s.wrong,
                "invalid_signatures": s.invalid_signatures,
                "policy_violations": s.policy_violations,
                "malicious_patterns": s.malicious_patterns,
                "consensus_failures": s.consensus_failures,
            }),
        }],
    )
    .await?;
    Ok(())
}

/// `CoordinatorStore::fold_node`.
pub(super) async fn fold_node(
    store: &SqlStore,
    node_key: &str,
    judging: Judging<'_>,
) -> Result<Option<Exclusion>, StoreError> {
    const OP: &str = "fold node events";
    let pending: Option<i64> =
        sqlx::query_scalar("SELECT event_id FROM node_events WHERE node_key = $1 LIMIT 1")
            .bind(node_key)
            .fetch_optional(&store.pool)
            .await
            .map_err(db(OP))?;
    if pending.is_none() {
        return Ok(None);
    }
    let lock = store.for_update();
    let mut w = store.begin_write(OP).await?;
    let result = fold_into_node(w.conn(), node_key, lock, judging, None, OP).await;
    w.finish(result).await
}

/// `CoordinatorStore::fold_pending`.
pub(super) async fn fold_pending(
    store: &SqlStore,
    limit: u32,
    before_ms: i64,
    judging: Judging<'_>,
) -> Result<Vec<Exclusion>, StoreError> {
    const OP: &str = "fold pending node events";
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT node_key FROM node_events WHERE created_ms < $2 LIMIT $1",
    )
    .bind(i64::from(limit))
    .bind(before_ms)
    .fetch_all(&store.pool)
    .await
    .map_err(db(OP))?;
    let mut excluded = Vec::new();
    for key in keys {
        if let Some(e) = fold_node(store, &key, judging).await? {
            excluded.push(e);
        }
    }
    Ok(excluded)
}

/// `CoordinatorStore::record_misbehaviour`.
pub(super) async fn record_misbehaviour(
    store: &SqlStore,
    node_key: &str,
    kind: Misbehaviour,
    what: &str,
    judging: Judging<'_>,
) -> Result<Option<Exclusion>, StoreError> {
    const OP: &str = "record misbehaviour";
    let lock = store.for_update();
    let mut w = store.begin_write(OP).await?;
    let result = async {
        tracing::warn!(node = node_key, ?kind, what, "node misbehaved");
        fold_into_node(w.conn(), node_key, lock, judging, Some(kind), OP).await
    }
    .await;
    w.finish(result).await
}
