//! Metric names of the data plane, in one place, and the request path's label handles
//! ([`RequestMetrics`], [`RouteLabels`]). Exposed in the Prometheus text format on
//! `GET /metrics` of the ops listener (`--ops-addr`); the gauges that are cheaper to read
//! than to keep up to date are set when scraped ([`refresh`]).
//!
//! Labels stay low-cardinality whatever clients send: an alias or provider label is a name
//! the current snapshot configures (else `other` / `none`), a status a three-digit code, an
//! endpoint one of four paths. No label ever holds a credential, a key or a client string.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::http::StatusCode;
use metrics::{Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::endpoint::Endpoint;

/// 1 while Redis is reachable and shared state is in use, 0 while the node runs on
/// per-node limits.
pub const REDIS_UP: &str = "warden_redis_up";
/// Redis calls that failed and switched the node to per-node state.
pub const REDIS_FAILURES: &str = "warden_redis_failures_total";
/// Model requests answered (`endpoint`: the route template; `alias`: a configured alias,
/// `other` for any other model string, `none` when no model was read; `provider`: the
/// provider that answered, `none` when none did; `status`: the HTTP status code).
pub const REQUESTS: &str = "warden_requests_total";
/// Gateway time of a model request, in seconds: from arrival (its head read) until the
/// answer's head is ready, less the time spent waiting for providers (from sending a
/// request upstream to its response head, every key and fallback tried). Reading the
/// request body is in it; pumping a streamed answer after its head is not. Histogram by
/// `endpoint`.
pub const ADDED_LATENCY_SECONDS: &str = "warden_request_added_latency_seconds";
/// Time to first byte as the client sees it, in seconds: from arrival until the first
/// byte of the answer's body is handed to the connection. Histogram by `endpoint`.
pub const TTFB_SECONDS: &str = "warden_request_ttfb_seconds";
/// Limiter decisions (`limit`: `all` for an admitted request, else the limit that refused
/// it — rpm, tpm, parallel, budget, `unpriced` (a budget applies to an unpriced model),
/// `unavailable` (shared state down, fail-closed); `decision`: allowed, refused, or `cut`
/// for a stream ended when it crossed a limit).
pub const LIMITER_DECISIONS: &str = "warden_limiter_decisions_total";
/// Upstream keys out of service as this node knows them, per provider (`state`:
/// `disabled` — disabled by an admin or rejected by the provider; `cooling_down`).
pub const UPSTREAM_KEYS_OUT: &str = "warden_upstream_keys_out_of_service";
/// Upstream keys configured, per provider.
pub const UPSTREAM_KEYS: &str = "warden_upstream_keys";
/// The version of the snapshot in force (0 before the first).
pub const SNAPSHOT_VERSION: &str = "warden_snapshot_version";
/// Seconds since the oldest audit event not yet acknowledged by the control plane was
/// recorded (0 when everything spooled was delivered).
pub const AUDIT_DELIVERY_LAG_SECONDS: &str = "warden_audit_delivery_lag_seconds";
/// DLP rule matches (`rule`: the rule's name; `action`: block, redact, flag; `direction`:
/// `request` or `response` — every rule only flags in answers).
pub const DLP_MATCHES: &str = "warden_dlp_matches_total";
/// Addresses blocked by an operator in the snapshot in force (entries, networks count
/// once).
pub const IP_BLOCKS_MANUAL: &str = "warden_ip_blocks_manual";
/// Requests refused by a limit (`limit` label: rpm, tpm, parallel, budget).
pub const LIMITED: &str = "warden_requests_limited_total";
/// Upstream keys taken out of service (`reason` label: rejected, cooldown).
pub const KEY_EVENTS: &str = "warden_upstream_key_events_total";
/// Limiter decision time in seconds.
pub const LIMITER_SECONDS: &str = "warden_limiter_decision_seconds";
/// Audit events dropped: the in-memory queue to the spool was full, the spool was full
/// with `--audit-on-full drop`, the spool could not be written, or a spooled record was
/// damaged on disk.
pub const AUDIT_DROPPED: &str = "warden_audit_events_dropped_total";
/// Audit events written (and synced) to the node's on-disk spool.
pub const AUDIT_SPOOLED: &str = "warden_audit_events_spooled_total";
/// Bytes in the audit spool: events not yet acknowledged by the control plane (plus the
/// acknowledged part of the live segment).
pub const AUDIT_SPOOL_BYTES: &str = "warden_audit_spool_bytes";
/// 1 while the node refuses requests because audit events cannot be recorded
/// (`--audit-on-full closed` and the spool full or not writable, or the queue to it full),
/// else 0. Read when `/metrics` is scraped.
pub const AUDIT_UNAVAILABLE: &str = "warden_audit_unavailable";
/// Requests refused with 503 because audit events cannot be recorded.
pub const AUDIT_REFUSED: &str = "warden_audit_refused_requests_total";
/// Audit records the control plane refused one by one, kept in the spool's `dead/`
/// directory instead of being delivered.
pub const AUDIT_QUARANTINED: &str = "warden_audit_quarantined_total";
/// Open client connections (`listener` label: `api`, `ops`).
pub const HTTP_CONNECTIONS: &str = "warden_http_connections";
/// Connections closed at accept because the listener's connection cap was reached.
pub const HTTP_CONNECTIONS_REFUSED: &str = "warden_http_connections_refused_total";
/// Connections closed by a timer (`timeout` label: `header_read` — a request head not
/// complete in time; `idle` — no request between two within the keep-alive idle timeout).
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "warden_http_connections_timed_out_total";
/// Requests answered 503 `overloaded` because the in-flight request cap was reached.
pub const HTTP_REQUESTS_OVERLOADED: &str = "warden_http_requests_overloaded_total";
/// Requests refused with 429 before any credential lookup: their address was past the
/// failed-login limit (`--failed-login-limit`).
pub const FAILED_LOGINS_THROTTLED: &str = "warden_failed_logins_throttled_total";
/// Requests refused with 403 `ip_blocked` before any credential lookup: their address was
/// blocked (automatically after failed logins, or by `wardenctl ip block`). Counted, not
/// audited one by one.
pub const IP_BLOCKED_REFUSED: &str = "warden_ip_blocked_requests_total";
/// Automatic address blocks this node set (each audited once as `edge.ip_blocked`).
pub const IP_BLOCKS: &str = "warden_ip_blocks_total";
/// TLS handshakes on the API listener that failed (bad or old client, wrong protocol); one
/// not finished within the header-read timeout counts under
/// `warden_http_connections_timed_out_total{timeout="header_read"}` instead.
pub const HTTP_TLS_HANDSHAKE_FAILURES: &str = "warden_http_tls_handshake_failures_total";
/// Changed certificate files read by the node (`result` label: `ok` — now served;
/// `refused` — a bad pair, the previous certificate is still served).
pub const HTTP_TLS_RELOADS: &str = "warden_http_tls_reloads_total";
/// Upstream attempts refused by the egress policy before anything connected (`reason`
/// label: `not_allowed`, `link_local_or_metadata`, `private`, `loopback`, `not_http`).
pub const EGRESS_DENIED: &str = "warden_egress_denied_total";
/// 1 while the Watch stream to a control-plane replica is open, else 0.
pub const CP_CONNECTED: &str = "warden_cp_connected";
/// Position in `--cp-addr` of the replica the node is attached to (0-based), -1 while it
/// is attached to none.
pub const CP_REPLICA: &str = "warden_cp_replica_index";
/// Seconds since the node last had its Watch stream to the control plane open (0 while it
/// is open).
pub const SNAPSHOT_AGE_SECONDS: &str = "warden_snapshot_age_seconds";
/// 1 while the snapshot is older than `--max-snapshot-age` and client credentials are
/// refused, else 0.
pub const SNAPSHOT_STALE: &str = "warden_snapshot_stale";
/// Deltas the node could not apply (another base version, a value it does not hold, a bad
/// seal): each one drops the watch stream and asks for a full snapshot.
pub const SNAPSHOT_RESYNCS: &str = "warden_snapshot_resyncs_total";
/// Seconds to apply one snapshot or delta: open its secrets, merge and compile (histogram;
/// `kind` label: `full` or `delta`).
pub const SNAPSHOT_APPLY_SECONDS: &str = "warden_snapshot_apply_seconds";

/// Buckets of [`ADDED_LATENCY_SECONDS`]: 50 µs to 1 s.
const ADDED_LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Buckets of [`TTFB_SECONDS`]: 5 ms to 60 s.
const TTFB_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process's Prometheus recorder, with the request histograms' buckets; `None`
/// when one is installed already (a second node in the same process).
pub fn install() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(ADDED_LATENCY_SECONDS.to_owned()),
            ADDED_LATENCY_BUCKETS,
        )
        .ok()?
        .set_buckets_for_metric(Matcher::Full(TTFB_SECONDS.to_owned()), TTFB_BUCKETS)
        .ok()?
        .install_recorder()
        .ok()
}

