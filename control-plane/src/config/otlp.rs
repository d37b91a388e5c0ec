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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_is_off_by_default_and_the_environment_overrides_the_file() {
        let env = HashMap::new();
        assert!(RawTracing::default().build(&env).unwrap().is_none());
        let file = || RawTracing {
            otlp_endpoint: Some("http://collector:4317".into()),
            sample_ratio: Some(0.5),
            ..RawTracing::default()
        };
        let s = file().build(&env).unwrap().unwrap();
        assert_eq!(
            (s.service_name.as_str(), s.sample_ratio),
            ("warden-cp", 0.5)
        );
        let env = HashMap::from([
            ("WARDEN_OTLP_SAMPLE_RATIO".to_owned(), "0.1".to_owned()),
            (
                "WARDEN_OTLP_HEADERS".to_owned(),
                "authorization=Bearer abc".to_owned(),
            ),
        ]);
        let s = file().build(&env).unwrap().unwrap();
        assert_eq!(s.sample_ratio, 0.1);
        assert_eq!(s.headers[0].0, "authorization");
        let bad = RawTracing {
            sample_ratio: Some(2.0),
            ..file()
        };
        let e = bad.build(&HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("tracing.sample_ratio"), "{e}");
    }

    #[test]
    fn a_log_level_that_does_not_parse_names_the_field() {
        assert_eq!(log_level(None).unwrap(), None);
        assert_eq!(
            log_level(Some(" info ".into())).unwrap().as_deref(),
            Some("info")
        );
        let e = log_level(Some("info,warden=loud".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.log_level"), "{e}");
    }
}
