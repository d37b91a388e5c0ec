//! The node's traces and its replaceable log filter: the flags ([`TraceFlags`]), the spans
//! of one request ([`request_span`] with its children `auth`, `limiter` and `upstream`),
//! and what they record.
//!
//! A request span records the method, the endpoint's path, the node's request id, the
//! resolved model alias (`other` for anything that is not an alias of the snapshot: the
//! client's `model` is attacker-chosen), the provider, the status, the error's label and
//! the latency the node added. Never a credential, a key, a prompt, a header or the client's
//! address. Spans export only with `--otlp-endpoint` ([`warden_core::otlp`]); without it
//! every span here is disabled at its call site and records nothing.
//!
//! A client's `traceparent`, `tracestate` and `baggage` are neither used as the parent nor
//! forwarded (the upstream request is built from scratch, [`crate::upstream`]); with
//! `--upstream-trace-context` the node sends its own `upstream` span's `traceparent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::Span;
use warden_core::otlp::{OtlpSettings, RawOtlp, TARGET};

use crate::endpoint::Endpoint;
use crate::state::AppState;

/// Trace export and the log filter's file.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceFlags {
    /// OTLP/gRPC endpoint of a trace collector (`http://collector:4317`, `https://…`);
    /// traces are off when unset. The collector's headers (an API key) come only from
    /// WARDEN_OTLP_HEADERS (`name=value,…`), never from the command line.
    #[arg(long, env = "WARDEN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the node's spans.
    #[arg(long, env = "WARDEN_OTLP_SERVICE_NAME", default_value = "warden-dp")]
    pub otlp_service_name: String,
    /// Share of requests traced, from 0.0 to 1.0.
    #[arg(long, env = "WARDEN_OTLP_SAMPLE_RATIO", default_value = "1.0")]
    pub otlp_sample_ratio: String,
    /// How often queued spans are sent to the collector.
    #[arg(long, env = "WARDEN_OTLP_EXPORT_INTERVAL", default_value = "5s")]
    pub otlp_export_interval: String,
    /// Send the node's own trace context to providers (a W3C `traceparent` naming the
    /// node's upstream span). Needs --otlp-endpoint. A client's trace headers are never
    /// forwarded either way.
    #[arg(long, env = "WARDEN_UPSTREAM_TRACE_CONTEXT")]
    pub upstream_trace_context: bool,
    /// File holding the log filter (`RUST_LOG` syntax: `info`, `info,warden_data_plane=debug`):
    /// read at start instead of RUST_LOG, and again on SIGHUP.
    #[arg(long, env = "WARDEN_LOG_LEVEL_FILE", value_name = "FILE")]
    pub log_level_file: Option<PathBuf>,
}

impl TraceFlags {
    /// The export settings (`None`: traces off). `env` gives WARDEN_OTLP_HEADERS.
    pub fn otlp(
        &self,
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Option<OtlpSettings>, String> {
        let raw = RawOtlp {
            endpoint: self.otlp_endpoint.as_deref(),
            service_name: Some(&self.otlp_service_name),
            sample_ratio: Some(&self.otlp_sample_ratio),
            headers: env.get("WARDEN_OTLP_HEADERS").map(String::as_str),
            export_interval: Some(&self.otlp_export_interval),
        };
        let settings = raw
            .build(
                "warden-dp",
                [
                    "--otlp-endpoint",
                    "--otlp-sample-ratio",
                    "WARDEN_OTLP_HEADERS",
                    "--otlp-export-interval",
                ],
            )
            .map_err(|e| e.to_string())?;
        if settings.is_none() && self.upstream_trace_context {
            return Err("--upstream-trace-context needs --otlp-endpoint (the context sent is the node's own span's)".to_owned());
        }
        Ok(settings)
    }

    /// The log filter to start with: the file's, with --log-level-file (`None`: RUST_LOG).
    pub fn log_filter(&self) -> Result<Option<String>, String> {
        self.log_level_file
            .as_deref()
            .map(read_log_filter)
            .transpose()
    }
}

/// The filter in `path` (`RUST_LOG` syntax), checked; `#` comment lines are skipped.
pub fn read_log_filter(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--log-level-file {}: {e}", path.display()))?;
    let filter = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(",");
    if filter.is_empty() {
        return Err(format!(
            "--log-level-file {}: no filter in the file",
            path.display()
        ));
    }
    warden_core::telemetry::check_log_filter(&filter)
        .map_err(|e| format!("--log-level-file {}: {e}", path.display()))?;
    Ok(filter)
}

/// The span of one model request (disabled when traces are off).
pub fn request_span(endpoint: Endpoint, request_id: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        http.route = endpoint.path(),
        warden.request_id = request_id,
        warden.model = tracing::field::Empty,
        warden.provider = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        warden.error = tracing::field::Empty,
        warden.latency_ms = tracing::field::Empty,
        warden.added_latency_ms = tracing::field::Empty,
    )
}

