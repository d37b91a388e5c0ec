//! The audit chain's scheduled jobs: the **checkpoint signer**, which signs the chain head
//! with the control plane's checkpoint key whenever it moved, and **retention**, which
//! deletes rows older than `retention_days` up to a signed checkpoint.
//!
//! Start reading at [`spawn_jobs`]; [`CheckpointKey`] is the key, [`sign_now`] and
//! [`apply_retention`] are one run of each job.
//!
//! # Configuration
//!
//! The keys belong to the `[audit]` table, next to the optional sinks ([`AuditConfig`]
//! parses the whole table; [`AuditJobsConfig`] only these keys):
//!
//! ```toml
//! [audit]
//! checkpoint_interval = "60s"   # default 60s: how often the head is signed (if it moved)
//! retention_days = 90           # default 0: keep every row forever
//! retention_interval = "1h"     # default 1h: how often retention runs
//!
//! # [audit.syslog] …             # optional: super::syslog::SyslogConfig
//! # [audit.jsonl] …              # optional: super::jsonl::JsonlConfig
//! ```
//!
//! Intervals are humantime durations (`"500ms"`, `"60s"`, `"1h 30m"`), at least 100 ms.
//!
//! # The checkpoint key
//!
//! An Ed25519 key of its own, separate from the JWT signing keys: rotating or leaking a
//! token key says nothing about the audit log, and the other way round. It lives in the
//! control plane's own [`SecretStore`] (the state store's `warden_secrets` table) under
//! [`CHECKPOINT_KEY_SECRET`], as the hex-encoded PKCS#8 document (the form JWT keys are kept
//! in); [`CheckpointKey::load_or_create`] generates it with aws-lc-rs on first use. Its key
//! id is derived from the public key (`audit-` + its 12-hex-character fingerprint), so the
//! same key always has the same id and a replaced key gets a new one.
//!
//! # Verifying scheduled checkpoints
//!
//! [`super::verify`] takes the trusted public keys as a map from key id to raw key:
//! [`AuditJobs::verification_keys`] (running jobs) or [`verification_keys`] (from the
//! secret store, without creating a key) return it. The public key is deliberately **not**
//! read from the state store: whoever can rewrite audit rows can also write to `meta`, and
//! a key they registered there would make their own checkpoints verify. The secret store is
//! the trust anchor; a verifier outside the control plane pins the public key
//! ([`CheckpointKey::public_key`]).
//!
//! Replacing the key (deleting the secret) makes checkpoints signed by the old key fail
//! with [`super::ChainProblem::UnknownCheckpointKey`] until retention has removed the rows
//! they cover; keep the old public key in the verifier's map until then.
//!
//! # Replicas
//!
//! Run the jobs on one control-plane replica, like the sinks. Replicas sharing a PostgreSQL
//! store must share the secret store's checkpoint key as they share the credential pepper;
//! two replicas signing the same head at once make one insert fail, which is logged and
//! harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::jsonl::JsonlConfig;
use super::syslog::SyslogConfig;
use super::{AuditCheckpoint, AuditError, checkpoint};
use crate::secrets::{SecretError, SecretStore};
use crate::store::StateStore;

/// The name of the checkpoint key in the control plane's secret store.
pub const CHECKPOINT_KEY_SECRET: &str = "warden/audit/checkpoint-key";
/// The default `checkpoint_interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// The default `retention_interval`.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a final checkpoint at shutdown may take.
const SHUTDOWN_SIGN_TIMEOUT: Duration = Duration::from_secs(10);
const DAY_MS: i64 = 86_400_000;

// ---- configuration ----------------------------------------------------------------------

fn default_checkpoint_interval() -> Duration {
    DEFAULT_CHECKPOINT_INTERVAL
}

fn default_retention_interval() -> Duration {
    DEFAULT_RETENTION_INTERVAL
}

/// A humantime duration string (`"60s"`, `"1h"`); also `[cluster]`'s.
pub(crate) fn humantime_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
}

