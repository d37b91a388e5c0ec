//! Metric names of the data plane, in one place. Exposed in the Prometheus text format on
//! `GET /metrics` of the ops listener (`--ops-addr`).

/// 1 while Redis is reachable and shared state is in use, 0 while the node runs on
/// per-node limits.
pub const REDIS_UP: &str = "warden_redis_up";
/// Redis calls that failed and switched the node to per-node state.
pub const REDIS_FAILURES: &str = "warden_redis_failures_total";
/// Requests by outcome (`status` label: HTTP status class).
pub const REQUESTS: &str = "warden_requests_total";
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
/// (`--audit-on-full closed` and the spool full or not writable), else 0.
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
