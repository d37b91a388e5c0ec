//! [`ControlPlane`]: the control plane's domain service. Every admin operation lives here
//! as a plain async method that checks its input, changes the store, writes an audit row and
//! publishes a new snapshot; `grpc::admin` only converts and calls these.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use tokio::sync::{Mutex, watch};
use warden_core::credential::{self, Kind};
use warden_core::jwt::{self, Claims, KeyMaterial, Scope, SigningAlgorithm, VerificationKey};
use warden_core::{fingerprint, unix_now};

use crate::config::AuthConfig;
use crate::domain::{
    ApiFormat, AuditRecord, CredentialRecord, CredentialTable, Limits, Model, NodeRecord,
    PolicyRecord, PolicyTarget, Price, Provider, ProviderKey, Source, TokenRecord,
    VirtualKeyRecord, validate_base_url, validate_name,
};
use crate::error::ServiceError;
use crate::secrets::manager::{self, Refresh, SecretManager, StartLoad};
use crate::secrets::reference::SecretReference;
use crate::secrets::{SecretError, SecretStore};
use crate::snapshot::{
    SnapshotData, SnapshotJwtKey, SnapshotKey, SnapshotModel, SnapshotProvider, SnapshotVirtualKey,
};
use crate::store::StateStore;
use warden_core::audit_detail::Detail;

const META_VERSION: &str = "snapshot_version";
/// How a key the provider rejected is marked; such keys return to service when their
/// secret changes (an admin's quarantine stays until an admin lifts it).
const REJECTED_PREFIX: &str = "rejected by the provider";
const PEPPER_SECRET: &str = "warden/credential-pepper";

/// Options of a provider beyond its address.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// Each client brings its own upstream key (`x-warden-upstream-key`); no stored keys.
    pub passthrough: bool,
    /// Top-level request parameters the provider does not accept.
    pub drop_params: Vec<String>,
}

/// How many provider-key secrets the rotation poll reads at once.
const POLL_CONCURRENCY: usize = 8;

/// The longest grace period of a rotated virtual key.
const MAX_VKEY_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// A signing key with its role.
#[derive(Debug, Clone)]
pub struct SigningKeyStatus {
    pub record: crate::domain::SigningKey,
    /// Signs new tokens.
    pub active: bool,
    /// Latest expiry of an unrevoked token it signed; 0 = none.
    pub needed_until: i64,
}

/// Where a new upstream key comes from.
pub enum KeySource {
    /// A value given to Warden: written to the primary secret backend.
    Value(SecretString),
    /// A reference to a secret the organisation keeps (`vault://…`, `env://VAR`, …).
    Reference(String),
}

/// Who performed an action, for audit rows.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// A node's live connection state, for `wardenctl nodes`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub record: NodeRecord,
    pub connected: bool,
}

/// The control plane's domain service.
pub struct ControlPlane {
    store: Arc<dyn StateStore>,
    /// Warden's own secrets (pepper, signing keys): the encrypted file store.
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
}

/// How long an admin change waits for connected nodes to apply it before returning.
const PROPAGATION_WAIT: Duration = Duration::from_secs(2);

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("signing_kid", &self.signing_key().kid)
            .finish_non_exhaustive()
    }
}

fn new_id(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..16])
}

fn empty_snapshot() -> Arc<SnapshotData> {
    Arc::new(SnapshotData {
        version: 0,
        providers: Vec::new(),
        models: Vec::new(),
        jwt_issuer: String::new(),
        jwt_audience: String::new(),
        jwt_leeway_seconds: 0,
        jwt_keys: Vec::new(),
        virtual_keys: Vec::new(),
        revoked_tokens: Vec::new(),
        vkey_pepper: SecretBox::new(Box::new(Vec::new())),
        global_policy: Limits::default(),
        subject_policies: Vec::new(),
    })
}

/// How a refused credential appears in its audit row: its fingerprint, never its value.
fn shown(presented: Option<&str>) -> String {
    presented.map_or_else(
        || "-".to_owned(),
        |p| format!("fp:{}", fingerprint::of(p.as_bytes())),
    )
}

/// A key value as given: trimmed, non-empty, printable, at most 4096 characters.
fn validate_key_value(secret: &SecretString) -> Result<SecretString, ServiceError> {
    let value = secret.expose_secret().trim();
    if value.is_empty() {
        return Err(ServiceError::InvalidArgument("the key is empty".into()));
    }
    if value.len() > 4096 || value.chars().any(char::is_control) {
        return Err(ServiceError::InvalidArgument(
            "the key must be at most 4096 printable characters".into(),
        ));
    }
    Ok(SecretString::from(value))
}

/// The upstream model as given (trimmed), or the alias when none is given.
fn upstream_or_alias<'a>(upstream_model: &'a str, alias: &'a str) -> &'a str {
    let upstream_model = upstream_model.trim();
    if upstream_model.is_empty() {
        alias
    } else {
        upstream_model
    }
}

/// Normalises a scope list: empty → read + write; unknown names are an error.
fn parse_scopes(scopes: &[String]) -> Result<Vec<String>, ServiceError> {
    if scopes.is_empty() {
        return Ok(vec!["read".into(), "write".into()]);
    }
    let mut out = Vec::new();
    for s in scopes {
        let scope = Scope::parse(s.trim()).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "unknown scope `{s}` (expected read, write, admin or audit)"
            ))
        })?;
        if !out.iter().any(|o: &String| o == scope.as_str()) {
            out.push(scope.as_str().to_owned());
        }
    }
    Ok(out)
}

