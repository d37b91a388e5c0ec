//! [`IncidentStore`] for [`SqlStore`]: the `credential_suspensions` and `lockdown` tables
//! and `signing_keys.retired_at` (migration `0016_incident_response`).

use sqlx::Row as _;

use super::super::StoreError;
use super::super::incident::{IncidentStore, RevokedAll};
use super::{Pool, SqlStore};
use crate::domain::{Lockdown, Suspension, SuspensionTarget};

#[async_trait::async_trait]
impl IncidentStore for SqlStore {
    async fn insert_suspension(&self, s: &Suspension) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "INSERT INTO credential_suspensions (kind, value, reason, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, value) DO NOTHING",
            )
            .bind(s.target.kind())
            .bind(s.target.value())
            .bind(&s.reason)
            .bind(&s.created_by)
            .bind(s.created_at)
        );
        Ok(n > 0)
    }

    async fn delete_suspension(&self, target: &SuspensionTarget) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query("DELETE FROM credential_suspensions WHERE kind = $1 AND value = $2")
                .bind(target.kind())
                .bind(target.value())
        );
        Ok(n > 0)
    }

    async fn list_suspensions(&self) -> Result<Vec<Suspension>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(
                "SELECT kind, value, reason, created_by, created_at FROM credential_suspensions
                 ORDER BY created_at, kind, value",
            )
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    let kind: String = r.try_get("kind")?;
                    let target = SuspensionTarget::parse(&kind, r.try_get("value")?)
                        .ok_or_else(|| StoreError::Malformed(format!("suspension kind {kind}")))?;
                    Ok(Suspension {
                        target,
                        reason: r.try_get("reason")?,
                        created_by: r.try_get("created_by")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    async fn get_lockdown(&self) -> Result<Option<Lockdown>, StoreError> {
        on_pool!(&self.pool, p => {
            let row = sqlx::query("SELECT reason, created_by, created_at FROM lockdown WHERE id = 1")
                .fetch_optional(p)
                .await?;
            row.map(|r| {
                Ok(Lockdown {
                    reason: r.try_get("reason")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .transpose()
        })
    }

    async fn insert_lockdown(&self, l: &Lockdown) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query(
                "INSERT INTO lockdown (id, reason, created_by, created_at) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&l.reason)
            .bind(&l.created_by)
            .bind(l.created_at)
        );
        Ok(n > 0)
    }

    async fn delete_lockdown(&self) -> Result<bool, StoreError> {
        let n = execute!(self, sqlx::query("DELETE FROM lockdown WHERE id = 1"));
        Ok(n > 0)
    }

    async fn revoke_all_client_credentials(
        &self,
        keep_kid: &str,
        at: i64,
    ) -> Result<RevokedAll, StoreError> {
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let tokens = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE revoked_at IS NULL")
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let virtual_keys =
                sqlx::query("UPDATE virtual_keys SET revoked_at = $1 WHERE revoked_at IS NULL")
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            let signing_keys = sqlx::query(
                "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2",
            )
            .bind(at)
            .bind(keep_kid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(RevokedAll {
                tokens,
                virtual_keys,
                signing_keys,
            })
        })
    }

    async fn retired_signing_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT kid FROM signing_keys WHERE retired_at IS NOT NULL")
                .fetch_all(p)
                .await?
        }))
    }
}