/// The jobs' keys of `[audit]` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditJobsConfig {
    /// How often the checkpoint signer looks at the head.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "humantime_duration"
    )]
    pub checkpoint_interval: Duration,
    /// Rows older than this many days are deleted; 0 keeps every row.
    #[serde(default)]
    pub retention_days: u32,
    /// How often retention runs (when `retention_days` is not 0).
    #[serde(
        default = "default_retention_interval",
        deserialize_with = "humantime_duration"
    )]
    pub retention_interval: Duration,
}

impl Default for AuditJobsConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            retention_days: 0,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
        }
    }
}

impl AuditJobsConfig {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), JobsError> {
        for (field, value) in [
            ("checkpoint_interval", self.checkpoint_interval),
            ("retention_interval", self.retention_interval),
        ] {
            if value < MIN_INTERVAL {
                return Err(JobsError::Config {
                    field,
                    message: "must be at least 100ms".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The whole `[audit]` table: the jobs' keys and the optional sinks (see the module docs).
/// Each part is started on its own: [`spawn_jobs`] with [`AuditConfig::jobs`],
/// [`super::syslog::spawn`] and [`super::jsonl::spawn`] with their sections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "humantime_duration"
    )]
    pub checkpoint_interval: Duration,
    #[serde(default)]
    pub retention_days: u32,
    #[serde(
        default = "default_retention_interval",
        deserialize_with = "humantime_duration"
    )]
    pub retention_interval: Duration,
    /// `[audit.syslog]`.
    pub syslog: Option<SyslogConfig>,
    /// `[audit.jsonl]`.
    pub jsonl: Option<JsonlConfig>,
    /// Audit events per second each node credential may deliver
    /// ([`super::node_events::IngestQuota`]).
    #[serde(default = "default_node_ingest_rate")]
    pub node_ingest_rate: u32,
    /// How many events a node credential may deliver at once above that rate (at least one
    /// full batch of 1,000).
    #[serde(default = "default_node_ingest_burst")]
    pub node_ingest_burst: u32,
}

fn default_node_ingest_rate() -> u32 {
    super::node_events::DEFAULT_RATE
}

fn default_node_ingest_burst() -> u32 {
    super::node_events::DEFAULT_BURST
}

impl Default for AuditConfig {
    fn default() -> Self {
        let jobs = AuditJobsConfig::default();
        Self {
            checkpoint_interval: jobs.checkpoint_interval,
            retention_days: jobs.retention_days,
            retention_interval: jobs.retention_interval,
            syslog: None,
            jsonl: None,
            node_ingest_rate: default_node_ingest_rate(),
            node_ingest_burst: default_node_ingest_burst(),
        }
    }
}

impl AuditConfig {
    /// The jobs' part.
    pub fn jobs(&self) -> AuditJobsConfig {
        AuditJobsConfig {
            checkpoint_interval: self.checkpoint_interval,
            retention_days: self.retention_days,
            retention_interval: self.retention_interval,
        }
    }
}

/// Errors starting the jobs. Running, they log and retry instead. Messages name the field
/// or the secret's reference, never a value.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("invalid `audit.{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("audit checkpoint key: {0}")]
    Secret(#[from] SecretError),
    #[error(
        "audit checkpoint key {reference} is malformed (expected a hex-encoded PKCS#8 Ed25519 key)"
    )]
    MalformedKey { reference: String },
    #[error("could not generate an audit checkpoint key")]
    Generate,
}

// ---- the checkpoint key -----------------------------------------------------------------

