//! Control-plane configuration in two stages: [`RawConfig`] is the TOML file as written
//! (`deny_unknown_fields`, every field optional), then [`RawConfig::build_and_validate`]
//! applies `WARDEN_*` environment overrides (the environment is passed in, never read
//! from the process here) and checks every field, naming the one that is wrong.
//!
//! Environment overrides: `WARDEN_GRPC_ADDR`, `WARDEN_DATA_DIR`, `WARDEN_DEV`
//! (`1`/`true`), `WARDEN_LOG_FORMAT`, `WARDEN_MASTER_KEY` (base64, 32 bytes),
//! `WARDEN_MASTER_KEY_FILE`, `WARDEN_PREVIOUS_MASTER_KEY_FILES` (`:`-separated),
//! `WARDEN_JWT_ALGORITHM`, `WARDEN_TLS_CERT_FILE`,
//! `WARDEN_TLS_KEY_FILE`; the gRPC listener's limits `WARDEN_GRPC_REQUEST_TIMEOUT`,
//! `WARDEN_GRPC_HANDSHAKE_TIMEOUT`, `WARDEN_GRPC_MAX_CONNECTIONS`,
//! `WARDEN_GRPC_CONCURRENCY_PER_CONNECTION`, `WARDEN_GRPC_MAX_CONCURRENT_STREAMS`,
//! `WARDEN_GRPC_MAX_HEADER_LIST_BYTES`, `WARDEN_MAX_FAILED_LOGINS_PER_MINUTE`,
//! `WARDEN_OPS_ADDR`, `WARDEN_ALLOW_UNVERIFIED_DB_TLS`; client certificates and reload
//! `WARDEN_TLS_CLIENT_CA_FILE`, `WARDEN_TLS_REQUIRE_CLIENT_CERTS`,
//! `WARDEN_TLS_RELOAD_INTERVAL`; `WARDEN_REDIS_CA_FILE`; trace export `WARDEN_OTLP_ENDPOINT`,
//! `WARDEN_OTLP_SERVICE_NAME`, `WARDEN_OTLP_SAMPLE_RATIO`, `WARDEN_OTLP_EXPORT_INTERVAL`,
//! `WARDEN_OTLP_HEADERS` (`[tracing]`, [`otlp`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretBox;
use serde::Deserialize;
use warden_core::jwt::SigningAlgorithm;
use warden_core::telemetry::LogFormat;

use crate::domain::ApiFormat;

mod dlp;
mod otlp;
mod secrets;
pub use dlp::{RawDlp, RawDlpRule};

/// A configuration error that names the failing field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: at `{field}`: {message}")]
    Parse {
        path: String,
        field: String,
        message: String,
    },
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub secrets: RawSecrets,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// Limits on every request (the global policy).
    pub limits: Option<RawLimits>,
    /// `[access]`: the gateway's IP allow-list and CORS (fields of `AccessPolicy`).
    pub access: Option<crate::domain::AccessPolicy>,
    /// USD per million tokens, by model alias, for budgets.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub redis: RawRedis,
    #[serde(default)]
    pub store: RawStore,
    /// `[audit]`: checkpoint signing, retention, syslog and JSONL export.
    #[serde(default)]
    pub audit: crate::audit::jobs::AuditConfig,
    /// `[dlp]`: data loss prevention rules on request content.
    #[serde(default)]
    pub dlp: RawDlp,
    /// `[cluster]`: replicas on one PostgreSQL (leader lease, version poll).
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
    /// `[tracing]`: trace export over OTLP.
    #[serde(default)]
    pub tracing: otlp::RawTracing,
}

