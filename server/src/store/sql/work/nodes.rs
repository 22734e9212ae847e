//! Nodes: registration challenges, registration, heartbeats, the reputation
//! ledger and exclusions still to revoke.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use askee_core::wire::v1::NodeState;

use super::rows::{NODE_COLUMNS, load_node, node_from};
use crate::store::sql::{SqlStore, append_in, db, to_i64};
use crate::store::{AuditDraft, Exclusion, NodeRecord, StoreError};

/// `CoordinatorStore::create_challenge`.
pub(super) async fn create_challenge(
    store: &SqlStore,
    challenge: &str,
    node_key: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    const OP: &str = "create challenge";
    let mut w = store.begin_write(OP).await?;
    let result = async {
        sqlx::query(
            "INSERT INTO node_challenges (challenge, node_key, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(challenge)
        .bind(node_key)
        .bind(expires_at)
        .execute(w.conn())
        .await
        .map_err(db(OP))?;
        Ok(())
    }
    .await;
    w.finish(result).await
}

/// `CoordinatorStore::take_challenge`.
pub(super) async fn take_challenge(
    store: &SqlStore,
    challenge: &str,
    node_key: &str,
    now: i64,
) -> Result<bool, StoreError> {
    const OP: &str = "take challenge";
    let mut w = store.begin_write(OP).await?;
    let result = async {
        sqlx::query("DELETE FROM node_challenges WHERE expires_at < $1")
            .bind(now)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
        let n = sqlx::query(
            "DELETE FROM node_challenges WHERE challenge = $1 AND node_key = $2 AND expires_at >= $3",
        )
        .bind(challenge)
        .bind(node_key)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(db(OP))?
        .rows_affected();
        Ok(n == 1)
    }
    .await;
    w.finish(result).await
}

/// `CoordinatorStore::register_node`.
pub(super) async fn register_node(
    store: &SqlStore,
    n: &NodeRecord,
    audit: AuditDraft,
) -> Result<(), StoreError> {
    const OP: &str = "register node";
    let lock = store.for_update();
    let backend = store.backend;
    let mut w = store.begin_write(OP).await?;
    let result = async {
        match load_node(w.conn(), &n.node_key, lock, OP).await? {
            Some(e) if e.state == NodeState::Byzantine => {
                return Err(StoreError::Conflict {
                    what: format!(
                        "node {} was excluded as byzantine: {}",
                        n.node_key,
                        e.exclusion_reason.unwrap_or_default()
                    ),
                });
            }
            Some(_) => renew_registration(w.conn(), n, OP).await?,
            None => insert_node(w.conn(), n, OP).await?,
        }
        append_in(w.conn(), backend, vec![audit]).await?;
        Ok(())
    }
    .await;
    w.finish(result).await
}

/// A known node's new token and profile; it is active again, its counters
/// are kept.
async fn renew_registration(
    conn: &mut AnyConnection,
    n: &NodeRecord,
    op: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE nodes SET token_id = $2, grant_id = $3, token_expires_at = $4, \
         token_payload_json = $5, profile_json = $6, cpu_cores = $7, ram_mb = $8, \
         storage_gb = $9, bandwidth_mbps = $10, owner = $11, network_prefix = $12, \
         state = 'active', last_heartbeat = $13, heartbeats = heartbeats + 1 \
         WHERE node_key = $1",
    )
    .bind(&n.node_key)
    .bind(&n.token_id)
    .bind(&n.grant_id)
    .bind(n.token_expires_at)
    .bind(&n.token_payload_json)
    .bind(&n.profile_json)
    .bind(i64::from(n.cpu_cores))
    .bind(to_i64(n.ram_mb))
    .bind(to_i64(n.storage_gb))
    .bind(to_i64(n.bandwidth_mbps))
    .bind(&n.owner)
    .bind(&n.network_prefix)
    .bind(n.last_heartbeat)
    .execute(&mut *conn)
    .await
    .map_err(db(op))?;
    Ok(())
}

/// A new node: active, one heartbeat, counters at zero.
async fn insert_node(
    conn: &mut AnyConnection,
    n: &NodeRecord,
    op: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, 0, 0, 0, 0, 0, 0, 0, $17, NULL, 0, 0)"
    ))
    .bind(&n.node_key)
    .bind(&n.token_id)
    .bind(&n.grant_id)
    .bind(n.token_expires_at)
    .bind(&n.token_payload_json)
    .bind(&n.profile_json)
    .bind(i64::from(n.cpu_cores))
    .bind(to_i64(n.ram_mb))
    .bind(to_i64(n.storage_gb))
    .bind(to_i64(n.bandwidth_mbps))
    .bind(&n.owner)
    .bind(&n.network_prefix)
    .bind(NodeState::Active.as_str())
    .bind(n.registered_at)
    .bind(n.last_heartbeat)
    .bind(1i64)
    .bind(i64::from(n.reputation_micros))
    .execute(&mut *conn)
    .await
    .map_err(db(op))?;
    Ok(())
}