/// The Ed25519 key that signs audit checkpoints (see the module docs).
pub struct CheckpointKey {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// The key in a PKCS#8 document (v1 or v2); `None` when it is not an Ed25519 key.
    fn from_pkcs8(pkcs8: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).ok()?;
        let key_id = format!(
            "audit-{}",
            warden_core::fingerprint::of(pair.public_key().as_ref())
        );
        Some(Self { key_id, pair })
    }

    /// A fresh key and its PKCS#8 document.
    fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), JobsError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| JobsError::Generate)?;
        let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
        let key = Self::from_pkcs8(&pkcs8).ok_or(JobsError::Generate)?;
        Ok((key, pkcs8))
    }

    /// The key kept in `secrets` under [`CHECKPOINT_KEY_SECRET`]; `None` when there is none.
    pub async fn load(secrets: &dyn SecretStore) -> Result<Option<Self>, JobsError> {
        let malformed = || JobsError::MalformedKey {
            reference: secrets.reference(CHECKPOINT_KEY_SECRET),
        };
        match secrets.get(CHECKPOINT_KEY_SECRET).await {
            Ok(value) => {
                let pkcs8 = Zeroizing::new(
                    hex::decode(value.expose_secret().trim()).map_err(|_| malformed())?,
                );
                Self::from_pkcs8(&pkcs8).map(Some).ok_or_else(malformed)
            }
            Err(SecretError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The key kept in `secrets`, generated and stored there first when there is none.
    pub async fn load_or_create(secrets: &dyn SecretStore) -> Result<Self, JobsError> {
        if let Some(key) = Self::load(secrets).await? {
            return Ok(key);
        }
        let (fresh, pkcs8) = Self::generate()?;
        // Another control plane sharing the store may have made one first: use it.
        secrets
            .put_if_absent(
                CHECKPOINT_KEY_SECRET,
                &SecretString::from(hex::encode(&pkcs8[..])),
            )
            .await?;
        let key = Self::load(secrets).await?.ok_or(JobsError::Generate)?;
        if key.key_id != fresh.key_id {
            return Ok(key);
        }
        tracing::info!(
            key_id = %key.key_id,
            reference = %secrets.reference(CHECKPOINT_KEY_SECRET),
            "created the audit checkpoint key"
        );
        Ok(key)
    }

    /// The id checkpoints signed by this key carry.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The map [`super::verify`] takes: this key's id → its public key.
    pub fn verification_keys(&self) -> HashMap<String, Vec<u8>> {
        HashMap::from([(self.key_id.clone(), self.public_key().to_vec())])
    }
}

/// The keys that verify the control plane's checkpoints, read from `secrets` (the map
/// [`super::verify`] takes; empty when no key was created yet). Never creates a key.
pub async fn verification_keys(
    secrets: &dyn SecretStore,
) -> Result<HashMap<String, Vec<u8>>, JobsError> {
    Ok(CheckpointKey::load(secrets)
        .await?
        .map(|k| k.verification_keys())
        .unwrap_or_default())
}

// ---- one run of each job ----------------------------------------------------------------

/// Signs a checkpoint of the current head with `key`. `None` when there is nothing new to
/// sign: the chain is empty or `key` already signed its head.
pub async fn sign_now(
    store: &dyn StateStore,
    key: &CheckpointKey,
) -> Result<Option<AuditCheckpoint>, AuditError> {
    checkpoint::sign_checkpoint(store, &key.pair, &key.key_id).await
}

/// The newest timestamp retention deletes below, `retention_days` before `now_ms`.
pub fn retention_cutoff(now_ms: i64, retention_days: u32) -> i64 {
    now_ms.saturating_sub(i64::from(retention_days).saturating_mul(DAY_MS))
}

/// One retention run: signs a checkpoint at the head (so the cut can land there when every
/// row is old), then deletes the rows older than `retention_days` before now, up to the
/// latest checkpoint before the first younger row
/// ([`StateStore::delete_audit_older_than`]). Returns how many rows went. Does nothing
/// when `retention_days` is 0.
pub async fn apply_retention(
    store: &dyn StateStore,
    key: &CheckpointKey,
    retention_days: u32,
) -> Result<u64, AuditError> {
    if retention_days == 0 {
        return Ok(0);
    }
    sign_now(store, key).await?;
    let cutoff = retention_cutoff(checkpoint::now_ms(), retention_days);
    Ok(store.delete_audit_older_than(cutoff).await?)
}

// ---- the tasks ----------------------------------------------------------------------------

/// The key and store the tasks share; one signature at a time, so the two tasks and
/// [`AuditJobs::sign_now`] never insert the same checkpoint twice.
struct Signer {
    store: Arc<dyn StateStore>,
    key: CheckpointKey,
    lock: tokio::sync::Mutex<()>,
}

impl Signer {
    async fn sign(&self) -> Result<Option<AuditCheckpoint>, AuditError> {
        let _one_at_a_time = self.lock.lock().await;
        sign_now(&*self.store, &self.key).await
    }

    async fn retain(&self, retention_days: u32) -> Result<u64, AuditError> {
        let _one_at_a_time = self.lock.lock().await;
        apply_retention(&*self.store, &self.key, retention_days).await
    }

    /// Signs and logs the outcome; errors are retried at the next tick.
    async fn sign_logged(&self) {
        match self.sign().await {
            Ok(Some(cp)) => {
                tracing::debug!(seq_upto = cp.seq_upto, key_id = %cp.key_id, "audit checkpoint signed");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign an audit checkpoint; will retry");
            }
        }
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// Signs the head at start, every `every` after, and once more at shutdown.
async fn run_checkpoints(signer: Arc<Signer>, every: Duration, shutdown: CancellationToken) {
    let mut ticks = ticker(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => signer.sign_logged().await,
        }
    }
    // A clean stop leaves the head signed.
    if tokio::time::timeout(SHUTDOWN_SIGN_TIMEOUT, signer.sign_logged())
        .await
        .is_err()
    {
        tracing::warn!("audit checkpoint at shutdown timed out");
    }
    tracing::info!("audit checkpoint signer stopped");
}

/// Runs retention at start and every `every` after.
async fn run_retention(
    signer: Arc<Signer>,
    retention_days: u32,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = ticker(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match signer.retain(retention_days).await {
            Ok(rows_deleted) => {
                tracing::info!(rows_deleted, retention_days, "audit retention ran");
            }
            Err(e) => {
                tracing::warn!(error = %e, retention_days, "audit retention failed; will retry");
            }
        }
    }
    tracing::info!("audit retention stopped");
}

/// The running jobs, from [`spawn_jobs`].
pub struct AuditJobs {
    signer: Arc<Signer>,
    checkpoints: JoinHandle<()>,
    retention: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditJobs")
            .field("key", &self.signer.key)
            .field("retention", &self.retention.is_some())
            .finish_non_exhaustive()
    }
}

impl AuditJobs {
    /// The checkpoint key.
    pub fn key(&self) -> &CheckpointKey {
        &self.signer.key
    }

    /// The checkpoint key's id.
    pub fn key_id(&self) -> &str {
        self.signer.key.key_id()
    }

    /// The checkpoint key's raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.signer.key.public_key()
    }

    /// The map [`super::verify`] takes to check these checkpoints.
    pub fn verification_keys(&self) -> HashMap<String, Vec<u8>> {
        self.signer.key.verification_keys()
    }

    /// Signs a checkpoint of the current head now (at shutdown, after the last audit row
    /// was appended; in tests). `None` when the head is already signed.
    pub async fn sign_now(&self) -> Result<Option<AuditCheckpoint>, AuditError> {
        self.signer.sign().await
    }

    /// Waits for the tasks to end after `shutdown` was cancelled (the signer signs the
    /// head once more first).
    pub async fn join(self) {
        for task in std::iter::once(self.checkpoints).chain(self.retention) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "audit job ended abnormally");
            }
        }
    }
}

