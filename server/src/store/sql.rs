//! SQL implementation of [`Store`](super::Store) for SQLite and PostgreSQL.
//!
//! One implementation over [`sqlx::AnyPool`]: runtime queries only (no
//! database at compile time), `$1`-style placeholders (SQLite accepts them),
//! integers as `BIGINT`, text, and `BLOB`/`BYTEA`. The few dialect
//! differences (row locks, the audit table lock, how a write transaction
//! begins) branch on [`Backend`].
//!
//! Write transactions:
//! - SQLite: serialised inside the process by [`SqlStore::write_lock`] held
//!   across the whole transaction, which also begins with `BEGIN IMMEDIATE`
//!   so the write lock is taken up front (no deferred-upgrade `SQLITE_BUSY`);
//!   reads stay concurrent (WAL).
//! - PostgreSQL: `READ COMMITTED`; the grant row is locked with
//!   `SELECT ... FOR UPDATE` before renewal and revocation checks, and audit
//!   appends take `LOCK TABLE audit_entries IN EXCLUSIVE MODE` (readers are
//!   not blocked) as the last lock of their transaction, so indices are dense
//!   and unique across server processes sharing one database.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use askee_core::merkle::Hash;
use askee_core::wire::v1::AuditEntry;

mod dashboard;
mod discovery;

use super::{
    AuditDraft, Backend, CheckpointRecord, GrantRecord, InvitationRecord, InvitationState,
    OperatorRecord, RevokeOutcome, Store, StoreError, StoredAuditEntry, TokenRecord,
};

mod work;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a SQLite connection waits for a lock held by another connection
/// (another process, or a rollback still being flushed) before failing.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// The store over one connection pool.
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// Held across every SQLite write transaction; unused for PostgreSQL.
    write_lock: Mutex<()>,
}

/// Opens the database named by `url` and applies its migrations.
///
/// `sqlite://path` or `sqlite:path` (the file is created when missing),
/// `postgres://...` or `postgresql://...`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, None).await
}

/// [`open`] with at most `pool` connections to PostgreSQL (default
/// [`default_pool_size`]); SQLite keeps its own small pool.
pub async fn open_with(url: &str, pool: Option<u32>) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqlStore::open_with(url, pool).await?))
}

/// PostgreSQL connections per server process by default: this machine's CPUs
/// plus one. More connections than the database can run at once only queue
/// row-lock waits behind transactions that are waiting for a CPU: with two
/// servers on a 2-core machine, the coordinator benchmark verified 790 tasks/s
/// with 10 connections each, 1,010 with 5 and 1,190–1,240 with 3 (2: 1,150).
/// A database on a larger machine than its servers wants `--db-pool` set.
pub fn default_pool_size() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32 + 1)
}

impl SqlStore {
    /// Like [`open`], returning the concrete type.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, None).await
    }

    /// Like [`open_with`], returning the concrete type.
    pub async fn open_with(url: &str, pool: Option<u32>) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // journal_mode must not run inside a transaction,
                            // so these are per connection, not in a migration.
                            for pragma in [
                                format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"),
                                "PRAGMA journal_mode = WAL".to_owned(),
                                "PRAGMA synchronous = FULL".to_owned(),
                                "PRAGMA foreign_keys = ON".to_owned(),
                            ] {
                                sqlx::query(&pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url(url))
                    .await
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(pool.unwrap_or_else(default_pool_size).max(1))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // Every statement is prepared, and planning them
                            // anew per call (PostgreSQL's default for the
                            // first five and whenever a custom plan looks
                            // cheaper) took 15% of the database's CPU under
                            // the coordinator benchmark. Our queries are key
                            // lookups and short scans whose plans do not depend
                            // on the values; partial indexes are matched on
                            // literals in the SQL, not on parameters.
                            sqlx::query("SET plan_cache_mode = force_generic_plan")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
            }
        }
        .map_err(|source| StoreError::Open {
            url: redact(url),
            source,
        })?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend, source })?;
        tracing::info!(?backend, "store opened and migrated");
        Ok(Self {
            pool,
            backend,
            write_lock: Mutex::new(()),
        })
    }

    /// The pool, for tests and tools that inspect the database directly.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn begin_write(&self, op: &'static str) -> Result<WriteTx<'_>, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let guard = self.write_lock.lock().await;
                let tx = self
                    .pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db(op))?;
                Ok(WriteTx {
                    tx,
                    _guard: Some(guard),
                    op,
                })
            }
            Backend::Postgres => Ok(WriteTx {
                tx: self.pool.begin().await.map_err(db(op))?,
                _guard: None,
                op,
            }),
        }
    }

    /// A row lock for a writer on PostgreSQL; SQLite's write transaction is
    /// exclusive. `FOR NO KEY UPDATE`, not `FOR UPDATE`: writers still exclude
    /// each other, but the `FOR KEY SHARE` lock a foreign-key check takes on
    /// the referenced row (every node event, assignment and report names its
    /// node and task) does not wait for them, nor they for it. With `FOR
    /// UPDATE` a lease's fold of its node waited for every report batch in
    /// flight that named the node: 4.7 ms per fold at 16 agents.
    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR NO KEY UPDATE",
        }
    }
}

