//! [`AppState`]: what every request handler shares — the current compiled snapshot (one
//! atomic pointer, swapped whole when a snapshot arrives), the upstream client, the limiter, the
//! Redis link, the metrics handle and the audit sink.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwapOption;

use crate::audit::AuditSink;
use crate::compiled::Snapshot;
use crate::limits::Limiter;
use crate::redis_state::redis::RedisLink;
use crate::upstream::Upstream;

/// State shared by every request.
#[derive(Debug)]
pub struct AppState {
    snapshot: ArcSwapOption<Snapshot>,
    pub upstream: Upstream,
    pub limiter: Arc<Limiter>,
    pub redis: Option<Arc<RedisLink>>,
    /// Whether the watch stream to the control plane is currently up.
    pub cp_connected: AtomicBool,
    /// How long since the node last heard from the control plane, against
    /// `--max-snapshot-age`.
    pub freshness: crate::freshness::Freshness,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The request path's metric handles.
    pub request_metrics: crate::metrics::RequestMetrics,
    pub audit: AuditSink,
    /// Audit client addresses as their /24 (IPv4) or /48 (IPv6) network.
    pub audit_mask_client_ip: bool,
    /// Proxies whose forwarding header names the client (`--trusted-proxies`).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Longest a handler waits for a request body (`--http-body-read-timeout`).
    pub body_read_timeout: std::time::Duration,
    /// Longest a whole upstream exchange may take, streamed body included
    /// (`--upstream-deadline`); `None`: no deadline.
    pub upstream_deadline: Option<std::time::Duration>,
    /// Longest wait for a request body, once its headers are authenticated.
    /// Failed logins per client address: what they may cost.
    pub failed_logins: crate::proxy::failed_logins::FailedLogins,
    /// Blocked client addresses and the failure counts that block them.
    pub ip_blocks: Arc<crate::ip_block::IpBlocks>,
    /// Set on the stop signal (SIGTERM): `/readyz` answers 503 so load balancers move on.
    pub draining: AtomicBool,
    /// Cancelled at the drain deadline: streams still running end with an error event.
    pub drain_cut: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(
        upstream: Upstream,
        limiter: Arc<Limiter>,
        redis: Option<Arc<RedisLink>>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        audit: AuditSink,
    ) -> Self {
        Self {
            snapshot: ArcSwapOption::empty(),
            upstream,
            limiter,
            redis,
            cp_connected: AtomicBool::new(false),
            freshness: crate::freshness::Freshness::new(None),
            metrics,
            request_metrics: crate::metrics::RequestMetrics::new(),
            audit,
            audit_mask_client_ip: false,
            trusted_proxies: crate::client_addr::TrustedProxies::default(),
            body_read_timeout: crate::config::DEFAULT_HTTP_BODY_READ_TIMEOUT,
            upstream_deadline: None,
            failed_logins: crate::proxy::failed_logins::FailedLogins::default(),
            ip_blocks: Arc::new(crate::ip_block::IpBlocks::local(
                crate::ip_block::Settings::default(),
            )),
            draining: AtomicBool::new(false),
            drain_cut: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// `shared`, `per-node (redis unreachable)` or `per-node (no redis configured)`.
    pub fn limits_mode(&self) -> &'static str {
        match &self.redis {
            Some(l) if l.is_healthy() => "shared",
            Some(_) => "per-node (redis unreachable)",
            None => "per-node (no redis configured)",
        }
    }

    /// The current snapshot, if one has been applied.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// Atomically replaces the snapshot.
    pub fn install(&self, snapshot: Snapshot) {
        warden_core::redact::register(snapshot.secrets_for_redaction());
        metrics::gauge!(crate::metrics::SNAPSHOT_VERSION).set(snapshot.version as f64);
        self.snapshot.store(Some(Arc::new(snapshot)));
    }
}
