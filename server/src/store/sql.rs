//! SQL implementation of [`Store`](super::Store) for SQLite and PostgreSQL.
//! (Being written: see the store helper's branch.)

use std::sync::Arc;

use super::{Store, StoreError};

pub struct SqlStore;

pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Url {
        url: url.to_owned(),
    })
}
