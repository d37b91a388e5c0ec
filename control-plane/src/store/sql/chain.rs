//! The audit chain's side of [`SqlStore`]: appending rows in one transaction that holds
//! the chain head ([`SqlStore::append_chained`]), the one-time chaining of rows written
//! before the chain existed, and the [`Dialect`] — what differs by backend in those
//! statements — that `sqlite.rs` and `postgres.rs` each provide.

use sqlx::migrate::Migrator;
use sqlx::{Database, Encode, Type};

use super::super::StoreError;
use super::super::rows::{FromStored, bigint};
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
    /// takes the next positions, computes the links ([`next_links`]), inserts the rows and
    /// advances the head, with the backend's statements ([`Dialect`]).
    pub(super) async fn append_chained(
        &self,
        batch: Batch<'_>,
    ) -> Result<Vec<AuditLink>, StoreError> {
        let dialect = self.dialect;
        on_pool!(&self.pool, p => {
            let mut tx = p.begin_with(dialect.begin).await?;
            let head = ChainHead::from_stored(&sqlx::query(dialect.head).fetch_one(&mut *tx).await?)?;
            let legacy;
            let records = match batch {
                Batch::Records(records) => records,
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
                    &legacy[..]
                }
            };
            let links = next_links(&head, records)?;
            for (r, link) in records.iter().zip(&links) {
                bind_chained(sqlx::query(dialect.insert_chained), r, link)
                    .execute(&mut *tx)
                    .await?;
            }
            if let (Some(advance), Some(last)) = (dialect.advance_head, links.last()) {
                sqlx::query(advance)
                    .bind(bigint(last.seq))
                    .bind(last.hash.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(links)
        })
    }
}

/// What [`SqlStore::append_chained`] appends.
pub(super) enum Batch<'a> {
    /// New rows, in order.
    Records(&'a [AuditRecord]),
    /// The rows of `audit_legacy` (oldest first, by time then id), whose table is dropped
    /// in the same transaction; nothing when another process got there first.
    Legacy,
}

/// What differs by backend once the pool is open (each dialect module has one): the
/// migrations, and the audit chain's statements: how an append's transaction holds the
/// chain head, how a row is inserted and the head advanced.
#[derive(Debug)]
pub(in crate::store) struct Dialect {
    /// The backend's `migrations/<backend>/`.
    pub migrator: Migrator,
    /// Starts an append's transaction.
    pub begin: &'static str,
    /// Reads the chain head (`seq`, `hash`), locking it until the transaction ends where
    /// the backend can lock one row.
    pub head: &'static str,
    /// Inserts one chained row, `$1`…`$10` bound by [`bind_chained`].
    pub insert_chained: &'static str,
    /// Advances the head to the batch's last row (`$1` seq, `$2` hash), once per append;
    /// `None` where `insert_chained` advances it.
    pub advance_head: Option<&'static str>,
    /// Whether `audit_legacy` still exists, as a boolean.
    pub legacy_exists: &'static str,
}

/// The chain head, without a lock.
pub(in crate::store) const SELECT_HEAD: &str =
    "SELECT seq, hash FROM audit_chain_head WHERE id = 1";

/// Binds an appended audit row to `$1`…`$10` in the column order
/// `(id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash)`.
fn bind_chained<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    r: &AuditRecord,
    link: &AuditLink,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(r.id.as_str())
        .bind(bigint(link.seq))
        .bind(r.timestamp_ms)
        .bind(r.action.as_str())
        .bind(r.actor.as_str())
        .bind(r.subject.as_str())
        .bind(r.result.as_str())
        .bind(r.detail.as_str())
        .bind(link.prev_hash.as_str())
        .bind(link.hash.as_str())
}
