//! A task's position in the audit chain — the last `seq` it finished with — kept in the
//! state store's `meta` table under a key of its own, so it survives restarts on both
//! backends without a table or migration. [`super::syslog`] and [`super::jsonl`] follow
//! the chain with one each.

use crate::store::{StateStore, StoreError};

/// The position stored under `key` (0 when none was stored yet).
pub async fn load(store: &dyn StateStore, key: &str) -> Result<u64, StoreError> {
    match store.get_meta(key).await? {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| StoreError::Malformed(format!("{key} is not a position: {v:?}"))),
    }
}

/// Records under `key` that every row up to `seq` is done.
pub async fn save(store: &dyn StateStore, key: &str, seq: u64) -> Result<(), StoreError> {
    store.set_meta(key, &seq.to_string()).await
}
