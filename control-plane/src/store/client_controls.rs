//! The state store's side of the client controls: DLP rules, client access lists (IP
//! allow-lists and CORS) and manual address blocks. A supertrait of [`super::StateStore`],
//! implemented for [`super::SqlStore`] in `sql/client_controls.rs`.

use super::StoreError;
use crate::domain::{AccessRecord, DlpRuleRecord, IpBlockRecord, PolicyTarget};

#[async_trait::async_trait]
pub trait ClientControlStore: Send + Sync {
    /// DLP rules, by name (upsert replaces a rule of the same name).
    async fn upsert_dlp_rule(&self, r: &DlpRuleRecord) -> Result<(), StoreError>;
    async fn delete_dlp_rule(&self, name: &str) -> Result<bool, StoreError>;
    /// By name.
    async fn list_dlp_rules(&self) -> Result<Vec<DlpRuleRecord>, StoreError>;
    /// Client access lists (and the gateway's CORS) by target; an empty one is deleted.
    async fn upsert_access_policy(&self, r: &AccessRecord) -> Result<(), StoreError>;
    async fn delete_access_policy(&self, target: &PolicyTarget) -> Result<bool, StoreError>;
    async fn list_access_policies(&self) -> Result<Vec<AccessRecord>, StoreError>;
    /// Manual address blocks (`ip_blocks`): set (replacing one of the same network),
    /// delete (whether it was there), list (expired ones included; the caller filters).
    async fn put_ip_block(&self, b: &IpBlockRecord) -> Result<(), StoreError>;
    async fn delete_ip_block(&self, cidr: &str) -> Result<bool, StoreError>;
    async fn list_ip_blocks(&self) -> Result<Vec<IpBlockRecord>, StoreError>;
}
