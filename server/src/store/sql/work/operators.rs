//! Operators' keys and the modules they upload.

use crate::store::sql::{SqlStore, append_in, db};
use crate::store::{AuditDraft, StoreError};

use super::rows::u64_of;

/// `CoordinatorStore::add_operator_key`.
pub(super) async fn add_operator_key(
    store: &SqlStore,
    operator: &str,
    public_key: &str,
    now: i64,
    audit: AuditDraft,
) -> Result<(), StoreError> {
    const OP: &str = "add operator key";
    let backend = store.backend;
    let mut w = store.begin_write(OP).await?;
    let result = async {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT operator FROM operator_keys WHERE public_key = $1")
                .bind(public_key)
                .fetch_optional(w.conn())
                .await
                .map_err(db(OP))?;
        match existing {
            Some(owner) if owner == operator => return Ok(()),
            Some(_) => {
                return Err(StoreError::Conflict {
                    what: "the key is registered to another operator".into(),
                });
            }
            None => {}
        }
        sqlx::query(
            "INSERT INTO operator_keys (public_key, operator, created_at) VALUES ($1, $2, $3)",
        )
        .bind(public_key)
        .bind(operator)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(db(OP))?;
        append_in(w.conn(), backend, vec![audit]).await?;
        Ok(())
    }
    .await;
    w.finish(result).await
}

/// `CoordinatorStore::operator_of_key`.
pub(super) async fn operator_of_key(
    store: &SqlStore,
    public_key: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar("SELECT operator FROM operator_keys WHERE public_key = $1")
        .bind(public_key)
        .fetch_optional(&store.pool)
        .await
        .map_err(db("read operator key"))
}

/// `CoordinatorStore::put_module`.
pub(super) async fn put_module(
    store: &SqlStore,
    sha256: &str,
    bytes: &[u8],
    operator: &str,
    now: i64,
) -> Result<bool, StoreError> {
    const OP: &str = "store module";
    let mut w = store.begin_write(OP).await?;
    let result = async {
        let n = sqlx::query(
            "INSERT INTO modules (sha256, bytes, size_bytes, operator, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes.to_vec())
        .bind(bytes.len() as i64)
        .bind(operator)
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

/// `CoordinatorStore::module`.
pub(super) async fn module(store: &SqlStore, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT bytes FROM modules WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(&store.pool)
        .await
        .map_err(db("read module"))
}

/// `CoordinatorStore::module_size`.
pub(super) async fn module_size(store: &SqlStore, sha256: &str) -> Result<Option<u64>, StoreError> {
    let size: Option<i64> = sqlx::query_scalar("SELECT size_bytes FROM modules WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(&store.pool)
        .await
        .map_err(db("read module size"))?;
    Ok(size.map(u64_of))
}
