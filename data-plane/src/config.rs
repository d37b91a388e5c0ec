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
}

impl NodeConfig {
    /// Settings with defaults for everything but the essentials.
    pub fn new(
        http_addr: SocketAddr,
        cp_addr: String,
        node_id: String,
        node_token: SecretString,
    ) -> Self {
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
