//! HashiCorp Vault (and OpenBao) KV v2 secret store, over the async `vaultrs` client.
//!
//! Names are `path[#field]` inside the store's mount (`vault://mount/path#field`); without
//! `#field` the configured field (default `value`) is used. `get_versioned` returns the KV
//! v2 metadata version; `put` writes a new version, merging the field into the secret's
//! existing data with check-and-set so a concurrent writer is never overwritten blindly;
//! `delete` removes the secret with all its versions (metadata delete).
//!
//! Authentication: a token, or AppRole (`role_id` + `secret_id` → token). A renewable token
//! is renewed (`renew-self`) on a timer at about 2/3 of its TTL; when that fails, AppRole
//! logs in again; a request refused with 403 under AppRole also logs in again once before
//! reporting [`SecretError::PermissionDenied`]. Every call has a timeout (default 5 s); a
//! server that cannot be reached, times out or answers 5xx/429 is
//! [`SecretError::Unavailable`].
//!
//! `vaultrs` reads `VAULT_*` variables for any setting left unset; every setting is set
//! here, so the process environment has no effect.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use tokio::task::JoinHandle;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::api::kv2::responses::ReadSecretResponse;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::reference::{check_vault_path, split_field};
use super::{DEFAULT_TIMEOUT, SecretError, SecretStore};

/// How the store authenticates to Vault.
pub enum VaultAuth {
    /// A Vault token.
    Token(SecretString),
    /// AppRole login at `auth/{mount}/login` (mount usually `approle`).
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
}

impl std::fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(..)"),
            Self::AppRole { mount, role_id, .. } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Everything needed to connect; built from [`super::config::SecretBackendConfig::Vault`].
#[derive(Debug)]
pub struct VaultOptions {
    /// `https://vault.example:8200`; `http://` only to a loopback address.
    pub address: String,
    /// The KV v2 mount names are relative to.
    pub mount: String,
    /// The data field used when a name has no `#field`.
    pub field: String,
    pub auth: VaultAuth,
    /// Vault Enterprise namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// PEM CA bundle to trust for `https://` (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    /// Timeout of every call.
    pub timeout: Duration,
}

