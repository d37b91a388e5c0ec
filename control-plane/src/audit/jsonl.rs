//! Writes the audit chain to a local JSON Lines file — one record per line, in `seq`
//! order, each exactly once, across restarts and crashes — rotated by size, for log
//! shippers (Filebeat, Vector, Fluent Bit) and for an on-disk copy that outlives retention.
//!
//! Start reading at [`spawn`], then `run`; the file itself is `JsonlFile`.
//!
//! # Configuration
//!
//! ```toml
//! [audit.jsonl]
//! path = "/var/log/warden/audit.jsonl"  # the directory must exist
//! max_bytes = 104857600                 # default 100 MiB: rotate before a file grows past it
//! max_files = 10                        # default 10: rotated files kept (0: none)
//! ```
//!
//! # A line
//!
//! The record rendered by [`super::export::render`] as [`ExportFormat::Json`] (`seq`, `id`,
//! `timestamp_ms`, `action`, `actor`, `subject`, `result`, `detail`, `prev_hash`, `hash`),
//! then `\n`.
//!
//! # Rotation
//!
//! Before a line would take a non-empty file past `max_bytes`, the file is renamed
//! `<path>.1` (an existing `.1` becomes `.2`, and so on; `.<max_files>` is deleted) and a new
//! file starts. A line longer than `max_bytes` gets a file of its own. Files are created with
//! mode 0600; an existing file with looser permissions is tightened to 0600.
//!
//! # Exactly once
//!
//! The cursor — the last `seq` written — is kept in the state store's `meta` table under
//! [`CURSOR_KEY`] ([`super::cursor`]). Each batch is written, then `fdatasync`ed, and only
//! then is the cursor advanced; a file is rotated only once the cursor covers all of it.
//! A crash can therefore leave, in the current file only, lines past the cursor (written,
//! cursor not yet stored) and a torn last line (the write itself interrupted). At start the
//! sink cuts the torn line off, reads the last complete line, and when its `seq` is past the
//! cursor and its `id` is that row's in the store, continues after it (storing the cursor).
//! A last line that is not from this chain (another database, a restored backup) is logged
//! and the cursor wins.
//!
//! Rows deleted by retention before they were written are reported with a warning. The
//! sink wakes on the [`Notify`] given to [`spawn`] and polls every 500 ms in any case. Run
//! it on one control-plane replica only, and let no other process write, rotate or
//! truncate the file: the sink keeps it open and would go on writing to a renamed file
//! until it restarts. Changing `path` does not export the history again: the new file
//! starts after the cursor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::Range;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_core::backoff::Backoff;
use warden_core::shutdown::sleep_or_cancel;

use super::cursor;
use super::export::{ExportFormat, ExportRecord, render};
use crate::store::{StateStore, StoreError};

/// The `meta` key that holds the last written `seq`.
pub const CURSOR_KEY: &str = "audit.jsonl.cursor";
/// The default `max_bytes`: 100 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The default `max_files`.
pub const DEFAULT_MAX_FILES: u32 = 10;
/// The smallest `max_bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 1024;
/// The most rotated files kept.
pub const MAX_MAX_FILES: u32 = 1000;

/// Rows read and written per batch (one `fdatasync` each).
const BATCH: u32 = 500;
/// Longest wait for new rows without a wake-up.
const POLL: Duration = Duration::from_millis(500);
/// Bytes read at a time when looking for the last line at start.
const TAIL_WINDOW: u64 = 64 * 1024;
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

fn default_max_files() -> u32 {
    DEFAULT_MAX_FILES
}

/// `[audit.jsonl]`: where to write the audit chain (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// The current file; rotated files are `<path>.1`, `<path>.2`, …
    pub path: PathBuf,
    /// A file is rotated before a line would take it past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    #[serde(default = "default_max_files")]
    pub max_files: u32,
}

