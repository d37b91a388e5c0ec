//! The ops listener (`--ops-addr`, `[server] ops_addr`; off unless set): plain HTTP for
//! the operator's tools, apart from the gRPC API.
//!
//! - `GET /metrics`: the control plane's metrics ([`crate::metrics`]) in the Prometheus
//!   text format.
//! - `GET /healthz`: `200` with `{"status":"ok","snapshot_version":N}` while the control
//!   plane runs.
//!
//! Nothing here is authenticated and nothing here is secret; bind it to loopback or to a
//! pod address behind a NetworkPolicy, never to a public one.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::{ControlPlane, RunError};

/// Binds `addr` and serves the ops routes until `shutdown`; returns the bound address.
pub async fn serve(
    cp: &Arc<ControlPlane>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<SocketAddr, RunError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(RunError::Listener)?;
    let bound = listener.local_addr().map_err(RunError::Listener)?;
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::clone(cp));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "ops listener failed");
        }
    });
    tracing::info!(addr = %bound, "ops listener (/metrics, /healthz)");
    Ok(bound)
}

async fn metrics(State(cp): State<Arc<ControlPlane>>) -> Response {
    let ip_blocks = cp.subscribe().borrow().ip_blocks.len();
    cp.metrics().scraped(cp.connected_nodes(), ip_blocks);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        cp.metrics().render(),
    )
        .into_response()
}

async fn healthz(State(cp): State<Arc<ControlPlane>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "snapshot_version": cp.current_version(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}
