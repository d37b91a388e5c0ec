//! The audit chain's side of [`SqlStore`]: appending rows in one transaction that holds
//! the chain head ([`SqlStore::append_chained`]), the one-time chaining of rows written
//! before the chain existed, and the [`Dialect`] — what differs by backend in those
//! statements — that `sqlite.rs` and `postgres.rs` each provide.

use std::collections::HashSet;

use sqlx::migrate::Migrator;

use super::super::StoreError;
use super::super::rows::FromStored;
use super::{Pool, SqlStore};
use crate::audit::chain::{AuditLink, ChainHead, next_links};
use crate::domain::AuditRecord;

impl SqlStore {
    /// One-time backfill after the `0002_audit_chain` migration, which keeps the rows
    /// written before the chain existed as `audit_legacy`: chains them and drops that
    /// table ([`Batch::Legacy`]). Runs when the store opens, before anything else can
    /// append.
    pub(super) async fn chain_legacy_audit(&self) -> Result<(), StoreError> {
        let exists: bool = on_pool!(&self.pool, p => {
            sqlx::query_scalar(self.dialect.legacy_exists).fetch_one(p).await?
        });
        if !exists {
            return Ok(());
        }
        let rows = self.append_chained(Batch::Legacy).await?.len();
        if rows > 0 {
            tracing::info!(
                rows,
                "chained audit rows written before the audit chain existed"
            );
        }
        Ok(())
    }

    /// Appends `batch` to the audit chain in one transaction that holds the chain head:
    /// takes the next positions, computes the links ([`next_links`]), inserts the rows in
    /// one statement and advances the head, with the backend's statements ([`Dialect`],
    /// [`ChainRows`]). [`Batch::New`] first leaves out the rows whose id is stored already,
    /// read under the head's lock so that a concurrent append of the same id (a node's
    /// retry on another replica) is seen; nothing left to append rolls back.
    pub(super) async fn append_chained(
        &self,
        batch: Batch<'_>,
    ) -> Result<Vec<AuditLink>, StoreError> {
        let dialect = self.dialect;
        on_pool!(&self.pool, p => {
            let mut tx = p.begin_with(dialect.begin).await?;
            let head = ChainHead::from_stored(&sqlx::query(dialect.head).fetch_one(&mut *tx).await?)?;
            let legacy;
            let records: Vec<&AuditRecord> = match batch {
                Batch::Records(records) => records.iter().collect(),
                Batch::New(records) => {
                    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
                    let stored = tx.stored_ids(&ids).await?;
                    unseen(records, &stored)
                }
                Batch::Legacy => {
                    // Again under the lock: another replica may have done it meanwhile.
                    let exists: bool = sqlx::query_scalar(dialect.legacy_exists)
                        .fetch_one(&mut *tx)
                        .await?;
                    if !exists {
                        return Ok(Vec::new());
                    }
                    legacy = sqlx::query("SELECT * FROM audit_legacy ORDER BY timestamp_ms, id")
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(AuditRecord::from_stored)
                        .collect::<Result<Vec<_>, _>>()?;
                    sqlx::query("DROP TABLE audit_legacy")
                        .execute(&mut *tx)
                        .await?;
                    legacy.iter().collect()
                }
            };
            if records.is_empty() {
                tx.commit().await?;
                return Ok(Vec::new());
            }
            let links = next_links(&head, records.iter().copied())?;
            tx.insert_chained(&records, &links).await?;
            tx.commit().await?;
            Ok(links)
        })
    }
}

/// The rows of `records` whose id is neither in `stored` nor on an earlier row, in order.
fn unseen<'r>(records: &'r [AuditRecord], stored: &HashSet<String>) -> Vec<&'r AuditRecord> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(records.len());
    records
        .iter()
        .filter(|r| !stored.contains(&r.id) && seen.insert(r.id.as_str()))
        .collect()
}

/// What [`SqlStore::append_chained`] appends.
pub(super) enum Batch<'a> {
    /// New rows, in order; an id already stored fails the whole append.
    Records(&'a [AuditRecord]),
    /// Rows in order, of which those whose id is already stored, or repeats one earlier
    /// in the batch, are redeliveries: left out, not refused.
    New(&'a [AuditRecord]),
    /// The rows of `audit_legacy` (oldest first, by time then id), whose table is dropped
    /// in the same transaction; nothing when another process got there first.
    Legacy,
}

/// The chain's writes that differ by backend beyond a statement's text, implemented on
/// each backend's connection (`sqlite.rs`, `postgres.rs`) and called inside the
/// transaction that holds the chain head.
pub(in crate::store) trait ChainRows {
    /// Which of `ids` are stored already, in one query.
    async fn stored_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError>;
    /// Inserts `records` at their `links` (same length, in order, not empty) with one
    /// multi-row statement where the backend allows, and advances the head to the last.
    async fn insert_chained(
        &mut self,
        records: &[&AuditRecord],
        links: &[AuditLink],
    ) -> Result<(), StoreError>;
}

/// What differs by backend once the pool is open (each dialect module has one): the
/// migrations, and how an append's transaction starts and holds the chain head (the rows
/// themselves go through [`ChainRows`]).
#[derive(Debug)]
pub(in crate::store) struct Dialect {
    /// The backend's `migrations/<backend>/`.
    pub migrator: Migrator,
    /// Starts an append's transaction.
    pub begin: &'static str,
    /// Reads the chain head (`seq`, `hash`), locking it until the transaction ends where
    /// the backend can lock one row.
    pub head: &'static str,
    /// Whether `audit_legacy` still exists, as a boolean.
    pub legacy_exists: &'static str,
}

/// The chain head, without a lock.
pub(in crate::store) const SELECT_HEAD: &str =
    "SELECT seq, hash FROM audit_chain_head WHERE id = 1";

/// The columns of an appended audit row, in the order the backends' inserts bind them.
pub(in crate::store) const CHAINED_COLUMNS: &str =
    "id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash";