/// Starts the checkpoint signer and, when `retention_days` is not 0, retention, until
/// `shutdown`. Loads the checkpoint key from `secrets` (the control plane's own store),
/// creating it on first use. Fails on a bad configuration or an unusable key; a failing
/// state store is logged and retried while running.
pub async fn spawn_jobs(
    config: AuditJobsConfig,
    store: Arc<dyn StateStore>,
    secrets: Arc<dyn SecretStore>,
    shutdown: CancellationToken,
) -> Result<AuditJobs, JobsError> {
    config.validate()?;
    let key = CheckpointKey::load_or_create(secrets.as_ref()).await?;
    tracing::info!(
        key_id = %key.key_id,
        checkpoint_interval = %humantime::format_duration(config.checkpoint_interval),
        retention_days = config.retention_days,
        "audit jobs started"
    );
    let signer = Arc::new(Signer {
        store,
        key,
        lock: tokio::sync::Mutex::new(()),
    });
    let checkpoints = tokio::spawn(run_checkpoints(
        Arc::clone(&signer),
        config.checkpoint_interval,
        shutdown.clone(),
    ));
    let retention = (config.retention_days > 0).then(|| {
        tokio::spawn(run_retention(
            Arc::clone(&signer),
            config.retention_days,
            config.retention_interval,
            shutdown,
        ))
    });
    Ok(AuditJobs {
        signer,
        checkpoints,
        retention,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::memory::MemorySecretStore;

    #[test]
    fn config_defaults_and_humantime_intervals() {
        let c: AuditJobsConfig = toml::from_str("").unwrap();
        assert_eq!(c, AuditJobsConfig::default());
        assert_eq!(c.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(c.retention_interval, Duration::from_secs(3600));
        assert_eq!(c.retention_days, 0);

        let c: AuditJobsConfig = toml::from_str(
            "checkpoint_interval = \"30s\"\nretention_days = 90\nretention_interval = \"1h 30m\"",
        )
        .unwrap();
        assert_eq!(c.checkpoint_interval, Duration::from_secs(30));
        assert_eq!(c.retention_days, 90);
        assert_eq!(c.retention_interval, Duration::from_secs(5400));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = toml::from_str::<AuditJobsConfig>("retention = 3").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `retention`"),
            "{err}"
        );
        let err = toml::from_str::<AuditJobsConfig>("checkpoint_interval = \"soon\"").unwrap_err();
        assert!(
            err.to_string().contains("`soon` is not a duration"),
            "{err}"
        );
        let err = toml::from_str::<AuditJobsConfig>("retention_days = -1").unwrap_err();
        assert!(err.to_string().contains("retention_days"), "{err}");
        let c = AuditJobsConfig {
            checkpoint_interval: Duration::from_millis(10),
            ..AuditJobsConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid `audit.checkpoint_interval`: must be at least 100ms"
        );
    }

    #[test]
    fn the_audit_table_holds_the_jobs_and_the_sinks() {
        let c: AuditConfig = toml::from_str(
            r#"
            checkpoint_interval = "60s"
            retention_days = 90
            [jsonl]
            path = "/var/log/warden/audit.jsonl"
            [syslog]
            address = "siem.example.com:6514"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.jobs(),
            AuditJobsConfig {
                retention_days: 90,
                ..AuditJobsConfig::default()
            }
        );
        assert!(c.jsonl.is_some() && c.syslog.is_some());
        assert_eq!(
            toml::from_str::<AuditConfig>("").unwrap(),
            AuditConfig::default()
        );
        let err = toml::from_str::<AuditConfig>("[jsonl]\npath = \"a\"\nsize = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field `size`"), "{err}");
    }

    #[test]
    fn retention_cutoff_is_whole_days_back() {
        assert_eq!(retention_cutoff(10 * DAY_MS, 3), 7 * DAY_MS);
        assert_eq!(retention_cutoff(0, u32::MAX), -i64::from(u32::MAX) * DAY_MS);
    }

    #[tokio::test]
    async fn key_is_created_once_and_reloaded() {
        let secrets = MemorySecretStore::new();
        assert!(CheckpointKey::load(&secrets).await.unwrap().is_none());
        assert!(verification_keys(&secrets).await.unwrap().is_empty());
        let created = CheckpointKey::load_or_create(&secrets).await.unwrap();
        let loaded = CheckpointKey::load_or_create(&secrets).await.unwrap();
        assert_eq!(created.key_id(), loaded.key_id());
        assert_eq!(created.public_key(), loaded.public_key());
        assert_eq!(created.public_key().len(), 32);
        assert!(created.key_id().starts_with("audit-"));
        assert_eq!(
            verification_keys(&secrets).await.unwrap(),
            created.verification_keys()
        );
        assert!(!format!("{created:?}").contains(&hex::encode(created.public_key())));
    }

    #[tokio::test]
    async fn malformed_key_names_the_secret_only() {
        let secrets = MemorySecretStore::new();
        secrets
            .put(
                CHECKPOINT_KEY_SECRET,
                &SecretString::from("not-a-key-canary"),
            )
            .await
            .unwrap();
        let err = CheckpointKey::load_or_create(&secrets).await.unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("memory://warden/audit/checkpoint-key"),
            "{shown}"
        );
        assert!(!shown.contains("canary"), "{shown}");
    }
}
