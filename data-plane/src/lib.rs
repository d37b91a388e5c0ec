//! Warden's data-plane node (`warden-dp`): serves the OpenAI HTTP API, authenticates and
//! authorizes each request against the current snapshot, and forwards it to the provider,
//! streaming the answer. Stateless: everything it knows arrives from the control plane.
//!
//! Start reading at [`run`], then [`proxy`] (one request's path) and [`sync`] (how
//! snapshots arrive).

pub mod access;
pub mod audit;
pub mod auth;
pub mod client_addr;
pub mod compiled;
pub mod config;
pub mod cp_addrs;
pub mod egress;
pub mod endpoint;
pub mod error;
pub mod freshness;
pub mod healthcheck;
pub mod held;
pub mod incident;
pub mod ip_block;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod principal;
pub mod proxy;
pub mod redis_state;
pub mod reload;
pub mod server;
pub mod state;
pub mod sync;
pub mod trace;
pub mod translate;
pub mod upstream;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;

/// Errors starting the node.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {addr} (--ops-addr)")]
    OpsBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sealing key pair: {0}")]
    SealKey(#[from] warden_core::seal::SealError),
    #[error(transparent)]
    AuditSpool(#[from] audit::spool::SpoolError),
    #[error("https (--http-tls-cert-file, --http-tls-key-file): {0}")]
    Tls(#[from] listener::tls::TlsError),
}

/// Records the settings in effect that weaken the node's guarantees as one
/// `node.dangerous_settings` audit event (none: no event).
fn record_dangerous_settings(config: &NodeConfig, audit: &audit::AuditSink) {
    let settings = config.dangerous_settings();
    if settings.is_empty() {
        return;
    }
    let detail = settings
        .iter()
        .fold(warden_core::audit_detail::Detail::new(), |d, (k, v)| {
            d.with(k, *v)
        })
        .build();
    audit.emit(
        "node.dangerous_settings",
        format!("node:{}", config.node_id),
        config.node_id.clone(),
        "in_effect".to_owned(),
        detail,
    );
}

/// Starts the tasks of automatic address blocks: expiry, and with Redis the shared counter
/// and the pub/sub listener (which audits the blocks this node sets).
fn spawn_ip_blocks(
    state: &Arc<state::AppState>,
    failures: tokio::sync::mpsc::Receiver<std::net::IpAddr>,
    shutdown: &CancellationToken,
) {
    tokio::spawn(ip_block::prune_every_second(
        Arc::clone(&state.ip_blocks),
        shutdown.clone(),
    ));
    if let Some(link) = &state.redis {
        let audit_to = Arc::clone(state);
        tokio::spawn(ip_block::shared::run(
            Arc::clone(&state.ip_blocks),
            Arc::clone(link),
            failures,
            Arc::new(move |block| proxy::request_audit::ip_blocked(&audit_to, &block)),
            shutdown.clone(),
        ));
    }
}

/// The node's listening sockets: the API, and the ops listener (`/metrics`, `/readyz`,
/// `/healthz`) when there is one.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub ops: Option<TcpListener>,
}

/// Serves the API on `listener` (and binds the ops listener at `config.ops_addr`) and
/// keeps the link to the control plane until `shutdown`.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let ops = match config.ops_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::OpsBind { addr, source })?,
        ),
        None => None,
    };
    run_on(config, Listeners { api: listener, ops }, shutdown).await
}