/// A write transaction and, on SQLite, the in-process write lock. Fields
/// drop in order: the transaction before the lock.
struct WriteTx<'a> {
    tx: Transaction<'static, Any>,
    _guard: Option<MutexGuard<'a, ()>>,
    op: &'static str,
}

impl WriteTx<'_> {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Commits on `Ok`, rolls back on `Err` (before the write lock is
    /// released, so the next writer finds the database unlocked).
    async fn finish<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let op = self.op;
        match result {
            Ok(value) => {
                self.tx.commit().await.map_err(db(op))?;
                Ok(value)
            }
            Err(error) => {
                if let Err(rollback) = self.tx.rollback().await {
                    tracing::warn!(op, %rollback, "rollback failed");
                }
                Err(error)
            }
        }
    }
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::Url { url: redact(url) })
    }
}

/// Adds `mode=rwc` (create when missing) unless the URL sets a mode.
fn sqlite_url(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

/// The URL without a password, for error messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn hash_from(bytes: Vec<u8>, what: impl FnOnce() -> String) -> Result<Hash, StoreError> {
    Hash::try_from(bytes.as_slice()).map_err(|_| StoreError::Corrupt {
        what: what(),
        detail: format!("expected 32 bytes, found {}", bytes.len()),
    })
}

const INVITATION_COLUMNS: &str = "manifest_id, node_key, source, domain, manifest_json, \
     manifest_digest, created_at, expires_at, state";
const GRANT_COLUMNS: &str = "grant_id, manifest_id, node_key, statement, signature, \
     permissions_json, granted_at, expires_at, revoked_at, revoke_reason, revoked_by";
const TOKEN_COLUMNS: &str = "token_id, grant_id, node_key, kid, issued_at, expires_at, jwt";

fn invitation_from(row: &AnyRow) -> Result<InvitationRecord, sqlx::Error> {
    Ok(InvitationRecord {
        manifest_id: row.try_get("manifest_id")?,
        node_key: row.try_get("node_key")?,
        source: row.try_get("source")?,
        domain: row.try_get("domain")?,
        manifest_json: row.try_get("manifest_json")?,
        manifest_digest: row.try_get("manifest_digest")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        // Placeholder, replaced by the caller after parsing `state`.
        state: InvitationState::Pending,
    })
}

fn invitation_with_state(row: &AnyRow, op: &'static str) -> Result<InvitationRecord, StoreError> {
    let mut invitation = invitation_from(row).map_err(db(op))?;
    let state: String = row.try_get("state").map_err(db(op))?;
    invitation.state = InvitationState::parse(&state).ok_or_else(|| StoreError::Corrupt {
        what: format!("invitation {}", invitation.manifest_id),
        detail: format!("unknown state {state:?}"),
    })?;
    Ok(invitation)
}

