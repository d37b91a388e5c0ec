//! SQLite: the embedded default (WAL mode, migrations in `migrations/sqlite/`). Opens a
//! [`SqlStore`] on a file; the statements themselves are in `sql.rs`.
//!
//! Audit appends are serialised twice: by an in-process mutex ([`SqlStore`] takes it, so
//! tasks of this process queue instead of spinning on SQLite's busy handler) and by
//! `BEGIN IMMEDIATE` (`DIALECT`, so another process writing the same file cannot
//! interleave between reading the chain head and advancing it).

use std::path::Path;
use std::str::FromStr as _;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::StoreError;
use super::sql::{Dialect, Pool, SELECT_HEAD, SqlStore};

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
/// head; one statement inserts a row, one more advances the head after the batch.
static DIALECT: Dialect = Dialect {
    migrator: sqlx::migrate!("./migrations/sqlite"),
    begin: "BEGIN IMMEDIATE",
    head: SELECT_HEAD,
    insert_chained: "INSERT INTO audit (id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    advance_head: Some("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1"),
    legacy_exists: "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_legacy')",
};

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