impl VaultOptions {
    /// Options with the defaults: field `value`, no namespace, system roots, 5 s timeout.
    pub fn new(address: impl Into<String>, mount: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            address: address.into(),
            mount: mount.into(),
            field: "value".into(),
            auth,
            namespace: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A Vault KV v2 mount as a [`SecretStore`].
#[derive(Clone)]
pub struct VaultSecretStore {
    shared: Arc<Shared>,
    mount: String,
    field: String,
}

/// State shared by every store cloned from one connection (one per mount).
struct Shared {
    address: String,
    /// Settings without the token; the client is rebuilt from them when the token changes.
    settings: VaultClientSettings,
    client: RwLock<Arc<VaultClient>>,
    auth: VaultAuth,
    timeout: Duration,
    /// Serialises logins so that concurrent 403s log in once.
    login_lock: tokio::sync::Mutex<u64>,
    renewal: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.renewal.lock()
            && let Some(task) = guard.take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for VaultSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecretStore")
            .field("address", &self.shared.address)
            .field("mount", &self.mount)
            .field("field", &self.field)
            .field("auth", &self.shared.auth)
            .finish_non_exhaustive()
    }
}

/// A token with what Vault said about its lifetime.
struct Lease {
    token: SecretString,
    ttl: Duration,
    renewable: bool,
}

impl VaultSecretStore {
    /// Connects: checks the options, logs in (AppRole) or looks the token up, and starts
    /// the renewal timer for a renewable token. An unreachable server is
    /// [`SecretError::Unavailable`]; a refused credential [`SecretError::PermissionDenied`].
    pub async fn connect(options: VaultOptions) -> Result<Self, SecretError> {
        let url = reqwest::Url::parse(&options.address)
            .map_err(|_| SecretError::config("address", "not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(SecretError::config(
                    "address",
                    "must use https:// (http:// is allowed only to loopback)",
                ));
            }
            _ => return Err(SecretError::config("address", "must use https://")),
        }
        check_mount(&options.mount)?;
        if let Some(ns) = &options.namespace {
            check_vault_path(ns).map_err(|r| SecretError::config("namespace", r))?;
        }
        if let VaultAuth::AppRole { mount, .. } = &options.auth {
            check_mount(mount)?;
        }
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(url.as_str())
            .token("")
            .verify(true)
            .identity(None)
            .ca_certs(
                options
                    .ca_file
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
            .timeout(Some(options.timeout))
            .namespace(options.namespace.clone());
        let settings = builder
            .build()
            .map_err(|e| SecretError::config("address", e.to_string()))?;
        let initial_token = match &options.auth {
            VaultAuth::Token(t) => t.clone(),
            VaultAuth::AppRole { .. } => SecretString::from(""),
        };
        let client = build_client(&settings, &initial_token).await?;
        let shared = Arc::new(Shared {
            address: options.address,
            settings,
            client: RwLock::new(Arc::new(client)),
            auth: options.auth,
            timeout: options.timeout,
            login_lock: tokio::sync::Mutex::new(0),
            renewal: std::sync::Mutex::new(None),
        });
        match shared.initial_lease().await {
            Ok(lease) => shared.schedule_renewal(&lease),
            // Vault is down or slow: start anyway (reads fail, naming their reference, until
            // it is back; the control plane decides whether it can start without it) and
            // log in or look the token up in the background.
            Err(e) if e.is_retryable() => {
                tracing::warn!(vault = %shared.address, error = %e, "Vault unreachable; retrying the login in the background");
                let weak = Arc::downgrade(&shared);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let Some(shared) = weak.upgrade() else { return };
                        match shared.initial_lease().await {
                            Ok(lease) => {
                                shared.schedule_renewal(&lease);
                                tracing::info!(vault = %shared.address, "logged in to Vault");
                                return;
                            }
                            Err(e) if e.is_retryable() => {}
                            Err(e) => {
                                tracing::error!(vault = %shared.address, error = %e, "Vault login failed");
                                return;
                            }
                        }
                    }
                });
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            shared,
            mount: options.mount,
            field: options.field,
        })
    }

    /// The same connection (token, renewal) on another KV v2 mount, for `vault://` references
    /// into a mount other than the configured one.
    pub fn with_mount(&self, mount: &str) -> Result<Self, SecretError> {
        check_mount(mount)?;
        Ok(Self {
            shared: Arc::clone(&self.shared),
            mount: mount.to_owned(),
            field: self.field.clone(),
        })
    }

    /// The mount names are relative to.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    fn parse_name(&self, name: &str) -> Result<(String, String), SecretError> {
        let reference = self.reference(name);
        let (path, field) = split_field(name, &reference)?;
        check_vault_path(path).map_err(|r| SecretError::BadReference {
            reference: reference.clone(),
            reason: format!("path {r}"),
        })?;
        Ok((path.to_owned(), field.unwrap_or_else(|| self.field.clone())))
    }

    async fn read(&self, path: &str, reference: &str) -> Result<ReadSecretResponse, SecretError> {
        let mount = self.mount.as_str();
        self.shared
            .call(reference, |client| async move {
                let request = ReadSecretRequest {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    version: None,
                };
                vaultrs::api::exec_with_result(client.as_ref(), request).await
            })
            .await
    }
}

fn check_mount(mount: &str) -> Result<(), SecretError> {
    if mount.contains('/') {
        return Err(SecretError::config(
            "mount",
            "must be a single path segment",
        ));
    }
    check_vault_path(mount).map_err(|r| SecretError::config("mount", r))
}

pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

async fn build_client(
    settings: &VaultClientSettings,
    token: &SecretString,
) -> Result<VaultClient, SecretError> {
    let mut settings = settings.clone();
    settings.token = token.expose_secret().to_owned();
    // Building reads the CA file and the platform roots: keep it off the executor threads.
    tokio::task::spawn_blocking(move || VaultClient::new(settings))
        .await
        .map_err(|_| SecretError::config("address", "client construction panicked"))?
        .map_err(|e| match e {
            ClientError::FileReadError { .. } | ClientError::FileNotFoundError { .. } => {
                SecretError::config("ca_file", "cannot be read")
            }
            ClientError::ParseCertificateError { .. } => {
                SecretError::config("ca_file", "is not a PEM certificate bundle")
            }
            _ => SecretError::config("address", "could not build the http client"),
        })
}

