//! Data-plane node configuration: flags and `WARDEN_*` environment ([`Flags`]), validated
//! into [`NodeConfig`] by [`NodeConfig::from_flags`]. The node credential comes from
//! `WARDEN_NODE_TOKEN` or a file, never from argv.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use warden_core::telemetry::LogFormat;

mod redis_env;
pub use redis_env::redis_from_env;
use redis_env::{plain_remote_redis, redis_tls_ca};

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
    /// Control plane gRPC URL, or several replicas' URLs comma-separated (a host name is
    /// resolved at every connect round and each of its records tried). The node attaches to
    /// the first that answers, stays with it, and moves on to the next when it fails.
    #[arg(long, env = "WARDEN_CP_ADDR", default_value = "http://127.0.0.1:50051")]
    pub cp_addr: String,
    /// Past this long without the control plane (its Watch stream closed), refuse every
    /// client credential (503 `control_plane_unreachable`): none can be confirmed
    /// unrevoked. `off` (default): serve from the last snapshot until the link returns.
    #[arg(long, env = "WARDEN_MAX_SNAPSHOT_AGE", default_value = "off")]
    pub max_snapshot_age: String,
    /// PEM CA bundle for an https:// control plane.
    #[arg(long, env = "WARDEN_CP_CA_FILE")]
    pub cp_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to an https:// control plane (mTLS); a node
    /// credential issued with `--client-cert` of it is accepted only with it. Re-read at
    /// every connection, so a renewed certificate needs no restart.
    #[arg(
        long,
        env = "WARDEN_CP_CLIENT_CERT_FILE",
        requires = "cp_client_key_file"
    )]
    pub cp_client_cert_file: Option<PathBuf>,
    /// PEM private key of --cp-client-cert-file.
    #[arg(
        long,
        env = "WARDEN_CP_CLIENT_KEY_FILE",
        requires = "cp_client_cert_file"
    )]
    pub cp_client_key_file: Option<PathBuf>,
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
    /// PEM CA certificates to trust for a `rediss://` Redis (WARDEN_REDIS_URL or
    /// WARDEN_REDIS_CLUSTER) instead of the system's roots (default: the system's roots).
    #[arg(long, env = "WARDEN_REDIS_CA_FILE", value_name = "PEM")]
    pub redis_ca_file: Option<PathBuf>,
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
    /// Proxies in front of this node whose forwarding header is believed (CIDRs or
    /// addresses, comma-separated): from them, the client address is the right-most
    /// address of --client-ip-header that is not itself a trusted proxy. Empty (default):
    /// forwarding headers are ignored and the client is the TCP peer.
    #[arg(
        long,
        env = "WARDEN_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write the client address in: `x-forwarded-for` or
    /// `forwarded` (RFC 7239). Only this one is read.
    #[arg(
        long,
        env = "WARDEN_CLIENT_IP_HEADER",
        default_value = "x-forwarded-for"
    )]
    pub client_ip_header: String,
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
    /// Longest wait for a complete request head (from accept, or from a request's first
    /// byte on a kept-alive connection); then the connection is closed. E.g. `10s`.
    #[arg(long, env = "WARDEN_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_read_timeout: Duration,
    /// Longest wait for a request body, once its head has arrived (answered 408).
    #[arg(long, env = "WARDEN_HTTP_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_body_read_timeout: Duration,
    /// Longest a kept-alive connection may sit idle between two requests (never applies
    /// while a response, e.g. a stream, is being sent).
    #[arg(long, env = "WARDEN_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// Most open client connections on the API listener; beyond, new ones are closed at once.
    #[arg(long, env = "WARDEN_HTTP_MAX_CONNECTIONS", default_value_t = crate::listener::DEFAULT_MAX_CONNECTIONS)]
    pub http_max_connections: usize,
    /// Most requests in flight on the API listener (a stream counts until its last byte);
    /// beyond, requests get 503 `overloaded` with `Retry-After: 1`.
    #[arg(long, env = "WARDEN_HTTP_MAX_CONCURRENT_REQUESTS", default_value_t = crate::listener::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub http_max_concurrent_requests: usize,
    /// Longest wait for the next bytes from a provider (an answer's head, a stream's next
    /// chunk): a request then moves to the next key; a stream already answering is cut.
    #[arg(long, env = "WARDEN_UPSTREAM_READ_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub upstream_read_timeout: Duration,
    /// Longest a whole upstream exchange may take, keys and fallbacks tried and a streamed
    /// answer included: `off`, or a duration such as `10m`. Past it a request not yet
    /// answered gets 504, a stream is ended with an error event.
    #[arg(long, env = "WARDEN_UPSTREAM_DEADLINE", default_value = "off")]
    pub upstream_deadline: String,
    /// Listener for `/metrics`, `/readyz` and `/healthz` (kept off the API port): an
    /// address, or `off`.
    #[arg(long, env = "WARDEN_OPS_ADDR", default_value = DEFAULT_OPS_ADDR)]
    pub ops_addr: String,
    /// Send the node credential over plain `http://` to a control plane that is not on this
    /// machine, and use a plain `redis://` Redis that is not on it (readable on the network;
    /// logged as a warning and audited as a dangerous setting). Without it such a
    /// --cp-addr or WARDEN_REDIS_URL is refused.
    #[arg(long, env = "WARDEN_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    /// Failed logins from one client address within a window (a minute) past which the
    /// address is answered 429, before any credential lookup, until the window closes.
    #[arg(long, env = "WARDEN_FAILED_LOGIN_LIMIT", default_value_t = crate::proxy::failed_logins::DEFAULT_LIMIT)]
    pub failed_login_limit: u32,
    /// The failed-login window (tests shorten it).
    #[arg(long, env = "WARDEN_FAILED_LOGIN_WINDOW", default_value = "60s", value_parser = humantime::parse_duration, hide = true)]
    pub failed_login_window: Duration,
    #[command(flatten)]
    pub ip_block: crate::ip_block::IpBlockFlags,
    #[command(flatten)]
    pub trace: crate::trace::TraceFlags,
    /// PEM certificate chain (leaf first) to serve the API over HTTPS, with
    /// --http-tls-key-file; both or neither. Re-read when the file changes.
    #[arg(long, env = "WARDEN_HTTP_TLS_CERT_FILE")]
    pub http_tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WARDEN_HTTP_TLS_KEY_FILE")]
    pub http_tls_key_file: Option<PathBuf>,
    /// How often the certificate and key files are read for changes; a changed, good pair
    /// is served to new connections (open ones keep theirs).
    #[arg(long, env = "WARDEN_HTTP_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub http_tls_reload_interval: Duration,
    /// On SIGTERM: how long in-flight requests and streams may run before streams are cut.
    #[arg(long, env = "WARDEN_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// `Strict-Transport-Security` max-age on every HTTPS answer: `off`, or a duration such
    /// as `365d`. Needs --http-tls-cert-file.
    #[arg(long, env = "WARDEN_HTTP_HSTS_MAX_AGE", default_value = DEFAULT_HTTP_HSTS_MAX_AGE)]
    pub http_hsts_max_age: String,
    /// Provider hosts this node may send requests to: `HOST`, `HOST:PORT`, `*.DOMAIN`,
    /// `[IPV6]:PORT`; repeat the flag, or a comma list in the variable. Empty (default): any
    /// host whose addresses are public. A listed host may also be private or loopback.
    /// Link-local and cloud-metadata addresses are always refused.
    #[arg(
        long = "egress-allow",
        env = "WARDEN_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<String>,
    /// Let upstreams resolve to private addresses (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7) without being on --egress-allow.
    #[arg(long, env = "WARDEN_EGRESS_ALLOW_PRIVATE")]
    pub egress_allow_private: bool,
    /// Let upstreams resolve to loopback addresses without being on --egress-allow (a
    /// provider on this machine, in development).
    #[arg(long, env = "WARDEN_EGRESS_ALLOW_LOOPBACK")]
    pub egress_allow_loopback: bool,
    /// HTTP(S) proxy for every upstream request (`http://proxy.corp:3128`), without
    /// credentials in the URL (see --egress-proxy-credentials-file). Without it, proxy
    /// variables such as HTTPS_PROXY are ignored.
    #[arg(long, env = "WARDEN_EGRESS_PROXY")]
    pub egress_proxy: Option<String>,
    /// File holding the proxy's `user:password` (alternative to
    /// WARDEN_EGRESS_PROXY_CREDENTIALS), sent as `Proxy-Authorization: Basic`.
    #[arg(long, env = "WARDEN_EGRESS_PROXY_CREDENTIALS_FILE")]
    pub egress_proxy_credentials_file: Option<PathBuf>,
    /// TEST ONLY: answer `NAME=IP` instead of DNS, for `.invalid` names (repeatable).
    #[arg(
        long = "egress-test-resolve",
        env = "WARDEN_EGRESS_TEST_RESOLVE",
        value_delimiter = ',',
        hide = true
    )]
    pub egress_test_resolve: Vec<String>,
}