/// The state store: embedded SQLite unless `WARDEN_DATABASE_URL` names a PostgreSQL
/// database (the URL only from the environment: it may hold a password).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// PostgreSQL schema to create and use instead of the user's default.
    pub schema: Option<String>,
    /// Connect to a non-loopback PostgreSQL without `sslmode=verify-full`/`verify-ca`
    /// (a dangerous setting: warned about and audited).
    pub allow_unverified_tls: Option<bool>,
    /// Upper bound of the PostgreSQL pool's connections (default 10).
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u32>,
    pub max_budget_usd: Option<f64>,
    pub budget_period: Option<String>,
    /// Ceiling on the completion tokens one request may ask for.
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Where the nodes keep shared state; the control plane only reads usage from it (URL from
/// `WARDEN_REDIS_URL`, never from the file, as it may hold a password).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub prefix: Option<String>,
    /// PEM CA certificates trusted for a `rediss://` URL instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub grpc_addr: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub dev: Option<bool>,
    pub log_format: Option<String>,
    /// The log filter (`RUST_LOG` syntax), in place of `RUST_LOG`; re-read on SIGHUP.
    pub log_level: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    // Client certificates (mTLS) and certificate reload (`crate::tls`).
    /// PEM CA bundle that signs client certificates; set: connections are asked for one.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `true` (default) refuses a handshake without a certificate.
    pub require_client_certs: Option<bool>,
    /// How often the certificate, key and client CA files are re-read (default 10s).
    pub tls_reload_interval: Option<String>,
    /// Allow plaintext gRPC on a non-loopback address (logged as a warning).
    pub allow_plaintext: Option<bool>,
    // The gRPC listener's limits (`grpc::limits`), the failed-login throttle and the ops
    // listener.
    pub request_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub concurrency_per_connection: Option<u64>,
    pub max_concurrent_streams: Option<u64>,
    pub max_header_list_bytes: Option<u64>,
    /// Failed logins a minute from one address before it is refused for the minute.
    pub max_failed_logins_per_minute: Option<u32>,
    /// HTTP listener for `/metrics` and `/healthz` (off when unset).
    pub ops_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    pub master_key_file: Option<PathBuf>,
    /// Master keys rotated away: they still read values `warden-cp migrate
    /// rotate-master-key` has not re-encrypted yet, never seal new ones (default none).
    #[serde(default)]
    pub previous_master_key_files: Vec<PathBuf>,
    /// Where values handed to Warden are written: `file` (default), `vault`, `aws`, `azure`.
    pub store: Option<String>,
    /// How often referenced secrets are re-read to notice rotation (default 30s).
    pub poll_interval: Option<String>,
    /// Start-up with a backend that cannot be read: `refuse` (default) or `cache` (serve
    /// the last values from an encrypted local cache).
    pub startup: Option<String>,
    /// Secret backends (`[[secrets.backends]]`, one per type); the encrypted file store is
    /// always available.
    #[serde(default)]
    pub backends: Vec<crate::secrets::config::SecretBackendConfig>,
    /// Where provider-key references given over the Admin API may point, as reference
    /// prefixes (`vault://secret/llm/`); `warden-pk-` names Warden wrote are always allowed.
    #[serde(default)]
    pub allowed_ref_prefixes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub jwt_algorithm: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub default_token_ttl: Option<String>,
    pub max_token_ttl: Option<String>,
    pub leeway: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub format: String,
    pub base_url: String,
    /// Upstream keys by reference; `env://VAR` for now (read once at start-up and stored
    /// encrypted).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Each client brings its own upstream key (`x-warden-upstream-key`); no `keys` then.
    #[serde(default)]
    pub passthrough: bool,
    /// Top-level request parameters this provider does not accept.
    #[serde(default)]
    pub drop_params: Vec<String>,
    /// A PEM file of CA certificates: nodes verify this provider's TLS with these roots
    /// instead of the public web roots (a private upstream). Read at start-up.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub alias: String,
    pub provider: String,
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// Where the master key comes from.
pub enum MasterKeySource {
    /// Base64 value (from `WARDEN_MASTER_KEY`).
    Value(SecretBox<str>),
    /// A file holding the base64 value.
    File(PathBuf),
    /// Dev mode without a key: `<data_dir>/master.key`, generated on first start.
    DevFile(PathBuf),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(..)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::DevFile(p) => f.debug_tuple("DevFile").field(p).finish(),
        }
    }
}

/// A provider declared in the file.
#[derive(Debug, Clone)]
pub struct ProviderDecl {
    pub name: String,
    pub format: ApiFormat,
    pub base_url: String,
    /// Upstream keys by reference (`vault://…`, `aws-sm://…`, `azure-kv://…`, `file://…`,
    /// `env://VAR`).
    pub keys: Vec<crate::secrets::reference::SecretReference>,
    pub passthrough: bool,
    pub drop_params: Vec<String>,
    /// The PEM text of `ca_file`, checked.
    pub ca_pem: Option<String>,
}

/// A model declared in the file.
#[derive(Debug, Clone)]
pub struct ModelDecl {
    pub alias: String,
    pub provider: String,
    pub upstream_model: String,
    pub fallbacks: Vec<String>,
}

/// JWT issuance settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub algorithm: SigningAlgorithm,
    pub issuer: String,
    pub audience: String,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub leeway: Duration,
}

/// The validated control-plane configuration.
#[derive(Debug)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub dev: bool,
    pub log_format: LogFormat,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Client certificates (`[server] client_ca_file`, `require_client_certs`).
    pub client_certs: Option<crate::tls::ClientCertSettings>,
    /// How often the TLS files are re-read (`[server] tls_reload_interval`).
    pub tls_reload_interval: Duration,
    pub master_key: MasterKeySource,
    pub auth: AuthConfig,
    pub providers: Vec<ProviderDecl>,
    pub models: Vec<ModelDecl>,
    /// Secret backends and rotation polling.
    pub secrets: SecretsConfig,
    /// The environment the config was built from, for `env://` references and backend
    /// credentials named by variable.
    pub env: CapturedEnv,
    /// The global policy from `[limits]`, if the file has one.
    pub global_limits: Option<crate::domain::Limits>,
    /// The gateway's IP allow-list and CORS from `[access]`, if the file has one.
    pub global_access: Option<crate::domain::AccessPolicy>,
    pub prices: Vec<(String, crate::domain::Price)>,
    /// Redis the nodes share (`WARDEN_REDIS_URL`), for usage figures.
    pub redis_url: Option<SecretBox<str>>,
    /// `[redis] ca_file` (`WARDEN_REDIS_CA_FILE`): the CA a `rediss://` Redis is checked with.
    pub redis_ca_file: Option<PathBuf>,
    /// PostgreSQL for the state store (`WARDEN_DATABASE_URL`, `postgres://…`, TLS with
    /// `sslmode=require`); `None` keeps the embedded SQLite under the data dir.
    pub database_url: Option<SecretBox<str>>,
    /// Schema to use in that database (`[store] schema`).
    pub database_schema: Option<String>,
    pub redis_prefix: String,
    /// Checkpoints, retention and exports of the audit log (`[audit]`).
    pub audit: crate::audit::jobs::AuditConfig,
    /// The gRPC listener's timeouts and caps (`[server]`).
    pub limits: crate::grpc::limits::ServerLimits,
    /// Failed logins a minute from one address before it is throttled.
    pub max_failed_logins_per_minute: u32,
    /// Where `/metrics` and `/healthz` are served (`--ops-addr`); `None`: nowhere.
    pub ops_addr: Option<SocketAddr>,
    /// `[store] allow_unverified_tls`: PostgreSQL off loopback without verified TLS.
    pub allow_unverified_db_tls: bool,
    /// `[dlp]`: the rules the file declares (stored with source `config` at start).
    pub dlp_rules: Vec<warden_core::dlp::RuleSpec>,
    /// `[store] max_connections`: the PostgreSQL pool's bound (`None`: the default).
    pub database_max_connections: Option<u32>,
    /// `[cluster]`: the leader lease, the replica id and the version poll.
    pub cluster: crate::cluster::ClusterConfig,
    /// `[server] log_level`: the log filter (`None`: `RUST_LOG`).
    pub log_level: Option<String>,
    /// `[tracing]`: where spans are exported (`None`: traces off).
    pub otlp: Option<warden_core::otlp::OtlpSettings>,
    /// The file this was read from (set by the binary), re-read for `log_level` on SIGHUP.
    pub config_file: Option<PathBuf>,
}

