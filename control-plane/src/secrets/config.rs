//! Typed secret-backend configuration and the functions that turn it into stores.
//!
//! A backend is one TOML table with a `type` tag; unknown fields are errors. Secrets the
//! backends themselves need (a Vault token, an AppRole secret id, an Entra ID client secret)
//! are given as the **names** of environment variables, never as values; such a variable
//! may hold an `enc:…` value encrypted under the master key with the variable name as
//! associated data (see [`super::reference::resolve_env`]).
//!
//! ```toml
//! [secrets.backend]
//! type = "vault"
//! address = "https://vault.internal:8200"
//! mount = "secret"                       # default "secret"
//! field = "value"                        # default field for names without #field
//! namespace = "team-a"                   # optional (Vault Enterprise)
//! ca_file = "/etc/warden/vault-ca.pem"   # optional
//! timeout = "5s"                         # optional, every backend
//! auth = { type = "approle", role_id = "…", secret_id_env = "VAULT_SECRET_ID" }
//! # or auth = { type = "token", token_env = "VAULT_TOKEN" }
//!
//! # type = "aws", region = "eu-west-1", endpoint = "https://vpce-…"   (both optional)
//! # type = "azure", vault_name = "my-vault" (or vault_url = "https://my-vault.vault.azure.net"),
//! #   tenant_id = "…", client_id = "…", client_secret_env = "AZURE_CLIENT_SECRET"
//! #   (client credentials) or managed_identity = true [client_id for a user-assigned one],
//! #   authority_host = "https://login.microsoftonline.com", ca_file = "…"
//! # type = "file", path = "/var/lib/warden/secrets.json"   (default: data_dir/secrets.json)
//! ```
//!
//! [`build`] makes the store for one backend; [`SecretResolver`] reads any
//! [`SecretReference`] from the backends that are configured (plus `env://`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::aws::{AwsOptions, AwsSecretStore};
use super::azure::{
    self, AzureKeyVaultStore, AzureOptions, ClientCredentials, ManagedIdentity, TokenSource,
};
use super::cipher::MasterKey;
use super::file::FileSecretStore;
use super::policy;
use super::reference::{EnvSecretStore, Scheme, SecretReference, resolve_env};
use super::vault::{VaultAuth, VaultOptions, VaultSecretStore};
use super::{DEFAULT_TIMEOUT, SecretError, SecretStore};

/// One secret backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretBackendConfig {
    /// The encrypted file store.
    File {
        /// Default: `secrets.json` in the data directory.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// HashiCorp Vault / OpenBao KV v2.
    Vault {
        address: String,
        #[serde(default = "default_mount")]
        mount: String,
        auth: VaultAuthConfig,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Field used for names without `#field` (default `value`).
        #[serde(default)]
        field: Option<String>,
        #[serde(default)]
        timeout: Option<String>,
    },
    /// AWS Secrets Manager.
    Aws {
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        timeout: Option<String>,
    },
    /// Azure Key Vault.
    Azure {
        #[serde(default)]
        vault_url: Option<String>,
        #[serde(default)]
        vault_name: Option<String>,
        #[serde(default)]
        tenant_id: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_secret_env: Option<String>,
        #[serde(default)]
        managed_identity: bool,
        #[serde(default)]
        authority_host: Option<String>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        #[serde(default)]
        timeout: Option<String>,
        /// Allow `http://` to loopback (tests only).
        #[serde(default)]
        allow_insecure_loopback_for_tests: bool,
    },
}

/// How Warden logs in to Vault.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultAuthConfig {
    /// A token from the environment variable `token_env`.
    Token { token_env: String },
    /// AppRole: `role_id`, and the secret id from the variable `secret_id_env`.
    Approle {
        role_id: String,
        secret_id_env: String,
        /// The AppRole auth mount (default `approle`).
        #[serde(default)]
        mount: Option<String>,
    },
}

fn default_mount() -> String {
    "secret".into()
}

impl SecretBackendConfig {
    /// The reference scheme this backend serves.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::File { .. } => Scheme::File,
            Self::Vault { .. } => Scheme::Vault,
            Self::Aws { .. } => Scheme::AwsSm,
            Self::Azure { .. } => Scheme::AzureKv,
        }
    }

    /// The environment variables this backend's `*_env` fields name (its credentials):
    /// never readable as `env://` references.
    pub fn credential_vars(&self) -> Vec<String> {
        match self {
            Self::Vault { auth, .. } => match auth {
                VaultAuthConfig::Token { token_env } => vec![token_env.clone()],
                VaultAuthConfig::Approle { secret_id_env, .. } => vec![secret_id_env.clone()],
            },
            Self::Azure {
                client_secret_env, ..
            } => client_secret_env.iter().cloned().collect(),
            Self::File { .. } | Self::Aws { .. } => Vec::new(),
        }
    }
}

