//! Warden's data-plane node (`warden-dp`): serves the OpenAI HTTP API, authenticates and
//! authorizes each request against the current snapshot, and forwards it to the provider,
//! streaming the answer. Stateless: everything it knows arrives from the control plane.
//!
//! Start reading at [`run`], then [`proxy`] (one request's path) and [`sync`] (how
//! snapshots arrive).

pub mod auth;
pub mod config;
pub mod error;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod sync;

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
}

/// Serves on `listener` and keeps the link to the control plane until `shutdown`.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let upstream = proxy::upstream::Upstream::new(
        config.upstream_connect_timeout,
        config.upstream_read_timeout,
    )?;
    let state = Arc::new(server::AppState::new(upstream));
    let config = Arc::new(config);
    let link = tokio::spawn(sync::run(
        Arc::clone(&config),
        Arc::clone(&state),
        shutdown.clone(),
    ));
    let app = server::router(Arc::clone(&state), config.max_body_bytes);
    tracing::info!(addr = %listener.local_addr()?, node = %config.node_id, "data plane listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    let _ = link.await;
    Ok(())
}
