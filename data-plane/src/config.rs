//! Data-plane node configuration: flags and `WARDEN_*` environment ([`Flags`]), validated
//! into [`NodeConfig`] by [`NodeConfig::from_flags`]. The node credential comes from
//! `WARDEN_NODE_TOKEN` or a file, never from argv.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use warden_core::telemetry::LogFormat;

/// Warden data-plane node: the OpenAI-compatible API in front of LLM providers.
///
/// The node credential (`wn_…`, from `wardenctl node credential issue`) is read from
/// WARDEN_NODE_TOKEN or --node-token-file, never from the command line.
#[derive(Debug, clap::Parser)]
#[command(name = "warden-dp", version)]
pub struct Flags {
    /// HTTP listen address for the OpenAI-compatible API.
    #[arg(long, env = "WARDEN_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Control plane gRPC URL.
    #[arg(long, env = "WARDEN_CP_ADDR", default_value = "http://127.0.0.1:50051")]
    pub cp_addr: String,
    /// PEM CA bundle for an https:// control plane.
    #[arg(long, env = "WARDEN_CP_CA_FILE")]
    pub cp_ca_file: Option<PathBuf>,
    /// This node's id (default: host name plus a random suffix).
    #[arg(long, env = "WARDEN_NODE_ID")]
    pub node_id: Option<String>,
    /// File holding the node credential (alternative to WARDEN_NODE_TOKEN).
    #[arg(long, env = "WARDEN_NODE_TOKEN_FILE")]
    pub node_token_file: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "WARDEN_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Log format: text or json.
    #[arg(long, env = "WARDEN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Prefix of every key in Redis (shared state is configured with WARDEN_REDIS_URL, or
    /// WARDEN_REDIS_SENTINELS + WARDEN_REDIS_SENTINEL_SERVICE, or WARDEN_REDIS_CLUSTER;
    /// without any, limits and key rotation are per node).
    #[arg(long, env = "WARDEN_REDIS_PREFIX", default_value = "warden")]
    pub redis_prefix: String,
    /// How many nodes share the limits; while Redis is unreachable each node enforces its
    /// share (the limit divided by this).
    #[arg(long, env = "WARDEN_NODE_COUNT", default_value_t = 1)]
    pub node_count: u32,
    /// While Redis is unreachable: `open` keeps serving with per-node limits, `closed`
    /// refuses requests that have limits (503).
    #[arg(long, env = "WARDEN_REDIS_FAILURE_MODE", default_value = "open")]
    pub redis_failure_mode: String,
    /// Record client addresses in audit events as their /24 (IPv4) or /48 (IPv6) network.
    #[arg(long, env = "WARDEN_AUDIT_MASK_CLIENT_IP")]
    pub audit_mask_client_ip: bool,
    /// Directory of the on-disk audit spool, where events wait until the control plane
    /// acknowledges them; the node keeps them in a `segments/` directory (0700) it creates
    /// inside, and refuses one owned by another user (default:
    /// `$XDG_STATE_HOME/warden/audit-spool-<node id>`, else under `$HOME/.local/state`, else
    /// `.warden/`; set it to a persistent volume, and a stable --node-id, in production).
    #[arg(long, env = "WARDEN_AUDIT_SPOOL_DIR")]
    pub audit_spool_dir: Option<PathBuf>,
    /// Largest size of the audit spool in bytes.
    #[arg(long, env = "WARDEN_AUDIT_SPOOL_MAX_BYTES", default_value_t = crate::audit::spool::DEFAULT_MAX_BYTES)]
    pub audit_spool_max_bytes: u64,
    /// When the audit spool is full: `closed` refuses new requests (503) until it has room,
    /// `drop` keeps serving and drops (counts) the events that do not fit.
    #[arg(long, env = "WARDEN_AUDIT_ON_FULL", default_value = "closed")]
    pub audit_on_full: String,
}

/// Room for a few events at least.
const MIN_AUDIT_SPOOL_BYTES: u64 = 4096;

/// Start-up notes are logged as the binary's, as they were before the configuration was
/// built in the library.
const LOG_TARGET: &str = "warden_dp";

