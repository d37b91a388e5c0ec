//! The control plane's metrics, in one place, exposed in the Prometheus text format on
//! `GET /metrics` of the ops listener (`--ops-addr`, [`crate::ops`]).
//!
//! Each control plane records into its own Prometheus recorder, not the process-global
//! one: `wardenctl dev` runs a node (which installs the global recorder) in the same
//! process, and tests start several control planes in one.

use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// gRPC requests received (`service` label: admin, sync, audit, other).
pub const RPCS: &str = "warden_cp_rpcs_total";
/// Failed logins (`kind` label: admin, node; `reason` label: why, `throttled` included).
pub const FAILED_LOGINS: &str = "warden_cp_failed_logins_total";
/// The version of the newest published snapshot.
pub const SNAPSHOT_VERSION: &str = "warden_cp_snapshot_version";
/// 1 while this replica holds the leader lease (always, with SQLite), else 0.
pub const LEADER: &str = "warden_cp_leader";
/// Seconds to build one snapshot from the state store (histogram).
pub const SNAPSHOT_BUILD_SECONDS: &str = "warden_cp_snapshot_build_seconds";
/// Seconds to prepare one delivery for one Watch stream: the shared wire state and delta
/// (made once per version) and this node's sealing (histogram).
pub const SNAPSHOT_SEAL_SECONDS: &str = "warden_cp_snapshot_seal_seconds";
/// gRPC connections open now.
pub const GRPC_CONNECTIONS: &str = "warden_cp_grpc_connections";

/// The control plane's recorder and the handle that renders it.
#[derive(Clone)]
pub struct CpMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for CpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpMetrics").finish_non_exhaustive()
    }
}

impl Default for CpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CpMetrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    fn record(&self, f: impl FnOnce()) {
        metrics::with_local_recorder(self.recorder.as_ref(), f);
    }

    /// One gRPC request to `path` (`/package.Service/Method`).
    pub fn rpc(&self, path: &str) {
        let service = match path.split('/').nth(1).unwrap_or_default() {
            "warden.admin.v1.Admin" => "admin",
            "warden.sync.v1.Sync" => "sync",
            "warden.audit.v1.AuditStream" => "audit",
            _ => "other",
        };
        self.record(|| metrics::counter!(RPCS, "service" => service).increment(1));
    }

    /// One failed login (`action` `auth.admin` or `auth.node`).
    pub fn failed_login(&self, action: &str, reason: &'static str) {
        let kind = if action == "auth.node" {
            "node"
        } else {
            "admin"
        };
        self.record(|| {
            metrics::counter!(FAILED_LOGINS, "kind" => kind, "reason" => reason).increment(1);
        });
    }

    /// The newest published snapshot's version.
    pub fn snapshot_version(&self, version: u64) {
        self.record(|| metrics::gauge!(SNAPSHOT_VERSION).set(version as f64));
    }

    /// Whether this replica is the leader now.
    pub fn leader(&self, on: bool) {
        self.record(|| metrics::gauge!(LEADER).set(if on { 1.0 } else { 0.0 }));
    }

    /// One snapshot built in `took`.
    pub fn snapshot_built(&self, took: std::time::Duration) {
        self.record(|| metrics::histogram!(SNAPSHOT_BUILD_SECONDS).record(took.as_secs_f64()));
    }

    /// One delivery prepared (and sealed) for one stream in `took`.
    pub fn snapshot_sealed(&self, took: std::time::Duration) {
        self.record(|| metrics::histogram!(SNAPSHOT_SEAL_SECONDS).record(took.as_secs_f64()));
    }

    /// A gRPC connection opened (`1.0`) or closed (`-1.0`).
    pub fn connections(&self, delta: f64) {
        self.record(|| metrics::gauge!(GRPC_CONNECTIONS).increment(delta));
    }

    /// Everything recorded, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
