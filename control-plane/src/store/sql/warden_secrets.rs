//! The `warden_secrets` table (Warden's own secrets, sealed under the master key) for
//! [`SqlStore`]; the [`super::super::StateStore`] methods delegate here.

use super::super::StoreError;
use super::{Pool, SqlStore};

impl SqlStore {
    pub(super) async fn row_get_warden_secret(
        &self,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT value FROM warden_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
        }))
    }

    pub(super) async fn row_put_warden_secret(
        &self,
        name: &str,
        sealed: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO warden_secrets (name, value, created_at, updated_at)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO UPDATE
                 SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            )
            .bind(name)
            .bind(sealed)
            .bind(now)
        );
        Ok(())
    }

    pub(super) async fn row_insert_warden_secret(
        &self,
        name: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(execute!(
            self,
            sqlx::query(
                "INSERT INTO warden_secrets (name, value, created_at, updated_at)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(sealed)
            .bind(now)
        ) > 0)
    }

    pub(super) async fn row_replace_warden_secret(
        &self,
        name: &str,
        expected: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(execute!(
            self,
            sqlx::query(
                "UPDATE warden_secrets SET value = $3, updated_at = $4 WHERE name = $1 AND value = $2"
            )
            .bind(name)
            .bind(expected)
            .bind(sealed)
            .bind(now)
        ) > 0)
    }

    pub(super) async fn row_list_warden_secret_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT name FROM warden_secrets ORDER BY name")
                .fetch_all(p)
                .await?
        }))
    }

    pub(super) async fn row_delete_warden_secret(&self, name: &str) -> Result<bool, StoreError> {
        Ok(execute!(
            self,
            sqlx::query("DELETE FROM warden_secrets WHERE name = $1").bind(name)
        ) > 0)
    }
}