/// Normalises a model allow-list: empty → `*`.
fn parse_models(models: &[String]) -> Result<Vec<String>, ServiceError> {
    if models.is_empty() {
        return Ok(vec!["*".into()]);
    }
    let mut out = Vec::new();
    for m in models {
        let m = m.trim();
        // `*` is every model; `provider:*` every model of a provider (`provider:model`
        // addressing).
        let checked = m.strip_suffix(":*").unwrap_or(m);
        if m != "*" {
            validate_name(checked)
                .map_err(|e| ServiceError::InvalidArgument(format!("model `{m}`: {e}")))?;
        }
        if !out.iter().any(|o: &String| o == m) {
            out.push(m.to_owned());
        }
    }
    Ok(out)
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
        let pepper = match secrets.get(PEPPER_SECRET).await {
            Ok(p) => p,
            Err(SecretError::NotFound { .. }) => {
                let fresh = credential::generate_pepper();
                let encoded = SecretString::from(hex::encode(&fresh[..]));
                secrets.put(PEPPER_SECRET, &encoded).await?;
                encoded
            }
            Err(e) => return Err(e.into()),
        };
        let pepper = hex::decode(pepper.expose_secret())
            .map_err(|_| ServiceError::Internal("stored pepper is malformed".into()))?;

        let signer = Self::load_or_create_signer(store.as_ref(), secrets.as_ref(), &auth).await?;
        let (snapshot_tx, _) = watch::channel(empty_snapshot());
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
        };
        Ok(cp)
    }

    /// Reads every upstream key from its backend at start-up, then publishes the first
    /// snapshot. A key that cannot be read stops the start (naming its reference) unless
    /// the encrypted start-up cache holds its last value, or `tolerate` is set (dev mode:
    /// the key is left out of snapshots until it can be read).
    pub async fn load_provider_keys(&self, tolerate: bool) -> Result<(), ServiceError> {
        use futures::StreamExt as _;
        let reads: Vec<Result<_, ServiceError>> =
            futures::stream::iter(self.store.list_provider_keys().await?)
                .map(|k| async move {
                    let reference = k.parsed_reference()?;
                    let read = self.keys.load_at_start(&reference).await;
                    Ok((k, reference, read))
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
        for r in reads {
            let (k, reference, read) = r?;
            match read {
                Ok(StartLoad::Fresh) => {
                    self.note_key_value(&k, &reference).await?;
                }
                Ok(StartLoad::FromCache(e)) => {
                    tracing::warn!(reference = %reference, error = %e, "secret backend unavailable at start: serving the cached value");
                    self.keys.mark_failing(&reference.to_string());
                    self.audit_unavailable(&k, &reference, &e, Some("start-up cache"))
                        .await;
                }
                Err(e) => {
                    self.audit_unavailable(&k, &reference, &e, None).await;
                    if !tolerate {
                        return Err(ServiceError::Unavailable(format!(
                            "upstream key {}/{} cannot be read at start-up: {e} (set [secrets] startup = \"cache\" to start from the encrypted cache)",
                            k.provider, k.id
                        )));
                    }
                    self.keys.mark_failing(&reference.to_string());
                    tracing::warn!(reference = %reference, error = %e, "upstream key left out until it can be read");
                }
            }
        }
        self.publish().await?;
        Ok(())
    }

    /// Audits that `k`'s secret could not be read (naming the reference, never a value),
    /// and what serves meanwhile.
    async fn audit_unavailable(
        &self,
        k: &ProviderKey,
        reference: &SecretReference,
        e: &SecretError,
        served_from: Option<&str>,
    ) {
        self.audit(
            "secret.unavailable",
            "system:secrets",
            &format!("{}/{} ref={reference}", k.provider, k.id),
            e.metric_label(),
            &Detail::new()
                .with("error", e)
                .with_opt("served_from", served_from)
                .build(),
        )
        .await;
    }

    /// After a fresh read: records a changed fingerprint. Returns whether it changed.
    async fn note_key_value(
        &self,
        k: &ProviderKey,
        reference: &SecretReference,
    ) -> Result<bool, ServiceError> {
        let Some(fp) = self.keys.fingerprint(&reference.to_string()) else {
            return Ok(false);
        };
        if fp == k.fingerprint {
            return Ok(false);
        }
        self.store
            .set_provider_key_fingerprint(&k.provider, &k.id, &fp)
            .await?;
        Ok(true)
    }

    /// Re-reads every upstream key from its backend (the rotation poll). A new value is
    /// recorded and audited (`secret.rotate`), a key the provider had rejected is put back
    /// into service, and one snapshot carries all changes. A backend failure is audited
    /// once per failure spell (`secret.unavailable`) and the last value keeps serving.
    /// Returns how many keys changed.
    pub async fn poll_provider_keys(&self) -> Result<usize, ServiceError> {
        use futures::StreamExt as _;
        // Backends are read concurrently (a few at a time), so one slow or unreachable
        // backend costs one timeout per poll, not one per key.
        let reads: Vec<Result<_, ServiceError>> =
            futures::stream::iter(self.store.list_provider_keys().await?)
                .map(|k| async move {
                    let reference = k.parsed_reference()?;
                    let was_failing = self.keys.is_failing(&reference.to_string());
                    let read = self.keys.refresh(&reference).await;
                    Ok((k, reference, was_failing, read))
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
        let mut changed = 0;
        for r in reads {
            let (k, reference, was_failing, read) = r?;
            match read {
                Ok(outcome) => {
                    if was_failing {
                        tracing::info!(reference = %reference, "secret backend readable again");
                        self.audit(
                            "secret.available",
                            "system:secrets",
                            &format!("{}/{} ref={reference}", k.provider, k.id),
                            "ok",
                            "",
                        )
                        .await;
                    }
                    if self
                        .apply_key_refresh(&k, &reference, &outcome, "system:secrets")
                        .await?
                    {
                        changed += 1;
                    }
                }
                Err(e) => {
                    if self.keys.mark_failing(&reference.to_string()) {
                        tracing::error!(reference = %reference, error = %e, "cannot read upstream key; the last known value keeps serving");
                        self.audit_unavailable(&k, &reference, &e, Some("last known value"))
                            .await;
                    }
                }
            }
        }
        if changed > 0 {
            self.publish().await?;
        }
        Ok(changed)
    }

    /// Records what a fresh read found: a new fingerprint (audited as a rotation) and, for
    /// a key the provider had rejected, a return to service with a fresh health record.
    /// Returns whether the snapshot must change.
    async fn apply_key_refresh(
        &self,
        k: &ProviderKey,
        reference: &SecretReference,
        outcome: &Refresh,
        actor: &str,
    ) -> Result<bool, ServiceError> {
        let fingerprint_changed = self.note_key_value(k, reference).await?;
        if matches!(outcome, Refresh::Unchanged) && !fingerprint_changed {
            return Ok(false);
        }
        let new_fp = self
            .keys
            .fingerprint(&reference.to_string())
            .unwrap_or_default();
        let reenabled = fingerprint_changed
            && k.disabled_reason
                .as_deref()
                .is_some_and(|r| r.starts_with(REJECTED_PREFIX));
        if reenabled {
            self.store
                .set_provider_key_state(&k.provider, &k.id, None, None, true)
                .await?;
        }
        if fingerprint_changed {
            tracing::info!(provider = %k.provider, key = %k.id, reference = %reference, from = %k.fingerprint, to = %new_fp, "upstream key rotated");
            self.audit(
                "secret.rotate",
                actor,
                &format!("{}/{} ref={reference}", k.provider, k.id),
                "ok",
                &Detail::new()
                    .with("from_fp", &k.fingerprint)
                    .with("to_fp", &new_fp)
                    .with("reenabled", reenabled)
                    .build(),
            )
            .await;
        }
        // A first read (Loaded) with the stored fingerprint changes nothing on the nodes
        // unless the key was missing from the last snapshot.
        Ok(true)
    }

    async fn load_or_create_signer(
        store: &dyn StateStore,
        secrets: &dyn SecretStore,
        auth: &AuthConfig,
    ) -> Result<KeyMaterial, ServiceError> {
        let keys = store.list_signing_keys().await?;
        if let Some(k) = keys
            .iter()
            .rev()
            .find(|k| k.algorithm == auth.algorithm.as_str())
        {
            return Self::load_key(secrets, k).await;
        }
        Self::create_signing_key(store, secrets, auth.algorithm).await
    }

    async fn create_signing_key(
        store: &dyn StateStore,
        secrets: &dyn SecretStore,
        algorithm: SigningAlgorithm,
    ) -> Result<KeyMaterial, ServiceError> {
        let kid = new_id("k");
        let material = KeyMaterial::generate(kid.clone(), algorithm)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let secret_name = format!("warden/jwt/{kid}");
        let encoded = SecretString::from(hex::encode(material.private.expose_secret()));
        secrets.put(&secret_name, &encoded).await?;
        store
            .insert_signing_key(&crate::domain::SigningKey {
                kid,
                algorithm: algorithm.as_str().to_owned(),
                secret_name,
                created_at: unix_now(),
            })
            .await?;
        Ok(material)
    }

    async fn load_key(
        secrets: &dyn SecretStore,
        k: &crate::domain::SigningKey,
    ) -> Result<KeyMaterial, ServiceError> {
        let alg = SigningAlgorithm::parse(&k.algorithm).ok_or_else(|| {
            ServiceError::Internal(format!("signing key {} has bad algorithm", k.kid))
        })?;
        let private = secrets.get(&k.secret_name).await?;
        let raw = hex::decode(private.expose_secret())
            .map_err(|_| ServiceError::Internal(format!("signing key {} is malformed", k.kid)))?;
        KeyMaterial::from_stored(k.kid.clone(), alg, raw)
            .map_err(|e| ServiceError::Internal(format!("signing key {}: {e}", k.kid)))
    }

    /// Receives every published snapshot (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<SnapshotData>> {
        self.snapshot_tx.subscribe()
    }

    /// The version of the newest snapshot.
    pub fn current_version(&self) -> u64 {
        self.snapshot_tx.borrow().version
    }

    /// The signing key currently used for new tokens.
    pub fn signing_key(&self) -> Arc<KeyMaterial> {
        Arc::clone(&self.signer.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes a new signing key (of the configured algorithm) the signer. The old keys'
    /// verification parts stay in snapshots until the last unrevoked token each signed has
    /// expired (see [`Self::signing_keys`]).
    pub async fn rotate_signing_key(
        &self,
        actor: &Actor,
    ) -> Result<SigningKeyStatus, ServiceError> {
        let kid_of = |r: &Result<SigningKeyStatus, ServiceError>| {
            r.as_ref().map(|k| k.record.kid.clone()).unwrap_or_default()
        };
        self.audited(actor, "signing_key.rotate", kid_of, async {
            let material = Self::create_signing_key(
                self.store.as_ref(),
                self.secrets.as_ref(),
                self.auth.algorithm,
            )
            .await?;
            let kid = material.kid.clone();
            *self.signer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
            // Published before it is read back: nodes must know the key before a token
            // signed with it can reach them.
            self.publish().await?;
            self.signing_keys()
                .await?
                .into_iter()
                .find(|k| k.record.kid == kid)
                .ok_or_else(|| ServiceError::Internal("new signing key not listed".into()))
        })
        .await
    }

    /// Every signing key with whether it signs new tokens and until when nodes need it.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyStatus>, ServiceError> {
        let active = self.signing_key().kid.clone();
        let now = unix_now();
        let tokens = self.store.list_tokens().await?;
        Ok(self
            .store
            .list_signing_keys()
            .await?
            .into_iter()
            .map(|k| {
                let needed_until = tokens
                    .iter()
                    .filter(|t| t.kid == k.kid && t.revoked_at.is_none() && t.expires_at > now)
                    .map(|t| t.expires_at)
                    .max()
                    .unwrap_or(0);
                SigningKeyStatus {
                    active: k.kid == active,
                    needed_until,
                    record: k,
                }
            })
            .collect())
    }

    /// Rebuilds the snapshot from the store, publishes it under a new version, and waits
    /// (up to two seconds) until every connected node has acknowledged it, so that an admin
    /// change is in force on every live node when the admin call returns.
    pub async fn publish(&self) -> Result<u64, ServiceError> {
        let version = {
            let _guard = self.publish_lock.lock().await;
            let previous: u64 = self
                .store
                .get_meta(META_VERSION)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let version = previous + 1;
            let data = self.build_snapshot(version).await?;
            self.store
                .set_meta(META_VERSION, &version.to_string())
                .await?;
            self.snapshot_tx.send_replace(Arc::new(data));
            version
        };
        tracing::info!(version, "published snapshot");
        if !self.await_propagation(version, PROPAGATION_WAIT).await {
            tracing::warn!(
                version,
                "not every connected node acknowledged the snapshot in time"
            );
        }
        Ok(version)
    }

    /// Waits until every connected node has acknowledged `version`; false on timeout.
    pub async fn await_propagation(&self, version: u64, timeout: Duration) -> bool {
        let mut acks = self.acked.subscribe();
        let all_acked = |acks: &HashMap<String, u64>| {
            self.connections
                .lock()
                .map(|c| {
                    c.keys()
                        .all(|node| acks.get(node).is_some_and(|v| *v >= version))
                })
                .unwrap_or(true)
        };
        tokio::time::timeout(timeout, async {
            loop {
                if all_acked(&acks.borrow_and_update()) {
                    return;
                }
                if acks.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    async fn build_snapshot(&self, version: u64) -> Result<SnapshotData, ServiceError> {
        let now = unix_now();
        let policies = self.store.list_policies().await?;
        let policy_of = |target: &PolicyTarget| {
            policies
                .iter()
                .find(|p| &p.target == target)
                .map_or_else(Limits::default, |p| p.limits)
        };
        let prices = self.store.list_prices().await?;
        let deployments = self.store.list_deployments().await?;
        let keys = self.store.list_provider_keys().await?;
        let mut providers = Vec::new();
        for p in self.store.list_providers().await? {
            let mut pkeys = Vec::new();
            for k in keys.iter().filter(|k| k.provider == p.name) {
                // From the manager's cache: publishing never waits on a backend. A key
                // never read (its backend was down at start) is left out until it is.
                let reference = manager::canonical(&k.secret_name);
                match self.keys.value(&reference) {
                    Some(secret) => pkeys.push(SnapshotKey {
                        id: k.id.clone(),
                        fingerprint: self
                            .keys
                            .fingerprint(&reference)
                            .unwrap_or_else(|| k.fingerprint.clone()),
                        secret,
                        disabled_reason: k.disabled_reason.clone().unwrap_or_default(),
                        health_epoch: k.health_epoch,
                    }),
                    None => {
                        tracing::warn!(provider = %p.name, key = %k.id, reference = %reference, "upstream key not read yet; left out of the snapshot")
                    }
                }
            }
            providers.push(SnapshotProvider {
                name: p.name,
                format: p.format,
                base_url: p.base_url,
                passthrough: p.passthrough,
                drop_params: p.drop_params,
                keys: pkeys,
            });
        }
        let models = self
            .store
            .list_models()
            .await?
            .into_iter()
            .map(|m| SnapshotModel {
                policy: policy_of(&PolicyTarget::Model(m.alias.clone())),
                price: prices
                    .iter()
                    .find(|(alias, _)| alias == &m.alias)
                    .map_or_else(Price::default, |(_, p)| *p),
                alias: m.alias.clone(),
                provider: m.provider,
                upstream_model: m.upstream_model,
                weight: m.weight,
                deployments: deployments
                    .iter()
                    .filter(|d| d.alias == m.alias)
                    .map(|d| (d.provider.clone(), d.upstream_model.clone(), d.weight))
                    .collect(),
                fallbacks: m.fallbacks,
            })
            .collect();
        let mut jwt_keys = Vec::new();
        // The signer, and older keys while an unrevoked token they signed is unexpired.
        for k in self.signing_keys().await? {
            if !k.active && k.needed_until == 0 {
                continue;
            }
            let material = Self::load_key(self.secrets.as_ref(), &k.record).await?;
            jwt_keys.push(SnapshotJwtKey {
                kid: material.kid.clone(),
                algorithm: material.algorithm.as_str().to_owned(),
                key: SecretBox::new(Box::new(material.verification.expose_secret().clone())),
            });
        }
        let virtual_keys = self
            .store
            .list_virtual_keys()
            .await?
            .into_iter()
            .filter(|k| k.revoked_at.is_none() && (k.expires_at == 0 || k.expires_at > now))
            .map(|k| SnapshotVirtualKey {
                policy: policy_of(&PolicyTarget::VirtualKey(k.id.clone())),
                previous: k
                    .previous_hash
                    .filter(|_| k.previous_expires_at > now)
                    .map(|h| (h, k.previous_expires_at)),
                id: k.id,
                hash: k.hash,
                name: k.name,
                owner: k.owner,
                models: k.models,
                scopes: k.scopes,
                expires_at: k.expires_at,
            })
            .collect();
        let revoked_tokens = self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .filter(|t| t.revoked_at.is_some() && t.expires_at > now - 300)
            .map(|t| (t.jti, t.expires_at))
            .collect();
        Ok(SnapshotData {
            version,
            providers,
            models,
            jwt_issuer: self.auth.issuer.clone(),
            jwt_audience: self.auth.audience.clone(),
            jwt_leeway_seconds: u32::try_from(self.auth.leeway.as_secs()).unwrap_or(30),
            jwt_keys,
            virtual_keys,
            revoked_tokens,
            vkey_pepper: SecretBox::new(Box::new(self.pepper.expose_secret().clone())),
            global_policy: policy_of(&PolicyTarget::Global),
            subject_policies: policies
                .iter()
                .filter_map(|p| match &p.target {
                    PolicyTarget::Subject(s) => Some((s.clone(), p.limits)),
                    _ => None,
                })
                .collect(),
        })
    }

    /// Writes an audit row; a failure to audit is logged loudly (the audit issue makes
    /// delivery lossless).
    pub async fn audit(
        &self,
        action: &str,
        actor: &str,
        subject: &str,
        result: &str,
        detail: &str,
    ) {
        let record = AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp_ms: i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0),
            )
            .unwrap_or(i64::MAX),
            action: action.to_owned(),
            actor: actor.to_owned(),
            subject: subject.to_owned(),
            result: result.to_owned(),
            detail: warden_core::redact::redact(detail).into_owned(),
        };
        match self.store.append_audit(&record).await {
            Ok(link) => self.audit_appended(link.seq),
            Err(e) => tracing::error!(error = %e, action, "could not write audit row"),
        }
    }

    fn audit_appended(&self, seq: u64) {
        self.audit_seq.send_if_modified(|current| {
            let newer = seq > *current;
            if newer {
                *current = seq;
            }
            newer
        });
        self.audit_wake.notify_waiters();
    }

    /// Warden's own secret store (the audit checkpoint key lives there).
    pub fn own_secrets(&self) -> Arc<dyn SecretStore> {
        Arc::clone(&self.secrets)
    }

    /// The state store (for the audit forwarders, which read the chain themselves).
    pub fn state_store(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.store)
    }

    /// Follows appends to the audit log: the newest `seq` appended by this process.
    pub fn audit_appends(&self) -> watch::Receiver<u64> {
        self.audit_seq.subscribe()
    }

    /// Woken after every append to the audit log.
    pub fn audit_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.audit_wake)
    }

    /// Up to `limit` audit rows with `seq >= from_seq`, in order, with their chain hashes.
    pub async fn audit_range(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<crate::audit::ChainedAudit>, ServiceError> {
        Ok(self.store.list_audit_range(from_seq, limit).await?)
    }

    /// The newest row of the audit chain.
    pub async fn audit_head(&self) -> Result<crate::audit::ChainHead, ServiceError> {
        Ok(self.store.audit_head().await?)
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
        let result = change.await;
        let subject = subject.of(&result);
        match &result {
            Ok(_) => self.audit(action, &actor.0, &subject, "ok", "").await,
            Err(e) => {
                self.audit(
                    action,
                    &actor.0,
                    &subject,
                    e.code().metric_label(),
                    &Detail::new().with("error", e).build(),
                )
                .await;
            }
        }
        result
    }

    // ---- authentication -------------------------------------------------------------

    /// Checks an admin credential (`wa_…`, or a JWT with the `admin` scope). Failures are
    /// audited with the reason; the caller learns only that it failed.
    pub async fn authenticate_admin(
        &self,
        presented: Option<&str>,
        action: &str,
    ) -> Result<Actor, ServiceError> {
        self.authenticate_with_scope(presented, action, Scope::Admin)
            .await
    }

    /// Checks a credential that may read the audit log: an admin credential (`wa_…`), or
    /// a JWT with the `audit` scope. A JWT without it is refused (and audited) with
    /// permission denied.
    pub async fn authenticate_audit_reader(
        &self,
        presented: Option<&str>,
        action: &str,
    ) -> Result<Actor, ServiceError> {
        self.authenticate_with_scope(presented, action, Scope::Audit)
            .await
    }

    async fn authenticate_with_scope(
        &self,
        presented: Option<&str>,
        action: &str,
        needed: Scope,
    ) -> Result<Actor, ServiceError> {
        match self.check_admin(presented, needed).await {
            Ok(actor) => Ok(actor),
            Err(reason) => {
                self.audit(
                    "auth.admin",
                    &shown(presented),
                    action,
                    "denied",
                    &Detail::new().with("reason", reason).build(),
                )
                .await;
                tracing::warn!(reason, action, "admin authentication failed");
                if reason == "missing_audit_scope" {
                    return Err(ServiceError::PermissionDenied(
                        "reading the audit log needs the `audit` scope".into(),
                    ));
                }
                Err(ServiceError::Unauthenticated)
            }
        }
    }

    async fn check_admin(
        &self,
        presented: Option<&str>,
        needed: Scope,
    ) -> Result<Actor, &'static str> {
        let presented = presented.ok_or("missing_credential")?;
        if credential::kind_of(presented) == Some(Kind::Admin) {
            credential::check_format(Kind::Admin, presented).map_err(|_| "malformed_credential")?;
            let hash = credential::hash_str(self.pepper.expose_secret(), presented);
            let record = self
                .store
                .find_credential(CredentialTable::Admin, &hash)
                .await
                .map_err(|_| "store_error")?
                .ok_or("unknown_credential")?;
            if !credential::hashes_equal(&record.hash, &hash) {
                return Err("unknown_credential");
            }
            if record.revoked_at.is_some() {
                return Err("revoked_credential");
            }
            return Ok(Actor(format!("admin:{}", record.id)));
        }
        if presented.starts_with("eyJ") {
            let claims = self.verify_jwt(presented).await.map_err(|e| e.reason())?;
            if !claims.scopes().contains(&needed) {
                return Err(if needed == Scope::Audit {
                    "missing_audit_scope"
                } else {
                    "missing_admin_scope"
                });
            }
            return Ok(Actor(format!("jwt:{}", claims.sub)));
        }
        Err("unrecognised_credential")
    }

    async fn verify_jwt(&self, token: &str) -> Result<Claims, jwt::VerifyError> {
        let snapshot = self.snapshot_tx.borrow().clone();
        let verifier = jwt::Verifier::new(
            self.auth.issuer.clone(),
            self.auth.audience.clone(),
            self.auth.leeway.as_secs(),
            snapshot.jwt_keys.iter().filter_map(|k| {
                Some(VerificationKey {
                    kid: k.kid.clone(),
                    algorithm: SigningAlgorithm::parse(&k.algorithm)?,
                    key: SecretBox::new(Box::new(k.key.expose_secret().clone())),
                })
            }),
        );
        let claims = verifier.verify(token)?;
        if snapshot
            .revoked_tokens
            .iter()
            .any(|(jti, _)| *jti == claims.jti)
        {
            return Err(jwt::VerifyError::BadSignature);
        }
        Ok(claims)
    }

    /// Checks a node credential (`wn_…`) and returns its record. Failures are audited.
    pub async fn authenticate_node(
        &self,
        presented: Option<&str>,
        node_id: &str,
    ) -> Result<CredentialRecord, ServiceError> {
        let outcome: Result<CredentialRecord, &'static str> = async {
            let presented = presented.ok_or("missing_credential")?;
            credential::check_format(Kind::Node, presented).map_err(|_| "malformed_credential")?;
            let hash = credential::hash_str(self.pepper.expose_secret(), presented);
            let record = self
                .store
                .find_credential(CredentialTable::Node, &hash)
                .await
                .map_err(|_| "store_error")?
                .ok_or("unknown_credential")?;
            if record.revoked_at.is_some() {
                return Err("revoked_credential");
            }
            Ok(record)
        }
        .await;
        match outcome {
            Ok(r) => Ok(r),
            Err(reason) => {
                self.audit("auth.node", &shown(presented), node_id, "denied", reason)
                    .await;
                tracing::warn!(reason, node_id, "node authentication failed");
                Err(ServiceError::Unauthenticated)
            }
        }
    }

    // ---- credentials ------------------------------------------------------------------

    async fn issue_opaque(
        &self,
        table: CredentialTable,
        kind: Kind,
        name: &str,
    ) -> Result<(SecretString, CredentialRecord), ServiceError> {
        let secret = credential::generate(kind);
        let record = CredentialRecord {
            id: new_id(match table {
                CredentialTable::Admin => "adm_",
                CredentialTable::Node => "node_",
            }),
            hash: credential::hash(self.pepper.expose_secret(), &secret),
            name: name.to_owned(),
            created_at: unix_now(),
            revoked_at: None,
        };
        self.store.insert_credential(table, &record).await?;
        Ok((secret, record))
    }

    /// Creates the first admin credential when none exists; returns it (shown once).
    pub async fn bootstrap_admin(&self) -> Result<Option<SecretString>, ServiceError> {
        if self.store.count_credentials(CredentialTable::Admin).await? > 0 {
            return Ok(None);
        }
        let (secret, record) = self
            .issue_opaque(CredentialTable::Admin, Kind::Admin, "bootstrap")
            .await?;
        self.audit(
            "admin_credential.create",
            "system",
            &record.id,
            "ok",
            "bootstrap",
        )
        .await;
        Ok(Some(secret))
    }

    /// Revokes earlier admin or node credentials named `name` and issues a new one (used by
    /// `wardenctl dev`, which prints a fresh admin credential at every start and gives its
    /// embedded node a fresh node credential).
    pub async fn replace_credential(
        &self,
        table: CredentialTable,
        name: &str,
    ) -> Result<SecretString, ServiceError> {
        let revoked = self
            .store
            .revoke_credentials_named(table, name, unix_now())
            .await?;
        let (kind, action) = match table {
            CredentialTable::Admin => (Kind::Admin, "admin_credential"),
            CredentialTable::Node => (Kind::Node, "node_credential"),
        };
        if revoked > 0 {
            self.audit(
                &format!("{action}.revoke"),
                "system",
                name,
                "ok",
                "replaced",
            )
            .await;
        }
        let (secret, record) = self.issue_opaque(table, kind, name).await?;
        self.audit(
            &format!("{action}.create"),
            "system",
            &record.id,
            "ok",
            name,
        )
        .await;
        Ok(secret)
    }

    /// Issues a node credential (shown once).
    pub async fn issue_node_credential(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<(SecretString, String), ServiceError> {
        let id_of = |r: &Result<(SecretString, String), ServiceError>| {
            r.as_ref().map(|(_, id)| id.clone()).unwrap_or_default()
        };
        self.audited(actor, "node_credential.create", id_of, async {
            let name = if name.is_empty() { "node" } else { name };
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            let (secret, record) = self
                .issue_opaque(CredentialTable::Node, Kind::Node, name)
                .await?;
            Ok((secret, record.id))
        })
        .await
    }

    /// Issues a JWT. `ttl` of `None` takes the configured default.
    pub async fn issue_token(
        &self,
        actor: &Actor,
        subject: &str,
        scopes: &[String],
        models: &[String],
        ttl: Option<Duration>,
        policy: Option<Limits>,
    ) -> Result<(SecretString, TokenRecord), ServiceError> {
        let jti_of = |r: &Result<(SecretString, TokenRecord), ServiceError>| {
            r.as_ref().map(|(_, r)| r.jti.clone()).unwrap_or_default()
        };
        self.audited(actor, "token.issue", jti_of, async {
            if subject.trim().is_empty() || subject.len() > 128 {
                return Err(ServiceError::InvalidArgument(
                    "subject must be 1 to 128 characters".into(),
                ));
            }
            let scopes = parse_scopes(scopes)?;
            let models = parse_models(models)?;
            let ttl = ttl.unwrap_or(self.auth.default_ttl);
            if ttl.is_zero() || ttl > self.auth.max_ttl {
                return Err(ServiceError::InvalidArgument(format!(
                    "ttl must be between 1s and {}",
                    humantime::format_duration(self.auth.max_ttl)
                )));
            }
            let now = unix_now();
            let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
            let jti = uuid::Uuid::new_v4().to_string();
            let claims = Claims {
                iss: self.auth.issuer.clone(),
                sub: subject.to_owned(),
                aud: self.auth.audience.clone(),
                exp,
                nbf: Some(now),
                iat: now,
                jti: jti.clone(),
                scope: scopes.join(" "),
                models: models.clone(),
            };
            let signer = self.signing_key();
            let token = signer
                .sign(&claims)
                .map_err(|e| ServiceError::Internal(format!("signing failed: {e}")))?;
            let record = TokenRecord {
                jti,
                subject: subject.to_owned(),
                scopes,
                models,
                kid: signer.kid.clone(),
                issued_at: now,
                expires_at: exp,
                revoked_at: None,
            };
            self.store.insert_token(&record).await?;
            if let Some(limits) = policy {
                self.set_policy(
                    actor,
                    &PolicyTarget::Subject(subject.to_owned()),
                    limits,
                    Source::Admin,
                )
                .await?;
            }
            Ok((token, record))
        })
        .await
    }

    /// Revokes a JWT by id on every node.
    pub async fn revoke_token(&self, actor: &Actor, jti: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "token.revoke", jti, async {
            let token = self
                .store
                .get_token(jti)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("no token with id {jti}")))?;
            if token.revoked_at.is_some() {
                return Err(ServiceError::AlreadyExists(format!(
                    "token {jti} is already revoked"
                )));
            }
            self.store.revoke_token(jti, unix_now()).await?;
            Ok(())
        })
        .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ServiceError> {
        Ok(self.store.list_tokens().await?)
    }

    /// Creates a virtual key (shown once; stored as its HMAC).
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the admin request"
    )]
    pub async fn create_virtual_key(
        &self,
        actor: &Actor,
        name: &str,
        owner: &str,
        models: &[String],
        scopes: &[String],
        ttl: Option<Duration>,
        policy: Option<Limits>,
    ) -> Result<(SecretString, VirtualKeyRecord), ServiceError> {
        let id_of = |r: &Result<(SecretString, VirtualKeyRecord), ServiceError>| {
            r.as_ref().map(|(_, r)| r.id.clone()).unwrap_or_default()
        };
        self.audited(actor, "vkey.create", id_of, async {
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            if owner.len() > 128 {
                return Err(ServiceError::InvalidArgument("owner is too long".into()));
            }
            let scopes = parse_scopes(scopes)?;
            let models = parse_models(models)?;
            let now = unix_now();
            let expires_at = match ttl {
                Some(t) if !t.is_zero() => {
                    now.saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
                }
                _ => 0,
            };
            let secret = credential::generate(Kind::VirtualKey);
            let record = VirtualKeyRecord {
                id: new_id("vk_"),
                hash: credential::hash(self.pepper.expose_secret(), &secret),
                name: name.to_owned(),
                owner: owner.to_owned(),
                scopes,
                models,
                created_at: now,
                expires_at,
                revoked_at: None,
                previous_hash: None,
                previous_expires_at: 0,
            };
            self.store.insert_virtual_key(&record).await?;
            match policy {
                Some(limits) => {
                    self.set_policy(
                        actor,
                        &PolicyTarget::VirtualKey(record.id.clone()),
                        limits,
                        Source::Admin,
                    )
                    .await?;
                }
                None => {
                    self.publish().await?;
                }
            }
            Ok((secret, record))
        })
        .await
    }

    pub async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, ServiceError> {
        Ok(self.store.list_virtual_keys().await?)
    }

    /// Revokes a virtual key on every node.
    pub async fn revoke_virtual_key(&self, actor: &Actor, id: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "vkey.revoke", id, async {
            if !self.store.revoke_virtual_key(id, unix_now()).await? {
                return Err(ServiceError::NotFound(format!(
                    "no live virtual key with id {id}"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Gives a virtual key a new secret (same id, so the same limits, usage and audit
    /// trail); the replaced secret keeps working for `grace`, then every node refuses it
    /// (nodes check the deadline themselves, and the next snapshot drops it).
    pub async fn rotate_virtual_key(
        &self,
        actor: &Actor,
        id: &str,
        grace: Duration,
    ) -> Result<(SecretString, VirtualKeyRecord), ServiceError> {
        let subject = |r: &Result<(SecretString, VirtualKeyRecord), ServiceError>| match r {
            Ok((_, r)) => format!("{id} old secret valid until {}", r.previous_expires_at),
            Err(_) => id.to_owned(),
        };
        self.audited(actor, "vkey.rotate", subject, async {
            if grace > MAX_VKEY_GRACE {
                return Err(ServiceError::InvalidArgument(format!(
                    "grace must be at most {}",
                    humantime::format_duration(MAX_VKEY_GRACE)
                )));
            }
            let now = unix_now();
            let grace_end = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(0));
            let secret = credential::generate(Kind::VirtualKey);
            let hash = credential::hash(self.pepper.expose_secret(), &secret);
            let live = self
                .store
                .list_virtual_keys()
                .await?
                .into_iter()
                .find(|k| {
                    k.id == id
                        && k.revoked_at.is_none()
                        && (k.expires_at == 0 || k.expires_at > now)
                })
                .ok_or_else(|| {
                    ServiceError::NotFound(format!("no live virtual key with id {id}"))
                })?;
            // A grace period never outlives the key itself.
            let previous_expires_at = if live.expires_at == 0 {
                grace_end
            } else {
                grace_end.min(live.expires_at)
            };
            if !self
                .store
                .rotate_virtual_key(id, &hash, previous_expires_at)
                .await?
            {
                return Err(ServiceError::NotFound(format!(
                    "no live virtual key with id {id}"
                )));
            }
            self.publish().await?;
            let record = self
                .store
                .list_virtual_keys()
                .await?
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| ServiceError::NotFound(format!("no virtual key with id {id}")))?;
            Ok((secret, record))
        })
        .await
    }

    // ---- providers and models ---------------------------------------------------------

    /// Adds or updates a provider.
    pub async fn add_provider(
        &self,
        actor: &Actor,
        name: &str,
        format: ApiFormat,
        base_url: &str,
        source: Source,
        options: ProviderOptions,
    ) -> Result<Provider, ServiceError> {
        self.mutate(actor, "provider.add", name, async {
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            for p in &options.drop_params {
                if p.is_empty() || p.len() > 64 || p == "model" || p == "messages" {
                    return Err(ServiceError::InvalidArgument(format!(
                        "drop_params: `{p}` cannot be dropped"
                    )));
                }
            }
            if format == ApiFormat::Echo && source != Source::Builtin {
                return Err(ServiceError::InvalidArgument(
                    "format must be openai or anthropic".into(),
                ));
            }
            let base_url = base_url.trim().trim_end_matches('/');
            if source != Source::Builtin {
                validate_base_url(base_url)
                    .map_err(|e| ServiceError::InvalidArgument(format!("base_url: {e}")))?;
            }
            let existing = self.store.list_providers().await?;
            let created_at = existing
                .iter()
                .find(|p| p.name == name)
                .map_or_else(unix_now, |p| p.created_at);
            if options.passthrough
                && self
                    .store
                    .list_provider_keys()
                    .await?
                    .iter()
                    .any(|k| k.provider == name)
            {
                return Err(ServiceError::InvalidArgument(format!(
                    "provider {name} has stored keys: a passthrough provider cannot have any (remove them first)"
                )));
            }
            let provider = Provider {
                name: name.to_owned(),
                format,
                base_url: base_url.to_owned(),
                source,
                created_at,
                passthrough: options.passthrough,
                drop_params: options.drop_params,
            };
            self.store.upsert_provider(&provider).await?;
            Ok(provider)
        })
        .await
    }

    pub async fn list_providers(&self) -> Result<(Vec<Provider>, Vec<ProviderKey>), ServiceError> {
        Ok((
            self.store.list_providers().await?,
            self.store.list_provider_keys().await?,
        ))
    }

    /// Removes a provider, its models and its upstream keys (also from the secret store).
    pub async fn remove_provider(&self, actor: &Actor, name: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "provider.remove", name, async {
            let keys: Vec<ProviderKey> = self
                .store
                .list_provider_keys()
                .await?
                .into_iter()
                .filter(|k| k.provider == name)
                .collect();
            if !self.store.delete_provider(name).await? {
                return Err(ServiceError::NotFound(format!("no provider named {name}")));
            }
            for k in keys {
                self.release_secret(&k).await?;
            }
            Ok(())
        })
        .await
    }

    /// Adds an upstream key to `provider`: a value is written to the primary secret
    /// backend; a reference is read once to check it and to fingerprint it.
    pub async fn add_provider_key(
        &self,
        actor: &Actor,
        provider: &str,
        source: KeySource,
    ) -> Result<ProviderKey, ServiceError> {
        let subject = |r: &Result<ProviderKey, ServiceError>| match r {
            Ok(k) => format!(
                "{provider}/{} fp={} ref={}",
                k.id, k.fingerprint, k.secret_name
            ),
            Err(_) => provider.to_owned(),
        };
        self.mutate(actor, "provider.key.add", subject, async {
            let p = self.key_provider(provider).await?;
            let id = new_id("key_");
            let (reference, fingerprint) = match &source {
                KeySource::Value(secret) => {
                    let value = validate_key_value(secret)?;
                    let fp = fingerprint::of(value.expose_secret().as_bytes());
                    self.refuse_duplicate(&p.name, &fp).await?;
                    let reference = self.keys.store_new(provider, &id, &value).await?;
                    (reference, fp)
                }
                KeySource::Reference(text) => {
                    let reference = SecretReference::parse(text.trim())?;
                    self.keys.refresh(&reference).await?;
                    let fp = self
                        .keys
                        .fingerprint(&reference.to_string())
                        .unwrap_or_default();
                    if let Err(e) = self.refuse_duplicate(&p.name, &fp).await {
                        self.keys.forget(&reference.to_string());
                        return Err(e);
                    }
                    (reference, fp)
                }
            };
            if let KeySource::Value(_) = &source {
                self.keys.refresh(&reference).await?;
            }
            let key = ProviderKey {
                id,
                provider: provider.to_owned(),
                secret_name: reference.to_string(),
                fingerprint,
                created_at: unix_now(),
                disabled_reason: None,
                disabled_at: None,
                health_epoch: 0,
            };
            self.store.insert_provider_key(&key).await?;
            Ok(key)
        })
        .await
    }

    /// After a key left the store: forgets its secret (and deletes it from the backend when
    /// Warden wrote it), unless another key still reads the same reference.
    async fn release_secret(&self, key: &ProviderKey) -> Result<(), ServiceError> {
        let reference = key.parsed_reference()?;
        let text = reference.to_string();
        let shared = self
            .store
            .list_provider_keys()
            .await?
            .iter()
            .any(|k| manager::canonical(&k.secret_name) == text);
        if !shared {
            self.keys.remove(&reference).await?;
        }
        Ok(())
    }

    /// The provider a key is added to; it must take stored keys.
    async fn key_provider(&self, provider: &str) -> Result<Provider, ServiceError> {
        let p = self
            .store
            .list_providers()
            .await?
            .into_iter()
            .find(|p| p.name == provider)
            .ok_or_else(|| ServiceError::NotFound(format!("no provider named {provider}")))?;
        if p.format == ApiFormat::Echo {
            return Err(ServiceError::InvalidArgument(
                "the built-in echo provider takes no keys".into(),
            ));
        }
        if p.passthrough {
            return Err(ServiceError::InvalidArgument(format!(
                "provider {provider} is a passthrough provider: each client brings its own key, none is stored"
            )));
        }
        Ok(p)
    }

    /// Refuses a second key of `provider` with the same value.
    async fn refuse_duplicate(&self, provider: &str, fp: &str) -> Result<(), ServiceError> {
        if self
            .store
            .list_provider_keys()
            .await?
            .iter()
            .any(|k| k.provider == provider && k.fingerprint == fp)
        {
            return Err(ServiceError::AlreadyExists(format!(
                "provider {provider} already has this key (fingerprint {fp})"
            )));
        }
        Ok(())
    }

    /// Writes a new value for an upstream key into the backend its reference points to and
    /// rolls it out at once (the poll would find it too); a key the provider had rejected
    /// returns to service. `env://` keys are read-only.
    pub async fn rotate_provider_key(
        &self,
        actor: &Actor,
        provider: &str,
        key_id: &str,
        secret: SecretString,
    ) -> Result<ProviderKey, ServiceError> {
        let subject = |r: &Result<ProviderKey, ServiceError>| match r {
            Ok(k) => format!(
                "{provider}/{key_id} fp={} ref={}",
                k.fingerprint, k.secret_name
            ),
            Err(_) => format!("{provider}/{key_id}"),
        };
        self.audited(actor, "provider.key.rotate", subject, async {
            let value = validate_key_value(&secret)?;
            let key = self.find_provider_key(provider, key_id).await?;
            let reference = key.parsed_reference()?;
            let fp = fingerprint::of(value.expose_secret().as_bytes());
            if fp == key.fingerprint {
                return Err(ServiceError::InvalidArgument(
                    "the new value is the current one".into(),
                ));
            }
            self.keys.write(&reference, &value).await?;
            let outcome = self.keys.refresh(&reference).await?;
            self.apply_key_refresh(&key, &reference, &outcome, &actor.0)
                .await?;
            self.publish().await?;
            self.find_provider_key(provider, key_id).await
        })
        .await
    }

    /// The key `key_id` of `provider`.
    async fn find_provider_key(
        &self,
        provider: &str,
        key_id: &str,
    ) -> Result<ProviderKey, ServiceError> {
        self.store
            .list_provider_keys()
            .await?
            .into_iter()
            .find(|k| k.provider == provider && k.id == key_id)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("provider {provider} has no key {key_id}"))
            })
    }

    /// Removes an upstream key.
    pub async fn remove_provider_key(
        &self,
        actor: &Actor,
        provider: &str,
        key_id: &str,
    ) -> Result<(), ServiceError> {
        self.mutate(
            actor,
            "provider.key.remove",
            format!("{provider}/{key_id}"),
            async {
                let key = self.find_provider_key(provider, key_id).await?;
                self.store.delete_provider_key(provider, key_id).await?;
                self.release_secret(&key).await?;
                Ok(())
            },
        )
        .await
    }

    /// Adds or updates a model alias.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the admin request"
    )]
    pub async fn add_model(
        &self,
        actor: &Actor,
        alias: &str,
        provider: &str,
        upstream_model: &str,
        source: Source,
        fallbacks: &[String],
        price: Option<Price>,
    ) -> Result<Model, ServiceError> {
        self.mutate(actor, "model.add", alias, async {
            let known: Vec<String> = self
                .store
                .list_models()
                .await?
                .into_iter()
                .map(|m| m.alias)
                .collect();
            for f in fallbacks {
                if f == alias {
                    return Err(ServiceError::InvalidArgument(format!(
                        "model `{alias}` cannot fall back to itself"
                    )));
                }
                if !known.contains(f) {
                    return Err(ServiceError::NotFound(format!(
                        "fallback model `{f}` does not exist (add it first)"
                    )));
                }
            }
            if let Some(p) = price
                && (!p.input_per_mtok.is_finite()
                    || !p.output_per_mtok.is_finite()
                    || p.input_per_mtok < 0.0
                    || p.output_per_mtok < 0.0)
            {
                return Err(ServiceError::InvalidArgument(
                    "prices must be finite and not negative".into(),
                ));
            }
            validate_name(alias)
                .map_err(|e| ServiceError::InvalidArgument(format!("alias: {e}")))?;
            let upstream_model = upstream_or_alias(upstream_model, alias);
            if upstream_model.len() > 256 {
                return Err(ServiceError::InvalidArgument(
                    "upstream_model is too long".into(),
                ));
            }
            if !self
                .store
                .list_providers()
                .await?
                .iter()
                .any(|p| p.name == provider)
            {
                return Err(ServiceError::NotFound(format!(
                    "no provider named {provider}"
                )));
            }
            let model = Model {
                alias: alias.to_owned(),
                provider: provider.to_owned(),
                upstream_model: upstream_model.to_owned(),
                source,
                created_at: unix_now(),
                fallbacks: fallbacks.to_vec(),
                weight: self
                    .store
                    .list_models()
                    .await?
                    .iter()
                    .find(|m| m.alias == alias)
                    .map_or(1, |m| m.weight),
            };
            self.store.upsert_model(&model).await?;
            if let Some(p) = price {
                self.store.upsert_price(alias, p).await?;
            }
            Ok(model)
        })
        .await
    }

    pub async fn list_models(&self) -> Result<Vec<Model>, ServiceError> {
        Ok(self.store.list_models().await?)
    }

    pub async fn remove_model(&self, actor: &Actor, alias: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "model.remove", alias, async {
            if !self.store.delete_model(alias).await? {
                return Err(ServiceError::NotFound(format!("no model named {alias}")));
            }
            Ok(())
        })
        .await
    }

    // ---- nodes ------------------------------------------------------------------------

    /// Records that a node connected (or reconnected).
    pub async fn node_connected(
        &self,
        node_id: &str,
        credential_id: &str,
        software_version: &str,
        have_version: u64,
    ) -> Result<(), ServiceError> {
        if let Ok(mut c) = self.connections.lock() {
            *c.entry(node_id.to_owned()).or_default() += 1;
        }
        self.store
            .upsert_node(&NodeRecord {
                node_id: node_id.to_owned(),
                credential_id: credential_id.to_owned(),
                acked_version: have_version,
                last_seen: unix_now(),
                software_version: software_version.to_owned(),
            })
            .await?;
        self.audit(
            "node.connect",
            &format!("node:{credential_id}"),
            node_id,
            "ok",
            "",
        )
        .await;
        Ok(())
    }

    /// Records that a node's watch stream ended.
    pub fn node_disconnected(&self, node_id: &str) {
        if let Ok(mut c) = self.connections.lock()
            && let Some(n) = c.get_mut(node_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(node_id);
            }
        }
        // Wake propagation waits: a node that left no longer holds them up.
        self.acked.send_modify(|_| {});
    }

    /// Records the snapshot version a node applied.
    pub async fn node_acked(
        &self,
        node_id: &str,
        credential_id: &str,
        version: u64,
    ) -> Result<(), ServiceError> {
        let existing = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| n.node_id == node_id);
        let software_version = existing.map(|n| n.software_version).unwrap_or_default();
        self.acked.send_modify(|acks| {
            acks.insert(node_id.to_owned(), version);
        });
        self.store
            .upsert_node(&NodeRecord {
                node_id: node_id.to_owned(),
                credential_id: credential_id.to_owned(),
                acked_version: version,
                last_seen: unix_now(),
                software_version,
            })
            .await?;
        Ok(())
    }

    /// Commits audit events delivered by a node. Events whose id is already stored are
    /// redeliveries and count as accepted; any other failure fails the batch so that the
    /// node retries it.
    pub async fn ingest_node_events(
        &self,
        node_id: &str,
        events: Vec<AuditRecord>,
    ) -> Result<u32, ServiceError> {
        let mut accepted = 0u32;
        for mut event in events {
            if event.id.len() > 64 || event.action.len() > 64 || event.actor.len() > 256 {
                return Err(ServiceError::InvalidArgument(format!(
                    "audit event {} has oversized fields",
                    event.id.chars().take(64).collect::<String>()
                )));
            }
            event.subject = event.subject.chars().take(512).collect();
            event.result = event.result.chars().take(64).collect();
            event.detail =
                warden_core::redact::redact(&event.detail.chars().take(2048).collect::<String>())
                    .into_owned();
            // Which node saw it, as one more attribute.
            let node = Detail::new().with("node", node_id).build();
            event.detail = if event.detail.is_empty() {
                node
            } else {
                format!("{} {node}", event.detail)
            };
            match self.store.append_audit(&event).await {
                Ok(link) => {
                    self.audit_appended(link.seq);
                    accepted += 1;
                }
                Err(crate::store::StoreError::Database(sqlx::Error::Database(db)))
                    if db.is_unique_violation() =>
                {
                    accepted += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(accepted)
    }

    /// A node reports that a provider rejected an upstream key (401/403). Audited; the
    /// node has already taken the key out of service on every node through Redis.
    pub async fn upstream_key_rejected(
        &self,
        node_id: &str,
        provider: &str,
        key_id: &str,
        fingerprint: &str,
        status: u32,
        reason: &str,
    ) -> Result<(), ServiceError> {
        tracing::warn!(
            node_id,
            provider,
            key = key_id,
            fingerprint,
            status,
            "provider rejected an upstream key"
        );
        let current = self
            .store
            .list_provider_keys()
            .await?
            .into_iter()
            .find(|k| k.provider == provider && k.id == key_id);
        // A report about a secret that has since been rotated, or about a key already out
        // of service, changes nothing.
        if let Some(k) = current
            && k.fingerprint == fingerprint
            && k.disabled_reason.is_none()
        {
            let why = format!("{REJECTED_PREFIX} (HTTP {status})");
            self.store
                .set_provider_key_state(provider, key_id, Some(&why), Some(unix_now()), false)
                .await?;
            self.publish().await?;
        }
        self.audit(
            "provider.key.rejected",
            &format!("node:{node_id}"),
            &format!("{provider}/{key_id} fp={fingerprint}"),
            "disabled",
            &Detail::new()
                .with("status", status)
                .with("reason", reason)
                .build(),
        )
        .await;
        Ok(())
    }

    /// Quarantines an upstream key (out of service on every node) or puts it back into
    /// service (with a fresh shared health record).
    pub async fn set_provider_key_state(
        &self,
        actor: &Actor,
        provider: &str,
        key_id: &str,
        quarantine: bool,
        reason: &str,
    ) -> Result<ProviderKey, ServiceError> {
        let action = if quarantine {
            "provider.key.quarantine"
        } else {
            "provider.key.enable"
        };
        self.audited(actor, action, format!("{provider}/{key_id}"), async {
            let reason = reason.trim();
            if reason.len() > 200 {
                return Err(ServiceError::InvalidArgument("reason is too long".into()));
            }
            let changed = if quarantine {
                let why = if reason.is_empty() {
                    "quarantined by an admin".to_owned()
                } else {
                    format!("quarantined: {reason}")
                };
                self.store
                    .set_provider_key_state(provider, key_id, Some(&why), Some(unix_now()), false)
                    .await?
            } else {
                self.store
                    .set_provider_key_state(provider, key_id, None, None, true)
                    .await?
            };
            if !changed {
                return Err(ServiceError::NotFound(format!(
                    "provider {provider} has no key {key_id}"
                )));
            }
            self.publish().await?;
            self.find_provider_key(provider, key_id).await
        })
        .await
    }

    /// Sets (or, with all-zero limits, clears) the policy of a target. Audited by hand
    /// rather than through `mutate`: its row carries the limits set, or the error's text.
    pub async fn set_policy(
        &self,
        actor: &Actor,
        target: &PolicyTarget,
        limits: Limits,
        source: Source,
    ) -> Result<PolicyRecord, ServiceError> {
        let result = async {
            match target {
                PolicyTarget::VirtualKey(id) => {
                    if !self
                        .store
                        .list_virtual_keys()
                        .await?
                        .iter()
                        .any(|k| &k.id == id)
                    {
                        return Err(ServiceError::NotFound(format!(
                            "no virtual key with id {id}"
                        )));
                    }
                }
                PolicyTarget::Model(alias) => {
                    if !self
                        .store
                        .list_models()
                        .await?
                        .iter()
                        .any(|m| &m.alias == alias)
                    {
                        return Err(ServiceError::NotFound(format!("no model named {alias}")));
                    }
                }
                PolicyTarget::Subject(sub) => {
                    if sub.trim().is_empty() || sub.len() > 128 {
                        return Err(ServiceError::InvalidArgument(
                            "subject must be 1 to 128 characters".into(),
                        ));
                    }
                }
                PolicyTarget::Global => {}
            }
            let mut limits = limits;
            if limits.max_budget_micros > 0 && limits.budget_period_secs == 0 {
                limits.budget_period_secs = crate::domain::DEFAULT_BUDGET_PERIOD_SECS;
            }
            if limits.budget_period_secs != 0 && limits.budget_period_secs < 60 {
                return Err(ServiceError::InvalidArgument(
                    "budget_period must be at least one minute".into(),
                ));
            }
            let record = PolicyRecord {
                target: target.clone(),
                limits,
                source,
                updated_at: unix_now(),
            };
            if limits.is_unlimited() {
                self.store.delete_policy(target).await?;
            } else {
                self.store.upsert_policy(&record).await?;
            }
            self.publish().await?;
            Ok(record)
        }
        .await;
        let detail = match &result {
            Ok(r) => format!(
                "rpm={} tpm={} max_parallel={} max_budget_micros={} period={}s",
                r.limits.rpm,
                r.limits.tpm,
                r.limits.max_parallel,
                r.limits.max_budget_micros,
                r.limits.budget_period_secs
            ),
            Err(e) => e.to_string(),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code().metric_label(),
        };
        self.audit(
            "policy.set",
            &actor.0,
            &target.to_string(),
            outcome,
            &detail,
        )
        .await;
        result
    }

    pub async fn list_prices(&self) -> Result<Vec<(String, Price)>, ServiceError> {
        Ok(self.store.list_prices().await?)
    }

    /// Adds (or re-weights) a deployment of a model alias. Naming the alias's own provider
    /// and upstream model re-weights its first deployment.
    pub async fn add_deployment(
        &self,
        actor: &Actor,
        alias: &str,
        provider: &str,
        upstream_model: &str,
        weight: u32,
    ) -> Result<(), ServiceError> {
        self.mutate(
            actor,
            "model.deployment.add",
            format!("{alias} -> {provider}"),
            async {
                let weight = weight.max(1);
                if weight > 1000 {
                    return Err(ServiceError::InvalidArgument(
                        "weight must be 1 to 1000".into(),
                    ));
                }
                let upstream_model = upstream_or_alias(upstream_model, alias);
                let models = self.store.list_models().await?;
                let model = models
                    .iter()
                    .find(|m| m.alias == alias)
                    .ok_or_else(|| ServiceError::NotFound(format!("no model named {alias}")))?;
                let providers = self.store.list_providers().await?;
                let p = providers
                    .iter()
                    .find(|p| p.name == provider)
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!("no provider named {provider}"))
                    })?;
                if p.format == ApiFormat::Echo {
                    return Err(ServiceError::InvalidArgument(
                        "the echo provider cannot be a deployment".into(),
                    ));
                }
                if model.provider == provider && model.upstream_model == upstream_model {
                    let mut m = model.clone();
                    m.weight = weight;
                    self.store.upsert_model(&m).await?;
                } else {
                    self.store
                        .upsert_deployment(&crate::domain::Deployment {
                            alias: alias.to_owned(),
                            provider: provider.to_owned(),
                            upstream_model: upstream_model.to_owned(),
                            weight,
                        })
                        .await?;
                }
                Ok(())
            },
        )
        .await
    }

    pub async fn remove_deployment(
        &self,
        actor: &Actor,
        alias: &str,
        provider: &str,
        upstream_model: &str,
    ) -> Result<(), ServiceError> {
        self.mutate(
            actor,
            "model.deployment.remove",
            format!("{alias} -> {provider}"),
            async {
                let upstream_model = upstream_or_alias(upstream_model, alias);
                if !self
                    .store
                    .delete_deployment(alias, provider, upstream_model)
                    .await?
                {
                    return Err(ServiceError::NotFound(format!(
                        "model {alias} has no further deployment on {provider} ({upstream_model})"
                    )));
                }
                Ok(())
            },
        )
        .await
    }

    pub async fn list_deployments(&self) -> Result<Vec<crate::domain::Deployment>, ServiceError> {
        Ok(self.store.list_deployments().await?)
    }

    /// Sets a model's price (from the config file's price table).
    pub async fn set_price(&self, alias: &str, price: Price) -> Result<(), ServiceError> {
        self.store.upsert_price(alias, price).await?;
        Ok(())
    }

    /// Current usage of a target under its limits, from the shared state.
    pub async fn usage(
        &self,
        target: &PolicyTarget,
        limits: &Limits,
    ) -> Result<crate::usage::Usage, String> {
        self.usage.usage(target, limits).await
    }

    /// The policy of a target (unlimited when none is set).
    pub async fn get_policy(&self, target: &PolicyTarget) -> Result<PolicyRecord, ServiceError> {
        Ok(self
            .store
            .list_policies()
            .await?
            .into_iter()
            .find(|p| &p.target == target)
            .unwrap_or(PolicyRecord {
                target: target.clone(),
                limits: Limits::default(),
                source: Source::Admin,
                updated_at: 0,
            }))
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeStatus>, ServiceError> {
        let connected: HashSet<String> = self
            .connections
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|record| NodeStatus {
                connected: connected.contains(&record.node_id),
                record,
            })
            .collect())
    }

    /// Verifies the audit log's hash chain (and its signed checkpoints, when their keys are
    /// known).
    pub async fn verify_audit(
        &self,
        from_seq: Option<u64>,
    ) -> Result<crate::audit::VerifyReport, ServiceError> {
        // The verification future is not provably `Send` (a rustc limitation with its
        // closures), so it runs on a blocking thread of its own; it is an admin operation.
        let store = Arc::clone(&self.store);
        // Checkpoints are checked against the control plane's checkpoint key, kept in its
        // secret store (never in the database a tamperer could rewrite).
        let keys = crate::audit::jobs::verification_keys(self.secrets.as_ref())
            .await
            .map_err(|e| ServiceError::Internal(format!("checkpoint key: {e}")))?;
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(
                async move { crate::audit::verify(store.as_ref(), &keys, from_seq).await },
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("audit verification did not finish: {e}")))?
        .map_err(|e| ServiceError::Internal(format!("audit verification failed to run: {e}")))
    }

    pub async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        Ok(self.store.list_audit(limit.clamp(1, 1000), action).await?)
    }
}
