//! The control plane's view of upstream provider keys: each key is a
//! [`SecretReference`] into one of the configured backends; the manager reads it, keeps the
//! last value it read (in memory, as a secret type) with the backend's version id, and
//! notices rotation when the version changes.
//!
//! - Snapshots are built from the cached values, so publishing a change never waits on a
//!   backend and a backend outage never takes a key away: the last known value keeps
//!   serving (see [`SecretManager::refresh`]).
//! - With the start-up cache enabled (`[secrets] startup = "cache"`), every value read is
//!   also kept in an encrypted file (`secret-cache.json`, AES-256-GCM under the master key,
//!   like the file store), so the control plane can start while a backend is unreachable.
//! - New values given to Warden (`wardenctl provider key add --from-stdin`) are written to
//!   the *primary* backend under a name Warden owns (`warden-pk-…`); only those are deleted
//!   when their key is removed. Secrets added by reference belong to their owner.

use std::collections::HashMap;
use std::sync::RwLock;

use secrecy::{ExposeSecret as _, SecretString};

use super::config::SecretResolver;
use super::file::FileSecretStore;
use super::reference::{Scheme, SecretReference};
use super::{SecretError, SecretStore as _};

/// The prefix of names Warden writes into a backend for keys given to it by value.
pub const OWNED_PREFIX: &str = "warden-pk-";

struct Entry {
    value: SecretString,
    version: String,
    fingerprint: String,
    /// The last read failed (audited once per failure spell).
    failing: bool,
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Same value as before (the version id may have moved, the value did not).
    Unchanged,
    /// First read of this reference.
    Loaded { fingerprint: String },
    /// A new value: the secret was rotated in its backend.
    Rotated { from: String, to: String },
}

/// How a read at start-up was served.
#[derive(Debug)]
pub enum StartLoad {
    Fresh,
    /// The backend failed; the value came from the encrypted start-up cache.
    FromCache(SecretError),
}

/// Provider-key values by reference, with rotation detection.
pub struct SecretManager {
    resolver: SecretResolver,
    primary: Scheme,
    entries: RwLock<HashMap<String, Entry>>,
    startup_cache: Option<FileSecretStore>,
    /// `[secrets] allowed_ref_prefixes`: where references given over the Admin API may
    /// point (besides the `warden-pk-` names Warden writes).
    allowed_prefixes: Vec<String>,
}

impl std::fmt::Debug for SecretManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretManager")
            .field("primary", &self.primary)
            .field("startup_cache", &self.startup_cache.is_some())
            .finish_non_exhaustive()
    }
}

/// The canonical text of a stored reference. Keys stored before references existed hold a
/// bare file-store name; they are `file://name`.
pub fn canonical(stored: &str) -> String {
    if stored.contains("://") {
        stored.to_owned()
    } else {
        format!("file://{stored}")
    }
}

impl SecretManager {
    /// A manager reading through `resolver`, writing new values to the `primary` backend
    /// (which must be configured in the resolver).
    pub fn new(
        resolver: SecretResolver,
        primary: Scheme,
        startup_cache: Option<FileSecretStore>,
    ) -> Result<Self, SecretError> {
        if resolver.store_of(primary).is_none() {
            return Err(SecretError::config(
                "secrets.store",
                format!("no {primary} backend is configured in [[secrets.backends]]"),
            ));
        }
        Ok(Self {
            resolver,
            primary,
            entries: RwLock::new(HashMap::new()),
            startup_cache,
            allowed_prefixes: Vec::new(),
        })
    }

    /// Lets the Admin API add references starting with one of `prefixes` (checked by
    /// [`super::policy::check_prefix`] when the config is built).
    pub fn with_allowed_prefixes(mut self, prefixes: Vec<String>) -> Self {
        self.allowed_prefixes = prefixes;
        self
    }

