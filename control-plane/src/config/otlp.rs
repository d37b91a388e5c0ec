//! `[tracing]`: trace export over OTLP (off unless an endpoint is set), and the check of
//! `[server] log_level`.
//!
//! ```toml
//! [tracing]
//! otlp_endpoint = "http://collector:4317"  # WARDEN_OTLP_ENDPOINT; off when unset
//! service_name = "warden-cp"               # WARDEN_OTLP_SERVICE_NAME
//! sample_ratio = 1.0                       # WARDEN_OTLP_SAMPLE_RATIO
//! export_interval = "5s"                   # WARDEN_OTLP_EXPORT_INTERVAL
//! ```
//!
//! The collector's headers (an API key) come only from `WARDEN_OTLP_HEADERS`
//! (`name=value,…`), never from the file.

use std::collections::HashMap;

use serde::Deserialize;
use warden_core::otlp::{OtlpSettings, RawOtlp};

use super::{ConfigError, invalid};

/// `[tracing]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
    pub export_interval: Option<String>,
}

impl RawTracing {
    /// The export settings with the environment's overrides; `None`: traces off.
    pub fn build(self, env: &HashMap<String, String>) -> Result<Option<OtlpSettings>, ConfigError> {
        let pick = |var: &str, file: Option<String>| env.get(var).cloned().or(file);
        let endpoint = pick("WARDEN_OTLP_ENDPOINT", self.otlp_endpoint);
        let service_name = pick("WARDEN_OTLP_SERVICE_NAME", self.service_name);
        let sample_ratio = pick(
            "WARDEN_OTLP_SAMPLE_RATIO",
            self.sample_ratio.map(|r| r.to_string()),
        );
        let export_interval = pick("WARDEN_OTLP_EXPORT_INTERVAL", self.export_interval);
        RawOtlp {
            endpoint: endpoint.as_deref(),
            service_name: service_name.as_deref(),
            sample_ratio: sample_ratio.as_deref(),
            headers: env.get("WARDEN_OTLP_HEADERS").map(String::as_str),
            export_interval: export_interval.as_deref(),
        }
        .build(
            "warden-cp",
            [
                "tracing.otlp_endpoint",
                "tracing.sample_ratio",
                "WARDEN_OTLP_HEADERS",
                "tracing.export_interval",
            ],
        )
        .map_err(|e| match e {
            warden_core::otlp::OtlpError::Invalid { setting, message } => invalid(setting, message),
            other => invalid("tracing", other.to_string()),
        })
    }
}

/// `[server] log_level` checked (`RUST_LOG` syntax); `None` leaves `RUST_LOG` in charge.
pub fn log_level(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(level) = raw.map(|l| l.trim().to_owned()) else {
        return Ok(None);
    };
    warden_core::telemetry::check_log_filter(&level)
        .map_err(|e| invalid("server.log_level", e.to_string()))?;
    Ok(Some(level))
}
