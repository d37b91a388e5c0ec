//! Forwards the audit chain to a syslog receiver (a SIEM, rsyslog, syslog-ng, …): RFC 5424
//! messages over TCP with octet-counting framing (RFC 6587 §3.4.1), optionally over TLS
//! (RFC 5425, rustls with aws-lc-rs), in `seq` order, at least once.
//!
//! Start reading at [`spawn`], then [`SyslogForwarder::run`].
//!
//! # Configuration
//!
//! ```toml
//! [audit.syslog]
//! address = "siem.example.com:6514"  # host:port of the receiver
//! facility = "authpriv"              # default: authpriv (10), security messages
//! format = "json"                    # MSG as json (default), ocsf or cef
//! app_name = "warden-cp"             # default
//! # hostname = "cp-1"                # default: the machine's hostname
//!
//! [audit.syslog.tls]                 # leave out for plain TCP
//! ca_file = "/etc/warden/siem-ca.pem"
//! # client_cert = "/etc/warden/siem-client.pem"   # with client_key, for mutual TLS
//! # client_key = "/etc/warden/siem-client.key"
//! # server_name = "siem.example.com"              # default: the host in `address`
//! ```
//!
//! The default facility is `authpriv` (10): audit records are security events, and
//! receivers conventionally route that facility to a restricted log.
//!
//! # A message
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [warden@32473 seq="…" id="…" action="…"
//!   actor="…" subject="…" result="…" hash="…"] MSG
//! ```
//!
//! `PRI` is facility × 8 + severity, the severity following the record's result
//! ([`Outcome::syslog_severity`]: informational, notice for failures, warning for denials).
//! `TIMESTAMP` is the record's time in UTC with milliseconds, `PROCID` the control plane's
//! process id, `MSGID` the action (printable ASCII, at most 32 characters). Structured-data
//! values escape `"`, `\` and `]` with a backslash. `MSG` is the record rendered by
//! [`super::export::render`] in the configured format, sent without a BOM (many SIEM parsers
//! expect it to start with `{` or `CEF:`). `32473` is the private enterprise number RFC 5612
//! reserves for documentation; register one before relying on the SD-ID.
//!
//! # Delivery
//!
//! The cursor — the last `seq` known delivered — is kept in the state store's `meta` table
//! under [`CURSOR_KEY`] (no new table or migration, both backends, survives restarts). The
//! forwarder reads rows after the cursor ([`crate::store::StateStore::list_audit_range`]),
//! writes them in order and reconnects with jittered exponential backoff (100 ms to 30 s,
//! back to the start once a connection has stayed up for a second) when the receiver is
//! down or drops the connection, resending from the cursor.
//!
//! Syslog over TCP has no acknowledgements, so a written record counts as delivered only
//! once the connection has stayed open for [`CONFIRM_AFTER`] after it was written: a
//! receiver that stops closes the connection (or resets it, if it had unread data), the
//! forwarder sees that before confirming, and resends. Delivery is therefore at least once
//! (a receiver that stops may get the last second again) except when the receiver host
//! loses data it had accepted without closing the connection (a crash with a buffered
//! queue, a power cut); RELP or a receiver with a disk queue covers that. Rows deleted by
//! retention before they were forwarded are reported with a warning.
//!
//! The forwarder wakes on the [`Notify`] given to [`spawn`] (call `notify_one` after
//! appending audit rows) and polls every 500 ms in any case. Run it on one control-plane
//! replica only: replicas sharing a PostgreSQL store share the cursor.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use warden_core::backoff::Backoff;
use warden_core::shutdown::sleep_or_cancel;

use super::ChainedAudit;
use super::export::{ExportFormat, ExportRecord, Outcome, render};
use crate::store::{StateStore, StoreError};

/// The `meta` key that holds the last forwarded `seq`.
pub const CURSOR_KEY: &str = "audit.syslog.cursor";
/// The structured-data element's id (`name@PEN`).
pub const SD_ID: &str = "warden@32473";
/// How long the connection must stay open after a write for its records to count as
/// delivered.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// Rows read and written per round.
const BATCH: u32 = 500;
/// Longest wait for new rows without a wake-up.
const POLL: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A receiver that takes longer than this to accept one batch is treated as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `[audit.syslog]`: where and how to forward the audit chain (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the receiver (`[v6-address]:port` for an IPv6 literal).
    pub address: String,
    /// TLS (RFC 5425); plain TCP when absent.
    pub tls: Option<SyslogTls>,
    #[serde(default)]
    pub facility: Facility,
    /// How `MSG` renders the record.
    #[serde(default)]
    pub format: ExportFormat,
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// `HOSTNAME` in every message; the machine's hostname when absent.
    pub hostname: Option<String>,
}

fn default_app_name() -> String {
    "warden-cp".to_owned()
}

/// `[audit.syslog.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTls {
    /// PEM file of the CA certificate(s) the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// The name the receiver's certificate must carry; the host in `address` when absent.
    pub server_name: Option<String>,
}

