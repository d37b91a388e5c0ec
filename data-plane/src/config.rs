//! Data-plane node configuration: flags and `WARDEN_*` environment, validated into
//! [`NodeConfig`]. The node credential comes from `WARDEN_NODE_TOKEN` or a file, never from
//! argv.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use warden_core::telemetry::LogFormat;

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