/// `other`: a model string that names no configured alias.
pub const OTHER: SharedString = SharedString::const_str("other");
/// `none`: no model read, or no provider answered.
pub const NONE: SharedString = SharedString::const_str("none");

/// Label values of the snapshot's aliases and providers, made once per snapshot so that a
/// request's labels are reference-count increments, not allocations.
#[derive(Debug, Default)]
pub struct RouteLabels {
    aliases: HashMap<String, SharedString>,
    providers: HashMap<String, SharedString>,
}

impl RouteLabels {
    pub fn new<'a>(
        aliases: impl IntoIterator<Item = &'a String>,
        providers: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        let label = |name: &String| (name.clone(), SharedString::from(Arc::<str>::from(&**name)));
        Self {
            aliases: aliases.into_iter().map(label).collect(),
            providers: providers.into_iter().map(label).collect(),
        }
    }

    /// The `alias` label of a requested model string: itself if it is a configured alias.
    pub fn alias(&self, model: &str) -> SharedString {
        if model.is_empty() {
            return NONE;
        }
        self.aliases.get(model).cloned().unwrap_or(OTHER)
    }

    /// The `provider` label of the provider that answered.
    pub fn provider(&self, name: &str) -> SharedString {
        if name.is_empty() {
            return NONE;
        }
        self.providers.get(name).cloned().unwrap_or(OTHER)
    }
}