impl Default for SecretBackendConfig {
    fn default() -> Self {
        Self::File { path: None }
    }
}

fn timeout(value: Option<&String>) -> Result<Duration, SecretError> {
    match value {
        None => Ok(DEFAULT_TIMEOUT),
        Some(text) => {
            let d = humantime::parse_duration(text)
                .map_err(|e| SecretError::config("timeout", e.to_string()))?;
            if d.is_zero() || d > Duration::from_secs(300) {
                return Err(SecretError::config("timeout", "must be between 1ms and 5m"));
            }
            Ok(d)
        }
    }
}

/// Reads the secret a backend needs from the environment variable named in `field`.
fn secret_from_env(
    field: &str,
    var: &str,
    env: &HashMap<String, String>,
    master: &MasterKey,
) -> Result<SecretString, SecretError> {
    resolve_env(var, env, Some(master)).map_err(|e| match e {
        SecretError::NotFound { .. } => {
            SecretError::config(field, format!("environment variable {var} is not set"))
        }
        SecretError::Decrypt { .. } => SecretError::config(
            field,
            format!("environment variable {var} does not decrypt under the master key"),
        ),
        other => other,
    })
}

async fn read_ca(path: &Path) -> Result<Vec<u8>, SecretError> {
    tokio::fs::read(path).await.map_err(|e| {
        SecretError::config("ca_file", format!("{} cannot be read: {e}", path.display()))
    })
}

/// A built backend, keeping its concrete type for [`SecretResolver`].
#[derive(Debug, Clone)]
pub enum Backend {
    File(Arc<FileSecretStore>),
    Vault(VaultSecretStore),
    Aws(AwsSecretStore),
    Azure(AzureKeyVaultStore),
}

impl Backend {
    /// The store behind the trait.
    pub fn store(&self) -> Arc<dyn SecretStore> {
        match self {
            Self::File(s) => Arc::clone(s) as Arc<dyn SecretStore>,
            Self::Vault(s) => Arc::new(s.clone()),
            Self::Aws(s) => Arc::new(s.clone()),
            Self::Azure(s) => Arc::new(s.clone()),
        }
    }
}