/// Secret backends and how provider keys are read.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// The backend new values are written to.
    pub store: crate::secrets::reference::Scheme,
    pub poll_interval: Duration,
    /// Start with an encrypted local cache when a backend cannot be read.
    pub startup_cache: bool,
    /// Configured backends; a `file` one is added with its default path when absent.
    pub backends: Vec<crate::secrets::config::SecretBackendConfig>,
    /// Reference prefixes the Admin API may add keys from (`[secrets] allowed_ref_prefixes`).
    pub allowed_ref_prefixes: Vec<String>,
    /// Previous master keys, read-only (`[secrets] previous_master_key_files`,
    /// `WARDEN_PREVIOUS_MASTER_KEY_FILES`).
    pub previous_master_key_files: Vec<PathBuf>,
}

/// The process environment, captured once. Holds secrets: `Debug` shows only its size.
#[derive(Clone, Default)]
pub struct CapturedEnv(pub HashMap<String, String>);

impl std::fmt::Debug for CapturedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CapturedEnv({} variables)", self.0.len())
    }
}

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";

/// The largest `[auth] leeway` accepted: nodes accept a token until `exp` plus this.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl RawConfig {
    /// Parses a TOML document; errors name the failing field path.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            field: String::new(),
            message: e.to_string(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            field: e.path().to_string(),
            message: e.inner().message().to_owned(),
        })
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&path.display().to_string(), &text)
    }

    /// Applies the environment and validates everything.
    pub fn build_and_validate(self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let server = self.server;
        let grpc_addr_text = env
            .get("WARDEN_GRPC_ADDR")
            .cloned()
            .or(server.grpc_addr)
            .unwrap_or_else(|| DEFAULT_GRPC_ADDR.to_owned());
        let grpc_addr: SocketAddr = grpc_addr_text.parse().map_err(|_| {
            invalid(
                "server.grpc_addr",
                format!("`{grpc_addr_text}` is not host:port"),
            )
        })?;
        let data_dir = env
            .get("WARDEN_DATA_DIR")
            .map(PathBuf::from)
            .or(server.data_dir)
            .unwrap_or_else(|| PathBuf::from(".warden"));
        let dev = match env.get("WARDEN_DEV") {
            Some(v) => {
                parse_bool(v).ok_or_else(|| invalid("WARDEN_DEV", "expected true or false"))?
            }
            None => server.dev.unwrap_or(false),
        };
        let log_format_text = env
            .get("WARDEN_LOG_FORMAT")
            .cloned()
            .or(server.log_format)
            .unwrap_or_else(|| "text".to_owned());
        let log_format = LogFormat::parse(&log_format_text)
            .ok_or_else(|| invalid("server.log_format", "expected `text` or `json`"))?;
        let log_level = otlp::log_level(server.log_level)?;
        let otlp = self.tracing.build(env)?;
        let cert = env
            .get("WARDEN_TLS_CERT_FILE")
            .map(PathBuf::from)
            .or(server.tls_cert_file);
        let key = env
            .get("WARDEN_TLS_KEY_FILE")
            .map(PathBuf::from)
            .or(server.tls_key_file);
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key_file",
                    "required with tls_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert_file",
                    "required with tls_key_file",
                ));
            }
        };
        let (client_certs, tls_reload_interval) = crate::tls::client_settings(
            env,
            tls.is_some(),
            server.client_ca_file,
            server.require_client_certs,
            server.tls_reload_interval,
        )
        .map_err(|e| invalid(e.field, e.message))?;
        if tls.is_none()
            && !grpc_addr.ip().is_loopback()
            && !server.allow_plaintext.unwrap_or(false)
        {
            return Err(invalid(
                "server.grpc_addr",
                "a non-loopback address needs tls_cert_file/tls_key_file (or allow_plaintext = true)",
            ));
        }

        let master_key = if let Some(v) = env.get("WARDEN_MASTER_KEY") {
            MasterKeySource::Value(SecretBox::from(v.as_str()))
        } else if let Some(p) = env.get("WARDEN_MASTER_KEY_FILE") {
            MasterKeySource::File(PathBuf::from(p))
        } else if let Some(p) = self.secrets.master_key_file {
            MasterKeySource::File(p)
        } else if dev {
            MasterKeySource::DevFile(data_dir.join("master.key"))
        } else {
            return Err(invalid(
                "secrets.master_key_file",
                "no master key: set WARDEN_MASTER_KEY (32 bytes, base64) or secrets.master_key_file; \
                 only dev mode generates one",
            ));
        };

        let auth = build_auth(self.auth, env)?;
        let secrets = secrets::build_secrets(
            self.secrets.store,
            self.secrets.poll_interval,
            self.secrets.startup,
            self.secrets.backends,
        )?;
        let mut secrets = secrets;
        secrets.previous_master_key_files = match env.get("WARDEN_PREVIOUS_MASTER_KEY_FILES") {
            Some(list) => std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            None => self.secrets.previous_master_key_files,
        };
        for (i, prefix) in self.secrets.allowed_ref_prefixes.into_iter().enumerate() {
            crate::secrets::policy::check_prefix(&prefix)
                .map_err(|m| invalid(&format!("secrets.allowed_ref_prefixes[{i}]"), m))?;
            secrets.allowed_ref_prefixes.push(prefix);
        }
        let credential_vars: Vec<String> = secrets
            .backends
            .iter()
            .flat_map(|b| b.credential_vars())
            .collect();

        let mut providers = Vec::new();
        for (i, p) in self.providers.into_iter().enumerate() {
            let field = |name: &str| format!("providers[{i}].{name}");
            crate::domain::validate_name(&p.name).map_err(|m| invalid(&field("name"), m))?;
            let format = ApiFormat::parse(&p.format)
                .filter(|f| *f != ApiFormat::Echo)
                .ok_or_else(|| invalid(&field("format"), "expected `openai` or `anthropic`"))?;
            crate::domain::validate_base_url(&p.base_url)
                .map_err(|m| invalid(&field("base_url"), m))?;
            let mut keys = Vec::new();
            for (j, text) in p.keys.iter().enumerate() {
                let kf = field(&format!("keys[{j}]"));
                let reference = crate::secrets::reference::SecretReference::parse(text)
                    .map_err(|e| invalid(&kf, e.to_string()))?;
                if let Some(rule) = crate::secrets::policy::refusal(&reference, &credential_vars) {
                    return Err(invalid(&kf, format!("{reference} is refused: {rule}")));
                }
                if let crate::secrets::reference::SecretReference::Env { var } = &reference
                    && env.get(var).is_none_or(|v| v.trim().is_empty())
                {
                    return Err(invalid(
                        &kf,
                        format!("environment variable {var} is not set"),
                    ));
                }
                if !keys.contains(&reference) {
                    keys.push(reference);
                }
            }
            if p.passthrough && !p.keys.is_empty() {
                return Err(invalid(
                    &field("keys"),
                    "a passthrough provider takes no keys (each client brings its own)",
                ));
            }
            if providers.iter().any(|q: &ProviderDecl| q.name == p.name) {
                return Err(invalid(
                    &field("name"),
                    format!("provider `{}` declared twice", p.name),
                ));
            }
            let ca_pem = match &p.ca_file {
                Some(_) if !p.base_url.starts_with("https://") => {
                    let why = "a CA bundle verifies TLS; the base_url must be https://";
                    return Err(invalid(&field("ca_file"), why));
                }
                Some(path) => Some(
                    warden_core::ca_bundle::read_bundle(path)
                        .map_err(|e| invalid(&field("ca_file"), e))?
                        .pem,
                ),
                None => None,
            };
            providers.push(ProviderDecl {
                name: p.name,
                format,
                base_url: p.base_url.trim_end_matches('/').to_owned(),
                keys,
                passthrough: p.passthrough,
                drop_params: p.drop_params,
                ca_pem,
            });
        }
        let mut models: Vec<ModelDecl> = Vec::new();
        for (i, m) in self.models.into_iter().enumerate() {
            let field = |name: &str| format!("models[{i}].{name}");
            crate::domain::validate_name(&m.alias).map_err(|e| invalid(&field("alias"), e))?;
            if !providers.iter().any(|p| p.name == m.provider) {
                return Err(invalid(
                    &field("provider"),
                    format!("provider `{}` is not declared in [[providers]]", m.provider),
                ));
            }
            if models.iter().any(|q| q.alias == m.alias) {
                return Err(invalid(
                    &field("alias"),
                    format!("model `{}` declared twice", m.alias),
                ));
            }
            for (j, f) in m.fallbacks.iter().enumerate() {
                if f == &m.alias || !(models.iter().any(|q| &q.alias == f)) {
                    return Err(invalid(
                        &field(&format!("fallbacks[{j}]")),
                        format!("`{f}` must be a model declared before `{}`", m.alias),
                    ));
                }
            }
            let upstream_model = m.upstream_model.unwrap_or_else(|| m.alias.clone());
            models.push(ModelDecl {
                alias: m.alias,
                provider: m.provider,
                upstream_model,
                fallbacks: m.fallbacks,
            });
        }
        crate::audit::node_events::validate_quota(
            self.audit.node_ingest_rate,
            self.audit.node_ingest_burst,
        )
        .map_err(|e| invalid(&format!("audit.{}", e.field), e.message))?;
        let dlp_rules = self.dlp.build()?;
        let global_access = (self
            .access
            .map(|a| a.validated(&crate::domain::PolicyTarget::Global)))
        .transpose()
        .map_err(|e| invalid("access", e))?;
        let global_limits = match self.limits {
            None => None,
            Some(l) => {
                let budget = l.max_budget_usd.unwrap_or(0.0);
                if !budget.is_finite() || budget < 0.0 {
                    return Err(invalid(
                        "limits.max_budget_usd",
                        "must be a non-negative number",
                    ));
                }
                let period = match l.budget_period {
                    Some(text) => humantime::parse_duration(&text)
                        .map_err(|e| invalid("limits.budget_period", format!("`{text}`: {e}")))?
                        .as_secs(),
                    None => crate::domain::DEFAULT_BUDGET_PERIOD_SECS,
                };
                if period < 60 {
                    return Err(invalid("limits.budget_period", "at least 1m"));
                }
                Some(crate::domain::Limits {
                    rpm: l.rpm.unwrap_or(0),
                    tpm: l.tpm.unwrap_or(0),
                    max_parallel: l.max_parallel.unwrap_or(0),
                    max_budget_micros: (budget * 1e6).round() as u64,
                    budget_period_secs: period,
                    max_tokens: l.max_tokens.unwrap_or(0),
                })
            }
        };
        let mut prices = Vec::new();
        for (alias, p) in self.prices {
            if !(p.input_per_mtok.is_finite() && p.output_per_mtok.is_finite())
                || p.input_per_mtok < 0.0
                || p.output_per_mtok < 0.0
            {
                return Err(invalid(
                    &format!("prices.{alias}"),
                    "prices must be non-negative numbers",
                ));
            }
            prices.push((
                alias,
                crate::domain::Price {
                    input_per_mtok: p.input_per_mtok,
                    output_per_mtok: p.output_per_mtok,
                },
            ));
        }
        let redis_prefix = env
            .get("WARDEN_REDIS_PREFIX")
            .cloned()
            .or(self.redis.prefix)
            .unwrap_or_else(|| "warden".to_owned());
        if redis_prefix.is_empty() || redis_prefix.contains(['{', '}']) {
            return Err(invalid(
                "redis.prefix",
                "must be non-empty and contain no braces",
            ));
        }
        let database_url = match env.get("WARDEN_DATABASE_URL").filter(|v| !v.is_empty()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(SecretBox::from(url.as_str()))
            }
            Some(_) => {
                return Err(invalid(
                    "WARDEN_DATABASE_URL",
                    "must be a postgres:// URL (SQLite is the default without it)",
                ));
            }
            None => None,
        };
        let database_max_connections = self.store.max_connections;
        if database_max_connections == Some(0) {
            return Err(invalid("store.max_connections", "must be at least 1"));
        }
        self.cluster
            .validate()
            .map_err(|(field, message)| invalid(field, message))?;
        let database_schema = env
            .get("WARDEN_DATABASE_SCHEMA")
            .cloned()
            .or(self.store.schema);
        if let Some(schema) = &database_schema
            && (schema.is_empty()
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        {
            return Err(invalid(
                "store.schema",
                "lowercase letters, digits and _ only",
            ));
        }
        // The gRPC listener's limits, the failed-login throttle, the ops listener and
        // unverified PostgreSQL TLS: environment over file.
        let text = |var: &str, file: Option<String>| env.get(var).cloned().or(file);
        let number = |n: Option<u64>| n.map(|n| n.to_string());
        let limits = crate::grpc::limits::ServerLimits::build(crate::grpc::limits::Settings {
            request_timeout: text("WARDEN_GRPC_REQUEST_TIMEOUT", server.request_timeout),
            handshake_timeout: text("WARDEN_GRPC_HANDSHAKE_TIMEOUT", server.handshake_timeout),
            max_connections: text(
                "WARDEN_GRPC_MAX_CONNECTIONS",
                number(server.max_connections),
            ),
            concurrency_per_connection: text(
                "WARDEN_GRPC_CONCURRENCY_PER_CONNECTION",
                number(server.concurrency_per_connection),
            ),
            max_concurrent_streams: text(
                "WARDEN_GRPC_MAX_CONCURRENT_STREAMS",
                number(server.max_concurrent_streams),
            ),
            max_header_list_bytes: text(
                "WARDEN_GRPC_MAX_HEADER_LIST_BYTES",
                number(server.max_header_list_bytes),
            ),
        })
        .map_err(|e| invalid(&format!("server.{}", e.field), e.message))?;
        let failed_logins = text(
            "WARDEN_MAX_FAILED_LOGINS_PER_MINUTE",
            server.max_failed_logins_per_minute.map(|n| n.to_string()),
        );
        let max_failed_logins_per_minute = match failed_logins {
            None => crate::service::login_guard::DEFAULT_MAX_FAILURES_PER_MINUTE,
            Some(t) => t.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                invalid(
                    "server.max_failed_logins_per_minute",
                    format!("`{t}`: expected a whole number of at least 1"),
                )
            })?,
        };
        let ops_addr = match text("WARDEN_OPS_ADDR", server.ops_addr).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                t.parse::<SocketAddr>()
                    .map_err(|_| invalid("server.ops_addr", format!("`{t}` is not host:port")))?,
            ),
        };
        let allow_unverified_db_tls = match env.get("WARDEN_ALLOW_UNVERIFIED_DB_TLS") {
            Some(v) => parse_bool(v).ok_or_else(|| {
                invalid("WARDEN_ALLOW_UNVERIFIED_DB_TLS", "expected true or false")
            })?,
            None => self.store.allow_unverified_tls.unwrap_or(false),
        };
        let redis_url = env
            .get("WARDEN_REDIS_URL")
            .filter(|v| !v.is_empty())
            .map(|v| SecretBox::from(v.as_str()));
        let redis_ca_file = match env.get("WARDEN_REDIS_CA_FILE").filter(|v| !v.is_empty()) {
            Some(path) => Some(PathBuf::from(path)),
            None => self.redis.ca_file,
        };
        if redis_ca_file.is_some()
            && !redis_url
                .as_ref()
                .is_some_and(|u| secrecy::ExposeSecret::expose_secret(u).starts_with("rediss://"))
        {
            return Err(invalid(
                "redis.ca_file",
                "needs a rediss:// WARDEN_REDIS_URL",
            ));
        }

        Ok(Config {
            grpc_addr,
            data_dir,
            dev,
            log_format,
            tls,
            client_certs,
            tls_reload_interval,
            master_key,
            auth,
            providers,
            models,
            audit: self.audit,
            secrets,
            env: CapturedEnv(env.clone()),
            global_limits,
            global_access,
            prices,
            redis_url,
            redis_ca_file,
            redis_prefix,
            database_url,
            database_schema,
            limits,
            max_failed_logins_per_minute,
            ops_addr,
            allow_unverified_db_tls,
            dlp_rules,
            database_max_connections,
            cluster: self.cluster,
            log_level,
            otlp,
            config_file: None,
        })
    }
}