/// HSTS is off unless asked for: a browser that saw it refuses plain HTTP to the host for
/// max-age, which an operator must choose knowingly.
pub const DEFAULT_HTTP_HSTS_MAX_AGE: &str = "off";

/// Where the ops listener binds unless told otherwise: loopback only.
pub const DEFAULT_OPS_ADDR: &str = "127.0.0.1:9464";
/// Longest wait for a request body (`--http-body-read-timeout`).
pub const DEFAULT_HTTP_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A humantime duration (`10s`, `1m30s`) of at least a millisecond.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_owned());
    }
    Ok(d)
}

/// `off`, or a duration.
fn parse_optional_duration(raw: &str) -> Result<Option<Duration>, String> {
    match raw.trim() {
        "off" | "" => Ok(None),
        d => parse_duration(d).map(Some),
    }
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
    #[error("--trusted-proxies: {0}")]
    TrustedProxies(String),
    #[error("--client-ip-header must be `x-forwarded-for` or `forwarded`, not `{0}`")]
    ClientIpHeader(String),
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
    #[error(transparent)]
    RedisCa(#[from] warden_core::ca_bundle::CaBundleError),
    #[error("--redis-failure-mode must be `open` or `closed`, not `{0}`")]
    FailureMode(String),
    #[error("--upstream-deadline must be `off` or a duration such as `10m`: {0}")]
    UpstreamDeadline(String),
    #[error("--ops-addr must be `off` or an address such as `127.0.0.1:9464`, not `{0}`")]
    OpsAddr(String),
    #[error("--{0} must be at least 1")]
    ZeroCap(&'static str),
    #[error(
        "refusing to send the node credential in clear to --cp-addr {0}: it is not a loopback address; use https:// (with --cp-ca-file), or pass --allow-plaintext (WARDEN_ALLOW_PLAINTEXT=true) on a network you trust"
    )]
    Plaintext(String),
    #[error(transparent)]
    CpAddr(#[from] crate::cp_addrs::AddrError),
    #[error("--max-snapshot-age must be `off` or a duration such as `10m`: {0}")]
    MaxSnapshotAge(String),
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    #[error(
        "--http-tls-cert-file (WARDEN_HTTP_TLS_CERT_FILE) and --http-tls-key-file (WARDEN_HTTP_TLS_KEY_FILE) go together: give both, or neither for plain HTTP"
    )]
    TlsPair,
    #[error("--http-hsts-max-age must be `off` or a duration such as `365d`: {0}")]
    HstsMaxAge(String),
    #[error(
        "--http-hsts-max-age needs HTTPS on the node (--http-tls-cert-file); behind a TLS-terminating proxy, set the header there"
    )]
    HstsWithoutTls,
    #[error("{0}")]
    Egress(String),
    #[error(
        "--cp-client-cert-file and --cp-client-key-file go together, with an https:// --cp-addr"
    )]
    ClientCertNeedsTls,
    /// A trace export or log filter setting (the message names it).
    #[error("{0}")]
    Tracing(String),
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
    /// The control plane replicas' gRPC URLs (`http://…` or `https://…`), in order.
    pub cp_addrs: Vec<String>,
    /// `--max-snapshot-age`: past it without the control plane, client credentials are
    /// refused; `None`: no bound.
    pub max_snapshot_age: Option<Duration>,
    /// PEM CA bundle to trust for an `https://` control plane.
    pub cp_ca_file: Option<PathBuf>,
    /// Client certificate and key presented to the control plane (`https://` only).
    pub cp_client_identity: Option<(PathBuf, PathBuf)>,
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
    /// Proxies whose forwarding header names the client (`--trusted-proxies`).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// The on-disk audit spool: where, how large, what happens when it is full.
    pub audit_spool: crate::audit::spool::SpoolConfig,
    /// Timeouts and caps of the API listener.
    pub http_limits: crate::listener::Limits,
    /// Longest wait for a request body.
    pub http_body_read_timeout: Duration,
    /// Longest a whole upstream exchange may take; `None`: no deadline.
    pub upstream_deadline: Option<Duration>,
    /// After the stop signal: how long requests may run before streams are cut.
    pub drain_timeout: Duration,
    /// Where `/metrics`, `/readyz` and `/healthz` are served; `None`: nowhere.
    pub ops_addr: Option<SocketAddr>,
    /// `--allow-plaintext`: an `http://` control plane off loopback is used (else refused).
    pub allow_plaintext: bool,
    /// Longest wait for a request body once its headers are authenticated.
    /// Failed logins per address and window past which the address gets 429.
    pub failed_login_limit: u32,
    /// How long failed logins of an address are counted together.
    pub failed_login_window: Duration,
    /// Automatic blocks of client addresses after failed logins.
    pub ip_block: crate::ip_block::Settings,
    /// HTTPS on the API listener; `None`: plain HTTP.
    pub http_tls: Option<crate::listener::tls::TlsSettings>,
    /// What the upstream client may connect to, and through which proxy.
    pub egress: crate::egress::EgressSettings,
    /// `--upstream-trace-context`: providers get the node's own `traceparent`.
    pub upstream_trace_context: bool,
    /// `--log-level-file`: the log filter's file, re-read on SIGHUP.
    pub log_level_file: Option<PathBuf>,
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
            cp_addrs: vec![cp_addr],
            max_snapshot_age: None,
            cp_ca_file: None,
            cp_client_identity: None,
            node_id,
            node_token,
            max_body_bytes: 10 * 1024 * 1024,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_read_timeout: Duration::from_secs(300),
            log_format: LogFormat::Text,
            redis: None,
            limiter: crate::limits::LimiterSettings::default(),
            audit_mask_client_ip: false,
            trusted_proxies: crate::client_addr::TrustedProxies::default(),
            audit_spool,
            http_limits: crate::listener::Limits::default(),
            http_body_read_timeout: DEFAULT_HTTP_BODY_READ_TIMEOUT,
            upstream_deadline: None,
            drain_timeout: Duration::from_secs(30),
            ops_addr: DEFAULT_OPS_ADDR.parse().ok(),
            allow_plaintext: false,
            failed_login_limit: crate::proxy::failed_logins::DEFAULT_LIMIT,
            failed_login_window: crate::proxy::failed_logins::DEFAULT_WINDOW,
            ip_block: crate::ip_block::Settings::default(),
            http_tls: None,
            egress: crate::egress::EgressSettings::default(),
            upstream_trace_context: false,
            log_level_file: None,
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
        let cp_addrs = crate::cp_addrs::parse(&flags.cp_addr)?;
        let mut config = NodeConfig::new(
            flags.http_addr,
            flags.cp_addr,
            flags.node_id.unwrap_or_else(default_node_id),
            SecretString::from(token),
        );
        config.cp_addrs = cp_addrs;
        config.max_snapshot_age = parse_optional_duration(&flags.max_snapshot_age)
            .map_err(ConfigError::MaxSnapshotAge)?;
        config.cp_ca_file = flags.cp_ca_file;
        let all_tls = config.cp_addrs.iter().all(|a| a.starts_with("https://"));
        config.cp_client_identity = match (flags.cp_client_cert_file, flags.cp_client_key_file) {
            (Some(cert), Some(key)) if all_tls => Some((cert, key)),
            (Some(_), _) | (_, Some(_)) => return Err(ConfigError::ClientCertNeedsTls),
            (None, None) => None,
        };
        config.allow_plaintext = flags.allow_plaintext;
        if let Some(clear) = config.cp_addr_in_clear() {
            if !config.allow_plaintext {
                return Err(ConfigError::Plaintext(clear.to_owned()));
            }
            tracing::warn!(
                target: LOG_TARGET,
                cp_addr = %clear,
                "--allow-plaintext: the node credential and every snapshot travel to the control plane unencrypted; anyone on the network path can read the credential and reuse it"
            );
        }
        config.max_body_bytes = flags.max_body_bytes;
        config.log_format = log_format;
        config.audit_mask_client_ip = flags.audit_mask_client_ip;
        config.trusted_proxies = trusted_proxies(&flags.trusted_proxies, &flags.client_ip_header)?;
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
        if let Some(host) = config.redis.as_ref().and_then(plain_remote_redis) {
            if !config.allow_plaintext {
                return Err(ConfigError::Redis(format!(
                    "refusing a plain redis:// link to {host}, which is not a loopback address (limits, key health and the Redis password would cross the network in clear): use rediss:// (with --redis-ca-file), or pass --allow-plaintext on a network you trust"
                )));
            }
            tracing::warn!(target: LOG_TARGET, redis_host = %host, "--allow-plaintext: the Redis link (and its password) is not encrypted");
        }
        if let Some(path) = &flags.redis_ca_file {
            let settings = config.redis.as_mut().ok_or_else(|| {
                ConfigError::Redis("--redis-ca-file needs a rediss:// WARDEN_REDIS_URL".into())
            })?;
            redis_tls_ca(settings)?;
            settings.root_ca = Some(warden_core::ca_bundle::read("--redis-ca-file", path)?);
        }
        config.limiter.node_count = flags.node_count.max(1);
        config.limiter.failure_mode = match flags.redis_failure_mode.as_str() {
            "open" => crate::limits::FailureMode::Open,
            "closed" => crate::limits::FailureMode::Closed,
            _ => return Err(ConfigError::FailureMode(flags.redis_failure_mode)),
        };
        config.http_limits = crate::listener::Limits {
            header_read_timeout: flags.http_header_read_timeout,
            idle_timeout: flags.http_idle_timeout,
            max_connections: nonzero(flags.http_max_connections, "http-max-connections")?,
            max_concurrent_requests: nonzero(
                flags.http_max_concurrent_requests,
                "http-max-concurrent-requests",
            )?,
        };
        config.http_body_read_timeout = flags.http_body_read_timeout;
        config.drain_timeout = flags.drain_timeout;
        config.upstream_read_timeout = flags.upstream_read_timeout;
        config.upstream_deadline = parse_optional_duration(&flags.upstream_deadline)
            .map_err(ConfigError::UpstreamDeadline)?;
        config.ops_addr = match flags.ops_addr.trim() {
            "off" => None,
            a => Some(
                a.parse()
                    .map_err(|_| ConfigError::OpsAddr(flags.ops_addr.clone()))?,
            ),
        };
        if flags.failed_login_limit == 0 {
            return Err(ConfigError::Zero("--failed-login-limit"));
        }
        config.failed_login_limit = flags.failed_login_limit;
        if flags.failed_login_window.is_zero() {
            return Err(ConfigError::Zero("--failed-login-window"));
        }
        config.failed_login_window = flags.failed_login_window;
        // Checked again here (main built the exporter from them) for callers of this alone.
        flags.trace.otlp(env).map_err(ConfigError::Tracing)?;
        config.upstream_trace_context = flags.trace.upstream_trace_context;
        config.log_level_file = flags.trace.log_level_file.clone();
        config.ip_block = flags.ip_block.settings().map_err(ConfigError::Zero)?;
        if !config.ip_block.enabled() {
            tracing::warn!(target: LOG_TARGET, "--ip-block-threshold 0: addresses are never blocked after failed logins (only the 429 throttle applies)");
        }
        config.http_tls = http_tls(
            flags.http_tls_cert_file,
            flags.http_tls_key_file,
            flags.http_tls_reload_interval,
            &flags.http_hsts_max_age,
        )?;
        if config.http_tls.is_none() && !config.http_addr.ip().is_loopback() {
            tracing::warn!(
                target: LOG_TARGET,
                http_addr = %config.http_addr,
                "the API is served in plain HTTP off loopback: client credentials cross the network in clear unless a TLS-terminating proxy is in front (set --http-tls-cert-file and --http-tls-key-file for HTTPS)"
            );
        }
        config.egress = egress_from_flags(
            flags.egress_allow,
            flags.egress_allow_private,
            flags.egress_allow_loopback,
            flags.egress_proxy,
            flags.egress_proxy_credentials_file,
            flags.egress_test_resolve,
            env,
        )?;
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

    /// The first control-plane address that would carry the node credential in clear off
    /// this machine (`http://` to a host that is not loopback), if any; such an address
    /// needs --allow-plaintext.
    pub fn cp_addr_in_clear(&self) -> Option<&str> {
        self.cp_addrs.iter().map(String::as_str).find(|a| {
            warden_core::plaintext::Transport::of(a)
                == warden_core::plaintext::Transport::PlainRemote
        })
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
        if self.cp_addr_in_clear().is_some() {
            out.push(("allow_plaintext", "true"));
        }
        if self.redis.as_ref().and_then(plain_remote_redis).is_some() {
            out.push(("redis_plaintext", "true"));
        }
        if !self.ip_block.enabled() {
            out.push(("ip_block_threshold", "0"));
        }
        if self.egress.policy.allow_private {
            out.push(("egress_allow_private", "true"));
        }
        if self.egress.policy.allow_loopback {
            out.push(("egress_allow_loopback", "true"));
        }
        if self
            .trusted_proxies
            .networks
            .iter()
            .any(|n| n.prefix_len() == 0)
        {
            out.push(("trusted_proxies", "any"));
        }
        out
    }
}