impl Shared {
    fn client(&self) -> Arc<VaultClient> {
        let guard = self
            .client
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    async fn set_token(&self, token: &SecretString) -> Result<(), SecretError> {
        let client = build_client(&self.settings, token).await?;
        *self
            .client
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(client);
        Ok(())
    }

    /// Runs one Vault call with the timeout, mapping its error for `reference`. Under
    /// AppRole a 403 triggers one fresh login and a retry.
    async fn call<T, F, Fut>(&self, reference: &str, op: F) -> Result<T, SecretError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let generation = *self.login_lock.lock().await;
        match self.call_once(reference, &op).await {
            Err(SecretError::PermissionDenied { .. })
                if matches!(self.auth, VaultAuth::AppRole { .. }) =>
            {
                self.relogin_after(generation, reference).await?;
                self.call_once(reference, &op).await
            }
            other => other,
        }
    }

    async fn call_once<T, F, Fut>(&self, reference: &str, op: &F) -> Result<T, SecretError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        match tokio::time::timeout(self.timeout, op(self.client())).await {
            Ok(result) => result.map_err(|e| map_error(e, reference)),
            Err(_) => Err(timed_out(reference, self.timeout)),
        }
    }

    /// Logs in again unless another task already did since `generation` was read.
    async fn relogin_after(&self, generation: u64, reference: &str) -> Result<(), SecretError> {
        let mut current = self.login_lock.lock().await;
        if *current != generation {
            return Ok(());
        }
        let lease = self.login(reference).await?;
        self.set_token(&lease.token).await?;
        *current += 1;
        Ok(())
    }

    /// AppRole login; `reference` names what the login was for in errors.
    async fn login(&self, reference: &str) -> Result<Lease, SecretError> {
        let VaultAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.auth
        else {
            return Err(SecretError::PermissionDenied {
                reference: reference.to_owned(),
            });
        };
        let info = self
            .call_once(reference, &|client: Arc<VaultClient>| async move {
                vaultrs::auth::approle::login(
                    client.as_ref(),
                    mount,
                    role_id,
                    secret_id.expose_secret(),
                )
                .await
            })
            .await?;
        Ok(Lease {
            token: SecretString::from(info.client_token),
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
        })
    }

    async fn initial_lease(&self) -> Result<Lease, SecretError> {
        let reference = format!("{} (login)", self.address);
        match &self.auth {
            VaultAuth::AppRole { .. } => {
                let lease = self.login(&reference).await?;
                self.set_token(&lease.token).await?;
                Ok(lease)
            }
            VaultAuth::Token(token) => {
                let info = self
                    .call_once(&reference, &|client: Arc<VaultClient>| async move {
                        client.lookup().await
                    })
                    .await?;
                Ok(Lease {
                    token: token.clone(),
                    ttl: Duration::from_secs(info.ttl),
                    renewable: info.renewable.unwrap_or(false),
                })
            }
        }
    }

    /// Starts (or restarts) the renewal timer for `lease`. Tokens without a TTL (root
    /// tokens) need none; a non-renewable AppRole token is replaced by a fresh login.
    fn schedule_renewal(self: &Arc<Self>, lease: &Lease) {
        let approle = matches!(self.auth, VaultAuth::AppRole { .. });
        if lease.ttl.is_zero() || !(lease.renewable || approle) {
            if !lease.ttl.is_zero() {
                tracing::warn!(
                    vault = %self.address,
                    ttl_secs = lease.ttl.as_secs(),
                    "vault token is not renewable and will expire"
                );
            }
            return;
        }
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(renew_loop(weak, lease.ttl, lease.renewable));
        if let Ok(mut slot) = self.renewal.lock()
            && let Some(old) = slot.replace(task)
        {
            old.abort();
        }
    }
}

