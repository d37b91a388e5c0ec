//! Snapshots: everything a data-plane node needs to serve, as one immutable, versioned
//! value. The control plane rebuilds one after every change ([`crate::ControlPlane`]'s
//! `publish`) and hands it to the Sync service through a `watch` channel; `grpc::sync`
//! converts it to the wire form.

use secrecy::{SecretBox, SecretString};

use crate::domain::{AccessPolicy, ApiFormat, Limits, Price, SuspensionTarget};

/// One complete snapshot. Holds secrets (provider keys, pepper, HS256 secrets).
pub struct SnapshotData {
    pub version: u64,
    pub providers: Vec<SnapshotProvider>,
    pub models: Vec<SnapshotModel>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_leeway_seconds: u32,
    pub jwt_keys: Vec<SnapshotJwtKey>,
    pub virtual_keys: Vec<SnapshotVirtualKey>,
    pub revoked_tokens: Vec<(String, i64)>,
    pub vkey_pepper: SecretBox<Vec<u8>>,
    pub global_policy: Limits,
    /// Subjects with limits, access lists or both.
    pub subject_policies: Vec<SnapshotSubject>,
    /// `wardenctl lockdown`: nodes refuse every client request (and the snapshot carries
    /// no provider key).
    pub lockdown: bool,
    /// Suspended client credentials (`wardenctl credentials suspend`).
    pub suspensions: Vec<SuspensionTarget>,
    /// Manual address blocks in force: network, expiry (Unix seconds; `None`: none).
    pub ip_blocks: Vec<(String, Option<i64>)>,
    /// DLP rules, by name.
    pub dlp_rules: Vec<warden_core::dlp::RuleSpec>,
    /// The gateway's IP allow-list and CORS.
    pub client_access: AccessPolicy,
}

pub struct SnapshotSubject {
    pub subject: String,
    pub limits: Option<Limits>,
    pub access: AccessPolicy,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotData")
            .field("version", &self.version)
            .field("providers", &self.providers.len())
            .field("models", &self.models.len())
            .finish_non_exhaustive()
    }
}

pub struct SnapshotProvider {
    pub name: String,
    pub format: ApiFormat,
    pub base_url: String,
    pub passthrough: bool,
    pub drop_params: Vec<String>,
    /// The provider's own CA bundle (PEM), if any.
    pub ca_pem: Option<String>,
    pub keys: Vec<SnapshotKey>,
}

pub struct SnapshotKey {
    pub id: String,
    pub fingerprint: String,
    pub secret: SecretString,
    /// Empty when in service.
    pub disabled_reason: String,
    pub health_epoch: u64,
}

pub struct SnapshotModel {
    pub alias: String,
    pub provider: String,
    pub upstream_model: String,
    pub fallbacks: Vec<String>,
    pub policy: Limits,
    pub price: Price,
    pub weight: u32,
    /// Further deployments: provider, upstream model, weight.
    pub deployments: Vec<(String, String, u32)>,
}

pub struct SnapshotJwtKey {
    pub kid: String,
    pub algorithm: String,
    pub key: SecretBox<Vec<u8>>,
}

pub struct SnapshotVirtualKey {
    pub id: String,
    pub hash: String,
    pub name: String,
    pub owner: String,
    pub models: Vec<String>,
    pub scopes: Vec<String>,
    pub expires_at: i64,
    pub policy: Limits,
    /// During a rotation's grace period: the replaced secret's hash and its deadline.
    pub previous: Option<(String, i64)>,
    pub access: AccessPolicy,
}