/// The trusted proxies from `--trusted-proxies` and `--client-ip-header`; trusting every
/// address (`0.0.0.0/0`, `::/0`) lets any client write its own address, and is warned.
fn trusted_proxies(
    raw: &[String],
    header: &str,
) -> Result<crate::client_addr::TrustedProxies, ConfigError> {
    let header = crate::client_addr::ForwardedHeader::parse(header)
        .ok_or_else(|| ConfigError::ClientIpHeader(header.to_owned()))?;
    let raw: Vec<String> = raw
        .iter()
        .filter(|r| !r.trim().is_empty())
        .cloned()
        .collect();
    let networks =
        warden_core::access::parse_networks(&raw).map_err(ConfigError::TrustedProxies)?;
    if networks.iter().any(|n| n.prefix_len() == 0) {
        tracing::warn!(
            target: LOG_TARGET,
            "--trusted-proxies trusts every address: any client can choose the address the allow-lists, the audit and the failed-login throttle see"
        );
    }
    Ok(crate::client_addr::TrustedProxies { networks, header })
}

/// The API listener's HTTPS settings: both files or neither; HSTS only with them.
fn http_tls(
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    reload_interval: Duration,
    hsts_max_age: &str,
) -> Result<Option<crate::listener::tls::TlsSettings>, ConfigError> {
    let hsts_max_age = parse_optional_duration(hsts_max_age).map_err(ConfigError::HstsMaxAge)?;
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(crate::listener::tls::TlsSettings {
            cert_file,
            key_file,
            reload_interval,
            hsts_max_age,
        })),
        (None, None) if hsts_max_age.is_some() => Err(ConfigError::HstsWithoutTls),
        (None, None) => Ok(None),
        _ => Err(ConfigError::TlsPair),
    }
}

