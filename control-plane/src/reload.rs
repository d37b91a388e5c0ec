//! SIGHUP on a control-plane replica: reloads what is safe to reload while serving, and
//! records one `config.reload` audit row (detail: each item and how it went) with a log
//! line.
//!
//! | item | on SIGHUP |
//! |---|---|
//! | `tls` | the gRPC listener's certificate, key (and client CA) files are read now, as the periodic reload does: `ok` (swapped), `unchanged`, `failed` (the last good configuration stays), `off` without TLS |
//! | `log_level` | `fixed`: the filter comes from `RUST_LOG`, which a running process cannot re-read |
//!
//! The configuration file itself is not re-read: its settings need a restart.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warden_core::audit_detail::Detail;

use crate::service::ControlPlane;
use crate::tls::ServerTls;

/// Reloads on every SIGHUP until `shutdown`. Without Unix signals, does nothing.
pub fn spawn(cp: Arc<ControlPlane>, tls: Option<Arc<ServerTls>>, shutdown: CancellationToken) {
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
                reload(&cp, tls.as_deref()).await;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (cp, tls, shutdown);
    }
}

/// One reload: each item, then the `config.reload` row.
pub async fn reload(cp: &ControlPlane, tls: Option<&ServerTls>) {
    let (item, ok) = match tls {
        None => ("off", true),
        Some(tls) => match tls.reload().await {
            Ok(true) => ("ok", true),
            Ok(false) => ("unchanged", true),
            Err(error) => {
                tracing::error!(%error, "SIGHUP: TLS files cannot be used; keeping the last good certificate");
                ("failed", false)
            }
        },
    };
    let result = if ok { "ok" } else { "failure" };
    tracing::info!(
        tls = item,
        log_level = "fixed (RUST_LOG is read at start)",
        result,
        "SIGHUP: configuration reload"
    );
    let detail = Detail::new()
        .with("tls", item)
        .with("log_level", "fixed")
        .build();
    cp.audit(
        "config.reload",
        "system:signal",
        "control-plane",
        result,
        &detail,
    )
    .await;
}
