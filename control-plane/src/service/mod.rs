//! [`ControlPlane`]: the control plane's domain service. Every admin operation is a plain
//! async method that checks its input, changes the store, publishes a new snapshot and
//! writes an audit row; `grpc::admin` only converts and calls these.
//!
//! Start with [`ControlPlane::open`] and the two helpers every admin change goes through,
//! `mutate` (change → publish → audit) and `audited` (change → audit). The operations live
//! in one file per resource: `providers` (and their upstream keys), `models` (and
//! deployments), `prices`, `tokens`, `vkeys`, `signing_keys`, `credentials` (admin and node
//! credentials, authentication), `nodes`, `policies` (and usage), `audit`, `incident` (suspensions, lockdown, revoke-all), `secrets` (reading
//! provider-key secrets at start-up and in the rotation poll); `publish` builds and sends
//! snapshots; `grants` normalises the scopes and models of tokens and virtual keys.

mod audit;
mod credentials;
mod dlp;
mod grants;
mod incident;
mod ip_blocks;
mod live;
pub mod login_guard;
mod models;
mod nodes;
mod pages;
mod policies;
mod prices;
mod providers;
mod publish;
pub mod replicas;
mod secrets;
mod signing_keys;
mod tokens;
mod vkeys;

pub use credentials::ClientKey;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use secrecy::SecretBox;
use tokio::sync::{Mutex, watch};
use warden_core::audit_detail::Detail;
use warden_core::jwt::KeyMaterial;

use crate::config::AuthConfig;
use crate::error::ServiceError;
use crate::secrets::SecretStore;
use crate::secrets::manager::SecretManager;
use crate::snapshot::SnapshotData;
use crate::store::StateStore;

pub use incident::RevokeAllOutcome;
pub use ip_blocks::{IpBlockList, Unblocked, parse_network};
pub use nodes::NodeStatus;
pub use pages::DEFAULT_AUDIT_LIMIT;
pub use providers::{KeySource, ProviderOptions};
pub use signing_keys::SigningKeyStatus;

/// Who performed an action, for audit rows.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The control plane's domain service.
pub struct ControlPlane {
    store: Arc<dyn StateStore>,
    /// Warden's own secrets (pepper, signing keys, audit checkpoint key):
    /// [`crate::secrets::own::OwnSecrets`], the state store's `warden_secrets` table.
    secrets: Arc<dyn SecretStore>,
    /// Upstream provider keys, by reference into the configured backends.
    keys: Arc<SecretManager>,
    pepper: SecretBox<Vec<u8>>,
    /// The key new tokens are signed with (replaced by [`Self::rotate_signing_key`]).
    signer: std::sync::RwLock<Arc<KeyMaterial>>,
    auth: AuthConfig,
    snapshot_tx: watch::Sender<Arc<SnapshotData>>,
    publish_lock: Mutex<()>,
    connections: std::sync::Mutex<HashMap<String, usize>>,
    /// Usage figures from the nodes' shared state.
    usage: crate::usage::UsageReader,
    /// Snapshot version each node last acknowledged (in memory, for propagation waits).
    acked: watch::Sender<HashMap<String, u64>>,
    /// The `seq` of the newest audit row this process appended (audit stream followers
    /// wait on it).
    audit_seq: watch::Sender<u64>,
    /// Woken after every append (syslog and JSONL forwarders).
    audit_wake: Arc<tokio::sync::Notify>,
    /// Events per second each node credential may deliver (`[audit] node_ingest_*`).
    node_ingest: crate::audit::node_events::IngestQuota,
    /// Nodes' audit batches waiting for the next append, grouped into one transaction.
    node_appends: crate::audit::group_commit::GroupCommit,
    /// Streams by credential, and credentials revoked through this process.
    live: live::LiveCredentials,
    /// Failed logins by peer address: throttle and bounded audit.
    logins: login_guard::LoginGuard,
    /// The control plane's own metrics (`/metrics` on the ops listener).
    metrics: crate::metrics::CpMetrics,
    /// With SQLite, the data directory's lock file, held while the control plane lives.
    data_dir_lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Whether this replica does the leader's work (`cluster`); true until told otherwise.
    leader: std::sync::atomic::AtomicBool,
    /// The store the leader's work writes through (fenced with its lease on PostgreSQL)
    /// while this replica leads: the rotation poll records secret versions through it.
    leader_store: std::sync::RwLock<Option<Arc<dyn StateStore>>>,
    /// This replica's place among several on PostgreSQL (`cluster`); unset with SQLite.
    cluster: std::sync::OnceLock<replicas::ClusterView>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("signing_kid", &self.signing_key().kid)
            .finish_non_exhaustive()
    }
}

/// A fresh id: `prefix` and 16 hex characters.
fn new_id(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..16])
}

