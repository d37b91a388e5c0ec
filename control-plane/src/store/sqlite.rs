//! SQLite: the embedded default (WAL mode, migrations in `migrations/sqlite/`). Opens a
//! [`SqlStore`] on a file; the statements themselves are in `sql.rs`.
//!
//! Audit appends are serialised twice: by an in-process mutex ([`SqlStore`] takes it, so
//! tasks of this process queue instead of spinning on SQLite's busy handler) and by
//! `BEGIN IMMEDIATE` (`DIALECT`, so another process writing the same file cannot
//! interleave between reading the chain head and advancing it). An append's rows go in
//! with multi-row `INSERT … VALUES` statements ([`ChainRows`]).

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr as _;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::StoreError;
use super::rows::bigint;
use super::sql::{CHAINED_COLUMNS, ChainRows, Dialect, Pool, SELECT_HEAD, SqlStore};
use crate::audit::chain::AuditLink;
use crate::domain::AuditRecord;

/// Opens the embedded store; what it opens is a [`SqlStore`].
#[derive(Debug)]
pub enum SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, runs the migrations and the
    /// one-time chaining of pre-chain audit rows.
    pub async fn open(path: &Path) -> Result<SqlStore, StoreError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        SqlStore::open(Pool::Sqlite(pool), &DIALECT).await
    }
}

/// Appends take the database's write lock at once (`BEGIN IMMEDIATE`), then read the
/// head; [`ChainRows`] inserts the rows and advances the head after the batch.
static DIALECT: Dialect = Dialect {
    migrator: sqlx::migrate!("./migrations/sqlite"),
    begin: "BEGIN IMMEDIATE",
    head: SELECT_HEAD,
    legacy_exists: "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_legacy')",
};

/// Most rows in one `INSERT … VALUES` statement: ten variables a row, well under the
/// bundled SQLite's limit of 32,766 variables a statement (a node's batch, at most 1,000
/// events, is one statement).
const ROWS_PER_INSERT: usize = 1_000;

impl ChainRows for SqliteConnection {
    async fn stored_ids(&mut self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        // SQLite has no array parameter: the ids go in as one JSON array.
        let ids = serde_json::to_string(ids)
            .map_err(|e| StoreError::Malformed(format!("audit ids as JSON: {e}")))?;
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM audit WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(ids)
        .fetch_all(&mut *self)
        .await?;
        Ok(stored.into_iter().collect())
    }

    async fn insert_chained(
        &mut self,
        records: &[&AuditRecord],
        links: &[AuditLink],
    ) -> Result<(), StoreError> {
        let rows: Vec<(&AuditRecord, &AuditLink)> =
            records.iter().copied().zip(links.iter()).collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO audit ({CHAINED_COLUMNS}) "));
            insert.push_values(chunk, |mut row, (r, link)| {
                row.push_bind(r.id.as_str())
                    .push_bind(bigint(link.seq))
                    .push_bind(r.timestamp_ms)
                    .push_bind(r.action.as_str())
                    .push_bind(r.actor.as_str())
                    .push_bind(r.subject.as_str())
                    .push_bind(r.result.as_str())
                    .push_bind(r.detail.as_str())
                    .push_bind(link.prev_hash.as_str())
                    .push_bind(link.hash.as_str());
            });
            insert.build().execute(&mut *self).await?;
        }
        if let Some(last) = links.last() {
            sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(bigint(last.seq))
                .bind(last.hash.as_str())
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApiFormat, Model, Provider, ProviderKey, Source, TokenRecord};
    use crate::store::StateStore as _;

    async fn store() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn provider_delete_cascades_to_keys_and_models() {
        let (_d, s) = store().await;
        s.upsert_provider(&Provider {
            name: "p".into(),
            format: ApiFormat::OpenAi,
            base_url: "https://x/v1".into(),
            source: Source::Admin,
            created_at: 1,
            passthrough: false,
            drop_params: Vec::new(),
            ca_pem: None,
        })
        .await
        .unwrap();
        s.insert_provider_key(&ProviderKey {
            id: "k1".into(),
            provider: "p".into(),
            secret_name: "providers/p/k1".into(),
            fingerprint: "abc".into(),
            created_at: 1,
            disabled_reason: None,
            disabled_at: None,
            health_epoch: 0,
        })
        .await
        .unwrap();
        s.upsert_model(&Model {
            alias: "m".into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            source: Source::Admin,
            created_at: 1,
            fallbacks: Vec::new(),
            weight: 1,
        })
        .await
        .unwrap();
        assert!(s.delete_provider("p").await.unwrap());
        assert!(s.list_provider_keys().await.unwrap().is_empty());
        assert!(s.list_models().await.unwrap().is_empty());
        assert!(!s.delete_provider("p").await.unwrap());
    }

    #[tokio::test]
    async fn tokens_revoke_once_and_meta_round_trips() {
        let (_d, s) = store().await;
        let t = TokenRecord {
            jti: "j".into(),
            subject: "s".into(),
            scopes: vec!["read".into()],
            models: vec!["*".into()],
            kid: "k".into(),
            issued_at: 1,
            expires_at: 2,
            revoked_at: None,
        };
        s.insert_token(&t).await.unwrap();
        assert!(s.revoke_token("j", 5).await.unwrap());
        assert!(!s.revoke_token("j", 6).await.unwrap());
        assert_eq!(s.get_token("j").await.unwrap().unwrap().revoked_at, Some(5));
        assert_eq!(s.get_meta("v").await.unwrap(), None);
        s.set_meta("v", "3").await.unwrap();
        s.set_meta("v", "4").await.unwrap();
        assert_eq!(s.get_meta("v").await.unwrap().as_deref(), Some("4"));
    }
}
