//! The control plane's state store: config, credential metadata (hashes only), node acks
//! and the hash-chained audit rows, behind one [`StateStore`] trait.
//!
//! One implementation, [`SqlStore`] (`sql.rs`), runs every statement on either backend's
//! [`Pool`]; `rows.rs` maps rows to domain values once for both. The dialect modules keep
//! only what differs: [`sqlite`] (the embedded default: pool options, migrations, audit
//! appends under `BEGIN IMMEDIATE`) and [`postgres`] (the production option: settings,
//! TLS, migrations, audit appends under `SELECT … FOR UPDATE`). Each keeps its migrations
//! in `migrations/<backend>/`; the same test bodies (`tests/store_backends.rs`) run against
//! both.
//!
//! Where to start reading: [`StateStore`], then `sql.rs`.

mod client_controls;
mod incident;
mod page;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

pub use client_controls::ClientControlStore;
pub use incident::{IncidentStore, RevokedAll};
pub use page::PageStore;
pub use sql::{LeaseRow, Pool, ReplicaRow, SqlStore};

use crate::audit::chain::{AuditCheckpoint, AuditLink, ChainHead, ChainedAudit};
use crate::domain::{
    AuditRecord, CredentialRecord, CredentialTable, Deployment, Model, NodeRecord, PolicyRecord,
    PolicyTarget, Price, Provider, ProviderKey, SigningKey, TokenRecord, VirtualKeyRecord,
};

/// Store errors. Never carry a secret (the store holds none in plaintext, and no error
/// carries a bound value).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is malformed: {0}")]
    Malformed(String),
    #[error("store configuration: {0}")]
    Config(String),
    /// A leader-only write under a fencing token that no longer holds the lease.
    #[error("refused: fencing token {0} no longer holds the leader lease")]
    Fenced(i64),
}