/// Syslog facilities (RFC 5424 §6.2.1) by their conventional names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    /// Security/authorization messages, private (10).
    #[default]
    Authpriv,
    Ftp,
    Ntp,
    /// Log audit (13).
    Audit,
    /// Log alert (14).
    Alert,
    /// Clock daemon (15).
    Clock,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The numerical code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Errors configuring the forwarder. Running, it logs and retries instead.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("invalid `audit.syslog.{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("cannot read `audit.syslog.tls.{field}` {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> SyslogError {
    SyslogError::Config {
        field,
        message: message.into(),
    }
}

/// Whether `s` is 1..=`max` printable US-ASCII characters, as RFC 5424 header fields are.
fn is_header_field(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

/// `s` reduced to a header field: printable US-ASCII only, at most `max` characters, `-`
/// (the nil value) when nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let kept: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if kept.is_empty() {
        "-".to_owned()
    } else {
        kept
    }
}

/// Splits `host:port` or `[v6]:port`.
fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

impl SyslogConfig {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), SyslogError> {
        if split_host_port(&self.address).is_none() {
            return Err(invalid("address", "must be host:port"));
        }
        if !is_header_field(&self.app_name, 48) {
            return Err(invalid(
                "app_name",
                "must be 1 to 48 printable ASCII characters without spaces",
            ));
        }
        if let Some(h) = &self.hostname
            && !is_header_field(h, 255)
        {
            return Err(invalid(
                "hostname",
                "must be 1 to 255 printable ASCII characters without spaces",
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                return Err(invalid(
                    "tls.client_cert",
                    "client_cert and client_key go together",
                ));
            }
            if let Some(name) = &tls.server_name
                && ServerName::try_from(name.as_str()).is_err()
            {
                return Err(invalid(
                    "tls.server_name",
                    "is not a DNS name or IP address",
                ));
            }
        }
        Ok(())
    }
}

// ---- messages ---------------------------------------------------------------------------

/// A structured-data parameter value: `"`, `\` and `]` escaped with a backslash
/// (RFC 5424 §6.3.3).
pub fn escape_sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 3339 UTC with milliseconds, or the nil value when out of range.
fn timestamp(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// Octet-counting framing (RFC 6587 §3.4.1): `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// Everything a message needs besides the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFormat {
    pub facility: Facility,
    pub format: ExportFormat,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

impl MessageFormat {
    /// One RFC 5424 message for `row` (see the module docs), without framing.
    pub fn message(&self, row: &ChainedAudit) -> String {
        let r = &row.record;
        let severity = Outcome::of(&r.result).syslog_severity();
        let pri = u16::from(self.facility.code()) * 8 + u16::from(severity);
        let mut out = format!(
            "<{pri}>1 {} {} {} {} {} [{SD_ID}",
            timestamp(r.timestamp_ms),
            self.hostname,
            self.app_name,
            self.procid,
            header_field(&r.action, 32),
        );
        let seq = row.seq.to_string();
        for (name, value) in [
            ("seq", seq.as_str()),
            ("id", &r.id),
            ("action", &r.action),
            ("actor", &r.actor),
            ("subject", &r.subject),
            ("result", &r.result),
            ("hash", &row.hash),
        ] {
            let _ = write!(out, " {name}=\"{}\"", escape_sd_value(value));
        }
        out.push_str("] ");
        out.push_str(&render(&ExportRecord::from(row), self.format));
        out
    }
}

// ---- the cursor -------------------------------------------------------------------------

/// The last forwarded `seq` (0 when nothing was forwarded yet).
pub async fn load_cursor(store: &dyn StateStore) -> Result<u64, StoreError> {
    super::cursor::load(store, CURSOR_KEY).await
}

/// Records that every row up to `seq` was forwarded.
pub async fn store_cursor(store: &dyn StateStore, seq: u64) -> Result<(), StoreError> {
    super::cursor::save(store, CURSOR_KEY, seq).await
}

/// What was written and what is confirmed delivered.
#[derive(Debug)]
struct Progress {
    /// Delivered: the connection stayed open [`CONFIRM_AFTER`] after these were written.
    confirmed: u64,
    /// Written to the current connection.
    sent: u64,
    /// The cursor as last stored.
    persisted: u64,
    /// Writes not yet confirmed: (last seq of the write, when it was written).
    pending: VecDeque<(u64, Instant)>,
}

impl Progress {
    fn new(cursor: u64) -> Self {
        Self {
            confirmed: cursor,
            sent: cursor,
            persisted: cursor,
            pending: VecDeque::new(),
        }
    }

    fn wrote(&mut self, seq: u64, at: Instant) {
        self.sent = seq;
        self.pending.push_back((seq, at));
    }

    /// The connection is open at `now`: confirms the writes made [`CONFIRM_AFTER`] before.
    fn confirm_open_at(&mut self, now: Instant) {
        while let Some(&(seq, at)) = self.pending.front() {
            if now.saturating_duration_since(at) < CONFIRM_AFTER {
                break;
            }
            self.confirmed = seq;
            self.pending.pop_front();
        }
    }

    /// The connection was lost: everything unconfirmed is sent again.
    fn rewind(&mut self) {
        self.sent = self.confirmed;
        self.pending.clear();
    }

    /// How long until the oldest pending write can be confirmed.
    fn next_confirm_in(&self, now: Instant) -> Option<Duration> {
        self.pending
            .front()
            .map(|&(_, at)| (at + CONFIRM_AFTER).saturating_duration_since(now))
    }

    /// How long until every pending write can be confirmed.
    fn all_confirmed_in(&self, now: Instant) -> Option<Duration> {
        self.pending
            .back()
            .map(|&(_, at)| (at + CONFIRM_AFTER).saturating_duration_since(now))
    }
}

// ---- the connection ---------------------------------------------------------------------

trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}
type Connection = Box<dyn Transport>;

/// Whether the receiver still holds the connection open. Receivers never send on a syslog
/// connection, so a read that would block means open; end of stream or an error (a reset,
/// a TLS close) means closed. Under TLS, handshake messages such as session tickets are
/// consumed by rustls and read as "would block".
fn is_open(c: &mut Connection) -> bool {
    let mut buf = [0u8; 512];
    for _ in 0..16 {
        match c.read(&mut buf).now_or_never() {
            None => return true,
            Some(Ok(0) | Err(_)) => return false,
            // Unexpected bytes from the receiver: ignore them.
            Some(Ok(_)) => {}
        }
    }
    true
}

async fn read_file(field: &'static str, path: &Path) -> Result<Vec<u8>, SyslogError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| SyslogError::Read {
            field,
            path: path.display().to_string(),
            source,
        })
}