/// What the audit row of an admin change names as its subject: a fixed name, or one read
/// from the change's result (the id it created).
trait AuditSubject<T> {
    fn of(self, result: &Result<T, ServiceError>) -> String;
}

impl<T> AuditSubject<T> for &str {
    fn of(self, _: &Result<T, ServiceError>) -> String {
        self.to_owned()
    }
}

impl<T> AuditSubject<T> for String {
    fn of(self, _: &Result<T, ServiceError>) -> String {
        self
    }
}

impl<T, F: FnOnce(&Result<T, ServiceError>) -> String> AuditSubject<T> for F {
    fn of(self, result: &Result<T, ServiceError>) -> String {
        self(result)
    }
}

impl ControlPlane {
    /// Opens the service on `store` and `secrets`: creates the pepper and a signing key on
    /// first start and publishes the first snapshot.
    pub async fn open(
        store: Arc<dyn StateStore>,
        secrets: Arc<dyn SecretStore>,
        keys: Arc<SecretManager>,
        auth: AuthConfig,
        usage: crate::usage::UsageReader,
    ) -> Result<Self, ServiceError> {
        let pepper = Self::load_or_create_pepper(secrets.as_ref()).await?;
        let signer = Self::load_or_create_signer(store.as_ref(), secrets.as_ref(), &auth).await?;
        let (snapshot_tx, _) = watch::channel(publish::empty_snapshot());
        let cp = Self {
            store,
            secrets,
            keys,
            pepper: SecretBox::new(Box::new(pepper)),
            signer: std::sync::RwLock::new(Arc::new(signer)),
            auth,
            snapshot_tx,
            publish_lock: Mutex::new(()),
            connections: std::sync::Mutex::new(HashMap::new()),
            usage,
            acked: watch::channel(HashMap::new()).0,
            audit_seq: watch::channel(0).0,
            audit_wake: Arc::new(tokio::sync::Notify::new()),
            node_ingest: crate::audit::node_events::IngestQuota::default(),
            node_appends: crate::audit::group_commit::GroupCommit::default(),
            live: live::LiveCredentials::default(),
            logins: login_guard::LoginGuard::default(),
            metrics: crate::metrics::CpMetrics::new(),
            data_dir_lock: std::sync::Mutex::new(None),
            leader: std::sync::atomic::AtomicBool::new(true),
            leader_store: std::sync::RwLock::new(None),
            cluster: std::sync::OnceLock::new(),
        };
        Ok(cp)
    }

    /// Warden's own secret store, `warden_secrets` in the state store (the audit checkpoint
    /// key lives there).
    pub fn own_secrets(&self) -> Arc<dyn SecretStore> {
        Arc::clone(&self.secrets)
    }

    /// The control plane's metrics (rendered by the ops listener, counted by the gRPC edge).
    pub fn metrics(&self) -> &crate::metrics::CpMetrics {
        &self.metrics
    }

    /// The state store (for the audit forwarders, which read the chain themselves).
    pub fn state_store(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.store)
    }

    /// An admin change that nodes must see: runs `change` (checks and store writes),
    /// publishes a new snapshot when it succeeded, and audits the outcome as `action` by
    /// `actor` on `subject`. A change that reads back what it wrote after publishing, or
    /// that publishes only sometimes, uses [`Self::audited`] and publishes itself.
    async fn mutate<T>(
        &self,
        actor: &Actor,
        action: &str,
        subject: impl AuditSubject<T>,
        change: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        self.audited(actor, action, subject, async {
            let value = change.await?;
            self.publish().await?;
            Ok(value)
        })
        .await
    }

    /// Runs `change` and audits its outcome: `ok`, or the error's code with the error as
    /// detail.
    async fn audited<T>(
        &self,
        actor: &Actor,
        action: &str,
        subject: impl AuditSubject<T>,
        change: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        self.audited_with(actor, action, subject, |_| Detail::new(), change)
            .await
    }

    /// [`Self::audited`] with the row's detail read from the outcome (what was issued, or
    /// what was asked for; never a secret); a failure adds its error.
    async fn audited_with<T>(
        &self,
        actor: &Actor,
        action: &str,
        subject: impl AuditSubject<T>,
        detail: impl FnOnce(&Result<T, ServiceError>) -> Detail,
        change: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let result = change.await;
        let detail = detail(&result);
        let subject = subject.of(&result);
        match &result {
            Ok(_) => {
                self.audit(action, &actor.0, &subject, "ok", &detail.build())
                    .await;
            }
            Err(e) => {
                self.audit(
                    action,
                    &actor.0,
                    &subject,
                    e.code().metric_label(),
                    &detail.with("error", e).build(),
                )
                .await;
            }
        }
        result
    }
}