/// `CoordinatorStore::node`.
pub(super) async fn node(
    store: &SqlStore,
    node_key: &str,
) -> Result<Option<NodeRecord>, StoreError> {
    let mut conn = store.pool.acquire().await.map_err(db("read node"))?;
    load_node(&mut conn, node_key, "", "read node").await
}

/// `CoordinatorStore::heartbeat`.
pub(super) async fn heartbeat(
    store: &SqlStore,
    node_key: &str,
    now: i64,
    running: &[String],
    lease_expires_at: i64,
) -> Result<(NodeState, Vec<String>), StoreError> {
    const OP: &str = "heartbeat";
    let mut w = store.begin_write(OP).await?;
    let result = async {
        let live_ids = extend_leases(w.conn(), node_key, running, lease_expires_at, OP).await?;
        sqlx::query(
            "UPDATE nodes SET last_heartbeat = $2, heartbeats = heartbeats + 1, \
             state = CASE WHEN state = 'offline' THEN 'active' ELSE state END \
             WHERE node_key = $1",
        )
        .bind(node_key)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(db(OP))?;
        let node = load_node(w.conn(), node_key, "", OP)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("node {node_key}"),
            })?;
        let abandon = if node.state == NodeState::Active {
            running
                .iter()
                .filter(|id| !live_ids.contains(id))
                .cloned()
                .collect()
        } else {
            running.to_vec()
        };
        Ok((node.state, abandon))
    }
    .await;
    w.finish(result).await
}

/// Extends the leases of `running` that are still live (leased to this node,
/// its task pending); returns their ids.
async fn extend_leases(
    conn: &mut AnyConnection,
    node_key: &str,
    running: &[String],
    lease_expires_at: i64,
    op: &'static str,
) -> Result<Vec<String>, StoreError> {
    // Assignment rows before the node row: reports lock assignment before
    // node, so this order cannot deadlock with them. In (task, assignment)
    // order, the order result batches lock assignment rows in, so the two
    // never wait on each other in a cycle.
    let task_of: BTreeMap<String, String> = sqlx::query(
        "SELECT assignment_id, task_id FROM assignments WHERE node_key = $1 \
         AND state = 'leased'",
    )
    .bind(node_key)
    .fetch_all(&mut *conn)
    .await
    .map_err(db(op))?
    .iter()
    .filter_map(|r| {
        Some((
            r.try_get::<String, _>("assignment_id").ok()?,
            r.try_get::<String, _>("task_id").ok()?,
        ))
    })
    .collect();
    let mut ordered: Vec<&String> = running.iter().collect();
    ordered.sort_by_key(|id| (task_of.get(*id), *id));
    let mut live_ids = Vec::new();
    for id in ordered {
        let live = sqlx::query(
            "UPDATE assignments SET lease_expires_at = $3 WHERE assignment_id = $1 \
                 AND node_key = $2 AND state = 'leased' AND EXISTS (SELECT 1 FROM tasks t \
                 WHERE t.task_id = assignments.task_id AND t.state = 'pending')",
        )
        .bind(id)
        .bind(node_key)
        .bind(lease_expires_at)
        .execute(&mut *conn)
        .await
        .map_err(db(op))?
        .rows_affected()
            == 1;
        if live {
            live_ids.push(id.clone());
        }
    }
    Ok(live_ids)
}

/// `CoordinatorStore::reputation_ledger`.
pub(super) async fn reputation_ledger(
    store: &SqlStore,
    limit: u32,
) -> Result<Vec<NodeRecord>, StoreError> {
    const OP: &str = "read reputation ledger";
    let rows = sqlx::query(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes ORDER BY reputation_micros DESC, node_key LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(db(OP))?;
    rows.iter().map(|r| node_from(r, OP)).collect()
}

/// `CoordinatorStore::excluded_unrevoked`.
pub(super) async fn excluded_unrevoked(store: &SqlStore) -> Result<Vec<Exclusion>, StoreError> {
    const OP: &str = "read unrevoked exclusions";
    let rows = sqlx::query(
        "SELECT n.node_key, n.token_id, n.exclusion_reason FROM nodes n \
         JOIN grants g ON g.grant_id = n.grant_id \
         WHERE n.state = 'byzantine' AND g.revoked_at IS NULL",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db(OP))?;
    rows.iter()
        .map(|r| {
            Ok(Exclusion {
                node_key: r.try_get("node_key").map_err(db(OP))?,
                token_id: r.try_get("token_id").map_err(db(OP))?,
                reason: r
                    .try_get::<Option<String>, _>("exclusion_reason")
                    .map_err(db(OP))?
                    .unwrap_or_default(),
            })
        })
        .collect()
}