/// The TLS client for `tls`, with certificates loaded from its files.
async fn tls_connector(
    tls: &SyslogTls,
    address_host: &str,
) -> Result<(TlsConnector, ServerName<'static>), SyslogError> {
    let pem = read_file("ca_file", &tls.ca_file).await?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in warden_core::pem::certificates(&pem).map_err(|e| invalid("tls.ca_file", e))? {
        roots
            .add(cert)
            .map_err(|e| invalid("tls.ca_file", format!("unusable certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyslogError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let pem = read_file("client_cert", cert_path).await?;
            let chain =
                warden_core::pem::certificates(&pem).map_err(|e| invalid("tls.client_cert", e))?;
            let key_pem = read_file("client_key", key_path).await?;
            let key = warden_core::pem::private_key(&key_pem)
                .map_err(|e| invalid("tls.client_key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid("tls.client_key", e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = tls.server_name.as_deref().unwrap_or(address_host);
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
        invalid(
            "tls.server_name",
            format!("{name:?} is not a DNS name or IP"),
        )
    })?;
    Ok((TlsConnector::from(Arc::new(config)), server_name))
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

// ---- the forwarder ----------------------------------------------------------------------

/// The forwarding task's state: built by [`SyslogForwarder::new`], driven by
/// [`SyslogForwarder::run`].
pub struct SyslogForwarder {
    store: Arc<dyn StateStore>,
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    message: MessageFormat,
}

impl std::fmt::Debug for SyslogForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogForwarder")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl SyslogForwarder {
    /// Validates `config` and loads its TLS files (errors name the field).
    pub async fn new(
        config: &SyslogConfig,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, SyslogError> {
        config.validate()?;
        let (host, _) = split_host_port(&config.address)
            .ok_or_else(|| invalid("address", "must be host:port"))?;
        let tls = match &config.tls {
            Some(tls) => Some(tls_connector(tls, host).await?),
            None => None,
        };
        let hostname = match &config.hostname {
            Some(h) => h.clone(),
            None => tokio::fs::read_to_string("/proc/sys/kernel/hostname")
                .await
                .map(|h| header_field(h.trim(), 255))
                .unwrap_or_else(|_| "-".to_owned()),
        };
        Ok(Self {
            store,
            address: config.address.clone(),
            tls,
            message: MessageFormat {
                facility: config.facility,
                format: config.format,
                hostname,
                app_name: config.app_name.clone(),
                procid: std::process::id().to_string(),
            },
        })
    }

    async fn connect(&self) -> io::Result<Connection> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| timed_out("connect"))??;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| timed_out("tls handshake"))??;
                Ok(Box::new(tls))
            }
        }
    }

    async fn persist(&self, progress: &mut Progress) {
        if progress.confirmed <= progress.persisted {
            return;
        }
        match store_cursor(&*self.store, progress.confirmed).await {
            Ok(()) => progress.persisted = progress.confirmed,
            Err(e) => {
                tracing::warn!(error = %e, seq = progress.confirmed, "syslog forwarder: cannot store its cursor; will retry");
            }
        }
    }

    /// Forwards rows after the stored cursor until `shutdown`, waking on `wake` or every
    /// 500 ms. Never returns an error: store and network failures are logged and retried.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX).jittered_below();
        let cursor = loop {
            match load_cursor(&*self.store).await {
                Ok(c) => break c,
                Err(StoreError::Malformed(m)) => {
                    tracing::error!(error = %m, "syslog forwarder: bad cursor; forwarding the whole chain again");
                    break 0;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "syslog forwarder: cannot read its cursor; retrying");
                    if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                        return;
                    }
                }
            }
        };
        backoff.reset();
        tracing::info!(address = %self.address, tls = self.tls.is_some(), cursor, "syslog forwarder started");

        let mut progress = Progress::new(cursor);
        let mut conn: Option<Connection> = None;
        let mut connected_at = Instant::now();
        while !shutdown.is_cancelled() {
            let Some(c) = conn.as_mut() else {
                let attempt = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = self.connect() => r,
                };
                match attempt {
                    Ok(c) => {
                        tracing::info!(address = %self.address, from_seq = progress.sent + 1, "syslog receiver connected");
                        conn = Some(c);
                        connected_at = Instant::now();
                    }
                    Err(e) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(address = %self.address, error = %e, retry_in_ms = wait.as_millis() as u64, "syslog receiver unreachable");
                        if !sleep_or_cancel(wait, &shutdown).await {
                            break;
                        }
                    }
                }
                continue;
            };
            if !is_open(c) {
                tracing::warn!(address = %self.address, resend_from = progress.confirmed + 1, "syslog receiver closed the connection");
                conn = None;
                progress.rewind();
                // A receiver that accepts and then drops every connection (one refusing our
                // client certificate, say) is retried with backoff, not in a tight loop.
                if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                    break;
                }
                continue;
            }
            let now = Instant::now();
            if now.saturating_duration_since(connected_at) >= CONFIRM_AFTER {
                backoff.reset();
            }
            progress.confirm_open_at(now);
            self.persist(&mut progress).await;

            let rows = match self.store.list_audit_range(progress.sent + 1, BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, "syslog forwarder: cannot read audit rows; retrying");
                    if !sleep_or_cancel(wait, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                let wait = progress
                    .next_confirm_in(Instant::now())
                    .map_or(POLL, |d| d.min(POLL));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            };
            if first.seq > progress.sent + 1 {
                tracing::warn!(
                    from_seq = progress.sent + 1,
                    to_seq = first.seq - 1,
                    "audit rows were deleted by retention before they were forwarded to syslog"
                );
            }
            let mut buf = Vec::with_capacity(rows.len() * 512);
            for row in &rows {
                buf.extend_from_slice(&frame(&self.message.message(row)));
            }
            let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                c.write_all(&buf).await?;
                c.flush().await
            })
            .await
            .unwrap_or_else(|_| Err(timed_out("write")));
            match written {
                Ok(()) => progress.wrote(last.seq, Instant::now()),
                Err(e) => {
                    tracing::warn!(address = %self.address, error = %e, resend_from = progress.confirmed + 1, "syslog write failed");
                    conn = None;
                    progress.rewind();
                    if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                        break;
                    }
                }
            }
        }

        // Stopping: give the last writes their confirmation time (at most CONFIRM_AFTER)
        // so that a clean restart does not send them again.
        if let Some(mut c) = conn {
            if let Some(wait) = progress.all_confirmed_in(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            if is_open(&mut c) {
                progress.confirm_open_at(Instant::now());
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), c.shutdown()).await;
        }
        self.persist(&mut progress).await;
        tracing::info!(cursor = progress.persisted, "syslog forwarder stopped");
    }
}

