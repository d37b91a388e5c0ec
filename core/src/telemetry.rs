//! Process logging: `tracing` with a writer that passes every formatted line through
//! [`crate::redact::redact`] before it reaches stderr (DESIGN.md, invariant 1). Whatever a
//! log call site gets wrong, a secret of a known shape never reaches the log. The same
//! writer escapes control characters ([`crate::escape`]): a client string with a line feed
//! or an ESC (a request's `model`) cannot start a forged log line or drive a terminal.
//!
//! The log filter can be replaced while running ([`LogLevel`], for SIGHUP). With OTLP
//! settings, [`init_with`] also exports the spans of target [`crate::otlp::TARGET`], which
//! the log filter always leaves out.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Write};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

use crate::otlp::{Exporter, OtlpError, OtlpSettings};

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// A `MakeWriter` that redacts each formatted event, and escapes the control characters
/// inside it, before writing it to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr {
    format: LogFormat,
    sink: Sink,
}

/// Where the lines go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Sink {
    #[default]
    Stderr,
    /// Nowhere: everything but the final write, for benchmarks.
    Discard,
}

impl RedactingStderr {
    /// A writer for events rendered in `format` (control characters are escaped in that
    /// format's way: `\n` in text, `\u000a` in JSON).
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            sink: Sink::Stderr,
        }
    }

    /// Like [`RedactingStderr::new`], but each line, once redacted and escaped, is
    /// dropped instead of written: the cost of the writer alone, for benchmarks.
    pub fn discarding(format: LogFormat) -> Self {
        Self {
            format,
            sink: Sink::Discard,
        }
    }
}

/// The writer for one event.
#[derive(Debug)]
pub struct RedactingWriter {
    buf: Vec<u8>,
    format: LogFormat,
    sink: Sink,
}

thread_local! {
    /// Each thread's event buffer, taken by the writer of one event and given back when the
    /// line is written, so that a log line costs no allocation of its own.
    static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A buffer grown beyond this by a huge event is freed rather than kept for the next one.
const BUFFER_KEEP: usize = 16 * 1024;

/// One formatted event as it goes to the log: secrets redacted, control characters
/// escaped but for the final line terminator, so that one event is one line.
pub fn sanitize_line(line: &str, format: LogFormat) -> String {
    sanitized(line, format).into_owned()
}

/// [`sanitize_line`], borrowing `line` when it needs no change (the common case).
pub fn sanitized(line: &str, format: LogFormat) -> Cow<'_, str> {
    fn escape(text: &str, format: LogFormat) -> Cow<'_, str> {
        match format {
            LogFormat::Text => crate::escape::text_line(text),
            LogFormat::Json => crate::escape::json_line(text),
        }
    }
    match crate::redact::redact(line) {
        Cow::Borrowed(line) => escape(line, format),
        Cow::Owned(redacted) => {
            let escaped = match escape(&redacted, format) {
                Cow::Owned(escaped) => Some(escaped),
                Cow::Borrowed(_) => None,
            };
            Cow::Owned(escaped.unwrap_or(redacted))
        }
    }
}

impl Write for RedactingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        // The fmt layer writes one whole event per writer, so patterns never straddle writes.
        {
            // Borrowed unless the event holds invalid UTF-8.
            let text = String::from_utf8_lossy(&self.buf);
            let line = sanitized(&text, self.format);
            match self.sink {
                // One `write` per line, unbuffered: a crash loses no line written before it.
                Sink::Stderr => {
                    let _ = io::stderr().lock().write_all(line.as_bytes());
                }
                Sink::Discard => {
                    std::hint::black_box(line.as_bytes());
                }
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= BUFFER_KEEP {
            buf.clear();
            let _ = BUFFER.try_with(|cell| cell.set(buf));
        }
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        let mut buf = BUFFER.try_with(Cell::take).unwrap_or_default();
        buf.reserve(256);
        RedactingWriter {
            buf,
            format: self.format,
            sink: self.sink,
        }
    }
}

/// Installs the global subscriber: env filter from `RUST_LOG` (default `info`), redacting
/// and escaping writer, chosen format. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let _ = init_with(format, None, None);
}

/// Errors setting up logging and tracing.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log level: {0}")]
    LogLevel(String),
    #[error(transparent)]
    Otlp(#[from] OtlpError),
}

/// What [`init_with`] set up: keep it, and call [`Telemetry::shutdown`] before exiting so
/// that queued spans are exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    exporter: Option<Exporter>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporter.is_some()
    }

    /// Exports the spans still queued, then stops the exporter.
    pub async fn shutdown(self) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown().await;
        }
    }
}

/// The log filter in force, replaceable while running ([`log_level`]).
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLevel")
            .field("current", &self.current())
            .finish()
    }
}

/// What [`LogLevel::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    /// The new filter is in force.
    Changed,
    /// The filter was already this one.
    Unchanged,
}

impl LogLevel {
    /// The filter in force, as written (`RUST_LOG` syntax).
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `directives` (`RUST_LOG` syntax, e.g. `info,warden_data_plane=debug`) in force;
    /// a filter that does not parse is refused and the one in force stays.
    pub fn set(&self, directives: &str) -> Result<LevelChange, TelemetryError> {
        let directives = directives.trim();
        let filter = log_filter(directives)?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == directives {
            return Ok(LevelChange::Unchanged);
        }
        self.handle
            .reload(filter)
            .map_err(|e| TelemetryError::LogLevel(e.to_string()))?;
        *current = directives.to_owned();
        Ok(LevelChange::Changed)
    }
}

