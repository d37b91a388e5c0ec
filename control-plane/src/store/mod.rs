//! The control plane's state store: config, credential metadata (hashes only), node acks
//! and audit rows, behind one [`StateStore`] trait. SQLite ([`sqlite::SqliteStore`]) is the
//! embedded default; PostgreSQL implements the same trait (the audit issue).

pub mod sqlite;

use crate::domain::{
    AuditRecord, CredentialRecord, CredentialTable, Model, NodeRecord, Provider, ProviderKey,
    SigningKey, TokenRecord, VirtualKeyRecord,
};

/// Store errors. Never carry a secret (the store holds none).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is malformed: {0}")]
    Malformed(String),
}

/// Everything the control plane persists, except secrets.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    async fn upsert_provider(&self, p: &Provider) -> Result<(), StoreError>;
    async fn list_providers(&self) -> Result<Vec<Provider>, StoreError>;
    /// Removes a provider with its keys and models; returns whether it existed.
    async fn delete_provider(&self, name: &str) -> Result<bool, StoreError>;
    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<(), StoreError>;
    async fn list_provider_keys(&self) -> Result<Vec<ProviderKey>, StoreError>;
    async fn delete_provider_key(&self, provider: &str, id: &str) -> Result<bool, StoreError>;

    async fn upsert_model(&self, m: &Model) -> Result<(), StoreError>;
    async fn list_models(&self) -> Result<Vec<Model>, StoreError>;
    async fn delete_model(&self, alias: &str) -> Result<bool, StoreError>;

    async fn insert_signing_key(&self, k: &SigningKey) -> Result<(), StoreError>;
    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;

    async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks a token revoked; returns false when unknown or already revoked.
    async fn revoke_token(&self, jti: &str, at: i64) -> Result<bool, StoreError>;

    async fn insert_virtual_key(&self, k: &VirtualKeyRecord) -> Result<(), StoreError>;
    async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError>;
    async fn revoke_virtual_key(&self, id: &str, at: i64) -> Result<bool, StoreError>;

    async fn insert_credential(
        &self,
        table: CredentialTable,
        c: &CredentialRecord,
    ) -> Result<(), StoreError>;
    async fn find_credential(
        &self,
        table: CredentialTable,
        hash: &str,
    ) -> Result<Option<CredentialRecord>, StoreError>;
    async fn count_credentials(&self, table: CredentialTable) -> Result<u64, StoreError>;
    /// Revokes every live credential in `table` named `name`; returns how many.
    async fn revoke_credentials_named(
        &self,
        table: CredentialTable,
        name: &str,
        at: i64,
    ) -> Result<u64, StoreError>;

    async fn upsert_node(&self, n: &NodeRecord) -> Result<(), StoreError>;
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    async fn append_audit(&self, r: &AuditRecord) -> Result<(), StoreError>;
    /// Newest first, optionally only one action.
    async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}
