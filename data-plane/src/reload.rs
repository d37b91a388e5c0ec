//! SIGHUP on a node: reloads what is safe to reload while serving, and audits it as one
//! `config.reload` event (detail: each item and how it went) with a log line.
//!
//! | item | on SIGHUP |
//! |---|---|
//! | `tls` | the API listener's certificate and key files are read now (as the periodic reload does); a good pair is served to new connections, a bad one is refused and the served pair stays (`failed`); `off` without HTTPS |
//! | `log_level` | `fixed`: the filter comes from `RUST_LOG`, which a running process cannot re-read; restart to change it |
//! | `limits` | `from_control_plane`: a node has no limits file; limits arrive with each snapshot |
//!
//! Everything else (addresses, the spool, the control-plane link) needs a restart.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warden_core::audit_detail::Detail;

use crate::listener::tls::Https;
use crate::state::AppState;

/// Reloads on every SIGHUP until `shutdown`. Without Unix signals, does nothing.
pub fn spawn(
    state: Arc<AppState>,
    https: Option<Https>,
    node_id: String,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reloads need a restart");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = hangups.recv() => if got.is_none() { return },
                    () = shutdown.cancelled() => return,
                }
                reload(&state, https.as_ref(), &node_id).await;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (state, https, node_id, shutdown);
    }
}

/// One reload: each item, then the `config.reload` event.
pub async fn reload(state: &AppState, https: Option<&Https>, node_id: &str) {
    let mut ok = true;
    let tls = match https {
        None => "off".to_owned(),
        Some(https) => match https.reload_now().await {
            Ok(certificate) => {
                tracing::info!(%certificate, "SIGHUP: certificate reloaded; new connections get it");
                "ok".to_owned()
            }
            Err(e) => {
                ok = false;
                tracing::warn!(error = %e, "SIGHUP: certificate reload refused; still serving the previous certificate");
                "failed".to_owned()
            }
        },
    };
    let detail = Detail::new()
        .with("tls", &tls)
        .with("log_level", "fixed")
        .with("limits", "from_control_plane")
        .build();
    let result = if ok { "ok" } else { "failure" };
    tracing::info!(tls = %tls, log_level = "fixed (RUST_LOG is read at start)", limits = "from the control plane", result, "SIGHUP: configuration reload");
    state.audit.emit(
        "config.reload",
        format!("node:{node_id}"),
        node_id.to_owned(),
        result.to_owned(),
        detail,
    );
}