/// Renews at ~2/3 of the TTL for as long as the store exists (it holds only a `Weak`).
async fn renew_loop(shared: Weak<Shared>, mut ttl: Duration, mut renewable: bool) {
    loop {
        let wait = (ttl * 2 / 3).max(Duration::from_millis(200));
        tokio::time::sleep(wait).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let reference = format!("{} (token renewal)", shared.address);
        let renewed = if renewable {
            shared
                .call_once(&reference, &|client: Arc<VaultClient>| async move {
                    client.renew(None).await
                })
                .await
                .map(|info| (Duration::from_secs(info.lease_duration), info.renewable))
        } else {
            Err(SecretError::PermissionDenied {
                reference: reference.clone(),
            })
        };
        match renewed {
            // Renewal can be capped by the token's max TTL: when the new TTL is shorter than
            // the wait we just did, fall through to a fresh login on the next round.
            Ok((new_ttl, still_renewable)) if !new_ttl.is_zero() => {
                tracing::debug!(vault = %shared.address, ttl_secs = new_ttl.as_secs(), "vault token renewed");
                ttl = new_ttl;
                renewable = still_renewable && new_ttl > wait;
                if !renewable && !matches!(shared.auth, VaultAuth::AppRole { .. }) {
                    tracing::warn!(
                        vault = %shared.address,
                        ttl_secs = ttl.as_secs(),
                        "vault token can no longer be renewed and will expire"
                    );
                    return;
                }
            }
            result => {
                if let Err(e) = &result {
                    tracing::debug!(vault = %shared.address, error = %e, "vault token renewal failed");
                }
                if matches!(shared.auth, VaultAuth::AppRole { .. }) {
                    let generation = *shared.login_lock.lock().await;
                    match shared.relogin_after(generation, &reference).await {
                        Ok(()) => {
                            tracing::info!(vault = %shared.address, "vault approle login renewed");
                            // A fresh login: ask Vault for the new lease.
                            match shared
                                .call_once(&reference, &|client: Arc<VaultClient>| async move {
                                    client.lookup().await
                                })
                                .await
                            {
                                Ok(info) if info.ttl == 0 => return,
                                Ok(info) => {
                                    ttl = Duration::from_secs(info.ttl);
                                    renewable = info.renewable.unwrap_or(false);
                                }
                                Err(_) => ttl = Duration::from_secs(15),
                            }
                        }
                        Err(e) => {
                            tracing::warn!(vault = %shared.address, error = %e, "vault approle login failed; retrying");
                            ttl = Duration::from_secs(15);
                        }
                    }
                } else {
                    tracing::warn!(vault = %shared.address, "vault token renewal failed; retrying");
                    ttl = Duration::from_secs(15);
                }
            }
        }
    }
}

fn timed_out(reference: &str, timeout: Duration) -> SecretError {
    SecretError::Unavailable {
        reference: reference.to_owned(),
        reason: format!("timed out after {}", humantime::format_duration(timeout)),
    }
}

/// Maps a `vaultrs` error. Only status codes and fixed texts are kept: response bodies
/// (which may hold secret data) never reach the message.
fn map_error(e: ClientError, reference: &str) -> SecretError {
    let reference = reference.to_owned();
    match e {
        ClientError::APIError { code: 404, .. } => SecretError::NotFound { reference },
        ClientError::APIError {
            code: 401 | 403, ..
        } => SecretError::PermissionDenied { reference },
        ClientError::APIError { code, .. } if code == 429 || code >= 500 => {
            SecretError::Unavailable {
                reference,
                reason: format!("vault answered status {code}"),
            }
        }
        ClientError::APIError { code, .. } => SecretError::Backend {
            reference,
            reason: format!("vault answered status {code}"),
        },
        ClientError::RestClientError { source } => SecretError::Unavailable {
            reference,
            // rustify's own top-level text ("Error sending HTTP request", …), never a body.
            reason: source.to_string().to_lowercase(),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            SecretError::Backend {
                reference,
                reason: "vault answered without data".into(),
            }
        }
        _ => SecretError::Backend {
            reference,
            reason: "unexpected answer from vault".into(),
        },
    }
}

/// The string value of `field` in a KV v2 data object.
fn field_value(data: &Value, field: &str, reference: &str) -> Result<SecretString, SecretError> {
    match data.get(field) {
        Some(Value::String(s)) => Ok(SecretString::from(s.as_str())),
        Some(_) => Err(SecretError::Backend {
            reference: reference.to_owned(),
            reason: format!("field `{field}` is not a string"),
        }),
        None => Err(SecretError::NotFound {
            reference: reference.to_owned(),
        }),
    }
}