fn grant_from(row: &AnyRow) -> Result<GrantRecord, sqlx::Error> {
    Ok(GrantRecord {
        grant_id: row.try_get("grant_id")?,
        manifest_id: row.try_get("manifest_id")?,
        node_key: row.try_get("node_key")?,
        statement: row.try_get("statement")?,
        signature: row.try_get("signature")?,
        permissions_json: row.try_get("permissions_json")?,
        granted_at: row.try_get("granted_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoke_reason: row.try_get("revoke_reason")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

fn token_from(row: &AnyRow) -> Result<TokenRecord, sqlx::Error> {
    Ok(TokenRecord {
        token_id: row.try_get("token_id")?,
        grant_id: row.try_get("grant_id")?,
        node_key: row.try_get("node_key")?,
        kid: row.try_get("kid")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        jwt: row.try_get("jwt")?,
    })
}

fn checkpoint_from(row: &AnyRow, op: &'static str) -> Result<CheckpointRecord, StoreError> {
    let size: i64 = row.try_get("size").map_err(db(op))?;
    let root: Vec<u8> = row.try_get("root").map_err(db(op))?;
    Ok(CheckpointRecord {
        size: size as u64,
        root: hash_from(root, || format!("checkpoint root of size {size}"))?,
        note: row.try_get("note").map_err(db(op))?,
        created_at_ms: row.try_get("created_at_ms").map_err(db(op))?,
    })
}

/// Builds a stored entry from its row. The entry is parsed from the stored
/// body, as stored; when the body no longer parses, the entry is rebuilt
/// from the query columns with `data: null`, so the canonical form of the
/// returned entry differs from `body` and `audit verify` names this index.
fn stored_entry_from(row: &AnyRow, op: &'static str) -> Result<StoredAuditEntry, StoreError> {
    let idx: i64 = row.try_get("idx").map_err(db(op))?;
    let body: String = row.try_get("body").map_err(db(op))?;
    let leaf_hash: Vec<u8> = row.try_get("leaf_hash").map_err(db(op))?;
    let leaf_hash = hash_from(leaf_hash, || format!("leaf hash of audit entry {idx}"))?;
    // Columns say where and what; the body is only read for `data`. `audit
    // verify` compares the two, so an edit to either is caught.
    let data = match serde_json::from_str::<AuditEntry>(&body) {
        Ok(parsed) => parsed.data,
        Err(error) => {
            tracing::warn!(index = idx, %error, "stored audit entry body does not parse");
            serde_json::Value::Null
        }
    };
    let entry = AuditEntry {
        index: idx as u64,
        timestamp_ms: row.try_get("timestamp_ms").map_err(db(op))?,
        kind: row.try_get("kind").map_err(db(op))?,
        subject: row.try_get("subject").map_err(db(op))?,
        data,
    };
    Ok(StoredAuditEntry {
        index: idx as u64,
        entry,
        body,
        leaf_hash,
    })
}

/// Appends `drafts` inside the caller's transaction and returns their
/// indices. On PostgreSQL this takes the audit table lock, held to commit:
/// call it last in a transaction, after every row lock.
async fn append_in(
    conn: &mut AnyConnection,
    backend: Backend,
    drafts: Vec<AuditDraft>,
) -> Result<Vec<u64>, StoreError> {
    const OP: &str = "append audit entries";
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    if backend == Backend::Postgres {
        sqlx::query("LOCK TABLE audit_entries IN EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await
            .map_err(db(OP))?;
    }
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries")
        .fetch_one(&mut *conn)
        .await
        .map_err(db(OP))?;
    // Multi-row inserts (the audit lock is held to commit: fewer round
    // trips under it).
    let mut rows = Vec::with_capacity(drafts.len());
    for (offset, draft) in drafts.into_iter().enumerate() {
        let index = next + offset as i64;
        let entry = AuditEntry {
            index: index as u64,
            timestamp_ms: draft.timestamp_ms,
            kind: draft.kind,
            subject: draft.subject,
            data: draft.data,
        };
        let (body, leaf_hash) = askee_core::audit::leaf(&entry);
        rows.push((entry, body, leaf_hash.to_vec()));
    }
    for chunk in rows.chunks(100) {
        let values: Vec<String> = (0..chunk.len())
            .map(|k| {
                let b = 6 * k;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_entries (idx, timestamp_ms, kind, subject, body, leaf_hash) \
             VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (entry, body, leaf_hash) in chunk {
            q = q
                .bind(entry.index as i64)
                .bind(entry.timestamp_ms)
                .bind(&entry.kind)
                .bind(&entry.subject)
                .bind(body)
                .bind(leaf_hash.clone());
        }
        q.execute(&mut *conn).await.map_err(db(OP))?;
    }
    Ok(rows.iter().map(|(e, _, _)| e.index).collect())
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn discovery(&self) -> &dyn super::discovery::DiscoveryStore {
        self
    }

    fn dashboard(&self) -> &dyn super::dashboard::DashboardStore {
        self
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db("ping"))?;
        Ok(())
    }

    async fn create_invitation(
        &self,
        invitation: &InvitationRecord,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        let mut w = self.begin_write("create invitation").await?;
        let result = async {
            let inserted = sqlx::query(
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
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Duplicate {
                        what: format!("invitation {}", invitation.manifest_id),
                    });
                }
                Err(e) => return Err(db("create invitation")(e)),
                Ok(_) => {}
            }
            append_in(w.conn(), self.backend, vec![audit]).await?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn invitation(&self, manifest_id: &str) -> Result<Option<InvitationRecord>, StoreError> {
        const OP: &str = "read invitation";
        let row = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE manifest_id = $1"
        ))
        .bind(manifest_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(OP))?;
        row.as_ref()
            .map(|row| invitation_with_state(row, OP))
            .transpose()
    }

    async fn record_grant(
        &self,
        grant: &GrantRecord,
        token: &TokenRecord,
        audit: Vec<AuditDraft>,
    ) -> Result<(), StoreError> {
        const OP: &str = "record grant";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let moved = sqlx::query(
                "UPDATE invitations SET state = 'granted' \
                 WHERE manifest_id = $1 AND node_key = $2 AND state = 'pending'",
            )
            .bind(&grant.manifest_id)
            .bind(&grant.node_key)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            if moved.rows_affected() != 1 {
                return Err(StoreError::Conflict {
                    what: format!(
                        "manifest {} has no pending invitation for this node",
                        grant.manifest_id
                    ),
                });
            }
            let inserted = sqlx::query(&format!(
                "INSERT INTO grants ({GRANT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(&grant.grant_id)
            .bind(&grant.manifest_id)
            .bind(&grant.node_key)
            .bind(&grant.statement)
            .bind(&grant.signature)
            .bind(&grant.permissions_json)
            .bind(grant.granted_at)
            .bind(grant.expires_at)
            .bind(grant.revoked_at)
            .bind(grant.revoke_reason.clone())
            .bind(grant.revoked_by.clone())
            .execute(w.conn())
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Duplicate {
                        what: format!("grant {}", grant.grant_id),
                    });
                }
                Err(e) => return Err(db(OP)(e)),
                Ok(_) => {}
            }
            insert_token(w.conn(), token, OP).await?;
            append_in(w.conn(), self.backend, audit).await?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read grant"))?;
        row.as_ref()
            .map(grant_from)
            .transpose()
            .map_err(db("read grant"))
    }

    async fn grants_of_node(&self, node_key: &str) -> Result<Vec<GrantRecord>, StoreError> {
        const OP: &str = "read grants of node";
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE node_key = $1 \
             ORDER BY granted_at, grant_id"
        ))
        .bind(node_key)
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(grant_from)
            .collect::<Result<_, _>>()
            .map_err(db(OP))
    }

    async fn token(&self, token_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_id = $1"
        ))
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read token"))?;
        row.as_ref()
            .map(token_from)
            .transpose()
            .map_err(db("read token"))
    }

    async fn tokens_of_grant(&self, grant_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        const OP: &str = "read tokens of grant";
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE grant_id = $1 \
             ORDER BY issued_at, token_id"
        ))
        .bind(grant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter()
            .map(token_from)
            .collect::<Result<_, _>>()
            .map_err(db(OP))
    }

    async fn record_renewal(
        &self,
        token: &TokenRecord,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        const OP: &str = "record renewal";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let row = sqlx::query(&format!(
                "SELECT node_key, expires_at, revoked_at FROM grants WHERE grant_id = $1{}",
                self.for_update()
            ))
            .bind(&token.grant_id)
            .fetch_optional(w.conn())
            .await
            .map_err(db(OP))?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("grant {}", token.grant_id),
            })?;
            let node_key: String = row.try_get("node_key").map_err(db(OP))?;
            let expires_at: i64 = row.try_get("expires_at").map_err(db(OP))?;
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(db(OP))?;
            if let Some(at) = revoked_at {
                return Err(StoreError::Conflict {
                    what: format!("grant {} was revoked at {at}", token.grant_id),
                });
            }
            if token.issued_at >= expires_at {
                return Err(StoreError::Conflict {
                    what: format!("grant {} ended at {expires_at}", token.grant_id),
                });
            }
            if token.node_key != node_key {
                return Err(StoreError::Conflict {
                    what: format!("token node key differs from grant {}", token.grant_id),
                });
            }
            insert_token(w.conn(), token, OP).await?;
            append_in(w.conn(), self.backend, vec![audit]).await?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn revoke_grant(
        &self,
        grant_id: &str,
        at: i64,
        reason: &str,
        by: &str,
        audit: AuditDraft,
    ) -> Result<RevokeOutcome, StoreError> {
        const OP: &str = "revoke grant";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let row = sqlx::query(&format!(
                "SELECT revoked_at, revoke_reason FROM grants WHERE grant_id = $1{}",
                self.for_update()
            ))
            .bind(grant_id)
            .fetch_optional(w.conn())
            .await
            .map_err(db(OP))?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("grant {grant_id}"),
            })?;
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(db(OP))?;
            if let Some(at) = revoked_at {
                let reason: Option<String> = row.try_get("revoke_reason").map_err(db(OP))?;
                return Ok(RevokeOutcome::AlreadyRevoked {
                    at,
                    reason: reason.unwrap_or_default(),
                });
            }
            sqlx::query(
                "UPDATE grants SET revoked_at = $1, revoke_reason = $2, revoked_by = $3 \
                 WHERE grant_id = $4 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(reason)
            .bind(by)
            .bind(grant_id)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            append_in(w.conn(), self.backend, vec![audit]).await?;
            Ok(RevokeOutcome::Revoked)
        }
        .await;
        w.finish(result).await
    }

    async fn revoked_grants(
        &self,
        now: i64,
    ) -> Result<Vec<(GrantRecord, Vec<String>)>, StoreError> {
        const OP: &str = "read revoked grants";
        // One transaction so grants and tokens come from one snapshot.
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        let grants = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants \
             WHERE revoked_at IS NOT NULL AND expires_at > $1 ORDER BY grant_id"
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db(OP))?;
        let tokens = sqlx::query(
            "SELECT t.grant_id, t.token_id FROM tokens t JOIN grants g ON g.grant_id = t.grant_id \
             WHERE g.revoked_at IS NOT NULL AND g.expires_at > $1 ORDER BY t.grant_id, t.token_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        let mut out = Vec::with_capacity(grants.len());
        for row in &grants {
            out.push((grant_from(row).map_err(db(OP))?, Vec::new()));
        }
        for row in &tokens {
            let grant_id: String = row.try_get("grant_id").map_err(db(OP))?;
            let token_id: String = row.try_get("token_id").map_err(db(OP))?;
            // Both lists are sorted by grant id.
            if let Ok(i) = out.binary_search_by(|(g, _)| g.grant_id.as_str().cmp(&grant_id)) {
                out[i].1.push(token_id);
            }
        }
        Ok(out)
    }

    async fn use_nonce(
        &self,
        node_key: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "use nonce";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            sqlx::query("DELETE FROM nonces WHERE expires_at <= $1")
                .bind(now)
                .execute(w.conn())
                .await
                .map_err(db(OP))?;
            let inserted = sqlx::query(
                "INSERT INTO nonces (node_key, nonce, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_key, nonce) DO NOTHING",
            )
            .bind(node_key)
            .bind(nonce)
            .bind(expires_at)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            Ok(inserted.rows_affected() == 1)
        }
        .await;
        w.finish(result).await
    }

    async fn create_operator(
        &self,
        operator: &OperatorRecord,
        audit: AuditDraft,
    ) -> Result<(), StoreError> {
        const OP: &str = "create operator";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let inserted = sqlx::query(
                "INSERT INTO operators (name, token_hash, created_at) VALUES ($1, $2, $3)",
            )
            .bind(&operator.name)
            .bind(&operator.token_hash)
            .bind(operator.created_at)
            .execute(w.conn())
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Duplicate {
                        what: format!("operator {} or its credential", operator.name),
                    });
                }
                Err(e) => return Err(db(OP)(e)),
                Ok(_) => {}
            }
            append_in(w.conn(), self.backend, vec![audit]).await?;
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn operator_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<OperatorRecord>, StoreError> {
        const OP: &str = "read operator";
        let row =
            sqlx::query("SELECT name, token_hash, created_at FROM operators WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(db(OP))?;
        row.map(|row| {
            Ok(OperatorRecord {
                name: row.try_get("name")?,
                token_hash: row.try_get("token_hash")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
        .map_err(db(OP))
    }

    async fn append_audit(&self, drafts: Vec<AuditDraft>) -> Result<Vec<u64>, StoreError> {
        let mut w = self.begin_write("append audit entries").await?;
        let result = append_in(w.conn(), self.backend, drafts).await;
        w.finish(result).await
    }

    async fn audit_size(&self) -> Result<u64, StoreError> {
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries")
            .fetch_one(&self.pool)
            .await
            .map_err(db("read audit size"))?;
        Ok(next as u64)
    }

    async fn audit_entries(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        const OP: &str = "read audit entries";
        let rows = sqlx::query(
            "SELECT idx, timestamp_ms, kind, subject, body, leaf_hash FROM audit_entries \
             WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .bind(to_i64(start))
        .bind(to_i64(end))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter().map(|row| stored_entry_from(row, OP)).collect()
    }

    async fn audit_leaf_hashes(&self, end: u64) -> Result<Vec<Hash>, StoreError> {
        const OP: &str = "read audit leaf hashes";
        let rows =
            sqlx::query("SELECT idx, leaf_hash FROM audit_entries WHERE idx < $1 ORDER BY idx")
                .bind(to_i64(end))
                .fetch_all(&self.pool)
                .await
                .map_err(db(OP))?;
        let mut hashes = Vec::with_capacity(rows.len());
        for (position, row) in rows.iter().enumerate() {
            let idx: i64 = row.try_get("idx").map_err(db(OP))?;
            // A gap would silently give a wrong root: refuse it.
            if idx != position as i64 {
                return Err(StoreError::Corrupt {
                    what: format!("audit entry {position}"),
                    detail: format!("missing: the next stored index is {idx}"),
                });
            }
            let hash: Vec<u8> = row.try_get("leaf_hash").map_err(db(OP))?;
            hashes.push(hash_from(hash, || {
                format!("leaf hash of audit entry {idx}")
            })?);
        }
        Ok(hashes)
    }

    async fn save_checkpoint(&self, checkpoint: &CheckpointRecord) -> Result<(), StoreError> {
        const OP: &str = "save checkpoint";
        let mut w = self.begin_write(OP).await?;
        let result = async {
            let size = to_i64(checkpoint.size);
            let inserted = sqlx::query(
                "INSERT INTO audit_checkpoints (size, root, note, created_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING",
            )
            .bind(size)
            .bind(checkpoint.root.to_vec())
            .bind(&checkpoint.note)
            .bind(checkpoint.created_at_ms)
            .execute(w.conn())
            .await
            .map_err(db(OP))?;
            if inserted.rows_affected() == 0 {
                // Same size again: ignored when it agrees, refused when the
                // root differs (that would mean a rewritten log).
                let stored: Vec<u8> =
                    sqlx::query_scalar("SELECT root FROM audit_checkpoints WHERE size = $1")
                        .bind(size)
                        .fetch_one(w.conn())
                        .await
                        .map_err(db(OP))?;
                if stored != checkpoint.root {
                    return Err(StoreError::Conflict {
                        what: format!(
                            "a checkpoint of size {} with a different root is stored",
                            checkpoint.size
                        ),
                    });
                }
            }
            Ok(())
        }
        .await;
        w.finish(result).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        const OP: &str = "read latest checkpoint";
        let row = sqlx::query(
            "SELECT size, root, note, created_at_ms FROM audit_checkpoints \
             ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db(OP))?;
        row.as_ref().map(|row| checkpoint_from(row, OP)).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        const OP: &str = "read checkpoints";
        let rows = sqlx::query(
            "SELECT size, root, note, created_at_ms FROM audit_checkpoints ORDER BY size",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.iter().map(|row| checkpoint_from(row, OP)).collect()
    }
}

async fn insert_token(
    conn: &mut AnyConnection,
    token: &TokenRecord,
    op: &'static str,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&token.token_id)
    .bind(&token.grant_id)
    .bind(&token.node_key)
    .bind(&token.kid)
    .bind(token.issued_at)
    .bind(token.expires_at)
    .bind(&token.jwt)
    .execute(conn)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate {
            what: format!("token {}", token.token_id),
        }),
        Err(e) => Err(db(op)(e)),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file_unless_a_mode_is_given() {
        assert_eq!(sqlite_url("sqlite:a.db"), "sqlite:a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(backend_of("sqlite:x").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgres://h/db").unwrap(), Backend::Postgres);
        assert_eq!(backend_of("postgresql://h/db").unwrap(), Backend::Postgres);
        assert!(matches!(
            backend_of("mysql://u:secret@h/db"),
            Err(StoreError::Url { url }) if !url.contains("secret")
        ));
    }
}