/// Builds one backend from its configuration. `env` is the process environment captured
/// once (never read here); `data_dir` locates the default file store. Vault logs in here (an
/// unreachable server is [`SecretError::Unavailable`]); AWS and Azure make no request
/// until the first read.
pub async fn build_backend(
    config: &SecretBackendConfig,
    env: &HashMap<String, String>,
    master: Arc<MasterKey>,
    data_dir: &Path,
) -> Result<Backend, SecretError> {
    match config {
        SecretBackendConfig::File { path } => {
            let path = path
                .clone()
                .unwrap_or_else(|| data_dir.join("secrets.json"));
            Ok(Backend::File(Arc::new(FileSecretStore::with_shared_key(
                path, master,
            ))))
        }
        SecretBackendConfig::Vault {
            address,
            mount,
            auth,
            namespace,
            ca_file,
            field,
            timeout: t,
        } => {
            let auth = match auth {
                VaultAuthConfig::Token { token_env } => {
                    VaultAuth::Token(secret_from_env("auth.token_env", token_env, env, &master)?)
                }
                VaultAuthConfig::Approle {
                    role_id,
                    secret_id_env,
                    mount,
                } => {
                    if role_id.is_empty() {
                        return Err(SecretError::config("auth.role_id", "must not be empty"));
                    }
                    VaultAuth::AppRole {
                        mount: mount.clone().unwrap_or_else(|| "approle".into()),
                        role_id: role_id.clone(),
                        secret_id: secret_from_env(
                            "auth.secret_id_env",
                            secret_id_env,
                            env,
                            &master,
                        )?,
                    }
                }
            };
            let mut options = VaultOptions::new(address.clone(), mount.clone(), auth);
            if let Some(field) = field {
                if field.is_empty() {
                    return Err(SecretError::config("field", "must not be empty"));
                }
                options.field = field.clone();
            }
            options.namespace = namespace.clone();
            options.ca_file = ca_file.clone();
            options.timeout = timeout(t.as_ref())?;
            if let Some(ca) = ca_file {
                // Fail with a clear message before vaultrs gets to it.
                read_ca(ca).await?;
            }
            Ok(Backend::Vault(VaultSecretStore::connect(options).await?))
        }
        SecretBackendConfig::Aws {
            region,
            endpoint,
            timeout: t,
        } => {
            let options = AwsOptions {
                region: region.clone(),
                endpoint: endpoint.clone(),
                credentials: None,
                timeout: timeout(t.as_ref())?,
            };
            Ok(Backend::Aws(AwsSecretStore::connect(options).await?))
        }
        SecretBackendConfig::Azure {
            vault_url,
            vault_name,
            tenant_id,
            client_id,
            client_secret_env,
            managed_identity,
            authority_host,
            ca_file,
            timeout: t,
            allow_insecure_loopback_for_tests,
        } => {
            let timeout = timeout(t.as_ref())?;
            let url = match (vault_url, vault_name) {
                (Some(url), _) => url.clone(),
                (None, Some(name)) => format!("https://{name}.vault.azure.net"),
                (None, None) => {
                    return Err(SecretError::config(
                        "vault_url",
                        "set vault_url or vault_name",
                    ));
                }
            };
            let ca = match ca_file {
                Some(path) => Some(read_ca(path).await?),
                None => None,
            };
            let http =
                azure::http_client(ca.as_deref(), timeout, *allow_insecure_loopback_for_tests)?;
            let tokens: Arc<dyn TokenSource> = if *managed_identity {
                if client_secret_env.is_some() {
                    return Err(SecretError::config(
                        "client_secret_env",
                        "not used with managed_identity = true",
                    ));
                }
                // The metadata endpoint is plain http by design.
                let imds = azure::http_client(None, timeout, true)?;
                Arc::new(ManagedIdentity::new(
                    imds,
                    azure::IMDS_TOKEN_ENDPOINT,
                    client_id.clone(),
                ))
            } else {
                let (Some(tenant), Some(client), Some(secret_env)) =
                    (tenant_id, client_id, client_secret_env)
                else {
                    return Err(SecretError::config(
                        "client_secret_env",
                        "set tenant_id, client_id and client_secret_env, or managed_identity = true",
                    ));
                };
                let secret = secret_from_env("client_secret_env", secret_env, env, &master)?;
                Arc::new(ClientCredentials::new(
                    http.clone(),
                    authority_host
                        .as_deref()
                        .unwrap_or(azure::DEFAULT_AUTHORITY_HOST),
                    tenant,
                    client.clone(),
                    secret,
                )?)
            };
            let mut options = AzureOptions::new(url, tokens, http);
            options.vault_name = vault_name.clone();
            options.timeout = timeout;
            options.allow_insecure_loopback_for_tests = *allow_insecure_loopback_for_tests;
            Ok(Backend::Azure(AzureKeyVaultStore::new(options)?))
        }
    }
}

/// Builds the store for one backend (see [`build_backend`]).
pub async fn build(
    config: &SecretBackendConfig,
    env: &HashMap<String, String>,
    master: Arc<MasterKey>,
    data_dir: &Path,
) -> Result<Arc<dyn SecretStore>, SecretError> {
    Ok(build_backend(config, env, master, data_dir).await?.store())
}

/// Reads any [`SecretReference`] from the configured backends: `env://` from the captured
/// environment, the others from the backend of their scheme. A `vault://` reference into
/// another mount, or an `azure-kv://` one into another vault, reuses the configured
/// connection and credentials.
#[derive(Debug)]
pub struct SecretResolver {
    env: EnvSecretStore,
    /// Variables the backends' `*_env` fields name: refused as `env://` references.
    credential_vars: Vec<String>,
    file: Option<Arc<FileSecretStore>>,
    vault: Option<VaultSecretStore>,
    aws: Option<AwsSecretStore>,
    azure: Option<AzureKeyVaultStore>,
}

impl SecretResolver {
    /// A resolver for `env://` only; add backends with [`Self::with_backend`].
    pub fn new(env: HashMap<String, String>, master: Arc<MasterKey>) -> Self {
        Self {
            env: EnvSecretStore::new(env, Some(master)),
            credential_vars: Vec::new(),
            file: None,
            vault: None,
            aws: None,
            azure: None,
        }
    }