    /// Whether a reference given over the Admin API may be read (see [`super::policy`]):
    /// never `env://` nor Warden's own secrets; only into a configured backend; only a
    /// `warden-pk-` name Warden wrote into one, or under an allowed prefix.
    pub fn check_admin_reference(&self, reference: &SecretReference) -> Result<(), SecretError> {
        use super::policy::{RULE_ENV_ADMIN, RULE_NOT_ALLOWED, refused};
        if reference.scheme() == Scheme::Env {
            return Err(refused(reference, RULE_ENV_ADMIN));
        }
        self.resolver.check(reference)?;
        let Some(store) = self.resolver.store_of(reference.scheme()) else {
            return Err(SecretError::BadReference {
                reference: reference.to_string(),
                reason: format!("no {} backend is configured", reference.scheme()),
            });
        };
        let text = reference.to_string();
        let owned = store.reference(OWNED_PREFIX);
        if text.starts_with(&owned) || self.allowed_prefixes.iter().any(|p| text.starts_with(p)) {
            Ok(())
        } else {
            Err(refused(reference, RULE_NOT_ALLOWED))
        }
    }

    /// The last value read for `reference` (canonical text), if any.
    pub fn value(&self, reference: &str) -> Option<SecretString> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(reference)
            .map(|e| SecretString::from(e.value.expose_secret()))
    }

    /// The fingerprint of the last value read for `reference`.
    pub fn fingerprint(&self, reference: &str) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(reference).map(|e| e.fingerprint.clone())
    }

    /// Reads `reference` from its backend now and remembers the value. On failure the last
    /// known value stays in place (and keeps serving); the error names the reference only.
    pub async fn refresh(&self, reference: &SecretReference) -> Result<Refresh, SecretError> {
        let key = reference.to_string();
        match self.resolver.resolve(reference).await {
            Ok((value, version)) => {
                let fingerprint = warden_core::fingerprint::of(value.expose_secret().as_bytes());
                let (outcome, changed) = {
                    let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
                    match entries.get_mut(&key) {
                        Some(e) if e.fingerprint == fingerprint => {
                            e.version = version;
                            e.failing = false;
                            (Refresh::Unchanged, false)
                        }
                        Some(e) => {
                            let from = std::mem::replace(&mut e.fingerprint, fingerprint.clone());
                            e.value = value;
                            e.version = version;
                            e.failing = false;
                            (
                                Refresh::Rotated {
                                    from,
                                    to: fingerprint,
                                },
                                true,
                            )
                        }
                        None => {
                            entries.insert(
                                key.clone(),
                                Entry {
                                    value,
                                    version,
                                    fingerprint: fingerprint.clone(),
                                    failing: false,
                                },
                            );
                            (Refresh::Loaded { fingerprint }, true)
                        }
                    }
                };
                if changed {
                    self.save_to_cache(&key).await;
                }
                Ok(outcome)
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets a value read but not kept (a refused addition).
    pub fn forget(&self, reference: &str) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(reference);
    }

    /// Marks `reference` as failing; true when it was not failing before (so the caller
    /// audits a failure spell once, not at every poll).
    pub fn mark_failing(&self, reference: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(reference) {
            Some(e) => !std::mem::replace(&mut e.failing, true),
            None => true,
        }
    }

    /// Whether the last read of `reference` failed.
    pub fn is_failing(&self, reference: &str) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(reference).is_some_and(|e| e.failing)
    }

    /// Reads `reference` at start-up: from its backend, or, when that fails and the
    /// start-up cache is enabled, from the cache.
    pub async fn load_at_start(
        &self,
        reference: &SecretReference,
    ) -> Result<StartLoad, SecretError> {
        match self.refresh(reference).await {
            Ok(_) => Ok(StartLoad::Fresh),
            // A reference stored before the rules existed is never served, not even cached.
            Err(e @ SecretError::Refused { .. }) => Err(e),
            Err(e) => {
                let Some(cache) = &self.startup_cache else {
                    return Err(e);
                };
                let key = reference.to_string();
                match cache.get(&cache_name(&key)).await {
                    Ok(value) => {
                        let fingerprint =
                            warden_core::fingerprint::of(value.expose_secret().as_bytes());
                        self.entries
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(
                                key,
                                Entry {
                                    value,
                                    version: "cache".into(),
                                    fingerprint,
                                    failing: true,
                                },
                            );
                        Ok(StartLoad::FromCache(e))
                    }
                    Err(_) => Err(e),
                }
            }
        }
    }

    async fn save_to_cache(&self, key: &str) {
        let Some(cache) = &self.startup_cache else {
            return;
        };
        let Some(value) = self.value(key) else {
            return;
        };
        if let Err(e) = cache.put(&cache_name(key), &value).await {
            tracing::error!(reference = %key, error = %e, "could not update the secret start-up cache");
        }
    }

    /// Writes a new value given to Warden into the primary backend under a name Warden
    /// owns, and returns its reference (not yet read back: call [`Self::refresh`]).
    pub async fn store_new(
        &self,
        provider: &str,
        key_id: &str,
        value: &SecretString,
    ) -> Result<SecretReference, SecretError> {
        let store = self.resolver.store_of(self.primary).ok_or_else(|| {
            SecretError::config("secrets.store", "the primary backend is not configured")
        })?;
        let name = owned_name(provider, key_id);
        store.put(&name, value).await?;
        SecretReference::parse(&store.reference(&name))
    }

    /// Writes a new value for `reference` into its backend (rotation by Warden).
    pub async fn write(
        &self,
        reference: &SecretReference,
        value: &SecretString,
    ) -> Result<(), SecretError> {
        let store = self.resolver.store_for(reference)?;
        store.put(&reference.store_name(), value).await
    }

    /// Forgets `reference`; deletes it from its backend too when Warden wrote it.
    pub async fn remove(&self, reference: &SecretReference) -> Result<(), SecretError> {
        let key = reference.to_string();
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(cache) = &self.startup_cache {
            cache.delete(&cache_name(&key)).await?;
        }
        if is_owned(reference) {
            self.resolver
                .store_for(reference)?
                .delete(&reference.store_name())
                .await?;
        }
        Ok(())
    }
}