/// How long, after the last request, the node waits for the control plane to acknowledge
/// the audit spool before it exits; what is left stays on disk for the next start.
pub const AUDIT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// After the drain deadline cut the streams: how long their connections get to close.
const CUT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves on `listeners` until `shutdown` (the stop signal), then drains: `/readyz`
/// answers 503 and no new connection is accepted; in-flight requests and streams run up to
/// `config.drain_timeout`, then streams still running are cut (with an error event, audited
/// `cut_at_shutdown`); the audit spool is flushed to the control plane (up to
/// [`AUDIT_FLUSH_TIMEOUT`]); then the link to the control plane ends.
pub async fn run_on(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let stop = shutdown;
    // Everything but the API listener runs until the drain is over; cancelled on any exit.
    let shutdown = CancellationToken::new();
    let _background = shutdown.clone().drop_guard();
    // A bad certificate stops the start before anything else begins.
    let https = match &config.http_tls {
        Some(settings) => Some(listener::tls::Https::start(settings, shutdown.clone())?),
        None => None,
    };
    let redis = config
        .redis
        .clone()
        .map(|settings| redis_state::redis::RedisLink::start(settings, shutdown.clone()));
    let limiter = limits::Limiter::new(redis.clone(), config.limiter);
    let (rejections_tx, rejections_rx) = tokio::sync::mpsc::channel(256);
    let mut upstream = upstream::Upstream::new(
        config.upstream_connect_timeout,
        config.upstream_read_timeout,
        &config.egress,
        upstream::keys::KeyPicker::new(redis.clone()),
        rejections_tx,
    )?;
    upstream.trace_context = config.upstream_trace_context;
    let metrics = crate::metrics::install();
    let (audit, audit_spool) =
        audit::AuditSink::start(&config.audit_spool, &config.node_id, shutdown.clone())?;
    record_dangerous_settings(&config, &audit);
    let mut state = state::AppState::new(upstream, limiter, redis, metrics, audit);
    state.audit_mask_client_ip = config.audit_mask_client_ip;
    state.trusted_proxies = config.trusted_proxies.clone();
    state.body_read_timeout = config.http_body_read_timeout;
    state.upstream_deadline = config.upstream_deadline;
    state.freshness = freshness::Freshness::new(config.max_snapshot_age);
    state.failed_logins = proxy::failed_logins::FailedLogins::new(
        config.failed_login_limit,
        config.failed_login_window,
        config.audit_mask_client_ip,
    );
    let (failures_tx, failures_rx) = tokio::sync::mpsc::channel(ip_block::shared::QUEUE);
    state.ip_blocks = Arc::new(match &state.redis {
        Some(_) => ip_block::IpBlocks::shared(config.ip_block, failures_tx),
        None => ip_block::IpBlocks::local(config.ip_block),
    });
    let state = Arc::new(state);
    spawn_ip_blocks(&state, failures_rx, &shutdown);
    let config = Arc::new(config);
    // The key snapshot secrets are sealed to: new on every start, never written anywhere.
    let seal_keys = Arc::new(warden_core::seal::NodeKeyPair::generate()?);
    tracing::info!(node_key = %seal_keys.public_key().fingerprint(), "sealing key pair ready");
    // The replica the Watch stream is attached to; the node's other calls follow it.
    let (attached, replica) = tokio::sync::watch::channel(None);
    let link = tokio::spawn(sync::run(
        Arc::clone(&config),
        Arc::clone(&state),
        seal_keys,
        attached,
        shutdown.clone(),
    ));
    let ticking = Arc::clone(&state);
    tokio::spawn(freshness::every_second(
        move || ticking.freshness.tick(),
        shutdown.clone(),
    ));
    tokio::spawn(sync::publish_audit(
        Arc::clone(&config),
        audit_spool,
        replica.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(proxy::request_audit::summarize_failed_logins(
        Arc::clone(&state),
        shutdown.clone(),
    ));
    tokio::spawn(sync::report_rejections(
        Arc::clone(&config),
        rejections_rx,
        replica,
        shutdown.clone(),
    ));
    reload::spawn(
        Arc::clone(&state),
        https.clone(),
        config.node_id.clone(),
        config.log_level_file.clone(),
        shutdown.clone(),
    );
    let app = server::router(Arc::clone(&state), config.max_body_bytes);
    let Listeners { api, ops } = listeners;
    let scheme = if https.is_some() { "https" } else { "http" };
    tracing::info!(addr = %api.local_addr()?, scheme, node = %config.node_id, "data plane listening");
    let ops_task = match ops {
        Some(ops) => {
            tracing::info!(addr = %ops.local_addr()?, "ops listener (/metrics, /readyz, /healthz) listening");
            Some(tokio::spawn(listener::serve(
                ops,
                server::ops_router(Arc::clone(&state)),
                listener::Limits::ops(&config.http_limits),
                None,
                "ops",
                shutdown.clone(),
            )))
        }
        None => {
            tracing::info!("no ops listener (--ops-addr off): /metrics and /readyz are not served");
            None
        }
    };
    let draining = Arc::clone(&state);
    let stopped = stop.clone();
    tokio::spawn(async move {
        stopped.cancelled().await;
        draining
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("stop signal: not accepting new connections; draining in-flight requests");
    });
    let serving = listener::serve(api, app, config.http_limits, https, "api", stop.clone());
    drain(serving, &stop, &state, config.drain_timeout).await;
    // Tokens and spend of the last requests still waiting on this node go to Redis.
    state.limiter.flush().await;
    // Events of the last requests go to disk before the process ends, the counts of open
    // failed-login windows with them; the next start sends whatever the control plane has
    // not acknowledged.
    proxy::request_audit::flush_failed_logins(&state);
    if !state.audit.drain(std::time::Duration::from_secs(2)).await {
        tracing::warn!("audit events still queued at shutdown were not written to the spool");
    }
    flush_audit(&state).await;
    shutdown.cancel();
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    let _ = link.await;
    Ok(())
}

/// Runs `serving` (the API listener) to its end; once `stop` fired, for at most
/// `drain_timeout`, then cuts the streams still running and gives their connections
/// [`CUT_GRACE`] to close.
async fn drain(
    serving: impl std::future::Future<Output = ()>,
    stop: &CancellationToken,
    state: &state::AppState,
    drain_timeout: std::time::Duration,
) {
    tokio::pin!(serving);
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        biased;
        () = &mut serving => return,
        () = deadline => {}
    }
    tracing::warn!(
        drain_timeout = ?drain_timeout,
        "drain deadline passed; cutting the streams still running"
    );
    state.drain_cut.cancel();
    if tokio::time::timeout(CUT_GRACE, serving).await.is_err() {
        tracing::warn!("connections still open after the streams were cut; closing them");
    }
}

/// Waits until the control plane has acknowledged every event in the spool, at most
/// [`AUDIT_FLUSH_TIMEOUT`] (and not past 2 s without a control-plane link); the rest stays
/// in the spool on disk for the next start.
async fn flush_audit(state: &state::AppState) {
    let deadline = tokio::time::Instant::now() + AUDIT_FLUSH_TIMEOUT;
    let mut linked_at = tokio::time::Instant::now();
    let spool = state.audit.spool();
    while !spool.all_delivered() {
        let now = tokio::time::Instant::now();
        if state
            .cp_connected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            linked_at = now;
        }
        if now >= deadline || now.duration_since(linked_at) > std::time::Duration::from_secs(2) {
            tracing::warn!(
                spool_bytes = spool.used_bytes(),
                "audit events not yet acknowledged by the control plane stay in the spool; the next start sends them"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::info!("audit spool delivered to the control plane");
}
