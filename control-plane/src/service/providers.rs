//! Providers and their upstream keys: adding, updating and removing a provider; adding a
//! key by value or by reference, rotating its value, quarantining it, and taking it out of
//! service when a node reports that the provider rejected it.

use secrecy::{ExposeSecret, SecretString};
use warden_core::audit_detail::Detail;
use warden_core::{fingerprint, unix_now};

use super::{Actor, ControlPlane, new_id};
use crate::domain::{ApiFormat, Provider, ProviderKey, Source, validate_base_url, validate_name};
use crate::error::ServiceError;
use crate::secrets::manager;
use crate::secrets::reference::SecretReference;

/// How a key the provider rejected is marked; such keys return to service when their
/// secret changes (an admin's quarantine stays until an admin lifts it).
pub(super) const REJECTED_PREFIX: &str = "rejected by the provider";

/// Options of a provider beyond its address.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// Each client brings its own upstream key (`x-warden-upstream-key`); no stored keys.
    pub passthrough: bool,
    /// Top-level request parameters the provider does not accept.
    pub drop_params: Vec<String>,
    /// PEM text of the provider's own CA bundle, as given (checked and reduced to its
    /// certificates by [`warden_core::ca_bundle::parse`]). Nodes then trust only these
    /// roots for the provider, instead of the public web roots.
    pub ca_pem: Option<String>,
}

/// Where a new upstream key comes from.
pub enum KeySource {
    /// A value given to Warden: written to the primary secret backend.
    Value(SecretString),
    /// A reference given over the Admin API (`vault://…`, `aws-sm://…`, …): only into a
    /// configured backend, under `[secrets] allowed_ref_prefixes` (or a `warden-pk-` name),
    /// never `env://` (see [`crate::secrets::policy`]).
    Reference(String),
    /// A reference from the config file's `[[providers]] keys`: `env://VAR` is accepted
    /// here (never for Warden's own variables).
    Declared(String),
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

impl ControlPlane {
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
        // The audit row names a CA bundle by its certificates' fingerprints, never its text.
        let ca = options
            .ca_pem
            .as_deref()
            .map(|pem| warden_core::ca_bundle::parse(pem.as_bytes()));
        let ca_fingerprints = match &ca {
            Some(Ok(bundle)) => Some(bundle.fingerprints()),
            _ => None,
        };
        let detail = move |_: &Result<Provider, ServiceError>| {
            Detail::new().with_opt("ca_sha256", ca_fingerprints)
        };
        self.audited_with(actor, "provider.add", name, detail, async {
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            let ca_pem = match ca {
                None => None,
                Some(Err(e)) => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "ca_pem: the CA bundle {e}"
                    )));
                }
                Some(Ok(bundle)) => Some(bundle.pem),
            };
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
            if ca_pem.is_some() && !base_url.starts_with("https://") {
                return Err(ServiceError::InvalidArgument(
                    "ca_pem: a CA bundle verifies TLS; the base_url must be https://".into(),
                ));
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
                ca_pem,
            };
            self.store.upsert_provider(&provider).await?;
            self.publish().await?;
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
        // A refused reference is named in the audit row (a location, never a value).
        let given = match &source {
            KeySource::Reference(t) | KeySource::Declared(t) => SecretReference::parse(t.trim())
                .ok()
                .map(|r| format!(" ref={r}")),
            KeySource::Value(_) => None,
        };
        let subject = |r: &Result<ProviderKey, ServiceError>| match r {
            Ok(k) => format!(
                "{provider}/{} fp={} ref={}",
                k.id, k.fingerprint, k.secret_name
            ),
            Err(_) => format!("{provider}{}", given.as_deref().unwrap_or_default()),
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
                KeySource::Reference(text) | KeySource::Declared(text) => {
                    let reference = SecretReference::parse(text.trim())?;
                    if let KeySource::Reference(_) = &source {
                        self.keys.check_admin_reference(&reference)?;
                    }
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
}