/// The backend name for a key given to Warden by value: `warden-pk-<provider>-<id>`, with
/// characters every backend accepts (Azure allows only letters, digits and `-`).
pub fn owned_name(provider: &str, key_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    format!("{OWNED_PREFIX}{}-{}", clean(provider), clean(key_id))
}

/// Whether Warden wrote the secret behind `reference` (and so may delete it): names it
/// creates, and the `providers/…` names of the file store from before references.
pub fn is_owned(reference: &SecretReference) -> bool {
    match reference {
        SecretReference::File { name } => {
            name.starts_with(OWNED_PREFIX) || name.starts_with("providers/")
        }
        SecretReference::Vault { path, .. } => path.starts_with(OWNED_PREFIX),
        SecretReference::AwsSm { secret_id, .. } => secret_id.starts_with(OWNED_PREFIX),
        SecretReference::AzureKv { name, .. } => name.starts_with(OWNED_PREFIX),
        SecretReference::Env { .. } => false,
    }
}

/// The cache entry name of a reference: a digest, so the cache file does not list where
/// the organisation keeps its secrets.
fn cache_name(reference: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, reference.as_bytes());
    format!("cache-{}", hex::encode(&digest.as_ref()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::cipher::MasterKey;
    use crate::secrets::config::Backend;
    use std::sync::Arc;

    fn manager(dir: &std::path::Path, cache: bool, env: &[(&str, &str)]) -> SecretManager {
        let master = Arc::new(
            MasterKey::from_base64(&secrecy::SecretBox::from(
                MasterKey::generate_base64().as_str(),
            ))
            .unwrap(),
        );
        let file = Arc::new(FileSecretStore::with_shared_key(
            dir.join("secrets.json"),
            Arc::clone(&master),
        ));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let resolver =
            SecretResolver::new(env, Arc::clone(&master)).with_backend(Backend::File(file));
        let cache = cache.then(|| {
            FileSecretStore::with_shared_key(dir.join("secret-cache.json"), Arc::clone(&master))
        });
        SecretManager::new(resolver, Scheme::File, cache).unwrap()
    }

    #[tokio::test]
    async fn detects_rotation_by_value_and_keeps_the_last_value_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), false, &[]);
        let r = m
            .store_new("openai", "key_1", &SecretString::from("sk-canary-one"))
            .await
            .unwrap();
        assert_eq!(r.to_string(), "file://warden-pk-openai-key-1");
        assert!(matches!(
            m.refresh(&r).await.unwrap(),
            Refresh::Loaded { .. }
        ));
        assert_eq!(m.refresh(&r).await.unwrap(), Refresh::Unchanged);
        m.write(&r, &SecretString::from("sk-canary-two"))
            .await
            .unwrap();
        assert!(matches!(
            m.refresh(&r).await.unwrap(),
            Refresh::Rotated { .. }
        ));
        assert_eq!(
            m.value(&r.to_string()).unwrap().expose_secret(),
            "sk-canary-two"
        );
        let missing = SecretReference::parse("file://nobody").unwrap();
        let err = m.refresh(&missing).await.unwrap_err();
        assert!(err.to_string().contains("file://nobody"));
        assert!(m.mark_failing("file://nobody"));
        assert!(m.mark_failing("file://nobody"), "unknown stays failing");
        m.remove(&r).await.unwrap();
        assert!(m.value(&r.to_string()).is_none());
        assert!(m.refresh(&r).await.is_err(), "owned secret deleted");
    }

    #[tokio::test]
    async fn env_references_are_read_only_and_not_owned() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), false, &[("OPENAI_KEY", "sk-canary-env")]);
        let r = SecretReference::parse("env://OPENAI_KEY").unwrap();
        m.refresh(&r).await.unwrap();
        let err = m
            .write(&r, &SecretString::from("sk-other"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("read-only"));
        assert!(!is_owned(&r));
        m.remove(&r).await.unwrap();
    }

    #[tokio::test]
    async fn start_up_cache_serves_when_the_backend_fails() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), true, &[]);
        let r = m
            .store_new("p", "k", &SecretString::from("sk-canary-cached"))
            .await
            .unwrap();
        m.refresh(&r).await.unwrap();
        // The backend loses the secret; a fresh manager on the same cache starts anyway.
        tokio::fs::remove_file(dir.path().join("secrets.json"))
            .await
            .unwrap();
        let master_cache = std::fs::read_to_string(dir.path().join("secret-cache.json")).unwrap();
        assert!(!master_cache.contains("sk-canary-cached"));
        assert!(
            !master_cache.contains("warden-pk"),
            "cache names are digests"
        );
        assert!(matches!(
            m.load_at_start(&r).await.unwrap(),
            StartLoad::FromCache(SecretError::NotFound { .. })
        ));
        assert!(m.is_failing(&r.to_string()));
        assert_eq!(
            m.value(&r.to_string()).unwrap().expose_secret(),
            "sk-canary-cached"
        );
        let without = manager(dir.path(), false, &[]);
        assert!(without.load_at_start(&r).await.is_err());
    }

    #[test]
    fn owned_names_suit_every_backend() {
        assert_eq!(
            owned_name("my_prov.x", "key_ab12"),
            "warden-pk-my-prov-x-key-ab12"
        );
        assert_eq!(
            canonical("providers/openai/key_1"),
            "file://providers/openai/key_1"
        );
        assert_eq!(canonical("vault://secret/x#k"), "vault://secret/x#k");
        assert!(is_owned(
            &SecretReference::parse("file://providers/openai/key_1").unwrap()
        ));
        assert!(!is_owned(
            &SecretReference::parse("vault://secret/team/openai").unwrap()
        ));
    }
}
