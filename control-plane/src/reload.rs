//! SIGHUP on a control-plane replica: reloads what is safe to reload while serving, and
//! records one `config.reload` audit row (detail: each item and how it went) with a log
//! line.
//!
//! | item | on SIGHUP |
//! |---|---|
//! | `tls` | the gRPC listener's certificate, key (and client CA) files are read now, as the periodic reload does: `ok` (swapped), `unchanged`, `failed` (the last good configuration stays), `off` without TLS |
//! | `log_level` | the configuration file is read again and its `[server] log_level` put in force: `ok` (changed), `unchanged`, `failed` (the file cannot be read or parsed, or the filter does not parse: the filter in force stays); `fixed` when the file has no `log_level` (or there is no file): `RUST_LOG` is read at start only |
//!
//! The file's other settings are not applied: they need a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warden_core::audit_detail::Detail;

use crate::service::ControlPlane;
use crate::tls::ServerTls;

/// Reloads on every SIGHUP until `shutdown`. Without Unix signals, does nothing.
pub fn spawn(
    cp: Arc<ControlPlane>,
    tls: Option<Arc<ServerTls>>,
    config_file: Option<PathBuf>,
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
                reload(&cp, tls.as_deref(), config_file.as_deref()).await;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (cp, tls, config_file, shutdown);
    }
}

/// One reload: each item, then the `config.reload` row.
pub async fn reload(cp: &ControlPlane, tls: Option<&ServerTls>, config_file: Option<&Path>) {
    let (log_level, level_ok) = match config_file.map(reload_log_level) {
        None | Some(Ok(None)) => ("fixed", true),
        Some(Ok(Some(item))) => (item, true),
        Some(Err(error)) => {
            tracing::warn!(%error, "SIGHUP: log_level refused; the filter in force stays");
            ("failed", false)
        }
    };
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
    let result = if ok && level_ok { "ok" } else { "failure" };
    tracing::info!(
        tls = item,
        log_level,
        result,
        "SIGHUP: configuration reload"
    );
    let detail = Detail::new()
        .with("tls", item)
        .with("log_level", log_level)
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

/// Puts the `[server] log_level` of the file at `path` in force: `ok` (changed),
/// `unchanged`, or `None` when the file has none.
fn reload_log_level(path: &Path) -> Result<Option<&'static str>, String> {
    let raw = crate::config::RawConfig::from_file(path).map_err(|e| e.to_string())?;
    let Some(filter) = raw.server.log_level else {
        return Ok(None);
    };
    let level = warden_core::telemetry::log_level()
        .ok_or_else(|| "the log filter cannot be replaced in this process".to_owned())?;
    match level
        .set(&filter)
        .map_err(|e| format!("server.log_level: {e}"))?
    {
        warden_core::telemetry::LevelChange::Changed => {
            tracing::info!(filter = %filter.trim(), "SIGHUP: log filter now in force");
            Ok(Some("ok"))
        }
        warden_core::telemetry::LevelChange::Unchanged => Ok(Some("unchanged")),
    }
}
