//! Process logging: `tracing` with a writer that passes every formatted line through
//! [`crate::redact::redact`] before it reaches stderr (DESIGN.md, invariant 1). Whatever a
//! log call site gets wrong, a secret of a known shape never reaches the log. The same
//! writer escapes control characters ([`crate::escape`]): a client string with a line feed
//! or an ESC (a request's `model`) cannot start a forged log line or drive a terminal.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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
}

impl RedactingStderr {
    /// A writer for events rendered in `format` (control characters are escaped in that
    /// format's way: `\n` in text, `\u000a` in JSON).
    pub fn new(format: LogFormat) -> Self {
        Self { format }
    }
}

/// The writer for one event.
#[derive(Debug)]
pub struct RedactingWriter {
    buf: Vec<u8>,
    format: LogFormat,
}

/// One formatted event as it goes to the log: secrets redacted, control characters
/// escaped but for the final line terminator, so that one event is one line.
pub fn sanitize_line(line: &str, format: LogFormat) -> String {
    let redacted = crate::redact::redact(line);
    match format {
        LogFormat::Text => crate::escape::text_line(&redacted).into_owned(),
        LogFormat::Json => crate::escape::json_line(&redacted).into_owned(),
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
        let text = String::from_utf8_lossy(&self.buf);
        let line = sanitize_line(&text, self.format);
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buf: Vec::with_capacity(256),
            format: self.format,
        }
    }
}

/// Installs the global subscriber: env filter from `RUST_LOG` (default `info`), redacting
/// and escaping writer, chosen format. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr::new(format))
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

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
