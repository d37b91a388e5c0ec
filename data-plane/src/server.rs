//! The node's HTTP front: the API routes ([`router`]: the model endpoints, in
//! [`crate::proxy`], and `/healthz`) and the ops routes ([`ops_router`]: `/metrics`,
//! `/readyz`, `/healthz`), served on separate listeners by [`crate::listener`]. The state
//! they share is [`AppState`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The node's API router (`/metrics` and `/readyz` are on [`ops_router`] only).
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    use crate::proxy::cors;
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/v1/models",
            get(crate::proxy::list_models).options(cors::preflight),
        )
        .route(
            "/v1/chat/completions",
            post(crate::proxy::chat_completions).options(cors::preflight),
        )
        .route(
            "/v1/messages",
            post(crate::proxy::messages).options(cors::preflight),
        )
        .route(
            "/v1/messages/count_tokens",
            post(crate::proxy::count_tokens).options(cors::preflight),
        )
        .route(
            "/v1/embeddings",
            post(crate::proxy::embeddings).options(cors::preflight),
        )
        .route(
            "/v1/responses",
            post(crate::proxy::responses).options(cors::preflight),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            cors::decorate,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The ops listener's router: Prometheus metrics, readiness and liveness.
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let connected = state.cp_connected.load(Ordering::Relaxed);
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ready": false,
                "reason": "draining: the node is shutting down (SIGTERM) and accepts no new connections",
                "control_plane_connected": connected,
            })),
        )
            .into_response();
    }
    if let Some(reason) = state.audit.unavailable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ready": false,
                "reason": format!("audit log unavailable: {reason}"),
                "control_plane_connected": connected,
                "audit_spool_bytes": state.audit.spool().used_bytes(),
            })),
        )
            .into_response();
    }
    if state.freshness.is_stale() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ready": false,
                "reason": format!(
                    "snapshot stale: no control plane replica heard from for {}s (--max-snapshot-age {}s); client credentials are refused",
                    state.freshness.age().as_secs(),
                    state.freshness.bound().unwrap_or_default().as_secs()
                ),
                "control_plane_connected": connected,
                "snapshot_age_seconds": state.freshness.age().as_secs(),
            })),
        )
            .into_response();
    }
    match state.snapshot() {
        Some(snapshot) => (
            StatusCode::OK,
            axum::Json(json!({
                "ready": true,
                "snapshot_version": snapshot.version,
                "control_plane_connected": connected,
                "limits": state.limits_mode(),
            })),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ready": false,
                "reason": "no snapshot received from the control plane yet",
                "control_plane_connected": connected,
            })),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    refresh_metrics(&state);
    match &state.metrics {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response(),
    }
}

async fn method_not_allowed() -> Response {
    ApiError::method_not_allowed().into_response()
}

async fn not_found() -> Response {
    ApiError::unknown_endpoint().into_response()
}

/// Sets the gauges read at scrape time: upstream key health per provider, the audit
/// delivery lag and the operator's address blocks.
fn refresh_metrics(state: &AppState) {
    // The audit gauges are read here, at scrape time, not set where the spool changes:
    // concurrent setters could leave a stale value last (and it kept work off the hot path).
    metrics::gauge!(crate::metrics::AUDIT_DELIVERY_LAG_SECONDS)
        .set(state.audit.delivery_lag().as_secs_f64());
    metrics::gauge!(crate::metrics::AUDIT_SPOOL_BYTES).set(state.audit.spool().used_bytes() as f64);
    metrics::gauge!(crate::metrics::AUDIT_UNAVAILABLE).set(
        if state.audit.unavailable().is_some() {
            1.0
        } else {
            0.0
        },
    );
    let Some(snapshot) = state.snapshot() else {
        return;
    };
    metrics::gauge!(crate::metrics::IP_BLOCKS_MANUAL).set(snapshot.ip_blocks.len() as f64);
    for provider in snapshot.providers.values() {
        if provider.passthrough {
            continue;
        }
        let health = state.upstream.keys.out_of_service(provider);
        let name = snapshot.metric_labels.provider(&provider.name);
        metrics::gauge!(crate::metrics::UPSTREAM_KEYS, "provider" => name.clone())
            .set(provider.keys.len() as f64);
        metrics::gauge!(crate::metrics::UPSTREAM_KEYS_OUT, "provider" => name.clone(), "state" => "disabled")
            .set(health.disabled as f64);
        metrics::gauge!(crate::metrics::UPSTREAM_KEYS_OUT, "provider" => name, "state" => "cooling_down")
            .set(health.cooling_down as f64);
    }
}
