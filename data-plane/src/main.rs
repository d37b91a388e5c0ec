//! `warden-dp`: the data-plane node binary. Parses flags and environment, then runs
//! [`warden_data_plane::run`].

#![allow(clippy::print_stderr, reason = "fatal start-up errors go to stderr")]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use warden_data_plane::NodeConfig;

/// Warden data-plane node: the OpenAI-compatible API in front of LLM providers.
///
/// The node credential (`wn_…`, from `wardenctl node credential issue`) is read from
/// WARDEN_NODE_TOKEN or --node-token-file, never from the command line.
#[derive(Debug, Parser)]
#[command(name = "warden-dp", version)]
struct Args {
    /// HTTP listen address for the OpenAI-compatible API.
    #[arg(long, env = "WARDEN_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Control plane gRPC URL.
    #[arg(long, env = "WARDEN_CP_ADDR", default_value = "http://127.0.0.1:50051")]
    cp_addr: String,
    /// PEM CA bundle for an https:// control plane.
    #[arg(long, env = "WARDEN_CP_CA_FILE")]
    cp_ca_file: Option<PathBuf>,
    /// This node's id (default: host name plus a random suffix).
    #[arg(long, env = "WARDEN_NODE_ID")]
    node_id: Option<String>,
    /// File holding the node credential (alternative to WARDEN_NODE_TOKEN).
    #[arg(long, env = "WARDEN_NODE_TOKEN_FILE")]
    node_token_file: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "WARDEN_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Log format: text or json.
    #[arg(long, env = "WARDEN_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Prefix of every key in Redis (shared state is configured with WARDEN_REDIS_URL, or
    /// WARDEN_REDIS_SENTINELS + WARDEN_REDIS_SENTINEL_SERVICE, or WARDEN_REDIS_CLUSTER;
    /// without any, limits and key rotation are per node).
    #[arg(long, env = "WARDEN_REDIS_PREFIX", default_value = "warden")]
    redis_prefix: String,
    /// How many nodes share the limits; while Redis is unreachable each node enforces its
    /// share (the limit divided by this).
    #[arg(long, env = "WARDEN_NODE_COUNT", default_value_t = 1)]
    node_count: u32,
    /// While Redis is unreachable: `open` keeps serving with per-node limits, `closed`
    /// refuses requests that have limits (503).
    #[arg(long, env = "WARDEN_REDIS_FAILURE_MODE", default_value = "open")]
    redis_failure_mode: String,
    /// Record client addresses in audit events as their /24 (IPv4) or /48 (IPv6) network.
    #[arg(long, env = "WARDEN_AUDIT_MASK_CLIENT_IP")]
    audit_mask_client_ip: bool,
    /// Directory of the on-disk audit spool, where events wait until the control plane
    /// acknowledges them (default: `warden-audit-spool-<node id>` under the OS temporary
    /// directory; set it to a persistent volume, and a stable --node-id, in production).
    #[arg(long, env = "WARDEN_AUDIT_SPOOL_DIR")]
    audit_spool_dir: Option<PathBuf>,
    /// Largest size of the audit spool in bytes.
    #[arg(long, env = "WARDEN_AUDIT_SPOOL_MAX_BYTES", default_value_t = warden_data_plane::audit::spool::DEFAULT_MAX_BYTES)]
    audit_spool_max_bytes: u64,
    /// When the audit spool is full: `closed` refuses new requests (503) until it has room,
    /// `drop` keeps serving and drops (counts) the events that do not fit.
    #[arg(long, env = "WARDEN_AUDIT_ON_FULL", default_value = "closed")]
    audit_on_full: String,
}

/// Room for a few events at least.
const MIN_AUDIT_SPOOL_BYTES: u64 = 4096;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    warden_core::install_crypto_providers();
    let args = Args::parse();
    let log_format = warden_core::telemetry::LogFormat::parse(&args.log_format)
        .context("--log-format must be `text` or `json`")?;
    let token = match (&args.node_token_file, std::env::var("WARDEN_NODE_TOKEN")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned(),
        (None, Ok(t)) => t.trim().to_owned(),
        (None, Err(_)) => anyhow::bail!(
            "no node credential: set WARDEN_NODE_TOKEN or --node-token-file (issue one with `wardenctl node credential issue`)"
        ),
    };
    warden_core::telemetry::init(log_format);
    let mut config = NodeConfig::new(
        args.http_addr,
        args.cp_addr,
        args.node_id
            .unwrap_or_else(warden_data_plane::config::default_node_id),
        SecretString::from(token),
    );
    config.cp_ca_file = args.cp_ca_file;
    config.max_body_bytes = args.max_body_bytes;
    config.log_format = log_format;
    config.audit_mask_client_ip = args.audit_mask_client_ip;
    if let Some(dir) = args.audit_spool_dir {
        config.audit_spool.dir = dir;
    } else {
        tracing::warn!(
            dir = %config.audit_spool.dir.display(),
            "audit spool in the temporary directory: set --audit-spool-dir to a persistent volume"
        );
    }
    if args.audit_spool_max_bytes < MIN_AUDIT_SPOOL_BYTES {
        anyhow::bail!("--audit-spool-max-bytes must be at least {MIN_AUDIT_SPOOL_BYTES}");
    }
    config.audit_spool.max_bytes = args.audit_spool_max_bytes;
    config.audit_spool.on_full =
        warden_data_plane::audit::spool::OnFull::parse(&args.audit_on_full).with_context(|| {
            format!(
                "--audit-on-full must be `closed` or `drop`, not `{}`",
                args.audit_on_full
            )
        })?;
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    config.redis = warden_data_plane::config::redis_from_env(&env, args.redis_prefix)
        .map_err(anyhow::Error::msg)?;
    drop(env);
    config.limiter.node_count = args.node_count.max(1);
    config.limiter.failure_mode = match args.redis_failure_mode.as_str() {
        "open" => warden_data_plane::limits::FailureMode::Open,
        "closed" => warden_data_plane::limits::FailureMode::Closed,
        other => anyhow::bail!("--redis-failure-mode must be `open` or `closed`, not `{other}`"),
    };
    if config.redis.is_none() && args.node_count > 1 {
        tracing::warn!("several nodes but no Redis: each node enforces the full limits on its own");
    }
    if config.limiter.failure_mode == warden_data_plane::limits::FailureMode::Open
        && config.redis.is_some()
    {
        tracing::info!("redis failure mode: open (per-node limits while Redis is unreachable)");
    }
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            signal.cancel();
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    warden_data_plane::run(config, listener, shutdown).await?;
    Ok(())
}
