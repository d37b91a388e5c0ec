//! [`ClientControlStore`] for [`SqlStore`]: the `dlp_rules` (migration `0015`),
//! `access_policies` (`0013`) and `ip_blocks` (`0014`) tables.

use super::super::StoreError;
use super::super::client_controls::ClientControlStore;
use super::super::rows::FromStored;
use super::{Pool, SqlStore};
use crate::domain::{AccessRecord, DlpRuleRecord, IpBlockRecord, PolicyTarget};

#[async_trait::async_trait]
impl ClientControlStore for SqlStore {
    async fn upsert_dlp_rule(&self, r: &DlpRuleRecord) -> Result<(), StoreError> {
        let (kind, id) = r.spec.scope.parts();
        execute!(
            self,
            sqlx::query(
                "INSERT INTO dlp_rules (name, detector, pattern, action, scope_kind, scope_id, source, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET detector = EXCLUDED.detector,
                 pattern = EXCLUDED.pattern, action = EXCLUDED.action,
                 scope_kind = EXCLUDED.scope_kind, scope_id = EXCLUDED.scope_id,
                 source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
            )
            .bind(&r.spec.name)
            .bind(r.spec.detector.as_str())
            .bind(&r.spec.pattern)
            .bind(r.spec.action.as_str())
            .bind(kind)
            .bind(id)
            .bind(r.source.as_str())
            .bind(r.updated_at)
        );
        Ok(())
    }
    async fn upsert_access_policy(&self, r: &AccessRecord) -> Result<(), StoreError> {
        let (kind, id) = r.target.parts();
        let body = serde_json::to_string(&r.access)
            .map_err(|e| StoreError::Malformed(format!("access policy: {e}")))?;
        execute!(
            self,
            sqlx::query(
                "INSERT INTO access_policies (target_kind, target_id, body, source, updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target_kind, target_id) DO UPDATE SET body = EXCLUDED.body,
                 source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
            )
            .bind(kind)
            .bind(id)
            .bind(body)
            .bind(r.source.as_str())
            .bind(r.updated_at)
        );
        Ok(())
    }

    async fn delete_dlp_rule(&self, name: &str) -> Result<bool, StoreError> {
        let n = execute!(
            self,
            sqlx::query("DELETE FROM dlp_rules WHERE name = $1").bind(name)
        );
        Ok(n > 0)
    }
    async fn delete_access_policy(&self, target: &PolicyTarget) -> Result<bool, StoreError> {
        let (kind, id) = target.parts();
        let n = execute!(
            self,
            sqlx::query("DELETE FROM access_policies WHERE target_kind = $1 AND target_id = $2")
                .bind(kind)
                .bind(id)
        );
        Ok(n > 0)
    }

    async fn list_dlp_rules(&self) -> Result<Vec<DlpRuleRecord>, StoreError> {
        fetch_all!(self, sqlx::query("SELECT * FROM dlp_rules ORDER BY name"))
    }
    async fn list_access_policies(&self) -> Result<Vec<AccessRecord>, StoreError> {
        fetch_all!(
            self,
            sqlx::query("SELECT * FROM access_policies ORDER BY target_kind, target_id")
        )
    }

    async fn put_ip_block(&self, b: &IpBlockRecord) -> Result<(), StoreError> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO ip_blocks (cidr, reason, created_by, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (cidr) DO UPDATE SET reason = EXCLUDED.reason,
                 created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at,
                 expires_at = EXCLUDED.expires_at",
            )
            .bind(&b.cidr)
            .bind(&b.reason)
            .bind(&b.created_by)
            .bind(b.created_at)
            .bind(b.expires_at)
        );
        Ok(())
    }

    async fn delete_ip_block(&self, cidr: &str) -> Result<bool, StoreError> {
        Ok(execute!(
            self,
            sqlx::query("DELETE FROM ip_blocks WHERE cidr = $1").bind(cidr)
        ) > 0)
    }

    async fn list_ip_blocks(&self) -> Result<Vec<IpBlockRecord>, StoreError> {
        fetch_all!(
            self,
            sqlx::query(
                "SELECT cidr, reason, created_by, created_at, expires_at FROM ip_blocks ORDER BY cidr"
            )
        )
    }
}