/// The span of the credential check (within the request span).
pub fn auth_span() -> Span {
    tracing::info_span!(target: TARGET, "auth")
}

/// The span of the limits decision (within the request span).
pub fn limiter_span() -> Span {
    tracing::info_span!(target: TARGET, "limiter")
}

/// The span of the provider call, keys and fallbacks tried included, up to the answer's
/// head (within the request span); its context is what providers get as `traceparent`.
pub fn upstream_span(provider: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "upstream",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        warden.provider = provider,
        warden.served_by = tracing::field::Empty,
        warden.error = tracing::field::Empty,
    )
}

/// Records on the upstream span which provider answered, or the error's label.
pub fn record_upstream(span: &Span, outcome: Result<&str, &'static str>) {
    match outcome {
        Ok(provider) => {
            span.record("warden.served_by", provider);
        }
        Err(label) => {
            span.record("warden.error", label);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// `model` as a span may show it: an alias of the snapshot in force, else `other`.
fn model_label(state: &AppState, model: &str) -> String {
    match state.snapshot() {
        Some(s) if s.routes.contains_key(model) && !model.contains(':') => model.to_owned(),
        _ => "other".to_owned(),
    }
}

/// Records a request's outcome on its span: the model's label, the provider (when one
/// answered), the status, the error's label, the whole latency up to the answer's head and,
/// when a provider answered, the part of it the node added (the rest is the provider's).
#[expect(
    clippy::too_many_arguments,
    reason = "one outcome's parts, each already known"
)]
pub fn record_outcome(
    span: &Span,
    state: &AppState,
    model: &str,
    provider: Option<&str>,
    status: u16,
    error: Option<&'static str>,
    latency: Duration,
    upstream: Option<Duration>,
) {
    if span.is_disabled() {
        return;
    }
    span.record("warden.model", model_label(state, model).as_str());
    if let Some(p) = provider.filter(|p| !p.is_empty()) {
        span.record("warden.provider", p);
    }
    span.record("http.response.status_code", u64::from(status));
    if let Some(label) = error {
        span.record("warden.error", label);
    }
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    span.record("warden.latency_ms", latency.as_secs_f64() * 1000.0);
    if let Some(upstream) = upstream {
        let added = latency.saturating_sub(upstream);
        span.record("warden.added_latency_ms", added.as_secs_f64() * 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[command(flatten)]
        trace: TraceFlags,
    }

    #[test]
    fn traces_are_off_by_default_and_the_trace_context_needs_them() {
        let env = std::collections::HashMap::new();
        let off = Args::parse_from(["x"]);
        assert!(off.trace.otlp(&env).unwrap().is_none());
        assert!(!off.trace.upstream_trace_context);
        let alone = Args::parse_from(["x", "--upstream-trace-context"]);
        assert!(
            alone
                .trace
                .otlp(&env)
                .unwrap_err()
                .contains("--otlp-endpoint")
        );
        let on = Args::parse_from([
            "x",
            "--otlp-endpoint",
            "http://127.0.0.1:4317",
            "--otlp-sample-ratio",
            "0.5",
            "--upstream-trace-context",
        ]);
        let s = on.trace.otlp(&env).unwrap().unwrap();
        assert_eq!(
            (s.service_name.as_str(), s.sample_ratio),
            ("warden-dp", 0.5)
        );
        let bad = Args::parse_from(["x", "--otlp-endpoint", "collector:4317"]);
        assert!(
            bad.trace
                .otlp(&env)
                .unwrap_err()
                .starts_with("--otlp-endpoint")
        );
    }

    #[test]
    fn the_log_level_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("level");
        std::fs::write(
            &path,
            "# the node's log filter\ninfo\nwarden_data_plane=debug\n",
        )
        .unwrap();
        assert_eq!(
            read_log_filter(&path).unwrap(),
            "info,warden_data_plane=debug"
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(read_log_filter(&path).unwrap_err().contains("no filter"));
        std::fs::write(&path, "info,warden_data_plane=loud\n").unwrap();
        assert!(read_log_filter(&path).is_err());
        assert!(read_log_filter(&dir.path().join("missing")).is_err());
    }
}
