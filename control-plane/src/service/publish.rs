//! Publishing: the snapshot of providers, models, keys, policies and credentials that
//! nodes apply, built from the store under a new version, sent to every watcher, and
//! waited on until connected nodes acknowledge it.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox};
use tokio::sync::watch;
use warden_core::unix_now;

use super::ControlPlane;
use crate::domain::{Limits, PolicyTarget, Price};
use crate::error::ServiceError;
use crate::secrets::manager;
use crate::snapshot::{
    SnapshotData, SnapshotJwtKey, SnapshotKey, SnapshotModel, SnapshotProvider, SnapshotVirtualKey,
};

const META_VERSION: &str = "snapshot_version";

/// How long an admin change waits for connected nodes to apply it before returning.
const PROPAGATION_WAIT: Duration = Duration::from_secs(2);

/// What watchers hold before the first publish.
pub(super) fn empty_snapshot() -> Arc<SnapshotData> {
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

impl ControlPlane {
    /// Receives every published snapshot (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<SnapshotData>> {
        self.snapshot_tx.subscribe()
    }

    /// The version of the newest snapshot.
    pub fn current_version(&self) -> u64 {
        self.snapshot_tx.borrow().version
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
}
