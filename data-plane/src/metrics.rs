//! Metric names of the data plane, in one place. Exposed in the Prometheus text format on
//! `GET /metrics`.

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
/// Audit events dropped because the queue to the control plane was full.
pub const AUDIT_DROPPED: &str = "warden_audit_events_dropped_total";
