//! [`DiscoveryStore`] over the same SQL pool and write transactions.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{SqlStore, append_in, db, is_unique_violation};
use crate::store::discovery::{
    DiscoveredInvitation, DiscoveredSignal, DiscoveryStore, DomainCheck, DueDomain,
};
use crate::store::{AuditDraft, InvitationRecord, InvitationState, StoreError};

/// Rows per multi-row INSERT (3 parameters each, under SQLite's limit).
const INSERT_CHUNK: usize = 300;

#[async_trait]
impl DiscoveryStore for SqlStore {
    async fn add_domains(&self, domains: &[String], now: i64) -> Result<u64, StoreError> {
        const OP: &str = "add discovery domains";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM discovery_domains")
                .fetch_one(w.conn())
                .await
                .map_err(db(OP))?;
            for chunk in domains.chunks(INSERT_CHUNK) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                    .collect();
                let sql = format!(
                    "INSERT INTO discovery_domains (domain, added_at, next_check_at) VALUES {} \
                     ON CONFLICT (domain) DO UPDATE SET next_check_at = excluded.next_check_at",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for d in chunk {
                    q = q.bind(d).bind(now).bind(now);
                }
                q.execute(w.conn()).await.map_err(db(OP))?;
            }
            let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM discovery_domains")
                .fetch_one(w.conn())
                .await
                .map_err(db(OP))?;
            Ok((after - before).max(0) as u64)
        }
        .await;
        w.finish(result).await
    }

    async fn due_domains(&self, now: i64, limit: u32) -> Result<Vec<DueDomain>, StoreError> {
        const OP: &str = "read due domains";
        let rows = sqlx::query(
            "SELECT domain, failures FROM discovery_domains WHERE next_check_at <= $1 \
             ORDER BY next_check_at, domain LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                Ok(DueDomain {
                    domain: r.try_get("domain")?,
                    failures: r.try_get("failures")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db(OP))
    }

    async fn record_checks(&self, checks: &[DomainCheck]) -> Result<(), StoreError> {
        const OP: &str = "record domain checks";
        if checks.is_empty() {
            return Ok(());
        }
        let mut w = self.begin_write(OP).await?;
        let result = async {
            for c in checks {
                sqlx::query(
                    "UPDATE discovery_domains SET last_checked_at = $2, next_check_at = $3, \
                     failures = $4, last_outcome = $5, last_reason = $6 WHERE domain = $1",
                )
                .bind(&c.domain)
                .bind(c.checked_at)
                .bind(c.next_check_at)
                .bind(c.failures)
                .bind(&c.outcome)
                .bind(c.reason.clone())
                .execute(w.conn())
                .await
                .map_err(db(OP))?;
            }
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn is_discovered(&self, domain: &str, node_key: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM discovery_signals WHERE domain = $1 AND node_key = $2",
        )
        .bind(domain)
        .bind(node_key)
        .fetch_one(&self.pool)
        .await
        .map_err(db("read discovered signal"))?;
        Ok(n > 0)
    }

    async fn record_discovered(
        &self,
        signal: &DiscoveredSignal,
        invitation: &InvitationRecord,
        audit: AuditDraft,
    ) -> Result<bool, StoreError> {
        const OP: &str = "record discovered invitation";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            // a concurrent insert of the same pair fails on the primary key
            // below and is reported as "already known" too
            let known: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM discovery_signals WHERE domain = $1 AND node_key = $2",
            )
            .bind(&signal.domain)
            .bind(&signal.node_key)
            .fetch_one(w.conn())
            .await
            .map_err(db(OP))?;
            if known > 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO invitations (manifest_id, node_key, source, domain, manifest_json, \
                 manifest_digest, created_at, expires_at, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&invitation.manifest_id)
            .bind(&invitation.node_key)
            .bind(&invitation.source)
            .bind(invitation.domain.clone())
            .bind(&invitation.manifest_json)
            .bind(&invitation.manifest_digest)
            .bind(invitation.created_at)
            .bind(invitation.expires_at)
            .bind(invitation.state.as_str())
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            let inserted = sqlx::query(
                "INSERT INTO discovery_signals (domain, node_key, source, signal_json, \
                 manifest_id, verified_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&signal.domain)
            .bind(&signal.node_key)
            .bind(&signal.source)
            .bind(&signal.signal_json)
            .bind(&invitation.manifest_id)
            .bind(signal.verified_at)
            .execute(w.conn())
            .await;
            match inserted {
                // another crawler verified it first (PostgreSQL, no row to lock)
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Duplicate {
                        what: format!("discovered signal {} {}", signal.domain, signal.node_key),
                    });
                }
                Err(e) => return Err(db(OP)(e)),
                Ok(_) => {}
            }
            append_in(w.conn(), self.backend, vec![audit]).await?;
            Ok(true)
        }
        .await;
        match w.finish(result).await {
            Err(StoreError::Duplicate { .. }) => Ok(false),
            other => other,
        }
    }

    async fn withdraw_discovered(
        &self,
        domain: &str,
        keep_key: Option<&str>,
        at_ms: i64,
        reason: &str,
    ) -> Result<Vec<String>, StoreError> {
        const OP: &str = "withdraw discovered invitations";
        // Most domains never had an invitation: a read answers for them
        // without taking the write lock.
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM discovery_signals s \
             JOIN invitations i ON s.manifest_id = i.manifest_id \
             WHERE s.domain = $1 AND i.state = 'pending'",
        )
        .bind(domain)
        .fetch_one(&self.pool)
        .await
        .map_err(db(OP))?;
        if pending == 0 {
            return Ok(Vec::new());
        }
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let rows = sqlx::query(&format!(
                "SELECT i.manifest_id, i.node_key FROM invitations i \
                 JOIN discovery_signals s ON s.manifest_id = i.manifest_id \
                 WHERE s.domain = $1 AND i.state = 'pending'{}",
                self.for_update()
            ))
            .bind(domain)
            .fetch_all(w.conn())
            .await
            .map_err(db(OP))?;
            let mut withdrawn = Vec::new();
            let mut drafts = Vec::new();
            for row in rows {
                let manifest_id: String = row.try_get("manifest_id").map_err(db(OP))?;
                let node_key: String = row.try_get("node_key").map_err(db(OP))?;
                if keep_key == Some(node_key.as_str()) {
                    continue;
                }
                sqlx::query(
                    "UPDATE invitations SET state = 'withdrawn' \
                     WHERE manifest_id = $1 AND state = 'pending'",
                )
                .bind(&manifest_id)
                .execute(w.conn())
                .await
                .map_err(db(OP))?;
                drafts.push(AuditDraft {
                    timestamp_ms: at_ms,
                    kind: "invitation.withdraw".into(),
                    subject: node_key,
                    data: serde_json::json!({
                        "manifest_id": manifest_id,
                        "domain": domain,
                        "reason": reason,
                    }),
                });
                withdrawn.push(manifest_id);
            }
            append_in(w.conn(), self.backend, drafts).await?;
            Ok(withdrawn)
        }
        .await;
        w.finish(result).await
    }

    async fn discovered(&self, limit: u32) -> Result<Vec<DiscoveredInvitation>, StoreError> {
        const OP: &str = "list discovered invitations";
        let rows = sqlx::query(
            "SELECT s.domain, s.node_key, s.source, s.manifest_id, s.verified_at, i.state \
             FROM discovery_signals s JOIN invitations i ON i.manifest_id = s.manifest_id \
             ORDER BY s.verified_at DESC, s.domain LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state").map_err(db(OP))?;
                Ok(DiscoveredInvitation {
                    domain: r.try_get("domain").map_err(db(OP))?,
                    node_key: r.try_get("node_key").map_err(db(OP))?,
                    source: r.try_get("source").map_err(db(OP))?,
                    manifest_id: r.try_get("manifest_id").map_err(db(OP))?,
                    verified_at: r.try_get("verified_at").map_err(db(OP))?,
                    state: InvitationState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                        what: "discovered invitation".into(),
                        detail: format!("unknown state {state:?}"),
                    })?,
                })
            })
            .collect()
    }
}