/// Starts forwarding the audit chain of `store` as `config` says, until `shutdown`.
/// `wake`, when given, is notified (`notify_one`) by whoever appends audit rows; without
/// it the forwarder polls every 500 ms. Fails only on a bad configuration or unreadable
/// TLS files; an unreachable receiver is retried forever.
pub async fn spawn(
    config: SyslogConfig,
    store: Arc<dyn StateStore>,
    wake: Option<Arc<Notify>>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, SyslogError> {
    let forwarder = SyslogForwarder::new(&config, store).await?;
    Ok(tokio::spawn(
        forwarder.run(wake.unwrap_or_default(), shutdown),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditRecord;

    fn row() -> ChainedAudit {
        ChainedAudit {
            seq: 7,
            record: AuditRecord {
                id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
                timestamp_ms: 1_717_243_200_123,
                action: "auth.admin".into(),
                actor: "fp:ab\"cd\\ef]".into(),
                subject: "ZoëÅ ]x[".into(),
                result: "denied".into(),
                detail: "reason=bad".into(),
            },
            prev_hash: "00".repeat(32),
            hash: "ab".repeat(32),
        }
    }

    fn format(format: ExportFormat) -> MessageFormat {
        MessageFormat {
            facility: Facility::Authpriv,
            format,
            hostname: "cp-1".into(),
            app_name: "warden-cp".into(),
            procid: "4242".into(),
        }
    }

    #[test]
    fn message_has_the_rfc5424_shape() {
        let m = format(ExportFormat::Cef).message(&row());
        let expected_head = format!(
            concat!(
                // authpriv (10) * 8 + warning (4) = 84
                "<84>1 2024-06-01T12:00:00.123Z cp-1 warden-cp 4242 auth.admin ",
                r#"[warden@32473 seq="7" id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" action="auth.admin" "#,
                r#"actor="fp:ab\"cd\\ef\]" subject="ZoëÅ \]x[" result="denied" hash="{}"] "#,
                "CEF:0|Warden|"
            ),
            "ab".repeat(32)
        );
        assert!(m.starts_with(&expected_head), "{m}");
        assert!(m.ends_with("msg=reason\\=bad"), "{m}");
    }

    #[test]
    fn severity_follows_the_result_and_facility_is_configurable() {
        let mut r = row();
        r.record.result = "ok".into();
        let mut f = format(ExportFormat::Json);
        assert!(f.message(&r).starts_with("<86>1 ")); // 10 * 8 + 6
        f.facility = Facility::Local0;
        r.record.result = "invalid_argument".into();
        assert!(f.message(&r).starts_with("<133>1 ")); // 16 * 8 + 5
    }

    #[test]
    fn odd_actions_make_a_valid_msgid() {
        let mut r = row();
        r.record.action = "a b\u{e9}c".into();
        assert!(
            format(ExportFormat::Json)
                .message(&r)
                .contains(" 4242 abc [")
        );
        r.record.action = String::new();
        assert!(format(ExportFormat::Json).message(&r).contains(" 4242 - ["));
        r.record.action = "x".repeat(40);
        let m = format(ExportFormat::Json).message(&r);
        assert!(m.contains(&format!(" 4242 {} [", "x".repeat(32))));
    }

    #[test]
    fn sd_values_escape_quote_backslash_bracket() {
        assert_eq!(escape_sd_value(r#"a"b\c]d[e=f"#), r#"a\"b\\c\]d[e=f"#);
    }

    #[test]
    fn framing_counts_octets_not_chars() {
        assert_eq!(frame("é"), b"2 \xc3\xa9".to_vec());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_717_243_200_123), "2024-06-01T12:00:00.123Z");
        assert_eq!(timestamp(i64::MAX), "-");
    }

    #[test]
    fn config_parses_and_names_bad_fields() {
        let c: SyslogConfig = toml::from_str(
            r#"
            address = "siem.example.com:6514"
            format = "cef"
            [tls]
            ca_file = "/ca.pem"
            "#,
        )
        .unwrap();
        assert_eq!(c.facility, Facility::Authpriv);
        assert_eq!(c.format, ExportFormat::Cef);
        assert_eq!(c.app_name, "warden-cp");
        assert!(c.validate().is_ok());

        let err = toml::from_str::<SyslogConfig>("address = \"h:1\"\nport = 5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err =
            toml::from_str::<SyslogConfig>("address = \"h:1\"\nfacility = \"local9\"").unwrap_err();
        assert!(err.to_string().contains("local9"), "{err}");

        let mut bad = c.clone();
        bad.address = "no-port".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("audit.syslog.address")
        );
        let mut bad = c.clone();
        bad.app_name = "warden cp".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("audit.syslog.app_name")
        );
        let mut bad = c;
        if let Some(tls) = bad.tls.as_mut() {
            tls.client_cert = Some("/c.pem".into());
        }
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("audit.syslog.tls.client_cert")
        );
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.b:514"), Some(("a.b", 514)));
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1", 6514)));
        assert_eq!(split_host_port("::1:6514"), None);
        assert_eq!(split_host_port(":514"), None);
        assert_eq!(split_host_port("h:x"), None);
    }

    #[test]
    fn facility_codes() {
        assert_eq!(Facility::Kern.code(), 0);
        assert_eq!(Facility::Authpriv.code(), 10);
        assert_eq!(Facility::Audit.code(), 13);
        assert_eq!(Facility::Local0.code(), 16);
        assert_eq!(Facility::Local7.code(), 23);
    }

    #[test]
    fn writes_are_confirmed_only_after_the_connection_stayed_open() {
        let t0 = Instant::now();
        let mut p = Progress::new(10);
        p.wrote(20, t0);
        p.wrote(30, t0 + Duration::from_millis(600));
        p.confirm_open_at(t0 + Duration::from_millis(900));
        assert_eq!((p.confirmed, p.sent), (10, 30));
        assert_eq!(
            p.next_confirm_in(t0 + Duration::from_millis(900)),
            Some(Duration::from_millis(100))
        );
        p.confirm_open_at(t0 + Duration::from_millis(1000));
        assert_eq!(p.confirmed, 20);
        // Lost before the second write was confirmed: it is sent again.
        p.rewind();
        assert_eq!((p.confirmed, p.sent), (20, 20));
        assert_eq!(p.next_confirm_in(t0), None);
    }
}