impl JsonlConfig {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), JsonlError> {
        if self.path.file_name().is_none() {
            return Err(invalid("path", "must name a file"));
        }
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(invalid("max_bytes", "must be at least 1024"));
        }
        if self.max_files > MAX_MAX_FILES {
            return Err(invalid("max_files", "must be at most 1000"));
        }
        Ok(())
    }
}

/// Errors starting the sink. Running, it logs and retries instead.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("invalid `audit.jsonl.{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("cannot open `audit.jsonl.path` {path}: {source}")]
    Open { path: String, source: io::Error },
}

fn invalid(field: &'static str, message: impl Into<String>) -> JsonlError {
    JsonlError::Config {
        field,
        message: message.into(),
    }
}

// ---- the file -----------------------------------------------------------------------------

/// `<path>.<n>`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Where the end of a file is, seen through a window of its last bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TailLayout {
    /// Bytes of the window to keep: up to and including the last `\n` (what follows it
    /// is a torn line).
    keep: usize,
    /// The last complete line, without its `\n`.
    line: Option<Range<usize>>,
}

/// The layout of `window`, the last bytes of a file (all of it when `whole_file`); `None`
/// when the window is too short to tell.
fn tail_layout(window: &[u8], whole_file: bool) -> Option<TailLayout> {
    let Some(last_nl) = window.iter().rposition(|&b| b == b'\n') else {
        return whole_file.then_some(TailLayout {
            keep: 0,
            line: None,
        });
    };
    let start = match window[..last_nl].iter().rposition(|&b| b == b'\n') {
        Some(p) => p + 1,
        None if whole_file => 0,
        None => return None,
    };
    Some(TailLayout {
        keep: last_nl + 1,
        line: Some(start..last_nl),
    })
}

/// The fields of a written line that identify its row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct WrittenRow {
    seq: u64,
    id: String,
}

/// What the current file held at start.
#[derive(Debug, Default)]
struct Recovered {
    /// Bytes of a torn last line that were cut off.
    torn_bytes: u64,
    /// The last complete line, when there is one.
    last_line: Option<Vec<u8>>,
}

/// The current file, opened for appending.
#[derive(Debug)]
struct JsonlFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

