//! The control plane's metrics, in one place, exposed in the Prometheus text format on
//! `GET /metrics` of the ops listener (`--ops-addr`, [`crate::ops`]).
//!
//! Each control plane records into its own Prometheus recorder, not the process-global
//! one: `wardenctl dev` runs a node (which installs the global recorder) in the same
//! process, and tests start several control planes in one.

use std::sync::Arc;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

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
/// Nodes with a Watch stream open to this replica (distinct node ids), set when scraped.
pub const NODES_CONNECTED: &str = "warden_cp_nodes_connected";
/// Audit events from nodes appended to the audit log (`PublishAudit`).
pub const AUDIT_NODE_EVENTS: &str = "warden_cp_audit_node_events_total";
/// Seconds from the oldest event of a node's audit batch being recorded on the node to
/// the batch being appended here (histogram): how far audit delivery runs behind.
pub const AUDIT_INGEST_LAG_SECONDS: &str = "warden_cp_audit_ingest_lag_seconds";
/// Addresses and networks blocked by an operator in the newest snapshot, set when scraped.
pub const IP_BLOCKS: &str = "warden_cp_ip_blocks";

/// Buckets of [`AUDIT_INGEST_LAG_SECONDS`]: 50 ms to an hour.
const INGEST_LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

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
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full(AUDIT_INGEST_LAG_SECONDS.to_owned()),
            INGEST_LAG_BUCKETS,
        ) {
            Ok(b) => b,
            // Only an empty bucket list is refused; the constant is not empty.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
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

    /// `events` audit events of a node appended, the oldest recorded at `oldest_ms` (ms since
    /// the epoch) on the node.
    pub fn audit_ingested(&self, events: u32, oldest_ms: Option<i64>) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.record(|| {
            metrics::counter!(AUDIT_NODE_EVENTS).increment(u64::from(events));
            if let Some(oldest) = oldest_ms {
                // A node clock ahead of this one reads as no lag, not a negative one.
                let lag_ms = now_ms.saturating_sub(oldest).max(0);
                metrics::histogram!(AUDIT_INGEST_LAG_SECONDS).record(lag_ms as f64 / 1000.0);
            }
        });
    }

    /// The gauges read when scraped: nodes attached and the operator's address blocks.
    pub fn scraped(&self, nodes_connected: usize, ip_blocks: usize) {
        self.record(|| {
            metrics::gauge!(NODES_CONNECTED).set(nodes_connected as f64);
            metrics::gauge!(IP_BLOCKS).set(ip_blocks as f64);
        });
    }

    /// Everything recorded, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