/// The egress settings from their flags: the allow-list, the `--egress-allow-*` switches,
/// the proxy and its credential (from a file, or `WARDEN_EGRESS_PROXY_CREDENTIALS` in `env`;
/// never from the command line or the URL, where `ps` would show it), and the test-only
/// resolver map. Logs what weakens the policy.
fn egress_from_flags(
    allow: Vec<String>,
    allow_private: bool,
    allow_loopback: bool,
    proxy: Option<String>,
    credentials_file: Option<PathBuf>,
    test_resolve: Vec<String>,
    env: &HashMap<String, String>,
) -> Result<crate::egress::EgressSettings, ConfigError> {
    use crate::egress::{AllowEntry, EgressPolicy, EgressProxy, EgressSettings};
    let bad = |m: String| ConfigError::Egress(m);
    let allow = allow
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.parse::<AllowEntry>()
                .map_err(|m| bad(format!("--egress-allow: {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut policy = EgressPolicy {
        allow,
        allow_private,
        allow_loopback,
        ..EgressPolicy::default()
    };
    for entry in test_resolve.iter().filter(|e| !e.trim().is_empty()) {
        let (name, ip) = crate::egress::parse_test_resolve(entry)
            .map_err(|m| bad(format!("--egress-test-resolve: {m}")))?;
        policy.test_resolve.entry(name).or_default().push(ip);
    }
    let proxy = match proxy.filter(|p| !p.trim().is_empty()) {
        None => None,
        Some(raw) => {
            let url = reqwest::Url::parse(raw.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| bad("--egress-proxy must be an http:// or https:// URL".into()))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad(
                    "--egress-proxy must not carry credentials: put `user:password` in --egress-proxy-credentials-file or WARDEN_EGRESS_PROXY_CREDENTIALS".into(),
                ));
            }
            let credentials = match (
                &credentials_file,
                env.get("WARDEN_EGRESS_PROXY_CREDENTIALS"),
            ) {
                (Some(path), _) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            bad(format!(
                                "cannot read --egress-proxy-credentials-file {}: {e}",
                                path.display()
                            ))
                        })?
                        .trim()
                        .to_owned(),
                ),
                (None, Some(v)) if !v.trim().is_empty() => Some(v.trim().to_owned()),
                _ => None,
            };
            if credentials.as_ref().is_some_and(|c| !c.contains(':')) {
                return Err(bad(
                    "the egress proxy credential must be `user:password`".into()
                ));
            }
            policy.proxy_host = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
            tracing::info!(target: LOG_TARGET, proxy = %url, "upstream requests go through the egress proxy");
            Some(EgressProxy {
                url: url.to_string(),
                credentials: credentials.map(SecretString::from),
            })
        }
    };
    if proxy.is_none() && credentials_file.is_some() {
        return Err(bad(
            "--egress-proxy-credentials-file needs --egress-proxy".into()
        ));
    }
    if policy.allow_private {
        tracing::warn!(target: LOG_TARGET, "--egress-allow-private: upstreams may resolve to private addresses of this network");
    }
    if policy.allow_loopback {
        tracing::warn!(target: LOG_TARGET, "--egress-allow-loopback: upstreams may resolve to this machine");
    }
    if !policy.test_resolve.is_empty() {
        tracing::warn!(target: LOG_TARGET, "--egress-test-resolve is set: a test-only setting");
    }
    Ok(EgressSettings { policy, proxy })
}

