//! Publishing: the snapshot of providers, models, keys, policies and credentials that
//! nodes apply, built from the store under a new version, sent to every watcher, and
//! waited on until connected nodes acknowledge it.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox};
use tokio::sync::watch;
use warden_core::unix_now;

use super::ControlPlane;
use crate::domain::{ApiFormat, Limits, PolicyTarget, Price, Provider, validate_base_url};
use crate::error::ServiceError;
use crate::secrets::manager;
use crate::snapshot::{
    SnapshotData, SnapshotJwtKey, SnapshotKey, SnapshotModel, SnapshotProvider, SnapshotSubject,
    SnapshotVirtualKey,
};

/// How long an admin change waits for connected nodes to apply it before returning.
const PROPAGATION_WAIT: Duration = Duration::from_secs(2);

/// How long after its expiry a revoked token stays on the revocation list: nodes accept a
/// token until `exp + leeway` (at most [`crate::config::MAX_LEEWAY`], inclusive), and a
/// node's clock may run behind the control plane's by up to a minute more.
const REVOCATION_KEEP_SECS: i64 = crate::config::MAX_LEEWAY.as_secs() as i64 + 60;

/// Whether a token revoked and expiring at `expires_at` must still be listed at `now`.
fn revocation_needed(expires_at: i64, now: i64) -> bool {
    expires_at.saturating_add(REVOCATION_KEEP_SECS) >= now
}

/// Why a provider row read from the store may not be sent to nodes (its `base_url`
/// breaks the rules a new provider is held to; the row may have been written around the
/// Admin API), or `None`. The built-in echo provider calls nothing.
fn provider_refusal(p: &Provider) -> Option<String> {
    if p.format == ApiFormat::Echo {
        return None;
    }
    validate_base_url(&p.base_url).err()
}

/// Every subject with limits or access lists, once, in subject order.
fn subjects(
    policies: &[crate::domain::PolicyRecord],
    access: &[crate::domain::AccessRecord],
) -> Vec<SnapshotSubject> {
    let mut out = std::collections::BTreeMap::new();
    let new = |s: &String| SnapshotSubject {
        subject: s.clone(),
        limits: None,
        access: crate::domain::AccessPolicy::default(),
    };
    for p in policies {
        if let PolicyTarget::Subject(s) = &p.target {
            out.entry(s.clone()).or_insert_with(|| new(s)).limits = Some(p.limits);
        }
    }
    for a in access {
        if let PolicyTarget::Subject(s) = &a.target {
            out.entry(s.clone()).or_insert_with(|| new(s)).access = a.access.clone();
        }
    }
    out.into_values().collect()
}

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
        lockdown: false,
        suspensions: Vec::new(),
        ip_blocks: Vec::new(),
        dlp_rules: Vec::new(),
        client_access: crate::domain::AccessPolicy::default(),
    })
}