/// The `status` label values of codes 100–599, made once.
static STATUS_LABELS: LazyLock<Vec<SharedString>> = LazyLock::new(|| {
    (100u16..600)
        .map(|c| SharedString::from(Arc::<str>::from(c.to_string())))
        .collect()
});

/// The `status` label of `status`: its three-digit code.
pub fn status_label(status: StatusCode) -> SharedString {
    usize::from(status.as_u16())
        .checked_sub(100)
        .and_then(|i| STATUS_LABELS.get(i))
        .cloned()
        .unwrap_or(OTHER)
}

/// The request path's metric handles, resolved once when the node starts (after the
/// recorder is installed).
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    /// [`ADDED_LATENCY_SECONDS`] and [`TTFB_SECONDS`] by endpoint, in [`Endpoint::ALL`] order.
    added_latency: [Histogram; 4],
    ttfb: [Histogram; 4],
    limiter_allowed: Counter,
}

impl RequestMetrics {
    pub fn new() -> Self {
        let by_endpoint = |name: &'static str| {
            Endpoint::ALL.map(|e| metrics::histogram!(name, "endpoint" => e.path()))
        };
        Self {
            added_latency: by_endpoint(ADDED_LATENCY_SECONDS),
            ttfb: by_endpoint(TTFB_SECONDS),
            limiter_allowed: metrics::counter!(LIMITER_DECISIONS, "limit" => "all", "decision" => "allowed"),
        }
    }

    /// One answered model request.
    pub fn request(
        &self,
        endpoint: Endpoint,
        alias: SharedString,
        provider: SharedString,
        status: StatusCode,
    ) {
        metrics::counter!(
            REQUESTS,
            "endpoint" => endpoint.path(),
            "alias" => alias,
            "provider" => provider,
            "status" => status_label(status)
        )
        .increment(1);
    }

    pub fn added_latency(&self, endpoint: Endpoint, took: Duration) {
        self.added_latency[endpoint.index()].record(took.as_secs_f64());
    }

    /// The histogram of the time to first byte of `endpoint`'s answers.
    pub fn ttfb(&self, endpoint: Endpoint) -> Histogram {
        self.ttfb[endpoint.index()].clone()
    }

    /// A request the limiter admitted.
    pub fn limiter_allowed(&self) {
        self.limiter_allowed.increment(1);
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A request the limiter refused, or a stream it cut (`decision` `refused` or `cut`).
pub fn limiter_refused(limit: &'static str, decision: &'static str) {
    metrics::counter!(LIMITER_DECISIONS, "limit" => limit, "decision" => decision).increment(1);
}

/// The matches of one request's (`direction` `request`) or answer's (`response`) DLP
/// findings. In an answer every rule only flags, whatever its action.
pub fn dlp_matches(found: &warden_core::dlp::Findings, direction: &'static str) {
    for (rule, action, count) in &found.rules {
        let action = if direction == "response" {
            "flag"
        } else {
            action.as_str()
        };
        metrics::counter!(
            DLP_MATCHES,
            "rule" => rule.clone(),
            "action" => action,
            "direction" => direction
        )
        .increment(u64::from(*count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_configured_names_or_a_fixed_bucket() {
        let (aliases, providers) = (vec!["gpt-4o".to_owned()], vec!["openai".to_owned()]);
        let labels = RouteLabels::new(&aliases, &providers);
        assert_eq!(&*labels.alias("gpt-4o"), "gpt-4o");
        assert_eq!(&*labels.alias("gpt-4o-attacker-chosen"), "other");
        assert_eq!(&*labels.alias("openai:gpt-4o"), "other");
        assert_eq!(&*labels.alias(""), "none");
        assert_eq!(&*labels.provider("openai"), "openai");
        assert_eq!(&*labels.provider("gone"), "other");
        assert_eq!(&*labels.provider(""), "none");
    }

    #[test]
    fn status_labels_are_the_codes() {
        assert_eq!(&*status_label(StatusCode::OK), "200");
        assert_eq!(&*status_label(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(&*status_label(StatusCode::from_u16(599).unwrap()), "599");
        assert_eq!(&*status_label(StatusCode::from_u16(600).unwrap()), "other");
    }
}