/// `value`, unless it is 0.
fn nonzero(value: usize, flag: &'static str) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::ZeroCap(flag));
    }
    Ok(value)
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(args: &[&str]) -> Result<NodeConfig, ConfigError> {
        let mut argv = vec!["warden-dp"];
        argv.extend_from_slice(args);
        let env = HashMap::from([("WARDEN_NODE_TOKEN".to_owned(), "wn_test".to_owned())]);
        NodeConfig::from_flags(Flags::try_parse_from(argv).unwrap(), &env)
    }

    #[test]
    fn listener_settings_have_named_defaults_and_parse_durations_and_off() {
        let c = config(&[]).unwrap();
        assert_eq!(c.http_limits, crate::listener::Limits::default());
        assert_eq!(c.http_body_read_timeout, DEFAULT_HTTP_BODY_READ_TIMEOUT);
        assert_eq!(c.upstream_deadline, None);
        assert_eq!(c.upstream_read_timeout, Duration::from_secs(300));
        assert_eq!(c.ops_addr, DEFAULT_OPS_ADDR.parse().ok());
        let c = config(&[
            "--http-header-read-timeout",
            "2s",
            "--http-idle-timeout",
            "1m30s",
            "--upstream-deadline",
            "10m",
            "--upstream-read-timeout",
            "2s",
            "--ops-addr",
            "off",
        ])
        .unwrap();
        assert_eq!(c.http_limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.http_limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.upstream_deadline, Some(Duration::from_secs(600)));
        assert_eq!(c.upstream_read_timeout, Duration::from_secs(2));
        assert_eq!(c.ops_addr, None);
        assert!(matches!(
            config(&["--upstream-deadline", "soon"]),
            Err(ConfigError::UpstreamDeadline(_))
        ));
        assert!(matches!(
            config(&["--ops-addr", "metrics.invalid"]),
            Err(ConfigError::OpsAddr(_))
        ));
        assert!(matches!(
            config(&["--http-max-connections", "0"]),
            Err(ConfigError::ZeroCap(_))
        ));
        assert!(Flags::try_parse_from(["warden-dp", "--http-idle-timeout", "0s"]).is_err());
    }

    #[test]
    fn ip_blocks_are_on_by_default_and_zero_turns_them_off_as_a_dangerous_setting() {
        let c = config(&[]).unwrap();
        assert_eq!(c.ip_block, crate::ip_block::Settings::default());
        assert!(
            c.dangerous_settings()
                .iter()
                .all(|(k, _)| *k != "ip_block_threshold")
        );
        let c = config(&[
            "--ip-block-threshold",
            "0",
            "--ip-block-window",
            "1m",
            "--ip-block-duration",
            "2h",
        ])
        .unwrap();
        assert!(!c.ip_block.enabled());
        assert_eq!(c.ip_block.window, Duration::from_secs(60));
        assert_eq!(c.ip_block.duration, Duration::from_secs(7200));
        assert!(
            c.dangerous_settings()
                .contains(&("ip_block_threshold", "0"))
        );
        assert!(config(&["--ip-block-duration", "0s"]).is_err());
    }

    #[test]
    fn https_needs_both_files_and_hsts_needs_https() {
        assert!(config(&[]).unwrap().http_tls.is_none());
        let c = config(&[
            "--http-tls-cert-file",
            "c.pem",
            "--http-tls-key-file",
            "k.pem",
            "--http-hsts-max-age",
            "1d",
        ])
        .unwrap();
        let tls = c.http_tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("c.pem"));
        assert_eq!(
            tls.reload_interval,
            crate::listener::tls::DEFAULT_RELOAD_INTERVAL
        );
        assert_eq!(tls.hsts_max_age, Some(Duration::from_secs(86_400)));
        let c = config(&[
            "--http-tls-cert-file",
            "c.pem",
            "--http-tls-key-file",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(c.http_tls.unwrap().hsts_max_age, None);
        assert!(matches!(
            config(&["--http-tls-cert-file", "c.pem"]),
            Err(ConfigError::TlsPair)
        ));
        assert!(matches!(
            config(&["--http-tls-key-file", "k.pem"]),
            Err(ConfigError::TlsPair)
        ));
        assert!(matches!(
            config(&["--http-hsts-max-age", "1d"]),
            Err(ConfigError::HstsWithoutTls)
        ));
        assert!(matches!(
            config(&[
                "--http-tls-cert-file",
                "c.pem",
                "--http-tls-key-file",
                "k.pem",
                "--http-hsts-max-age",
                "forever"
            ]),
            Err(ConfigError::HstsMaxAge(_))
        ));
    }

    #[test]
    fn egress_settings_parse_and_refuse_credentials_in_the_proxy_url() {
        let c = config(&[]).unwrap();
        assert!(c.egress.policy.allow.is_empty() && c.egress.proxy.is_none());
        assert!(!c.egress.policy.allow_private && !c.egress.policy.allow_loopback);
        let c = config(&[
            "--egress-allow",
            "api.openai.com,*.openai.azure.com:443",
            "--egress-allow",
            "[fd12::1]:8443",
            "--egress-allow-loopback",
            "--egress-proxy",
            "http://proxy.corp.example:3128",
        ])
        .unwrap();
        assert_eq!(c.egress.policy.allow.len(), 3);
        assert_eq!(
            c.egress.policy.proxy_host.as_deref(),
            Some("proxy.corp.example")
        );
        assert!(
            c.dangerous_settings()
                .contains(&("egress_allow_loopback", "true"))
        );
        for bad in [
            &["--egress-allow", "host:port"][..],
            &["--egress-proxy", "http://user:pw@proxy.corp.example:3128"],
            &["--egress-proxy", "socks5://proxy.corp.example"],
            &["--egress-test-resolve", "api.openai.com=127.0.0.1"],
        ] {
            assert!(
                matches!(config(bad), Err(ConfigError::Egress(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_client_certificate_goes_with_its_key_to_an_https_control_plane() {
        let identity = [
            "--cp-client-cert-file",
            "node.pem",
            "--cp-client-key-file",
            "node.key",
        ];
        let mut https = vec!["--cp-addr", "https://cp.invalid:50051"];
        https.extend(identity);
        assert_eq!(
            config(&https).unwrap().cp_client_identity,
            Some((PathBuf::from("node.pem"), PathBuf::from("node.key")))
        );
        assert_eq!(config(&[]).unwrap().cp_client_identity, None);
        assert!(matches!(
            config(&identity),
            Err(ConfigError::ClientCertNeedsTls)
        ));
        assert!(Flags::try_parse_from(["warden-dp", "--cp-client-cert-file", "node.pem"]).is_err());
    }

    #[test]
    fn several_control_plane_addresses_are_each_checked() {
        let c = config(&["--cp-addr", "http://127.0.0.1:1,http://localhost:2"]).unwrap();
        assert_eq!(c.cp_addrs, vec!["http://127.0.0.1:1", "http://localhost:2"]);
        assert_eq!(c.max_snapshot_age, None);
        // One address in clear off loopback is enough to refuse the list, and is named.
        match config(&["--cp-addr", "https://a.invalid:1,http://b.invalid:2"]) {
            Err(ConfigError::Plaintext(addr)) => assert_eq!(addr, "http://b.invalid:2"),
            other => panic!("{other:?}"),
        }
        let allowed = config(&[
            "--cp-addr",
            "https://a.invalid:1,http://b.invalid:2",
            "--allow-plaintext",
        ])
        .unwrap();
        assert_eq!(allowed.cp_addr_in_clear(), Some("http://b.invalid:2"));
        assert!(matches!(
            config(&["--cp-addr", "http://127.0.0.1:1,,http://127.0.0.1:2"]),
            Err(ConfigError::CpAddr(crate::cp_addrs::AddrError::EmptyEntry(
                _
            )))
        ));
        // A client certificate needs every replica on https://.
        assert!(matches!(
            config(&[
                "--cp-addr",
                "https://a.invalid:1,http://127.0.0.1:2",
                "--cp-client-cert-file",
                "n.pem",
                "--cp-client-key-file",
                "n.key",
            ]),
            Err(ConfigError::ClientCertNeedsTls)
        ));
        let c = config(&["--max-snapshot-age", "10m"]).unwrap();
        assert_eq!(c.max_snapshot_age, Some(Duration::from_secs(600)));
        assert!(matches!(
            config(&["--max-snapshot-age", "a while"]),
            Err(ConfigError::MaxSnapshotAge(_))
        ));
    }

    #[test]
    fn a_plain_redis_link_off_loopback_needs_allow_plaintext() {
        let with = |url: &str, args: &[&str]| {
            let mut argv = vec!["warden-dp"];
            argv.extend_from_slice(args);
            let env = HashMap::from([
                ("WARDEN_NODE_TOKEN".to_owned(), "wn_test".to_owned()),
                ("WARDEN_REDIS_URL".to_owned(), url.to_owned()),
            ]);
            NodeConfig::from_flags(Flags::try_parse_from(argv).unwrap(), &env)
        };
        let err = with("redis://:hunter2-secret@redis.internal:6379/0", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.internal") && err.contains("--allow-plaintext"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the password is not shown: {err}");
        assert!(with("redis://10.0.0.5:6379", &[]).is_err());
        // Loopback, TLS and a socket need nothing; --allow-plaintext accepts the rest.
        for url in [
            "redis://127.0.0.1:6379",
            "redis://user:pw@localhost:6379/1",
            "redis://[::1]:6379",
            "rediss://redis.internal:6380",
            "unix:///run/redis.sock",
        ] {
            assert!(with(url, &[]).is_ok(), "{url}");
        }
        let allowed = with("redis://redis.internal:6379", &["--allow-plaintext"]).unwrap();
        assert!(
            allowed
                .dangerous_settings()
                .contains(&("redis_plaintext", "true"))
        );
    }

    #[test]
    fn redis_ca_file_needs_a_tls_url_and_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let ca = ca.to_str().unwrap();
        let with = |vars: &[(&str, &str)]| {
            let mut env = HashMap::from([("WARDEN_NODE_TOKEN".to_owned(), "wn_test".to_owned())]);
            for (k, v) in vars {
                env.insert((*k).to_owned(), (*v).to_owned());
            }
            let flags = Flags::try_parse_from(["warden-dp", "--redis-ca-file", ca]).unwrap();
            NodeConfig::from_flags(flags, &env)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(with(&[]).contains("needs a rediss://"));
        let plain = with(&[("WARDEN_REDIS_URL", "redis://127.0.0.1:6379")]);
        assert!(plain.contains("needs rediss://"), "{plain}");
        let sentinel = with(&[
            ("WARDEN_REDIS_SENTINELS", "rediss://127.0.0.1:26379"),
            ("WARDEN_REDIS_SENTINEL_SERVICE", "main"),
        ]);
        assert!(
            sentinel.contains("not supported with WARDEN_REDIS_SENTINELS"),
            "{sentinel}"
        );
        let bad = with(&[("WARDEN_REDIS_URL", "rediss://localhost:6380")]);
        assert!(
            bad.contains("--redis-ca-file") && bad.contains("no CERTIFICATE"),
            "{bad}"
        );
    }
}