static LOG_LEVEL: OnceLock<LogLevel> = OnceLock::new();

/// The process's replaceable log filter, once [`init_with`] installed the subscriber.
pub fn log_level() -> Option<&'static LogLevel> {
    LOG_LEVEL.get()
}

/// Checks a log filter (`RUST_LOG` syntax) without using it.
pub fn check_log_filter(directives: &str) -> Result<(), TelemetryError> {
    log_filter(directives.trim()).map(|_| ())
}

/// The log output's filter for `directives`: empty means `info`; the spans for export
/// ([`crate::otlp::TARGET`]) are always left out of the log.
fn log_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    let text = if directives.is_empty() {
        "info"
    } else {
        directives
    };
    let filter = EnvFilter::builder()
        .with_regex(false)
        .parse(text)
        .map_err(|e| TelemetryError::LogLevel(format!("`{text}`: {e}")))?;
    let off = format!("{}=off", crate::otlp::TARGET)
        .parse()
        .map_err(|e| TelemetryError::LogLevel(format!("{e}")))?;
    Ok(filter.add_directive(off))
}

/// Installs the global subscriber: the log filter `directives` (`RUST_LOG` syntax; `None`:
/// `RUST_LOG`, default `info`), replaceable later through [`log_level`]; the redacting and
/// escaping writer in `format`; and, with `otlp`, the export of the spans of target
/// [`crate::otlp::TARGET`] (needs a Tokio runtime). A second call installs nothing and
/// exports nothing.
pub fn init_with(
    format: LogFormat,
    directives: Option<&str>,
    otlp: Option<&OtlpSettings>,
) -> Result<Telemetry, TelemetryError> {
    let text = match directives {
        Some(d) => d.trim().to_owned(),
        None => std::env::var("RUST_LOG").unwrap_or_default(),
    };
    let filter = match log_filter(&text) {
        Ok(f) => f,
        // A bad RUST_LOG falls back to `info`, as before; a bad explicit filter is an error.
        Err(_) if directives.is_none() => log_filter("")?,
        Err(e) => return Err(e),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(RedactingStderr::new(format))
        .with_ansi(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (exporter, tracer) = match otlp {
        Some(settings) => {
            let (exporter, tracer) = Exporter::start(settings)?;
            (Some(exporter), Some(tracer))
        }
        None => (None, None),
    };
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(crate::otlp::TARGET, tracing::Level::INFO),
            )
    });
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter));
    // Not `.with(Option<layer>)`: a `None` layer above a per-layer filter enables every
    // call site (the spans for export included), which would cost a span per request.
    let installed = match spans {
        Some(spans) => logs.with(spans).try_init(),
        None => logs.try_init(),
    }
    .is_ok();
    if !installed {
        return Ok(Telemetry::default());
    }
    let _ = LOG_LEVEL.set(LogLevel {
        handle,
        current: Mutex::new(text),
    });
    Ok(Telemetry { exporter })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test here that installs the global subscriber.
    #[test]
    fn without_otlp_export_spans_are_disabled_and_the_filter_is_replaceable() {
        let telemetry = init_with(LogFormat::Text, Some("info"), None).unwrap();
        assert!(!telemetry.exporting());
        // Even with every level on, the spans meant for export stay off: no span is created.
        let level = log_level().unwrap();
        assert_eq!(level.set("trace").unwrap(), LevelChange::Changed);
        assert_eq!(level.set(" trace ").unwrap(), LevelChange::Unchanged);
        assert!(tracing::info_span!(target: crate::otlp::TARGET, "request").is_disabled());
        assert!(!tracing::enabled!(target: crate::otlp::TARGET, tracing::Level::ERROR));
        assert!(tracing::enabled!(target: "warden_data_plane", tracing::Level::DEBUG));
        // A filter that does not parse is refused; the one in force stays.
        assert!(level.set("info,warden=loud").is_err());
        assert_eq!(level.current(), "trace");
        assert_eq!(level.set("warn").unwrap(), LevelChange::Changed);
        assert!(!tracing::enabled!(target: "warden_data_plane", tracing::Level::INFO));
        assert!(check_log_filter("info,warden_data_plane=debug").is_ok());
    }

    #[test]
    fn a_forged_line_stays_inside_its_event() {
        let line =
            "2026-01-01T00:00:00Z  INFO request rejected model=gpt\ntoken.issue admin:adm_1\n";
        let out = sanitize_line(line, LogFormat::Text);
        assert_eq!(out.lines().count(), 1);
        assert!(out.contains("model=gpt\\ntoken.issue admin:adm_1"));
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn json_lines_stay_json_and_secrets_stay_redacted() {
        let line = serde_json::json!({"fields": {"model": "a\u{9b}b", "k": "sk-abcdefghijkl"}})
            .to_string()
            + "\n";
        let out = sanitize_line(&line, LogFormat::Json);
        assert!(!out.contains("sk-abcdefghijkl"));
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["fields"]["model"], "a\u{9b}b");
    }
}
