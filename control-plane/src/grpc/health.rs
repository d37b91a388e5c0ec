//! `grpc.health.v1.Health` on the gRPC listener, beside Admin, Sync and AuditStream: what
//! load balancers, Kubernetes gRPC probes and `warden-cp healthcheck` ask. The overall
//! status (`""`) and each service's status are SERVING once the listener serves, and
//! NOT_SERVING as soon as shutdown begins. It asks for no credential (probes carry none);
//! the listener's TLS applies to it as to every call, so with required client certificates
//! the probe too must present one.

use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use warden_proto::admin::v1::admin_server::AdminServer;
use warden_proto::audit::v1::audit_stream_server::AuditStreamServer;
use warden_proto::sync::v1::sync_server::SyncServer;

use super::{admin::AdminService, audit::AuditStreamService, sync::SyncService};

/// The names the health service answers for: `""` (the whole server) and each API.
pub const SERVICE_NAMES: [&str; 4] = [
    "",
    <AdminServer<AdminService> as NamedService>::NAME,
    <SyncServer<SyncService> as NamedService>::NAME,
    <AuditStreamServer<AuditStreamService> as NamedService>::NAME,
];

/// The health service, every name SERVING; a task turns them NOT_SERVING when `shutdown`
/// is cancelled, then ends the open `Watch` streams (after they get NOT_SERVING), which
/// would otherwise hold the server's graceful stop open.
pub async fn service(shutdown: &CancellationToken) -> HealthServer<impl Health> {
    let (mut reporter, server) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        for name in SERVICE_NAMES {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        for name in SERVICE_NAMES {
            reporter.clear_service_status(name).await;
        }
    });
    server
}
