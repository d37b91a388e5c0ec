//! OpenTelemetry traces over OTLP/gRPC, off unless an endpoint is configured.
//!
//! Spans meant for export are `tracing` spans with the target [`TARGET`]; only those reach
//! the exporter (no log event, no dependency's span), and the log output never shows them
//! ([`crate::telemetry`] keeps them out of the log filter). With tracing off no layer
//! listens to [`TARGET`], so those spans are disabled at their call site and cost one
//! check each. Export goes through the SDK's batch span processor: a bounded queue
//! ([`QUEUE`]) that drops spans when full rather than wait, drained by its own thread, so a
//! slow or absent collector never holds up a request. [`Exporter::shutdown`] flushes what
//! is queued (on SIGTERM, after the drain).
//!
//! Nothing from a client's `traceparent`, `tracestate` or `baggage` is used: every request
//! span starts a new trace, so a client cannot choose trace ids or sampling. A node that
//! opted in sends its own span's context to providers ([`traceparent`]).

use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use secrecy::{ExposeSecret as _, SecretString};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of every span that is exported.
pub const TARGET: &str = "warden_trace";
/// Spans waiting for export at most; past it new spans are dropped (never waited for).
pub const QUEUE: usize = 4096;
/// How often queued spans are sent, by default.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A tracing setting that cannot be used; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

fn invalid(setting: &'static str, message: impl Into<String>) -> OtlpError {
    OtlpError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Where and how traces are exported.
#[derive(Clone)]
pub struct OtlpSettings {
    /// The collector's OTLP/gRPC endpoint, `http://host:4317` or `https://…`.
    pub endpoint: String,
    /// `service.name` of every span.
    pub service_name: String,
    /// Share of new traces recorded and exported, 0.0 to 1.0.
    pub sample_ratio: f64,
    /// gRPC metadata sent with every export (a collector's API key, say): secret values.
    pub headers: Vec<(String, SecretString)>,
    /// How often queued spans are sent.
    pub export_interval: Duration,
}

impl std::fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &names)
            .field("export_interval", &self.export_interval)
            .finish()
    }
}

/// The raw tracing settings of a binary, as given (flags, file, environment).
#[derive(Debug, Default, Clone)]
pub struct RawOtlp<'a> {
    /// `None` or empty: tracing is off.
    pub endpoint: Option<&'a str>,
    pub service_name: Option<&'a str>,
    pub sample_ratio: Option<&'a str>,
    /// `name=value,name=value` (secret: from the environment only).
    pub headers: Option<&'a str>,
    pub export_interval: Option<&'a str>,
}

impl RawOtlp<'_> {
    /// The settings, `None` when no endpoint is set. `names` are the settings' names as the
    /// binary spells them (flag or config key), for errors: endpoint, sample ratio,
    /// headers, export interval.
    pub fn build(
        &self,
        default_service: &str,
        names: [&'static str; 4],
    ) -> Result<Option<OtlpSettings>, OtlpError> {
        let Some(endpoint) = self.endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.parse::<http::Uri>().is_err()
        {
            return Err(invalid(
                names[0],
                format!("`{endpoint}` is not an http:// or https:// URL"),
            ));
        }
        let sample_ratio = match self.sample_ratio.map(str::trim) {
            None | Some("") => 1.0,
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| invalid(names[1], "expected a number from 0.0 to 1.0"))?,
        };
        let headers = match self.headers {
            None => Vec::new(),
            Some(text) => parse_headers(text).map_err(|m| invalid(names[2], m))?,
        };
        let export_interval = match self.export_interval.map(str::trim) {
            None | Some("") => DEFAULT_EXPORT_INTERVAL,
            Some(text) => humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(names[3], "expected a duration such as `5s`"))?,
        };
        let service_name = self
            .service_name
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(default_service)
            .to_owned();
        Ok(Some(OtlpSettings {
            endpoint: endpoint.to_owned(),
            service_name,
            sample_ratio,
            headers,
            export_interval,
        }))
    }
}

