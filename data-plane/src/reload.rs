//! SIGHUP on a node: reloads what is safe to reload while serving, and audits it as one
//! `config.reload` event (detail: each item and how it went) with a log line.
//!
//! | item | on SIGHUP |
//! |---|---|
//! | `tls` | the API listener's certificate and key files are read now (as the periodic reload does); a good pair is served to new connections, a bad one is refused and the served pair stays (`failed`); `off` without HTTPS |
//! | `log_level` | with `--log-level-file`: the file is read now and its filter put in force (`ok`), or it was already (`unchanged`); a file that cannot be read or does not parse is refused and the filter in force stays (`failed`). Without it `fixed`: the filter comes from `RUST_LOG`, which a running process cannot re-read |
//! | `limits` | `from_control_plane`: a node has no limits file; limits arrive with each snapshot |
//!
//! Everything else (addresses, the spool, the control-plane link) needs a restart.

use std::path::{Path, PathBuf};
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
    log_level_file: Option<PathBuf>,
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
                reload(&state, https.as_ref(), &node_id, log_level_file.as_deref()).await;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (state, https, node_id, log_level_file, shutdown);
    }
}

/// One reload: each item, then the `config.reload` event.
pub async fn reload(
    state: &AppState,
    https: Option<&Https>,
    node_id: &str,
    log_level_file: Option<&Path>,
) {
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
    let log_level = match log_level_file {
        None => "fixed",
        Some(path) => match reload_log_level(path) {
            Ok(item) => item,
            Err(e) => {
                ok = false;
                tracing::warn!(error = %e, "SIGHUP: log filter refused; the filter in force stays");
                "failed"
            }
        },
    };
    let detail = Detail::new()
        .with("tls", &tls)
        .with("log_level", log_level)
        .with("limits", "from_control_plane")
        .build();
    let result = if ok { "ok" } else { "failure" };
    tracing::info!(tls = %tls, log_level, limits = "from the control plane", result, "SIGHUP: configuration reload");
    state.audit.emit(
        "config.reload",
        format!("node:{node_id}"),
        node_id.to_owned(),
        result.to_owned(),
        detail,
    );
}

/// Puts the filter of `path` in force: `ok` (changed) or `unchanged`.
fn reload_log_level(path: &Path) -> Result<&'static str, String> {
    let filter = crate::trace::read_log_filter(path)?;
    let level = warden_core::telemetry::log_level()
        .ok_or_else(|| "the log filter cannot be replaced in this process".to_owned())?;
    match level.set(&filter).map_err(|e| e.to_string())? {
        warden_core::telemetry::LevelChange::Changed => {
            tracing::info!(filter = %filter, "SIGHUP: log filter now in force");
            Ok("ok")
        }
        warden_core::telemetry::LevelChange::Unchanged => Ok("unchanged"),
    }
}
