//! The state store's side of paged listings (`crate::page`): keyset reads of the big tables
//! — virtual keys, tokens, credentials, nodes and audit rows — one page at a time. A
//! supertrait of [`super::StateStore`], implemented for [`super::SqlStore`] in
//! `sql/page.rs` with the indexes of migration `0018_pagination`.
//!
//! Each method returns up to `limit` rows strictly after `after` (in the listing's order;
//! `None` = from the start), in that order.

use super::StoreError;
use crate::domain::{
    AuditRecord, CredentialRecord, CredentialTable, NodeRecord, TokenRecord, VirtualKeyRecord,
};
use crate::page::PageKey;

#[async_trait::async_trait]
pub trait PageStore: Send + Sync {
    /// By `(created_at, id)`.
    async fn page_virtual_keys(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<VirtualKeyRecord>, StoreError>;
    /// By `(issued_at, jti)`.
    async fn page_tokens(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// By `(created_at, id)`.
    async fn page_credentials(
        &self,
        table: CredentialTable,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<CredentialRecord>, StoreError>;
    /// By `node_id` (the key's `at` is 0).
    async fn page_nodes(
        &self,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<NodeRecord>, StoreError>;
    /// Newest first: by `(timestamp_ms, id)` descending, `after` meaning older than; only
    /// `action` when given.
    async fn page_audit(
        &self,
        action: Option<&str>,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}