fn build_auth(raw: RawAuth, env: &HashMap<String, String>) -> Result<AuthConfig, ConfigError> {
    let alg_text = env
        .get("WARDEN_JWT_ALGORITHM")
        .cloned()
        .or(raw.jwt_algorithm)
        .unwrap_or_else(|| "EdDSA".to_owned());
    let algorithm = SigningAlgorithm::parse(&alg_text)
        .ok_or_else(|| invalid("auth.jwt_algorithm", "expected `EdDSA` or `HS256`"))?;
    let duration =
        |field: &str, value: Option<String>, default: &str| -> Result<Duration, ConfigError> {
            let text = value.unwrap_or_else(|| default.to_owned());
            humantime::parse_duration(&text).map_err(|e| invalid(field, format!("`{text}`: {e}")))
        };
    let default_ttl = duration("auth.default_token_ttl", raw.default_token_ttl, "30days")?;
    let max_ttl = duration("auth.max_token_ttl", raw.max_token_ttl, "365days")?;
    let leeway = duration("auth.leeway", raw.leeway, "30s")?;
    if default_ttl > max_ttl {
        return Err(invalid(
            "auth.default_token_ttl",
            "longer than auth.max_token_ttl",
        ));
    }
    if leeway > MAX_LEEWAY {
        return Err(invalid("auth.leeway", "at most 5m"));
    }
    let non_empty = |field: &str, v: Option<String>| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| "warden".to_owned());
        if v.trim().is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
        Ok(v)
    };
    Ok(AuthConfig {
        algorithm,
        issuer: non_empty("auth.issuer", raw.issuer)?,
        audience: non_empty("auth.audience", raw.audience)?,
        default_ttl,
        max_ttl,
        leeway,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn redis_ca_file_needs_a_tls_url() {
        let build = |vars: &[(&str, &str)]| {
            let mut all = vec![("WARDEN_DEV", "1"), ("WARDEN_REDIS_CA_FILE", "/ca.pem")];
            all.extend_from_slice(vars);
            RawConfig::default().build_and_validate(&env(&all))
        };
        for plain in [
            &[][..],
            &[("WARDEN_REDIS_URL", "redis://127.0.0.1:6379")][..],
        ] {
            let err = build(plain).unwrap_err().to_string();
            assert!(
                err.contains("redis.ca_file") && err.contains("rediss://"),
                "{err}"
            );
        }
        let ok = build(&[("WARDEN_REDIS_URL", "rediss://localhost:6380")]).unwrap();
        assert_eq!(ok.redis_ca_file, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = RawConfig::from_toml("w.toml", "[server]\ngrpc_adr = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("grpc_adr"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let err = RawConfig::from_toml("w.toml", "[[providers]]\nname = 3\n").unwrap_err();
        assert!(err.to_string().contains("providers[0].name"), "{err}");
    }

    #[test]
    fn refuses_to_start_without_master_key_outside_dev() {
        let err = RawConfig::default()
            .build_and_validate(&env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("master key"), "{err}");
        let dev = RawConfig::default()
            .build_and_validate(&env(&[("WARDEN_DEV", "1")]))
            .unwrap();
        assert!(matches!(dev.master_key, MasterKeySource::DevFile(_)));
    }

    #[test]
    fn config_keys_cannot_name_wardens_own_secrets_and_prefixes_are_checked() {
        let vars = env(&[
            ("WARDEN_MASTER_KEY", "x"),
            ("OPENAI_API_KEY", "sk-x"),
            ("MY_VAULT_TOKEN", "t"),
            ("AWS_SECRET_ACCESS_KEY", "a"),
        ]);
        let build = |keys: &str, extra: &str| {
            RawConfig::from_toml(
                "w.toml",
                &format!(
                    "{extra}[[providers]]\nname = \"p\"\nformat = \"openai\"\nbase_url = \"https://x/v1\"\nkeys = [{keys}]\n"
                ),
            )
            .and_then(|r| r.build_and_validate(&vars))
        };
        let vault = "[[secrets.backends]]\ntype = \"vault\"\naddress = \"https://v\"\nauth = { type = \"token\", token_env = \"MY_VAULT_TOKEN\" }\n";
        assert!(build("\"env://OPENAI_API_KEY\"", "").is_ok());
        for (keys, extra) in [
            ("\"file://warden/credential-pepper\"", ""),
            ("\"vault://secret/warden/jwt/k1\"", vault),
            ("\"env://WARDEN_MASTER_KEY\"", ""),
            ("\"env://AWS_SECRET_ACCESS_KEY\"", ""),
            ("\"env://MY_VAULT_TOKEN\"", vault),
        ] {
            let err = build(keys, extra).unwrap_err().to_string();
            assert!(
                err.contains("providers[0].keys[0]") && err.contains("is refused"),
                "{keys}: {err}"
            );
        }
        let ok = build(
            "",
            "[secrets]\nallowed_ref_prefixes = [\"vault://secret/llm/\"]\n",
        )
        .unwrap();
        assert_eq!(ok.secrets.allowed_ref_prefixes, ["vault://secret/llm/"]);
        let err = build("", "[secrets]\nallowed_ref_prefixes = [\"env://OPENAI\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets.allowed_ref_prefixes[0]"), "{err}");
    }

    #[test]
    fn secrets_section_is_validated_field_by_field() {
        let build = |text: &str| {
            RawConfig::from_toml("w.toml", text)
                .and_then(|r| r.build_and_validate(&env(&[("WARDEN_MASTER_KEY", "x")])))
        };
        let ok = build("").unwrap();
        assert_eq!(ok.secrets.store, crate::secrets::reference::Scheme::File);
        assert_eq!(ok.secrets.poll_interval, Duration::from_secs(30));
        assert!(!ok.secrets.startup_cache);
        assert_eq!(
            ok.secrets.backends.len(),
            1,
            "the file store is always there"
        );

        let err = build("[secrets]\nstore = \"vault\"\n").unwrap_err();
        assert!(err.to_string().contains("secrets.store"), "{err}");
        let err = build("[secrets]\nstartup = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("secrets.startup"), "{err}");
        let err = build("[secrets]\npoll_interval = \"1ms\"\n").unwrap_err();
        assert!(err.to_string().contains("secrets.poll_interval"), "{err}");
        let twice = "[[secrets.backends]]\ntype = \"aws\"\n[[secrets.backends]]\ntype = \"aws\"\n";
        let err = build(twice).unwrap_err();
        assert!(
            err.to_string().contains("secrets.backends[1].type"),
            "{err}"
        );
        let err = build("[[secrets.backends]]\ntype = \"aws\"\nregon = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("regon"), "{err}");

        let aws = build(
            "[secrets]\nstore = \"aws\"\nstartup = \"cache\"\n[[secrets.backends]]\ntype = \"aws\"\n",
        )
        .unwrap();
        assert_eq!(aws.secrets.store, crate::secrets::reference::Scheme::AwsSm);
        assert!(aws.secrets.startup_cache);

        let bad_key = r#"
[[providers]]
name = "openai"
format = "openai"
base_url = "https://api.example.com/v1"
keys = ["sk-pasted-by-mistake-1234"]
"#;
        let err = build(bad_key).unwrap_err().to_string();
        assert!(err.contains("providers[0].keys[0]"), "{err}");
        assert!(
            !err.contains("sk-pasted-by-mistake"),
            "a pasted value is not echoed: {err}"
        );
    }

    #[test]
    fn debug_output_holds_no_environment_value() {
        let config = RawConfig::default()
            .build_and_validate(&env(&[
                ("WARDEN_MASTER_KEY", "master-canary-value"),
                ("OPENAI_API_KEY", "sk-canary-in-the-environment"),
            ]))
            .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-canary"), "{shown}");
        assert!(!shown.contains("master-canary"), "{shown}");
        assert!(shown.contains("CapturedEnv(2 variables)"), "{shown}");
    }

    #[test]
    fn env_overrides_file() {
        let raw =
            RawConfig::from_toml("w.toml", "[server]\ngrpc_addr = \"127.0.0.1:1\"\n").unwrap();
        let c = raw
            .build_and_validate(&env(&[
                ("WARDEN_GRPC_ADDR", "127.0.0.1:2"),
                ("WARDEN_MASTER_KEY", "x"),
            ]))
            .unwrap();
        assert_eq!(c.grpc_addr.port(), 2);
    }

    #[test]
    fn validates_providers_and_models() {
        let text = r#"
[[providers]]
name = "openai"
format = "openai"
base_url = "http://api.example.com/v1"
"#;
        let err = RawConfig::from_toml("w.toml", text)
            .unwrap()
            .build_and_validate(&env(&[("WARDEN_MASTER_KEY", "x")]))
            .unwrap_err();
        assert!(err.to_string().contains("providers[0].base_url"), "{err}");

        let text = r#"
[[providers]]
name = "openai"
format = "openai"
base_url = "https://api.openai.com/v1"
keys = ["env://OPENAI_KEY_FOR_TEST"]

[[models]]
alias = "gpt-4o"
provider = "nope"
"#;
        let err = RawConfig::from_toml("w.toml", text)
            .unwrap()
            .build_and_validate(&env(&[
                ("WARDEN_MASTER_KEY", "x"),
                ("OPENAI_KEY_FOR_TEST", "sk-1"),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("models[0].provider"), "{err}");
        let err = RawConfig::from_toml("w.toml", text)
            .unwrap()
            .build_and_validate(&env(&[("WARDEN_MASTER_KEY", "x")]))
            .unwrap_err();
        assert!(err.to_string().contains("providers[0].keys[0]"), "{err}");
        assert!(!err.to_string().contains("sk-1"));
    }

    #[test]
    fn the_state_store_is_sqlite_unless_a_postgres_url_is_given() {
        let c = RawConfig::default()
            .build_and_validate(&env(&[("WARDEN_MASTER_KEY", "x")]))
            .unwrap();
        assert!(c.database_url.is_none());
        let c = RawConfig::default()
            .build_and_validate(&env(&[
                ("WARDEN_MASTER_KEY", "x"),
                (
                    "WARDEN_DATABASE_URL",
                    "postgres://u:pw@db/warden?sslmode=require",
                ),
                ("WARDEN_DATABASE_SCHEMA", "warden_prod"),
            ]))
            .unwrap();
        assert!(c.database_url.is_some());
        assert_eq!(c.database_schema.as_deref(), Some("warden_prod"));
        let err = RawConfig::default()
            .build_and_validate(&env(&[
                ("WARDEN_MASTER_KEY", "x"),
                ("WARDEN_DATABASE_URL", "mysql://u:pw@db/x"),
            ]))
            .unwrap_err();
        assert!(
            err.to_string().contains("WARDEN_DATABASE_URL") && !err.to_string().contains("pw"),
            "{err}"
        );
        let err = RawConfig::default()
            .build_and_validate(&env(&[
                ("WARDEN_MASTER_KEY", "x"),
                ("WARDEN_DATABASE_SCHEMA", "Bad-Name"),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("store.schema"), "{err}");
    }

    #[test]
    fn passthrough_providers_take_no_keys() {
        let text = r#"
[[providers]]
name = "byok"
format = "openai"
base_url = "https://api.openai.com/v1"
passthrough = true
keys = ["env://SOME_KEY"]
"#;
        let err = RawConfig::from_toml("w.toml", text)
            .unwrap()
            .build_and_validate(&env(&[("WARDEN_MASTER_KEY", "x"), ("SOME_KEY", "sk-1")]))
            .unwrap_err();
        assert!(err.to_string().contains("providers[0].keys"), "{err}");
    }

    #[test]
    fn a_provider_ca_file_must_hold_certificates_and_is_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = |ca_file: &std::path::Path, base_url: &str| {
            let text = format!(
                "[[providers]]\nname = \"private\"\nformat = \"openai\"\nbase_url = \"{base_url}\"\nca_file = \"{}\"\n",
                ca_file.display()
            );
            RawConfig::from_toml("w.toml", &text)
                .unwrap()
                .build_and_validate(&env(&[("WARDEN_MASTER_KEY", "x")]))
        };
        let missing =
            config(&dir.path().join("absent.pem"), "https://llm.internal/v1").unwrap_err();
        assert!(
            missing.to_string().contains("providers[0].ca_file"),
            "{missing}"
        );
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = config(&not_pem, "https://llm.internal/v1").unwrap_err();
        assert!(err.to_string().contains("providers[0].ca_file"), "{err}");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("# the private CA\n{ca}")).unwrap();
        let validated = config(&good, "https://llm.internal/v1").unwrap();
        let pem = validated.providers[0].ca_pem.clone().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----") && !pem.contains('#'));
        let plain = config(&good, "http://127.0.0.1:9/v1").unwrap_err();
        assert!(plain.to_string().contains("https://"), "{plain}");
    }

    #[test]
    fn non_loopback_needs_tls() {
        let err = RawConfig::default()
            .build_and_validate(&env(&[
                ("WARDEN_GRPC_ADDR", "0.0.0.0:50051"),
                ("WARDEN_MASTER_KEY", "x"),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("server.grpc_addr"), "{err}");
    }

    #[test]
    fn client_certificates_need_tls_and_default_to_required() {
        let build = |vars: &[(&str, &str)]| {
            let mut all = vec![("WARDEN_MASTER_KEY", "x")];
            all.extend_from_slice(vars);
            RawConfig::default().build_and_validate(&env(&all))
        };
        let tls = [
            ("WARDEN_TLS_CERT_FILE", "cp.pem"),
            ("WARDEN_TLS_KEY_FILE", "cp.key"),
        ];
        let c = build(&tls).unwrap();
        assert_eq!(c.client_certs, None);
        assert_eq!(c.tls_reload_interval, crate::tls::DEFAULT_RELOAD_INTERVAL);
        let mut with_ca = tls.to_vec();
        with_ca.push(("WARDEN_TLS_CLIENT_CA_FILE", "ca.pem"));
        assert_eq!(
            build(&with_ca).unwrap().client_certs,
            Some(crate::tls::ClientCertSettings {
                ca_file: PathBuf::from("ca.pem"),
                required: true,
            })
        );
        with_ca.push(("WARDEN_TLS_REQUIRE_CLIENT_CERTS", "false"));
        with_ca.push(("WARDEN_TLS_RELOAD_INTERVAL", "2s"));
        let c = build(&with_ca).unwrap();
        assert_eq!(c.client_certs.map(|c| c.required), Some(false));
        assert_eq!(c.tls_reload_interval, Duration::from_secs(2));

        for (vars, field) in [
            (
                vec![("WARDEN_TLS_CLIENT_CA_FILE", "ca.pem")],
                "server.client_ca_file",
            ),
            (
                [&tls[..], &[("WARDEN_TLS_REQUIRE_CLIENT_CERTS", "true")]].concat(),
                "server.require_client_certs",
            ),
            (
                [&tls[..], &[("WARDEN_TLS_RELOAD_INTERVAL", "1ms")]].concat(),
                "server.tls_reload_interval",
            ),
        ] {
            let err = build(&vars).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