impl From<crate::audit::chain::MalformedHash> for StoreError {
    fn from(e: crate::audit::chain::MalformedHash) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Everything the control plane persists: no secret in plaintext (Warden's own secrets only
/// as `enc:v1:` ciphertexts, provider keys by reference, credentials as HMACs).
#[async_trait::async_trait]
pub trait StateStore: IncidentStore + ClientControlStore + PageStore + Send + Sync {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Allocates the next snapshot version: atomic, monotonic across every replica.
    async fn next_snapshot_version(&self) -> Result<u64, StoreError>;
    /// The newest allocated snapshot version.
    async fn snapshot_version(&self) -> Result<u64, StoreError>;
    /// `NOTIFY channel, 'payload'` to the other replicas (PostgreSQL); nothing on SQLite.
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError>;
    /// Records the fingerprint the rotation poll read for a provider-key reference; returns
    /// its version, which grows when the fingerprint changes (PostgreSQL; 0 on SQLite,
    /// whose one replica needs no record).
    async fn record_secret_version(
        &self,
        reference: &str,
        fingerprint: &str,
    ) -> Result<u64, StoreError>;
    /// Every recorded reference with its fingerprint (empty on SQLite).
    async fn list_secret_versions(&self) -> Result<Vec<(String, String)>, StoreError>;

    async fn upsert_provider(&self, p: &Provider) -> Result<(), StoreError>;
    async fn list_providers(&self) -> Result<Vec<Provider>, StoreError>;
    /// Removes a provider with its keys and models; returns whether it existed.
    async fn delete_provider(&self, name: &str) -> Result<bool, StoreError>;
    async fn insert_provider_key(&self, k: &ProviderKey) -> Result<(), StoreError>;
    async fn list_provider_keys(&self) -> Result<Vec<ProviderKey>, StoreError>;
    async fn delete_provider_key(&self, provider: &str, id: &str) -> Result<bool, StoreError>;

    async fn upsert_model(&self, m: &Model) -> Result<(), StoreError>;

    /// Further deployments of model aliases (upsert by alias, provider and upstream model).
    async fn upsert_deployment(&self, d: &Deployment) -> Result<(), StoreError>;
    async fn delete_deployment(
        &self,
        alias: &str,
        provider: &str,
        upstream_model: &str,
    ) -> Result<bool, StoreError>;
    async fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError>;

    /// Limits of a virtual key, subject, model or the whole gateway.
    async fn upsert_policy(&self, p: &PolicyRecord) -> Result<(), StoreError>;
    async fn delete_policy(&self, target: &PolicyTarget) -> Result<bool, StoreError>;
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    /// Per-model prices (USD per million tokens) for budgets.
    async fn upsert_price(&self, alias: &str, price: Price) -> Result<(), StoreError>;
    async fn list_prices(&self) -> Result<Vec<(String, Price)>, StoreError>;
    /// Takes an upstream key out of service (`Some(reason)`) or puts it back (`None`);
    /// `bump_epoch` gives nodes a fresh shared health record for it. False when unknown.
    async fn set_provider_key_state(
        &self,
        provider: &str,
        id: &str,
        disabled_reason: Option<&str>,
        at: Option<i64>,
        bump_epoch: bool,
    ) -> Result<bool, StoreError>;
    /// Records the fingerprint of a rotated secret; false when the key is unknown.
    async fn set_provider_key_fingerprint(
        &self,
        provider: &str,
        id: &str,
        fingerprint: &str,
    ) -> Result<bool, StoreError>;
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
    /// Replaces a live key's hash, keeping the old one valid until `previous_expires_at`.
    /// False when the key is unknown or revoked.
    async fn rotate_virtual_key(
        &self,
        id: &str,
        new_hash: &str,
        previous_expires_at: i64,
    ) -> Result<bool, StoreError>;

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
    /// Inserts the first admin credential `c` if no credential was ever bootstrapped in
    /// this database (a guard row and the credential in one transaction); false when one
    /// was (by this or another replica).
    async fn insert_bootstrap_admin(&self, c: &CredentialRecord) -> Result<bool, StoreError>;
    /// Every credential of `table`, live and revoked, oldest first.
    async fn list_credentials(
        &self,
        table: CredentialTable,
    ) -> Result<Vec<CredentialRecord>, StoreError>;
    /// Revokes the live credential `id` of `table`; false when unknown or already revoked.
    async fn revoke_credential(
        &self,
        table: CredentialTable,
        id: &str,
        at: i64,
    ) -> Result<bool, StoreError>;

    async fn upsert_node(&self, n: &NodeRecord) -> Result<(), StoreError>;
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Appends `r` to the audit chain: in one transaction, locks the chain head, takes the
    /// next `seq`, computes the hash linked to the previous row
    /// ([`crate::audit::chain::next_links`]), inserts the row and advances the head.
    /// Concurrent appends form one chain.
    async fn append_audit(&self, r: &AuditRecord) -> Result<AuditLink, StoreError>;
    /// Appends `records` in order, in one transaction (all or none): one commit for the
    /// batch, as a node's `PublishAudit` batch needs. Returns their links in order.
    async fn append_audit_batch(
        &self,
        records: &[AuditRecord],
    ) -> Result<Vec<AuditLink>, StoreError>;
    /// Appends, in order and in one transaction, those of `records` whose id is not stored
    /// yet and not taken by an earlier record of the batch: a node's `PublishAudit` batch,
    /// which may repeat events already delivered (its acknowledgement was lost). The ids
    /// are checked under the chain head's lock, so two replicas appending the same
    /// redelivered batch store each event once. Returns the links of the rows appended
    /// (empty when every id was stored already).
    async fn append_audit_new(&self, records: &[AuditRecord])
    -> Result<Vec<AuditLink>, StoreError>;
    /// Newest first, optionally only one action.
    async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The chain head: the last appended row's `seq` and hash ([`ChainHead::genesis`] when
    /// nothing was ever appended). Retention does not move it.
    async fn audit_head(&self) -> Result<ChainHead, StoreError>;
    /// Up to `limit` rows with `seq >= from_seq`, in `seq` order.
    async fn list_audit_range(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChainedAudit>, StoreError>;
    /// Stores a signed checkpoint; one per `(seq_upto, key_id)`.
    async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> Result<(), StoreError>;
    /// Checkpoints with `seq_upto >= from_seq`, by `seq_upto` then `key_id`.
    async fn list_checkpoints(&self, from_seq: u64) -> Result<Vec<AuditCheckpoint>, StoreError>;
    /// Retention: deletes the longest prefix of the chain that holds only rows older than
    /// `ts_ms` and ends exactly at a checkpoint, so verification can start from that
    /// checkpoint (the `audit` module explains). Rows after the latest checkpoint are kept
    /// whatever their age. Returns how many rows were deleted.
    async fn delete_audit_older_than(&self, ts_ms: i64) -> Result<u64, StoreError>;

    /// Warden's own secrets (`warden_secrets`), as the `enc:v2:` ciphertexts the
    /// control plane sealed under its master key: the store never sees a plaintext value.
    async fn get_warden_secret(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Writes `sealed` under `name`, replacing an earlier value; `now` in Unix seconds.
    async fn put_warden_secret(&self, name: &str, sealed: &str, now: i64)
    -> Result<(), StoreError>;
    /// Writes `sealed` under `name` only when no value is stored there yet; returns whether
    /// it wrote (the one-time move out of the secret file uses it).
    async fn insert_warden_secret(
        &self,
        name: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Replaces the value of `name` with `sealed` only while it is still `expected` (the
    /// master-key rotation's compare-and-swap: a value another replica rewrote meanwhile is
    /// left alone); returns whether it wrote.
    async fn replace_warden_secret(
        &self,
        name: &str,
        expected: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The names held, in order (never the values).
    async fn list_warden_secret_names(&self) -> Result<Vec<String>, StoreError>;
    /// Removes `name`; returns whether it existed.
    async fn delete_warden_secret(&self, name: &str) -> Result<bool, StoreError>;
}