fn fsync_dir_of(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl JsonlFile {
    /// Opens (creating, mode 0600) the current file, cuts off a torn last line and
    /// returns the last complete one.
    fn open(config: &JsonlConfig) -> io::Result<(Self, Recovered)> {
        let path = config.path.clone();
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        let meta = file.metadata()?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "audit JSONL file was readable by others; setting mode 0600");
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        if !existed {
            fsync_dir_of(&path)?;
        }
        let len = meta.len();
        let mut recovered = Recovered::default();
        let mut size = len;
        if len > 0 {
            let mut window = TAIL_WINDOW.min(len);
            loop {
                let start = len - window;
                let mut buf = vec![0u8; usize::try_from(window).map_err(io::Error::other)?];
                file.read_exact_at(&mut buf, start)?;
                if let Some(layout) = tail_layout(&buf, start == 0) {
                    size = start + layout.keep as u64;
                    recovered.torn_bytes = len - size;
                    recovered.last_line = layout.line.map(|r| buf[r].to_vec());
                    break;
                }
                window = (window * 2).min(len);
            }
            if recovered.torn_bytes > 0 {
                file.set_len(size)?;
                file.sync_data()?;
            }
        }
        Ok((
            Self {
                path,
                file,
                size,
                max_bytes: config.max_bytes,
                max_files: config.max_files,
            },
            recovered,
        ))
    }

    /// Appends lines from the front of `lines` while they fit (a line always fits an
    /// empty file), then `fdatasync`s. Returns how many were written; 0 when the first one
    /// needs a rotation (or `lines` is empty).
    fn append(&mut self, lines: &[String]) -> io::Result<usize> {
        let mut buf = Vec::new();
        let mut size = self.size;
        let mut n = 0;
        for line in lines {
            let len = line.len() as u64 + 1;
            if size > 0 && size + len > self.max_bytes {
                break;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            size += len;
            n += 1;
        }
        if n > 0 {
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.size = size;
        }
        Ok(n)
    }

    /// Renames the current file `.1` (shifting older ones, dropping the oldest) and starts
    /// an empty one. The current file's lines must be synced and covered by the cursor.
    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 0 {
            remove_if_present(&self.path)?;
        } else {
            remove_if_present(&rotated_path(&self.path, self.max_files))?;
            for n in (1..self.max_files).rev() {
                match fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    r => r?,
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)?;
        fsync_dir_of(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Writes as many of `lines` as fit, rotating first when not even one does. Returns how
    /// many were written (at least one unless `lines` is empty).
    fn write_some(&mut self, lines: &[String]) -> io::Result<usize> {
        let n = self.append(lines)?;
        if n > 0 || lines.is_empty() {
            return Ok(n);
        }
        self.rotate()?;
        self.append(lines)
    }
}

// ---- the sink -----------------------------------------------------------------------------

/// The sink's state: built by [`spawn`], driven by `run`.
struct JsonlSink {
    config: JsonlConfig,
    store: Arc<dyn StateStore>,
    /// `None` after a failed write, until the file is opened (and recovered) again.
    file: Option<JsonlFile>,
    /// The last row written and covered by the stored cursor.
    done: u64,
}

/// Opens the file on a blocking thread.
async fn open_file(config: &JsonlConfig) -> io::Result<(JsonlFile, Recovered)> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || JsonlFile::open(&config))
        .await
        .map_err(io::Error::other)?
}

impl JsonlSink {
    /// Stores the cursor, retrying until it is stored (true) or `shutdown` (false).
    async fn persist(&self, seq: u64, shutdown: &CancellationToken) -> bool {
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            match cursor::save(&*self.store, CURSOR_KEY, seq).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, seq, "audit JSONL sink: cannot store its cursor; retrying");
                    if !sleep_or_cancel(retry.next_delay(), shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Reads the stored cursor, retrying; `None` on shutdown.
    async fn load_cursor(&self, shutdown: &CancellationToken) -> Option<u64> {
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            match cursor::load(&*self.store, CURSOR_KEY).await {
                Ok(c) => return Some(c),
                Err(StoreError::Malformed(m)) => {
                    tracing::error!(error = %m, "audit JSONL sink: bad cursor; relying on the file's last line");
                    return Some(0);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit JSONL sink: cannot read its cursor; retrying");
                    if !sleep_or_cancel(retry.next_delay(), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Where to continue, given the stored cursor and the file's last complete line: past
    /// that line when it is past the cursor and belongs to this chain (the crash window
    /// between writing and storing the cursor), else after the cursor. Stores the cursor
    /// when it moves. `None` on shutdown.
    async fn resume_point(
        &self,
        recovered: &Recovered,
        shutdown: &CancellationToken,
    ) -> Option<u64> {
        let cursor = self.load_cursor(shutdown).await?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(path = %self.config.path.display(), bytes = recovered.torn_bytes, "audit JSONL file ended in a torn line; cut it off");
        }
        let Some(line) = &recovered.last_line else {
            return Some(cursor);
        };
        let Ok(last) = serde_json::from_slice::<WrittenRow>(line) else {
            tracing::warn!(path = %self.config.path.display(), "audit JSONL file's last line is not an audit record; continuing after the cursor");
            return Some(cursor);
        };
        if last.seq <= cursor {
            return Some(cursor);
        }
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        let row = loop {
            match self.store.list_audit_range(last.seq, 1).await {
                Ok(rows) => break rows.into_iter().next(),
                Err(e) => {
                    tracing::warn!(error = %e, "audit JSONL sink: cannot read audit rows; retrying");
                    if !sleep_or_cancel(retry.next_delay(), shutdown).await {
                        return None;
                    }
                }
            }
        };
        let ours = match &row {
            Some(r) if r.seq == last.seq => r.record.id == last.id,
            // Deleted by retention since: nothing to compare with.
            Some(_) => true,
            // Past the end of the chain.
            None => false,
        };
        if !ours {
            tracing::warn!(
                path = %self.config.path.display(),
                file_seq = last.seq,
                cursor,
                "audit JSONL file's last line is not a record of this chain; continuing after the cursor"
            );
            return Some(cursor);
        }
        tracing::info!(
            cursor,
            file_seq = last.seq,
            "audit JSONL sink: records up to the file's last line were written before the cursor was stored; continuing after it"
        );
        self.persist(last.seq, shutdown).await.then_some(last.seq)
    }

    /// Opens the file again after a failed write and finds where to continue, retrying
    /// until it works (true) or `shutdown` (false).
    async fn reopen(&mut self, shutdown: &CancellationToken) -> bool {
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            match open_file(&self.config).await {
                Ok((file, recovered)) => {
                    let Some(done) = self.resume_point(&recovered, shutdown).await else {
                        return false;
                    };
                    self.file = Some(file);
                    self.done = done;
                    return true;
                }
                Err(e) => {
                    tracing::warn!(path = %self.config.path.display(), error = %e, "audit JSONL sink: cannot open the file; retrying");
                    if !sleep_or_cancel(retry.next_delay(), shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Writes `lines[from..]` (rows in `seq` order) as far as the current file takes them.
    /// Returns how many were written (synced).
    async fn write_some(&mut self, lines: Arc<Vec<String>>, from: usize) -> io::Result<usize> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("file not open"));
        };
        let (file, written) = tokio::task::spawn_blocking(move || {
            let r = file.write_some(&lines[from..]);
            (file, r)
        })
        .await
        .map_err(io::Error::other)?;
        // After an error the file's end is unknown: it is opened and recovered again.
        if written.is_ok() {
            self.file = Some(file);
        }
        written
    }

    /// Writes rows after the cursor until `shutdown`, waking on `wake` or every 500 ms.
    async fn run(mut self, recovered: Recovered, wake: Arc<Notify>, shutdown: CancellationToken) {
        let Some(done) = self.resume_point(&recovered, &shutdown).await else {
            return;
        };
        self.done = done;
        tracing::info!(path = %self.config.path.display(), cursor = done, "audit JSONL sink started");
        let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
        'batches: while !shutdown.is_cancelled() {
            if self.file.is_none() && !self.reopen(&shutdown).await {
                break;
            }
            let rows = match self.store.list_audit_range(self.done + 1, BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "audit JSONL sink: cannot read audit rows; retrying");
                    if !sleep_or_cancel(retry.next_delay(), &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(first) = rows.first() else {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            };
            if first.seq > self.done + 1 {
                tracing::warn!(
                    from_seq = self.done + 1,
                    to_seq = first.seq - 1,
                    "audit rows were deleted by retention before they were written to the JSONL file"
                );
            }
            let lines: Arc<Vec<String>> = Arc::new(
                rows.iter()
                    .map(|r| render(&ExportRecord::from(r), ExportFormat::Json))
                    .collect(),
            );
            let mut from = 0;
            while from < rows.len() {
                match self.write_some(Arc::clone(&lines), from).await {
                    Ok(0) => break,
                    Ok(n) => {
                        from += n;
                        let seq = rows[from - 1].seq;
                        // The cursor covers the file before it can be rotated.
                        if !self.persist(seq, &shutdown).await {
                            break 'batches;
                        }
                        self.done = seq;
                        retry = Backoff::new(RETRY_MIN, RETRY_MAX);
                    }
                    Err(e) => {
                        let wait = retry.next_delay();
                        tracing::warn!(path = %self.config.path.display(), error = %e, resume_after = self.done, "audit JSONL write failed; retrying");
                        if !sleep_or_cancel(wait, &shutdown).await {
                            break 'batches;
                        }
                        continue 'batches;
                    }
                }
            }
        }
        tracing::info!(cursor = self.done, "audit JSONL sink stopped");
    }
}

/// Starts writing the audit chain of `store` to the file `config` names, until
/// `shutdown`. `wake`, when given, is notified (`notify_one`) by whoever appends audit
/// rows; without it the sink polls every 500 ms. Fails on a bad configuration or a file
/// that cannot be opened; store and write failures while running are logged and retried.
pub async fn spawn(
    config: JsonlConfig,
    store: Arc<dyn StateStore>,
    wake: Option<Arc<Notify>>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, JsonlError> {
    config.validate()?;
    let (file, recovered) = open_file(&config)
        .await
        .map_err(|source| JsonlError::Open {
            path: config.path.display().to_string(),
            source,
        })?;
    let sink = JsonlSink {
        config,
        store,
        file: Some(file),
        done: 0,
    };
    Ok(tokio::spawn(sink.run(
        recovered,
        wake.unwrap_or_default(),
        shutdown,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_of_a_clean_file() {
        let w = b"{\"seq\":1}\n{\"seq\":2}\n";
        assert_eq!(
            tail_layout(w, true),
            Some(TailLayout {
                keep: w.len(),
                line: Some(10..19)
            })
        );
        assert_eq!(&w[10..19], b"{\"seq\":2}");
        // One line, the whole file.
        assert_eq!(
            tail_layout(b"{}\n", true),
            Some(TailLayout {
                keep: 3,
                line: Some(0..2)
            })
        );
    }

    #[test]
    fn torn_last_line_is_cut_off() {
        let w = b"{\"seq\":1}\n{\"seq\":2}\n{\"se";
        assert_eq!(
            tail_layout(w, true),
            Some(TailLayout {
                keep: 20,
                line: Some(10..19)
            })
        );
        // Nothing but a torn line.
        assert_eq!(
            tail_layout(b"{\"se", true),
            Some(TailLayout {
                keep: 0,
                line: None
            })
        );
    }

    #[test]
    fn a_short_window_asks_for_more() {
        // The window starts inside the last line: its start is unknown.
        assert_eq!(tail_layout(b"q\":2}\n", false), None);
        assert_eq!(tail_layout(b"q\":2}", false), None);
        assert_eq!(
            tail_layout(b"1}\n{\"seq\":2}\n", false),
            Some(TailLayout {
                keep: 13,
                line: Some(3..12)
            })
        );
    }

    #[test]
    fn rotated_files_are_numbered_after_the_name() {
        assert_eq!(
            rotated_path(Path::new("/var/log/audit.jsonl"), 3),
            PathBuf::from("/var/log/audit.jsonl.3")
        );
    }

    #[test]
    fn config_defaults_and_errors() {
        let c: JsonlConfig = toml::from_str("path = \"/var/log/warden/audit.jsonl\"").unwrap();
        assert_eq!(c.max_bytes, 100 * 1024 * 1024);
        assert_eq!(c.max_files, 10);
        assert!(c.validate().is_ok());
        let err = toml::from_str::<JsonlConfig>("path = \"a\"\nmax_size = 5").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_size`"),
            "{err}"
        );
        let err = toml::from_str::<JsonlConfig>("max_files = 5").unwrap_err();
        assert!(err.to_string().contains("missing field `path`"), "{err}");
        let small = JsonlConfig {
            max_bytes: 100,
            ..c.clone()
        };
        assert_eq!(
            small.validate().unwrap_err().to_string(),
            "invalid `audit.jsonl.max_bytes`: must be at least 1024"
        );
        let no_name = JsonlConfig {
            path: PathBuf::from("/"),
            ..c
        };
        assert!(
            no_name
                .validate()
                .unwrap_err()
                .to_string()
                .contains("audit.jsonl.path")
        );
    }
}
