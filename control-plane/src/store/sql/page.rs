//! [`PageStore`] for [`SqlStore`]: keyset reads with row-value comparisons, which both
//! PostgreSQL and SQLite evaluate on the indexes of migration `0018_pagination`.

use super::super::StoreError;
use super::super::page::PageStore;
use super::super::rows::FromStored;
use super::{Pool, SqlStore, credential_table};
use crate::domain::{
    AuditRecord, CredentialRecord, CredentialTable, NodeRecord, TokenRecord, VirtualKeyRecord,
};
use crate::page::PageKey;

/// `after` as binds: with no key, a key before every row of an ascending listing (ids are
/// never empty, times never below `i64::MIN`).
fn from_start(after: Option<&PageKey>) -> (i64, &str) {
    after.map_or((i64::MIN, ""), |k| (k.at, k.id.as_str()))
}

#[async_trait::async_trait]
impl PageStore for SqlStore {
    async fn page_virtual_keys(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<VirtualKeyRecord>, StoreError> {
        let (at, id) = from_start(after);
        fetch_all!(
            self,
            sqlx::query(
                "SELECT * FROM virtual_keys WHERE (created_at, id) > ($1, $2)
                 ORDER BY created_at, id LIMIT $3"
            )
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
        )
    }

    async fn page_tokens(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let (at, id) = from_start(after);
        fetch_all!(
            self,
            sqlx::query(
                "SELECT * FROM tokens WHERE (issued_at, jti) > ($1, $2)
                 ORDER BY issued_at, jti LIMIT $3"
            )
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
        )
    }

    async fn page_credentials(
        &self,
        table: CredentialTable,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        let (at, id) = from_start(after);
        let sql = format!(
            "SELECT * FROM {} WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3",
            credential_table(table)
        );
        fetch_all!(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(at)
                .bind(id)
                .bind(i64::from(limit))
        )
    }

    async fn page_nodes(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        let (_, id) = from_start(after);
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM nodes WHERE node_id > $1 ORDER BY node_id LIMIT $2")
                .bind(id)
                .bind(i64::from(limit))
        )
    }

    async fn page_audit(
        &self,
        action: Option<&str>,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = i64::from(limit);
        // Descending: with no key, start after every row.
        let (at, id) = after.map_or((i64::MAX, "\u{10FFFF}"), |k| (k.at, k.id.as_str()));
        match action {
            Some(a) => fetch_all!(
                self,
                sqlx::query(
                    "SELECT * FROM audit WHERE action = $1 AND (timestamp_ms, id) < ($2, $3)
                     ORDER BY timestamp_ms DESC, id DESC LIMIT $4",
                )
                .bind(a)
                .bind(at)
                .bind(id)
                .bind(limit)
            ),
            None => fetch_all!(
                self,
                sqlx::query(
                    "SELECT * FROM audit WHERE (timestamp_ms, id) < ($1, $2)
                     ORDER BY timestamp_ms DESC, id DESC LIMIT $3",
                )
                .bind(at)
                .bind(id)
                .bind(limit)
            ),
        }
    }
}