/// Why flags and environment do not make a valid configuration; each message names the
/// flag or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--log-format must be `text` or `json`")]
    LogFormat,
    #[error("cannot read {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no node credential: set WARDEN_NODE_TOKEN or --node-token-file (issue one with `wardenctl node credential issue`)"
    )]
    NoToken,
    #[error("--audit-spool-max-bytes must be at least {MIN_AUDIT_SPOOL_BYTES}")]
    SpoolTooSmall,
    #[error("--audit-on-full must be `closed` or `drop`, not `{0}`")]
    OnFull(String),
    #[error("{0}")]
    Redis(String),
    #[error("--redis-failure-mode must be `open` or `closed`, not `{0}`")]
    FailureMode(String),
}

impl Flags {
    /// The log format `--log-format` names.
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        LogFormat::parse(&self.log_format).ok_or(ConfigError::LogFormat)
    }
}

/// Validated node settings.
#[derive(Debug)]
pub struct NodeConfig {
    /// Where the OpenAI-compatible HTTP API listens.
    pub http_addr: SocketAddr,
    /// The control plane's gRPC URL (`http://…` or `https://…`).
    pub cp_addr: String,
    /// PEM CA bundle to trust for an `https://` control plane.
    pub cp_ca_file: Option<PathBuf>,
    /// This node's id, shown by `wardenctl nodes`.
    pub node_id: String,
    /// The node credential (`wn_…`).
    pub node_token: SecretString,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Connect timeout to providers.
    pub upstream_connect_timeout: Duration,
    /// Longest wait for the next bytes from a provider.
    pub upstream_read_timeout: Duration,
    pub log_format: LogFormat,
    /// Shared state; `None` runs limits and key rotation per node (one machine).
    pub redis: Option<crate::redis_state::redis::RedisSettings>,
    pub limiter: crate::limits::LimiterSettings,
    /// Audit client addresses masked to their /24 or /48 network.
    pub audit_mask_client_ip: bool,
    /// The on-disk audit spool: where, how large, what happens when it is full.
    pub audit_spool: crate::audit::spool::SpoolConfig,
}

impl NodeConfig {
    /// Settings with defaults for everything but the essentials.
    pub fn new(
        http_addr: SocketAddr,
        cp_addr: String,
        node_id: String,
        node_token: SecretString,
    ) -> Self {
        let audit_spool = crate::audit::spool::SpoolConfig::for_node(&node_id);
        Self {
            http_addr,
            cp_addr,
            cp_ca_file: None,
            node_id,
            node_token,
            max_body_bytes: 10 * 1024 * 1024,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_read_timeout: Duration::from_secs(300),
            log_format: LogFormat::Text,
            redis: None,
            limiter: crate::limits::LimiterSettings::default(),
            audit_mask_client_ip: false,
            audit_spool,
        }
    }
}