#[async_trait::async_trait]
impl SecretStore for VaultSecretStore {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        self.get_versioned(name).await.map(|(v, _)| v)
    }

    async fn get_versioned(&self, name: &str) -> Result<(SecretString, String), SecretError> {
        let reference = self.reference(name);
        let (path, field) = self.parse_name(name)?;
        let secret = self.read(&path, &reference).await?;
        if secret.metadata.destroyed || !secret.metadata.deletion_time.is_empty() {
            return Err(SecretError::NotFound { reference });
        }
        let value = field_value(&secret.data, &field, &reference)?;
        Ok((value, secret.metadata.version.to_string()))
    }

    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let reference = self.reference(name);
        let (path, field) = self.parse_name(name)?;
        // Merge into the current data with check-and-set; retry when another writer won.
        for _ in 0..5 {
            let (mut data, cas) = match self.read(&path, &reference).await {
                Ok(current) => {
                    let data = match current.data {
                        Value::Object(map) => map,
                        _ => serde_json::Map::new(),
                    };
                    (data, current.metadata.version)
                }
                Err(SecretError::NotFound { .. }) => (serde_json::Map::new(), 0),
                Err(e) => return Err(e),
            };
            data.insert(
                field.clone(),
                Value::String(value.expose_secret().to_owned()),
            );
            let data = Value::Object(data);
            let cas = u32::try_from(cas).map_err(|_| SecretError::Backend {
                reference: reference.clone(),
                reason: "version out of range".into(),
            })?;
            let written = self
                .shared
                .call(&reference, |client| {
                    let (mount, path, data) = (self.mount.as_str(), path.as_str(), &data);
                    async move {
                        let options = SetSecretRequestOptions { cas };
                        match vaultrs::kv2::set_with_options(
                            client.as_ref(),
                            mount,
                            path,
                            data,
                            options,
                        )
                        .await
                        {
                            Ok(_) => Ok(true),
                            // "check-and-set parameter did not match the current version"
                            Err(ClientError::APIError { code: 400, errors })
                                if errors.iter().any(|e| e.contains("check-and-set")) =>
                            {
                                Ok(false)
                            }
                            Err(e) => Err(e),
                        }
                    }
                })
                .await?;
            if written {
                return Ok(());
            }
        }
        Err(SecretError::Unavailable {
            reference,
            reason: "concurrent writers kept changing the secret".into(),
        })
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        let reference = self.reference(name);
        let (path, _) = self.parse_name(name)?;
        let deleted = self
            .shared
            .call(&reference, |client| {
                let (mount, path) = (self.mount.as_str(), path.as_str());
                async move { vaultrs::kv2::delete_metadata(client.as_ref(), mount, path).await }
            })
            .await;
        match deleted {
            Ok(()) | Err(SecretError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reference(&self, name: &str) -> String {
        format!("vault://{}/{name}", self.mount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_only_status_codes() {
        let e = map_error(
            ClientError::APIError {
                code: 403,
                errors: vec!["permission denied".into()],
            },
            "vault://secret/a",
        );
        assert!(matches!(e, SecretError::PermissionDenied { .. }));
        let e = map_error(
            ClientError::APIError {
                code: 503,
                errors: vec!["Vault is sealed".into()],
            },
            "vault://secret/a",
        );
        assert!(e.is_retryable());
        let parse = serde_json::from_str::<u64>("\"sk-canary\"").unwrap_err();
        assert!(parse.to_string().contains("canary"));
        let e = map_error(
            ClientError::JsonParseError { source: parse },
            "vault://secret/a",
        );
        assert!(!e.to_string().contains("canary"), "{e}");
    }

    #[test]
    fn debug_hides_credentials() {
        let auth = VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: "r".into(),
            secret_id: SecretString::from("sk-canary-secret-id"),
        };
        assert!(!format!("{auth:?}").contains("canary"));
        let token = VaultAuth::Token(SecretString::from("hvs.canary"));
        assert!(!format!("{token:?}").contains("canary"));
    }

    #[test]
    fn field_values_must_be_strings() {
        let data = serde_json::json!({"a": "sk-canary", "n": 1});
        assert!(field_value(&data, "a", "r").is_ok());
        let e = field_value(&data, "n", "r").unwrap_err();
        assert!(matches!(e, SecretError::Backend { .. }));
        assert!(matches!(
            field_value(&data, "zz", "r"),
            Err(SecretError::NotFound { .. })
        ));
    }
}