    /// Serves the scheme of `backend` from it (replacing an earlier one).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        match backend {
            Backend::File(s) => self.file = Some(s),
            Backend::Vault(s) => self.vault = Some(s),
            Backend::Aws(s) => self.aws = Some(s),
            Backend::Azure(s) => self.azure = Some(s),
        }
        self
    }

    /// Builds every backend in `configs` (at most one per scheme).
    pub async fn from_configs(
        configs: &[SecretBackendConfig],
        env: &HashMap<String, String>,
        master: Arc<MasterKey>,
        data_dir: &Path,
    ) -> Result<Self, SecretError> {
        let mut seen = Vec::new();
        let mut resolver = Self::new(env.clone(), Arc::clone(&master));
        for config in configs {
            if seen.contains(&config.scheme()) {
                return Err(SecretError::config(
                    "type",
                    format!("{} backend configured twice", config.scheme()),
                ));
            }
            seen.push(config.scheme());
            resolver.credential_vars.extend(config.credential_vars());
            let backend = build_backend(config, env, Arc::clone(&master), data_dir).await?;
            resolver = resolver.with_backend(backend);
        }
        Ok(resolver)
    }

    /// The writable store that serves `reference`'s scheme (another Vault mount or Azure
    /// vault reuses the configured connection), or an error naming the reference when no
    /// such backend is configured; `env://` is read-only.
    pub fn store_for(
        &self,
        reference: &SecretReference,
    ) -> Result<Arc<dyn SecretStore>, SecretError> {
        self.check(reference)?;
        let missing = || SecretError::BadReference {
            reference: reference.to_string(),
            reason: format!("no {} backend is configured", reference.scheme()),
        };
        Ok(match reference {
            SecretReference::Env { .. } => {
                return Err(SecretError::BadReference {
                    reference: reference.to_string(),
                    reason: "env:// references are read-only: change the variable instead".into(),
                });
            }
            SecretReference::File { .. } => {
                Arc::clone(self.file.as_ref().ok_or_else(missing)?) as Arc<dyn SecretStore>
            }
            SecretReference::AwsSm { .. } => Arc::new(self.aws.clone().ok_or_else(missing)?),
            SecretReference::Vault { mount, .. } => {
                let vault = self.vault.as_ref().ok_or_else(missing)?;
                if vault.mount() == mount {
                    Arc::new(vault.clone())
                } else {
                    Arc::new(vault.with_mount(mount)?)
                }
            }
            SecretReference::AzureKv { vault, .. } => {
                let azure = self.azure.as_ref().ok_or_else(missing)?;
                if azure.vault_name() == vault {
                    Arc::new(azure.clone())
                } else {
                    Arc::new(azure.with_vault(vault)?)
                }
            }
        })
    }

    /// Refuses a reference to Warden's own secrets or credentials, whatever its source
    /// (see [`policy::refusal`]).
    pub fn check(&self, reference: &SecretReference) -> Result<(), SecretError> {
        match policy::refusal(reference, &self.credential_vars) {
            Some(rule) => Err(policy::refused(reference, rule)),
            None => Ok(()),
        }
    }

    /// The store configured for `scheme`, where new values of that kind are written.
    pub fn store_of(&self, scheme: Scheme) -> Option<Arc<dyn SecretStore>> {
        match scheme {
            Scheme::File => self
                .file
                .as_ref()
                .map(|s| Arc::clone(s) as Arc<dyn SecretStore>),
            Scheme::Vault => self
                .vault
                .clone()
                .map(|s| Arc::new(s) as Arc<dyn SecretStore>),
            Scheme::AwsSm => self
                .aws
                .clone()
                .map(|s| Arc::new(s) as Arc<dyn SecretStore>),
            Scheme::AzureKv => self
                .azure
                .clone()
                .map(|s| Arc::new(s) as Arc<dyn SecretStore>),
            Scheme::Env => None,
        }
    }

    /// Reads `reference` with its version id (see [`SecretStore::get_versioned`]).
    pub async fn resolve(
        &self,
        reference: &SecretReference,
    ) -> Result<(SecretString, String), SecretError> {
        self.check(reference)?;
        let name = reference.store_name();
        let missing = || SecretError::BadReference {
            reference: reference.to_string(),
            reason: format!("no {} backend is configured", reference.scheme()),
        };
        match reference {
            SecretReference::Env { .. } => self.env.get_versioned(&name).await,
            SecretReference::File { .. } => {
                self.file
                    .as_ref()
                    .ok_or_else(missing)?
                    .get_versioned(&name)
                    .await
            }
            SecretReference::AwsSm { .. } => {
                self.aws
                    .as_ref()
                    .ok_or_else(missing)?
                    .get_versioned(&name)
                    .await
            }
            SecretReference::Vault { mount, .. } => {
                let vault = self.vault.as_ref().ok_or_else(missing)?;
                if vault.mount() == mount {
                    vault.get_versioned(&name).await
                } else {
                    vault.with_mount(mount)?.get_versioned(&name).await
                }
            }
            SecretReference::AzureKv { vault, .. } => {
                let azure = self.azure.as_ref().ok_or_else(missing)?;
                if azure.vault_name() == vault {
                    azure.get_versioned(&name).await
                } else {
                    azure.with_vault(vault)?.get_versioned(&name).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret as _, SecretBox};

    fn parse(text: &str) -> Result<SecretBackendConfig, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapper {
            backend: SecretBackendConfig,
        }
        toml::from_str::<Wrapper>(text)
            .map(|w| w.backend)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_each_backend() {
        assert_eq!(
            parse("[backend]\ntype = \"file\"").unwrap(),
            SecretBackendConfig::File { path: None }
        );
        let vault = parse(
            r#"[backend]
type = "vault"
address = "https://vault:8200"
namespace = "team"
auth = { type = "approle", role_id = "r-1", secret_id_env = "VAULT_SECRET_ID" }"#,
        )
        .unwrap();
        assert!(matches!(
            vault,
            SecretBackendConfig::Vault { ref mount, auth: VaultAuthConfig::Approle { .. }, .. } if mount == "secret"
        ));
        let aws = parse("[backend]\ntype = \"aws\"\nregion = \"eu-west-1\"").unwrap();
        assert_eq!(aws.scheme(), Scheme::AwsSm);
        let azure = parse(
            "[backend]\ntype = \"azure\"\nvault_name = \"my-vault\"\nmanaged_identity = true",
        )
        .unwrap();
        assert_eq!(azure.scheme(), Scheme::AzureKv);
    }

    #[test]
    fn unknown_fields_and_values_in_config_are_errors() {
        let e = parse("[backend]\ntype = \"aws\"\nregoin = \"x\"").unwrap_err();
        assert!(e.contains("regoin"), "{e}");
        let e = parse(
            "[backend]\ntype = \"vault\"\naddress = \"https://v\"\nauth = { type = \"token\", token = \"hvs.x\" }",
        )
        .unwrap_err();
        assert!(e.contains("unknown field `token`"), "{e}");
        let e = parse("[backend]\ntype = \"gcp\"").unwrap_err();
        assert!(e.contains("gcp"), "{e}");
    }

    fn master() -> Arc<MasterKey> {
        let b64 = MasterKey::generate_base64();
        Arc::new(MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap())
    }

    #[tokio::test]
    async fn backend_secrets_come_from_named_variables() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse(
            "[backend]\ntype = \"vault\"\naddress = \"http://127.0.0.1:1\"\nauth = { type = \"token\", token_env = \"NOPE\" }",
        )
        .unwrap();
        let e = build_backend(&config, &HashMap::new(), master(), dir.path())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret backend config: `auth.token_env`: environment variable NOPE is not set"
        );
        let config = parse(
            "[backend]\ntype = \"azure\"\nvault_name = \"my-vault\"\ntenant_id = \"t\"\nclient_id = \"c\"",
        )
        .unwrap();
        let e = build_backend(&config, &HashMap::new(), master(), dir.path())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("client_secret_env"), "{e}");
        let config =
            parse("[backend]\ntype = \"aws\"\nregion = \"us-east-1\"\ntimeout = \"soon\"").unwrap();
        let e = build_backend(&config, &HashMap::new(), master(), dir.path())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("`timeout`"), "{e}");
    }

    #[tokio::test]
    async fn resolver_reads_env_and_file_and_names_missing_backends() {
        let dir = tempfile::tempdir().unwrap();
        let k = master();
        let sealed = k.encrypt("OPENAI_API_KEY", b"sk-canary-env").unwrap();
        let env = HashMap::from([("OPENAI_API_KEY".to_owned(), sealed)]);
        let file = build_backend(
            &SecretBackendConfig::default(),
            &env,
            Arc::clone(&k),
            dir.path(),
        )
        .await
        .unwrap();
        file.store()
            .put("providers/x", &SecretString::from("sk-canary-file"))
            .await
            .unwrap();
        let resolver = SecretResolver::new(env, k).with_backend(file);
        let (v, _) = resolver
            .resolve(&SecretReference::parse("env://OPENAI_API_KEY").unwrap())
            .await
            .unwrap();
        assert_eq!(v.expose_secret(), "sk-canary-env");
        let (v, version) = resolver
            .resolve(&SecretReference::parse("file://providers/x").unwrap())
            .await
            .unwrap();
        assert_eq!(v.expose_secret(), "sk-canary-file");
        assert!(version.starts_with("sha256:"));
        let e = resolver
            .resolve(&SecretReference::parse("vault://secret/a#b").unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret reference vault://secret/a#b is not valid: no vault backend is configured"
        );
    }
}