impl NodeConfig {
    /// Validates `flags` and the process environment `env` into the node's settings, and
    /// logs what an operator should know about them (call after telemetry is set up).
    pub fn from_flags(flags: Flags, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let log_format = flags.log_format()?;
        let token = match (&flags.node_token_file, env.get("WARDEN_NODE_TOKEN")) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
            (None, Some(t)) => t.trim().to_owned(),
            (None, None) => return Err(ConfigError::NoToken),
        };
        let mut config = NodeConfig::new(
            flags.http_addr,
            flags.cp_addr,
            flags.node_id.unwrap_or_else(default_node_id),
            SecretString::from(token),
        );
        config.cp_ca_file = flags.cp_ca_file;
        config.max_body_bytes = flags.max_body_bytes;
        config.log_format = log_format;
        config.audit_mask_client_ip = flags.audit_mask_client_ip;
        if let Some(dir) = flags.audit_spool_dir {
            config.audit_spool.dir = dir;
        } else {
            config.audit_spool.dir =
                crate::audit::spool::SpoolConfig::default_dir(&config.node_id, env);
            config.audit_spool.previous_default = Some(
                crate::audit::spool::SpoolConfig::old_default_dir(&config.node_id, env),
            );
            tracing::info!(
                target: LOG_TARGET,
                dir = %config.audit_spool.dir.display(),
                "audit spool in the default state directory: set --audit-spool-dir to a persistent volume (and a stable --node-id)"
            );
        }
        if flags.audit_spool_max_bytes < MIN_AUDIT_SPOOL_BYTES {
            return Err(ConfigError::SpoolTooSmall);
        }
        config.audit_spool.max_bytes = flags.audit_spool_max_bytes;
        config.audit_spool.on_full = crate::audit::spool::OnFull::parse(&flags.audit_on_full)
            .ok_or(ConfigError::OnFull(flags.audit_on_full))?;
        config.redis = redis_from_env(env, flags.redis_prefix).map_err(ConfigError::Redis)?;
        config.limiter.node_count = flags.node_count.max(1);
        config.limiter.failure_mode = match flags.redis_failure_mode.as_str() {
            "open" => crate::limits::FailureMode::Open,
            "closed" => crate::limits::FailureMode::Closed,
            _ => return Err(ConfigError::FailureMode(flags.redis_failure_mode)),
        };
        if config.redis.is_none() && flags.node_count > 1 {
            tracing::warn!(
                target: LOG_TARGET,
                "several nodes but no Redis: each node enforces the full limits on its own"
            );
        }
        if config.limiter.failure_mode == crate::limits::FailureMode::Open {
            tracing::warn!(
                target: LOG_TARGET,
                redis_failure_mode = "open",
                "--redis-failure-mode open: while Redis is unreachable each node applies the limits and budgets on its own (set `closed` to refuse requests instead)"
            );
        }
        Ok(config)
    }

    /// The settings in effect that weaken the node's guarantees, as `(name, value)`; the
    /// node records them in one `node.dangerous_settings` audit event at start-up.
    pub fn dangerous_settings(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.limiter.failure_mode == crate::limits::FailureMode::Open {
            out.push(("redis_failure_mode", "open"));
        }
        if self.audit_spool.on_full == crate::audit::spool::OnFull::Drop {
            out.push(("audit_on_full", "drop"));
        }
        out
    }
}

/// A stable default node id: the host name, or a random one.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    match host {
        Some(h) => format!("{h}-{suffix}"),
        None => format!("node-{suffix}"),
    }
}

/// Builds Redis settings from the environment: `WARDEN_REDIS_URL` (`redis://` or
/// `rediss://`, user and password in the URL), or `WARDEN_REDIS_SENTINELS` (comma-separated
/// sentinel URLs) with `WARDEN_REDIS_SENTINEL_SERVICE`, `WARDEN_REDIS_USERNAME` and
/// `WARDEN_REDIS_PASSWORD` for the master, or `WARDEN_REDIS_CLUSTER` (comma-separated seed
/// URLs). `None` when none is set. URLs hold credentials, so they are read from the
/// environment, never from flags.
pub fn redis_from_env(
    env: &std::collections::HashMap<String, String>,
    prefix: String,
) -> Result<Option<crate::redis_state::redis::RedisSettings>, String> {
    use crate::redis_state::redis::{RedisSettings, Topology};
    let list = |v: &str| -> Vec<SecretString> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect()
    };
    let topology = if let Some(url) = env.get("WARDEN_REDIS_URL").filter(|v| !v.is_empty()) {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            return Err("WARDEN_REDIS_URL must start with redis://, rediss:// or unix://".into());
        }
        Topology::Single(SecretString::from(url.clone()))
    } else if let Some(v) = env.get("WARDEN_REDIS_SENTINELS").filter(|v| !v.is_empty()) {
        let service = env
            .get("WARDEN_REDIS_SENTINEL_SERVICE")
            .cloned()
            .ok_or("WARDEN_REDIS_SENTINELS needs WARDEN_REDIS_SENTINEL_SERVICE")?;
        Topology::Sentinel {
            urls: list(v),
            service,
            master_username: env.get("WARDEN_REDIS_USERNAME").cloned(),
            master_password: env
                .get("WARDEN_REDIS_PASSWORD")
                .map(|p| SecretString::from(p.clone())),
        }
    } else if let Some(v) = env.get("WARDEN_REDIS_CLUSTER").filter(|v| !v.is_empty()) {
        Topology::Cluster(list(v))
    } else {
        return Ok(None);
    };
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err("the redis key prefix must be non-empty and contain no braces".into());
    }
    Ok(Some(RedisSettings {
        topology,
        prefix,
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(250),
    }))
}