/// `name=value,name=value` into gRPC metadata pairs; the error never repeats a value.
fn parse_headers(text: &str) -> Result<Vec<(String, SecretString)>, String> {
    let mut out = Vec::new();
    for (i, pair) in text.split(',').enumerate() {
        if pair.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("entry {} is not name=value", i + 1));
        };
        let name = name.trim().to_ascii_lowercase();
        if tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
            .is_err()
            || name.ends_with("-bin")
        {
            return Err(format!("`{name}` is not a usable header name"));
        }
        if tonic::metadata::MetadataValue::<tonic::metadata::Ascii>::try_from(value.trim()).is_err()
        {
            return Err(format!("the value of `{name}` is not printable ASCII"));
        }
        out.push((name, SecretString::from(value.trim().to_owned())));
    }
    Ok(out)
}

/// A running exporter: flush it at shutdown.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Builds the batch exporter for `settings` and the tracer the `tracing` layer uses.
    /// Needs a Tokio runtime (the gRPC channel connects lazily on it); never connects here.
    pub fn start(
        settings: &OtlpSettings,
    ) -> Result<(Self, opentelemetry_sdk::trace::Tracer), OtlpError> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (name, value) in &settings.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                .map_err(|_| invalid("headers", format!("`{name}` is not a header name")))?;
            let mut value = tonic::metadata::MetadataValue::try_from(value.expose_secret())
                .map_err(|_| invalid("headers", format!("the value of `{name}` is unusable")))?;
            value.set_sensitive(true);
            metadata.insert(key, value);
        }
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .with_metadata(metadata);
        if settings.endpoint.starts_with("https://") {
            // The collector's certificate is checked against the system's roots.
            builder = builder
                .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
        }
        let exporter = builder
            .build()
            .map_err(|e| OtlpError::Exporter(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(512)
            .with_scheduled_delay(settings.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build();
        // Parent-based: the children of a recorded request span are recorded with it. No
        // remote parent is ever set, so the ratio decides for every trace.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("warden");
        Ok((Self { provider }, tracer))
    }

    /// Sends what is queued and stops the exporter (at most the export timeout); on a
    /// blocking thread, since the SDK waits for its export thread.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(EXPORT_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "traces queued at shutdown were not all exported")
            }
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
        }
    }
}

/// The W3C `traceparent` of `span` (version 00: trace id, span id, sampled flag), when it
/// has a valid context, i.e. when tracing is on and the span is enabled.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["endpoint", "ratio", "headers", "interval"];

    #[test]
    fn no_endpoint_means_off() {
        let raw = RawOtlp {
            endpoint: Some("  "),
            sample_ratio: Some("nonsense"),
            ..RawOtlp::default()
        };
        assert!(raw.build("svc", NAMES).unwrap().is_none());
    }

    #[test]
    fn settings_are_checked_and_errors_name_the_setting_not_the_secret() {
        let ok = RawOtlp {
            endpoint: Some("http://127.0.0.1:4317"),
            sample_ratio: Some("0.25"),
            headers: Some("x-api-key=s3cr3t-value, other = two"),
            ..RawOtlp::default()
        }
        .build("warden-dp", NAMES)
        .unwrap()
        .unwrap();
        assert_eq!(ok.service_name, "warden-dp");
        assert_eq!(ok.sample_ratio, 0.25);
        assert_eq!(ok.headers.len(), 2);
        assert_eq!(ok.export_interval, DEFAULT_EXPORT_INTERVAL);
        assert!(!format!("{ok:?}").contains("s3cr3t-value"));

        let bad = |raw: RawOtlp<'_>| raw.build("s", NAMES).unwrap_err().to_string();
        let with = |e: &'static str| RawOtlp {
            endpoint: Some(e),
            ..RawOtlp::default()
        };
        assert!(bad(with("collector:4317")).starts_with("endpoint:"));
        assert!(
            bad(RawOtlp {
                sample_ratio: Some("1.5"),
                ..with("http://c:4317")
            })
            .starts_with("ratio:")
        );
        let e = bad(RawOtlp {
            headers: Some("x-api-key"),
            ..with("http://c:4317")
        });
        assert!(e.starts_with("headers:"), "{e}");
        let e = bad(RawOtlp {
            headers: Some("x-api-key=s3cr3t\u{7f}"),
            ..with("http://c:4317")
        });
        assert!(e.starts_with("headers:") && !e.contains("s3cr3t"), "{e}");
        assert!(
            bad(RawOtlp {
                export_interval: Some("0s"),
                ..with("http://c:4317")
            })
            .starts_with("interval:")
        );
    }

    #[test]
    fn a_disabled_span_has_no_traceparent() {
        assert_eq!(traceparent(&tracing::Span::none()), None);
    }
}