impl ControlPlane {
    /// Leaves a provider row out of the snapshot: an error log and a
    /// `provider.snapshot_refused` audit row naming the provider and the rule it breaks
    /// (never the URL, which may carry anything).
    async fn refuse_provider_row(&self, p: &Provider, reason: &str) {
        tracing::error!(provider = %p.name, reason, "provider row in the state store fails validation; left out of the snapshot");
        self.audit(
            "provider.snapshot_refused",
            "system:publish",
            &p.name,
            "refused",
            &warden_core::audit_detail::Detail::new()
                .with("reason", format!("base_url {reason}"))
                .build(),
        )
        .await;
    }

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
            // Provider keys the leader saw rotate are re-read first, so this replica never
            // publishes an old key.
            self.sync_secret_versions().await?;
            // Allocated in the database (monotonic across replicas) after the change was
            // committed: any snapshot under a higher version is built after it.
            let version = self.store.next_snapshot_version().await?;
            let data = self.build_snapshot(version).await?;
            // A refresh may already have sent a newer version (another replica's).
            if version > self.current_version() {
                self.snapshot_tx.send_replace(Arc::new(data));
                self.metrics.snapshot_version(version);
            }
            version
        };
        self.tell_replicas(super::replicas::SNAPSHOT_CHANNEL, &version.to_string())
            .await;
        tracing::info!(version, "published snapshot");
        if !self.await_propagation(version, PROPAGATION_WAIT).await {
            tracing::warn!(
                version,
                "not every connected node acknowledged the snapshot in time"
            );
        }
        Ok(version)
    }

    /// Builds the snapshot of `version` from the store, timed
    /// ([`crate::metrics::SNAPSHOT_BUILD_SECONDS`] and a log line).
    pub(super) async fn build_snapshot(&self, version: u64) -> Result<SnapshotData, ServiceError> {
        let started = std::time::Instant::now();
        let data = self.build_snapshot_data(version).await?;
        let took = started.elapsed();
        self.metrics.snapshot_built(took);
        tracing::info!(
            version,
            virtual_keys = data.virtual_keys.len(),
            models = data.models.len(),
            build_ms = took.as_secs_f64() * 1000.0,
            "built snapshot"
        );
        Ok(data)
    }

    /// Every lookup by key goes through a map, so that the build is linear in the rows
    /// (100,000 virtual keys against thousands of policies).
    async fn build_snapshot_data(&self, version: u64) -> Result<SnapshotData, ServiceError> {
        use std::collections::{HashMap, HashSet};
        let now = unix_now();
        let policies = self.store.list_policies().await?;
        let mut policy_map: HashMap<&PolicyTarget, Limits> = HashMap::new();
        for p in &policies {
            // The first row for a target wins, as the linear search did.
            policy_map.entry(&p.target).or_insert(p.limits);
        }
        let policy_of = |target: &PolicyTarget| policy_map.get(target).copied().unwrap_or_default();
        let access = self.store.list_access_policies().await?;
        let mut access_map: HashMap<&PolicyTarget, &crate::domain::AccessPolicy> = HashMap::new();
        for a in &access {
            access_map.entry(&a.target).or_insert(&a.access);
        }
        let access_of = |target: &PolicyTarget| {
            access_map
                .get(target)
                .map(|a| (*a).clone())
                .unwrap_or_default()
        };
        let mut prices: HashMap<String, Price> = HashMap::new();
        for (alias, price) in self.store.list_prices().await? {
            prices.entry(alias).or_insert(price);
        }
        let mut deployments: HashMap<String, Vec<crate::domain::Deployment>> = HashMap::new();
        for d in self.store.list_deployments().await? {
            deployments.entry(d.alias.clone()).or_default().push(d);
        }
        // In a lockdown no provider key leaves the control plane: nodes hold none to use.
        let lockdown = self.store.get_lockdown().await?.is_some();
        let keys = if lockdown {
            Vec::new()
        } else {
            self.store.list_provider_keys().await?
        };
        let mut providers = Vec::new();
        let mut refused = Vec::new();
        for p in self.store.list_providers().await? {
            if let Some(reason) = provider_refusal(&p) {
                self.refuse_provider_row(&p, &reason).await;
                refused.push(p.name);
                continue;
            }
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
                ca_pem: p.ca_pem,
                keys: pkeys,
            });
        }
        // Models served by a refused provider go with it (a node rejects a snapshot whose
        // model names an unknown provider), and so do deployments and fallbacks on it.
        let mut stored_models = self.store.list_models().await?;
        stored_models.retain(|m| !refused.contains(&m.provider));
        let kept: HashSet<String> = stored_models.iter().map(|m| m.alias.clone()).collect();
        let models = stored_models
            .into_iter()
            .map(|m| SnapshotModel {
                policy: policy_of(&PolicyTarget::Model(m.alias.clone())),
                price: prices.get(&m.alias).copied().unwrap_or_default(),
                alias: m.alias.clone(),
                provider: m.provider,
                upstream_model: m.upstream_model,
                weight: m.weight,
                deployments: deployments
                    .get(&m.alias)
                    .into_iter()
                    .flatten()
                    .filter(|d| !refused.contains(&d.provider))
                    .map(|d| (d.provider.clone(), d.upstream_model.clone(), d.weight))
                    .collect(),
                fallbacks: m
                    .fallbacks
                    .into_iter()
                    .filter(|f| kept.contains(f))
                    .collect(),
            })
            .collect();
        let mut jwt_keys = Vec::new();
        // The signer, and older keys while an unrevoked token they signed is unexpired; a
        // key retired by `credentials revoke-all` never.
        let retired = self.store.retired_signing_keys().await?;
        for k in self.signing_keys().await? {
            if !k.active && (k.needed_until == 0 || retired.contains(&k.record.kid)) {
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
                access: access_of(&PolicyTarget::VirtualKey(k.id.clone())),
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
            .filter(|t| t.revoked_at.is_some() && revocation_needed(t.expires_at, now))
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
            subject_policies: subjects(&policies, &access),
            lockdown,
            suspensions: self
                .store
                .list_suspensions()
                .await?
                .into_iter()
                .map(|s| s.target)
                .collect(),
            ip_blocks: self
                .manual_ip_blocks()
                .await?
                .into_iter()
                .map(|b| (b.cidr, b.expires_at))
                .collect(),
            dlp_rules: self
                .store
                .list_dlp_rules()
                .await?
                .into_iter()
                .map(|r| r.spec)
                .collect(),
            client_access: access_of(&PolicyTarget::Global),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_token_stays_listed_while_any_node_may_still_accept_it() {
        let now = 1_000_000;
        let leeway = crate::config::MAX_LEEWAY.as_secs() as i64;
        // A node accepts a token until exp + leeway, that second included.
        assert!(revocation_needed(now - leeway, now));
        assert!(revocation_needed(now - leeway - 60, now));
        assert!(!revocation_needed(now - leeway - 61, now));
        assert!(revocation_needed(now + 3600, now));
    }

    #[test]
    fn provider_rows_are_held_to_the_base_url_rules() {
        let row = |format, base_url: &str| Provider {
            name: "p".into(),
            format,
            base_url: base_url.into(),
            source: crate::domain::Source::Admin,
            created_at: 0,
            passthrough: false,
            drop_params: Vec::new(),
            ca_pem: None,
        };
        assert!(provider_refusal(&row(ApiFormat::OpenAi, "https://api.example.com/v1")).is_none());
        assert!(provider_refusal(&row(ApiFormat::OpenAi, "http://attacker.example/v1")).is_some());
        assert!(provider_refusal(&row(ApiFormat::Anthropic, "https://u:p@h/v1")).is_some());
        assert!(provider_refusal(&row(ApiFormat::Echo, "builtin:echo")).is_none());
    }
}
