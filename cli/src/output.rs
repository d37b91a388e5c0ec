//! How `wardenctl` shows results: plain aligned tables for people (`-o table`, the default)
//! or JSON for scripts (`-o json`).
//!
//! Every command hands [`Printer`] both forms, built from the same response, so the two can
//! never disagree about what happened. Credentials that are shown once go through
//! [`Printer::secret`]: alone on stdout in table mode, so that `$(wardenctl token issue …)`
//! captures exactly the credential, with everything else on stderr.
//!
//! Every cell, field value and message passes through [`cell`] on its way out: control
//! characters from stored strings (a request's `model`, a key's owner) are shown as `\n` or
//! `\u{1b}`, so they can neither start a forged row nor drive the terminal. JSON output
//! is escaped by its encoder (and C1 characters by [`warden_core::escape::json_line`]).

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{Table, presets};
use serde_json::Value;

/// Text from the control plane as one terminal-safe cell: control characters escaped.
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    warden_core::escape::control(text)
}

/// The `-o/--output` choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned plain-text columns.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
}

/// The table form of a result: a header and rows of already formatted cells.
#[derive(Debug)]
pub struct Rows {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Rows {
    /// An empty table with these column names.
    pub fn new(header: &[impl AsRef<str>]) -> Self {
        Self {
            header: header.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends one row; it should have as many cells as the header.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text: no borders, no colours, columns two spaces apart, no trailing
    /// spaces.
    pub fn render(&self) -> String {
        let mut table = Table::new();
        table.load_preset(presets::NOTHING);
        table.set_header(self.header.iter().map(|h| cell(h)));
        for row in &self.rows {
            table.add_row(row.iter().map(|c| cell(c)));
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        let mut text = String::new();
        for line in table.lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// The key-value form of one record: `label:` then the value, values aligned.
#[derive(Debug, Default)]
pub struct Fields {
    fields: Vec<(&'static str, String)>,
}

impl Fields {
    /// No fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one `label: value` line.
    pub fn push(&mut self, label: &'static str, value: impl Into<String>) {
        self.fields.push((label, value.into()));
    }

    /// One line per field, values two spaces after the longest label's colon, no trailing
    /// spaces.
    pub fn render(&self) -> String {
        let width = self
            .fields
            .iter()
            .map(|(label, _)| label.chars().count() + 1)
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for (label, value) in &self.fields {
            let line = format!("{:<width$}  {}", format!("{label}:"), cell(value));
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Writes results in the chosen [`OutputFormat`].
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    format: OutputFormat,
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    /// A listing or a created/changed record.
    pub fn table(&self, rows: &Rows, json: &Value) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => stdout(&rows.render()),
            OutputFormat::Json => print_json(json),
        }
    }

    /// One record as `label: value` lines.
    pub fn fields(&self, fields: &Fields, json: &Value) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => stdout(&fields.render()),
            OutputFormat::Json => print_json(json),
        }
    }

    /// A confirmation that something was done (`provider "x" removed`).
    pub fn done(&self, message: &str, json: &Value) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => stdout(&format!("{}\n", cell(message))),
            OutputFormat::Json => print_json(json),
        }
    }

    /// A credential shown once. In table mode the credential is the only thing on stdout
    /// (one line); `notes` go to stderr as `name: value` lines.
    pub fn secret(&self, secret: &str, notes: &[(&str, String)], json: &Value) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => {
                stdout(&format!("{secret}\n"))?;
                let mut err = io::stderr().lock();
                for (name, value) in notes {
                    writeln!(err, "{name}: {}", cell(value))?;
                }
                writeln!(err, "the credential is shown only once: store it now")
            }
            OutputFormat::Json => print_json(json),
        }
    }
}

fn print_json(json: &Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(json).map_err(io::Error::other)?;
    // Pretty JSON spans lines; only string contents can hold control characters, and the
    // encoder has escaped all but DEL and C1, which this escapes line by line.
    let mut out = String::with_capacity(text.len() + 1);
    for line in text.lines() {
        out.push_str(&warden_core::escape::json_line(line));
        out.push('\n');
    }
    stdout(&out)
}

/// Writes to stdout; a closed pipe (`wardenctl … | head`) is not an error.
fn stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Unix seconds as RFC 3339 UTC; `0` (the proto's "unset") as `-`.
pub fn timestamp(unix_seconds: i64) -> String {
    match u64::try_from(unix_seconds) {
        Ok(0) | Err(_) => "-".to_owned(),
        Ok(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds; `0` as `-`.
pub fn timestamp_ms(unix_ms: i64) -> String {
    match u64::try_from(unix_ms) {
        Ok(0) | Err(_) => "-".to_owned(),
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
    }
}

/// How long ago `unix_seconds` was, relative to `now`: `42s ago` or `1h 2m 3s ago` within a
/// day, RFC 3339 beyond that or in the future, `never` for `0`.
pub fn ago(unix_seconds: i64, now: i64) -> String {
    if unix_seconds == 0 {
        return "never".to_owned();
    }
    match u64::try_from(now - unix_seconds) {
        Ok(secs) if secs < 24 * 60 * 60 => {
            format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(secs))
            )
        }
        _ => timestamp(unix_seconds),
    }
}

/// A list cell: items joined by `,`, or `empty` when there are none.
pub fn list(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(",")
    }
}

/// An amount in USD: `$12.50`; two decimals at least, more (up to six) when the amount has
/// them (`$0.075`), so that small prices are not rounded away.
pub fn usd(amount: f64) -> String {
    let text = format!("{amount:.6}");
    let text = text.trim_end_matches('0');
    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
    if decimals >= 2 {
        format!("${text}")
    } else {
        format!("${amount:.2}")
    }
}

/// A duration in whole seconds as `30d`, `1h 30m`, `45s` (days, hours, minutes, seconds;
/// zero parts left out); humantime reads it back.
pub fn span(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (seconds / 86_400, "d"),
        (seconds % 86_400 / 3_600, "h"),
        (seconds % 3_600 / 60, "m"),
        (seconds % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_plain_columns_without_trailing_spaces() {
        let mut rows = Rows::new(&["NAME", "FORMAT"]);
        rows.push(vec!["openai-main".into(), "openai".into()]);
        rows.push(vec!["a".into(), "anthropic".into()]);
        assert_eq!(
            rows.render(),
            "NAME         FORMAT\nopenai-main  openai\na            anthropic\n"
        );
    }

    #[test]
    fn escapes_control_characters_in_every_cell() {
        let mut rows = Rows::new(&["SUBJECT", "RESULT"]);
        rows.push(vec![
            "gpt\n2026-01-01T00:00:00Z  token.issue  admin:adm_1".into(),
            "\u{1b}[2Jok\u{9b}".into(),
        ]);
        let text = rows.render();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("gpt\\n2026-01-01T00:00:00Z  token.issue  admin:adm_1"));
        assert!(text.contains("\\u{1b}[2Jok\\u{9b}"));
        assert!(text.lines().all(|l| !l.chars().any(char::is_control)));

        let mut fields = Fields::new();
        fields.push("owner", "a\nb\u{7f}");
        assert_eq!(fields.render(), "owner:  a\\nb\\u{7f}\n");
    }

    #[test]
    fn formats_timestamps_as_rfc3339_utc() {
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(-5), "-");
        assert_eq!(timestamp_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn shows_recent_times_as_ago() {
        assert_eq!(ago(1_000, 1_042), "42s ago");
        assert_eq!(ago(1_000, 1_000 + 3_723), "1h 2m 3s ago");
        assert_eq!(ago(0, 1_000), "never");
        assert_eq!(
            ago(1_700_000_000, 1_700_000_000 + 2 * 86_400),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(ago(1_700_000_100, 1_700_000_000), "2023-11-14T22:15:00Z");
    }

    #[test]
    fn joins_lists() {
        assert_eq!(list(&["a".into(), "b".into()], "*"), "a,b");
        assert_eq!(list(&[], "*"), "*");
    }

    #[test]
    fn renders_aligned_fields() {
        let mut fields = Fields::new();
        fields.push("rpm", "60");
        fields.push("max parallel", "unlimited");
        fields.push("empty", "");
        assert_eq!(
            fields.render(),
            "rpm:           60\nmax parallel:  unlimited\nempty:\n"
        );
        assert_eq!(Fields::new().render(), "");
    }

    #[test]
    fn formats_usd() {
        assert_eq!(usd(25.0), "$25.00");
        assert_eq!(usd(12.5), "$12.50");
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(0.075), "$0.075");
        assert_eq!(usd(0.1 + 0.2), "$0.30");
        assert_eq!(usd(1.234_567_8), "$1.234568");
        assert_eq!(usd(0.000_000_1), "$0.00");
    }

    #[test]
    fn formats_spans() {
        assert_eq!(span(30 * 86_400), "30d");
        assert_eq!(span(5_400), "1h 30m");
        assert_eq!(span(86_400 + 61), "1d 1m 1s");
        assert_eq!(span(0), "0s");
        let back = humantime::parse_duration(&span(90_061)).unwrap();
        assert_eq!(back.as_secs(), 90_061);
    }
}
