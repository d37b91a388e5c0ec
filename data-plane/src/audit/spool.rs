//! The node's on-disk audit spool: every event goes to disk before it is sent to the control
//! plane, and leaves the disk only after the control plane acknowledged it.
//!
//! Layout: a private directory ([`super::spool_dir`], 0700, inside the configured path; one
//! node process at a time, held by an exclusive lock on `lock`) of segment files
//! `00000000000000000001.seg`, … (0600) in write order. A segment is JSON lines, one
//! record per line, each prefixed by the CRC-32 of its JSON (`1a2b3c4d {"id":…}\n`), so a
//! line torn by a crash or damaged on disk is detected and skipped while reading.
//!
//! - The [`Writer`] (one OS thread, never an async worker) takes events from the in-memory
//!   queue, appends them to the current segment and `fdatasync`s once per group (whatever
//!   arrived since the previous group began, up to [`GROUP_MAX`]; a group at most every
//!   [`SYNC_INTERVAL`] while events keep coming), then publishes the durable end
//!   ([`Position`]). It starts a new segment when the current one reaches its
//!   target size or age, and on every start (an old segment may end in a torn line).
//! - The [`Reader`] (the publisher) reads durable records in order — first the segments of
//!   a previous run, then the live one — hands them out in batches of one node id, and
//!   deletes a segment once every record in it was acknowledged. Nothing records the
//!   acknowledged position within the live segment: after a restart its acknowledged
//!   records go out again, which the control plane ignores (idempotent by event id).
//! - The size of all segments is bounded by `max_bytes`. When the next record does not fit,
//!   [`OnFull::Drop`] drops it (counted); [`OnFull::Closed`] keeps it in memory and waits for
//!   the publisher to free space, while [`Shared::unavailable`] tells the request path to
//!   refuse new requests. Admission closes a little before the spool is full (the
//!   headroom), so the events of requests already in flight still fit.

use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Event;
use super::spool_record::decode;
pub use super::spool_record::{Record, encode};

/// Default bound of the spool's size on disk.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Most events appended between two syncs.
pub const GROUP_MAX: usize = 1000;
/// Shortest time from the start of one group (write + `fdatasync`) to the start of the
/// next while events keep coming ([`Writer::run`]): at most 200 syncs a second, however
/// busy the node. An event waits at most this long in memory, plus the sync before it is
/// durable; a crash of the node loses only the events in that window (README, "Known
/// limits today"), and a group sync costs about 0.3 ms on a virtual disk, so syncing per
/// request group (every ~3 requests at 3,000 requests/s) spent most of the writer's time,
/// and woke it once per event.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(5);
/// A segment older than this (since its first record) is closed at the next record, so the
/// acknowledged part of a quiet node's spool is deleted and not sent again after a restart.
const SEGMENT_MAX_AGE: Duration = Duration::from_secs(10);
/// How often a writer waiting for space (closed mode) or retrying a failed write looks again.
const FULL_POLL: Duration = Duration::from_millis(20);
const RETRY_IO: Duration = Duration::from_secs(1);

/// What the node does when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Refuse new requests (503) until the control plane has taken enough events.
    Closed,
    /// Keep serving; drop the events that do not fit (counted and logged).
    Drop,
}

impl OnFull {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(Self::Closed),
            "drop" => Some(Self::Drop),
            _ => None,
        }
    }
}

/// Where and how large.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub on_full: OnFull,
    /// Where older nodes kept this spool by default ([`SpoolConfig::old_default_dir`]):
    /// its segments are adopted at start when the directory is this user's own.
    pub previous_default: Option<PathBuf>,
}

impl SpoolConfig {
    /// The default spool of `node_id`: [`SpoolConfig::default_dir`] without an
    /// environment (`.warden/audit-spool-<node id>`), 256 MiB, closed when full.
    pub fn for_node(node_id: &str) -> Self {
        Self {
            dir: Self::default_dir(node_id, &std::collections::HashMap::new()),
            max_bytes: DEFAULT_MAX_BYTES,
            on_full: OnFull::Closed,
            previous_default: None,
        }
    }

    /// Where a node keeps its spool when `--audit-spool-dir` is not given: the user's state
    /// directory, `$XDG_STATE_HOME/warden/audit-spool-<node id>` (else under
    /// `$HOME/.local/state`), else `.warden/audit-spool-<node id>` in the working directory —
    /// never a predictable path in a directory other users share, such as `/tmp`.
    pub fn default_dir(node_id: &str, env: &std::collections::HashMap<String, String>) -> PathBuf {
        let set = |k: &str| env.get(k).filter(|v| v.starts_with('/')).map(PathBuf::from);
        let base = set("XDG_STATE_HOME")
            .or_else(|| set("HOME").map(|h| h.join(".local").join("state")))
            .map_or_else(|| PathBuf::from(".warden"), |state| state.join("warden"));
        base.join(format!("audit-spool-{}", safe_id(node_id)))
    }

    /// The default of older nodes: `$TMPDIR` (else `/tmp`) `/warden-audit-spool-<node id>`.
    pub fn old_default_dir(
        node_id: &str,
        env: &std::collections::HashMap<String, String>,
    ) -> PathBuf {
        let tmp = env.get("TMPDIR").filter(|v| v.starts_with('/'));
        PathBuf::from(tmp.map_or("/tmp", String::as_str))
            .join(format!("warden-audit-spool-{}", safe_id(node_id)))
    }
}

fn safe_id(node_id: &str) -> String {
    node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Errors opening the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("audit spool {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("audit spool {} is in use by another node process", .0.display())]
    Locked(PathBuf),
    #[error(transparent)]
    Dir(#[from] super::spool_dir::DirError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

const STATE_OK: u8 = 0;
const STATE_FULL: u8 = 1;
const STATE_IO: u8 = 2;

/// State shared by the sink, the writer and the reader.
#[derive(Debug)]
pub struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// Admission closes when fewer bytes than this are free.
    headroom: u64,
    on_full: OnFull,
    /// Bytes of all segment files.
    used: AtomicU64,
    /// Whether the writer is holding events it cannot write (`STATE_*`).
    state: AtomicU8,
    dropped: AtomicU64,
    /// Events written durably or dropped by the writer.
    handled: AtomicU64,
    /// The durable end of the spool, as the writer last synced it.
    durable: watch::Sender<Position>,
    /// Where the reader is: everything before it was acknowledged by the control plane.
    delivered: std::sync::Mutex<Position>,
    /// When the oldest record not yet acknowledged was recorded (ms since the epoch), as
    /// far as known: set by the writer when it writes to a delivered spool and by the
    /// reader as it hands out and acknowledges batches. Held while `durable` moves, so
    /// the two cannot miss each other.
    oldest_pending_ms: std::sync::Mutex<Option<i64>>,
    /// Held for the life of the spool: one node process per directory.
    _lock: File,
}

impl Shared {
    /// Why new requests must be refused right now (closed mode only), if they must.
    pub fn unavailable(&self) -> Option<&'static str> {
        if self.on_full == OnFull::Drop {
            return None;
        }
        match self.state.load(Ordering::Relaxed) {
            STATE_IO => Some("audit spool not writable"),
            STATE_FULL => Some("audit spool full"),
            _ if self.used.load(Ordering::Relaxed) + self.headroom > self.max_bytes => {
                Some("audit spool full")
            }
            _ => None,
        }
    }

    pub fn on_full(&self) -> OnFull {
        self.on_full
    }

    /// Bytes on disk.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the control plane has acknowledged everything written durably so far.
    pub fn all_delivered(&self) -> bool {
        let delivered = *self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        delivered >= *self.durable.borrow()
    }

    fn set_delivered(&self, at: Position) {
        *self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    /// How long ago the oldest record not yet acknowledged was recorded (zero when all is
    /// delivered).
    pub fn delivery_lag(&self) -> std::time::Duration {
        let oldest = *self.oldest_pending();
        let Some(ts) = oldest else {
            return std::time::Duration::ZERO;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        std::time::Duration::from_millis(u64::try_from(now.saturating_sub(ts)).unwrap_or(0))
    }

    fn oldest_pending(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        self.oldest_pending_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events the writer has written durably or dropped.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Counts dropped events and logs at power-of-two totals.
    pub fn drop_events(&self, n: u64, why: &'static str) {
        if n == 0 {
            return;
        }
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(crate::metrics::AUDIT_DROPPED).increment(n);
        let after = before + n;
        if (before + 1..=after).any(u64::is_power_of_two) {
            tracing::error!(dropped = after, reason = why, "audit events dropped");
        }
    }

    fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
    }

    fn add_used(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_used(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// Opens (creating) the spool directory, takes its lock and finds the segments of a
/// previous run. The writer appends after them; the reader starts with them.
pub fn open(config: &SpoolConfig) -> Result<(Arc<Shared>, Writer, Reader), SpoolError> {
    let dir = super::spool_dir::prepare(&config.dir)?;
    let lock_path = dir.join("lock");
    let lock = super::spool_dir::open_private_file(&lock_path).map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir)),
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
    }
    super::spool_dir::adopt_old_layout(&config.dir, &dir).map_err(io_err(&config.dir))?;
    if let Some(old) = &config.previous_default {
        super::spool_dir::adopt_previous_default(old, &dir);
    }
    let segments = list_segments(&dir).map_err(io_err(&dir))?;
    let mut used = 0;
    for (id, _) in &segments {
        used += fs::metadata(segment_path(&dir, *id))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    let first = segments.first().map(|(id, _)| *id);
    let live = segments.last().map_or(1, |(id, _)| id + 1);
    if used > 0 {
        tracing::info!(
            dir = %dir.display(),
            segments = segments.len(),
            bytes = used,
            "audit spool holds events of a previous run; sending them first"
        );
    }
    let durable = Position {
        segment: live,
        offset: 0,
    };
    let (durable_tx, durable_rx) = watch::channel(durable);
    let start = Position {
        segment: first.unwrap_or(live),
        offset: 0,
    };
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        max_bytes: config.max_bytes,
        headroom: (config.max_bytes / 32).min(1024 * 1024),
        on_full: config.on_full,
        used: AtomicU64::new(used),
        state: AtomicU8::new(STATE_OK),
        dropped: AtomicU64::new(0),
        handled: AtomicU64::new(0),
        durable: durable_tx,
        delivered: std::sync::Mutex::new(start),
        oldest_pending_ms: std::sync::Mutex::new(None),
        _lock: lock,
    });
    let writer = Writer {
        shared: Arc::clone(&shared),
        segment: live,
        file: None,
        len: 0,
        first_write: None,
        target: (config.max_bytes / 64).clamp(1024, 4 * 1024 * 1024),
        buf: Vec::new(),
        buffered: 0,
        buf_first_ms: None,
    };
    let reader = Reader {
        shared: Arc::clone(&shared),
        durable: durable_rx,
        cursor: start,
    };
    Ok((shared, writer, reader))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Segment ids in the directory, ascending, with their file names.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "seg")
            && let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((id, path));
        }
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// Appends events to the live segment; runs on its own thread ([`Writer::run`]).
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    segment: u64,
    /// The live segment, created at its first write.
    file: Option<File>,
    /// Bytes synced in the live segment.
    len: u64,
    first_write: Option<Instant>,
    /// Size at which the live segment is closed.
    target: u64,
    /// Encoded records not yet written, how many, and when the first was recorded.
    buf: Vec<u8>,
    buffered: u64,
    buf_first_ms: Option<i64>,
}

impl Writer {
    /// Takes events from `rx` until it closes, appending and syncing them in groups;
    /// `node` is recorded with each. Blocking: run it on a dedicated thread.
    ///
    /// While events keep coming, a group starts at most every [`SYNC_INTERVAL`]: after a
    /// sync the writer sleeps out the rest of that interval, so the events of a busy node
    /// are gathered in the queue (their senders wake no one) and written and synced
    /// together. After a quiet interval the next event is written at once.
    pub fn run(mut self, node: &str, mut rx: mpsc::Receiver<Event>, shutdown: &CancellationToken) {
        let mut group_start: Option<Instant> = None;
        loop {
            if let Some(rest) = group_start.and_then(|at| SYNC_INTERVAL.checked_sub(at.elapsed())) {
                std::thread::sleep(rest);
            }
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            group_start = Some(Instant::now());
            self.append(&first, node, shutdown);
            let mut n = 1;
            while n < GROUP_MAX {
                match rx.try_recv() {
                    Ok(event) => self.append(&event, node, shutdown),
                    Err(_) => break,
                }
                n += 1;
            }
            self.flush(shutdown);
        }
        self.flush(shutdown);
    }

    /// Spawns [`Writer::run`] on a thread named `audit-spool`.
    pub fn spawn(
        self,
        node: String,
        rx: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("audit-spool".into())
            .spawn(move || self.run(&node, rx, &shutdown))
    }

    fn append(&mut self, event: &Event, node: &str, shutdown: &CancellationToken) {
        let Some(line) = encode(event, node) else {
            self.handled(1);
            self.shared.drop_events(1, "event could not be encoded");
            return;
        };
        let size = line.len() as u64;
        if size > self.shared.max_bytes {
            self.handled(1);
            self.shared
                .drop_events(1, "event larger than --audit-spool-max-bytes");
            return;
        }
        let pending = self.len + self.buf.len() as u64;
        let aged = self
            .first_write
            .is_some_and(|t| t.elapsed() > SEGMENT_MAX_AGE);
        if pending > 0 && (pending + size > self.target || aged) {
            self.rotate(shutdown);
        }
        let mut waited = false;
        while self.shared.used_bytes() + self.buf.len() as u64 + size > self.shared.max_bytes {
            match self.shared.on_full {
                OnFull::Drop => {
                    self.handled(1);
                    self.shared.drop_events(1, "audit spool full");
                    return;
                }
                OnFull::Closed => {
                    if !waited {
                        waited = true;
                        tracing::error!(
                            max_bytes = self.shared.max_bytes,
                            "audit spool full: refusing new requests until the control plane takes events"
                        );
                        // Close the live segment so it can be deleted once acknowledged.
                        self.rotate(shutdown);
                        self.shared.set_state(STATE_FULL);
                    }
                    if shutdown.is_cancelled() {
                        self.handled(1);
                        self.shared.drop_events(1, "audit spool full at shutdown");
                        return;
                    }
                    std::thread::sleep(FULL_POLL);
                }
            }
        }
        if waited {
            tracing::info!("audit spool has room again");
            self.shared.set_state(STATE_OK);
        }
        self.buf.extend_from_slice(&line);
        self.buffered += 1;
        self.buf_first_ms.get_or_insert(event.timestamp_ms);
    }

    fn handled(&self, n: u64) {
        self.shared.handled.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes and syncs the buffered records, retrying (closed) or dropping them (drop)
    /// when the disk fails.
    fn flush(&mut self, shutdown: &CancellationToken) {
        let mut failing = false;
        loop {
            match self.try_flush() {
                Ok(()) => {
                    if failing {
                        tracing::info!("audit spool writable again");
                        self.shared.set_state(STATE_OK);
                    }
                    return;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(dir = %self.shared.dir.display(), error = %e, "audit spool write failed");
                    }
                    failing = true;
                    // Never leave half a record before the next one.
                    let cut = self.file.as_ref().map(|f| f.set_len(self.len));
                    if !matches!(cut, Some(Ok(()))) {
                        self.next_segment();
                    }
                    if self.shared.on_full == OnFull::Drop || shutdown.is_cancelled() {
                        let n = self.buffered;
                        self.buf.clear();
                        self.buf_first_ms = None;
                        self.buffered = 0;
                        self.handled(n);
                        self.shared.drop_events(n, "audit spool write failed");
                        self.shared.set_state(STATE_OK);
                        return;
                    }
                    self.shared.set_state(STATE_IO);
                    std::thread::sleep(RETRY_IO);
                }
            }
        }
    }

    fn try_flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let path = segment_path(&self.shared.dir, self.segment);
                let f = super::spool_dir::open_private_file(&path)?;
                // The new name must survive a crash as well as the data.
                #[cfg(unix)]
                File::open(&self.shared.dir)?.sync_all()?;
                self.len = f.metadata()?.len();
                self.first_write = Some(Instant::now());
                self.file.insert(f)
            }
        };
        file.write_all(&self.buf)?;
        file.sync_data()?;
        let n = self.buf.len() as u64;
        self.len += n;
        self.buf.clear();
        let events = std::mem::take(&mut self.buffered);
        self.handled(events);
        metrics::counter!(crate::metrics::AUDIT_SPOOLED).increment(events);
        self.shared.add_used(n);
        let first = self.buf_first_ms.take();
        let mut oldest = self.shared.oldest_pending();
        if oldest.is_none() {
            *oldest = first;
        }
        self.publish();
        Ok(())
    }

    /// Closes the live segment (after writing what is buffered); the next record starts a
    /// new one.
    fn rotate(&mut self, shutdown: &CancellationToken) {
        self.flush(shutdown);
        if self.file.is_some() {
            self.next_segment();
        }
    }

    fn next_segment(&mut self) {
        self.file = None;
        self.segment += 1;
        self.len = 0;
        self.first_write = None;
        self.publish();
    }

    fn publish(&self) {
        self.shared.durable.send_replace(Position {
            segment: self.segment,
            offset: self.len,
        });
    }
}

/// Records read for one `PublishAudit` call: all of one node, in spool order.
#[derive(Debug)]
pub struct Batch {
    pub node: String,
    pub records: Vec<Record>,
    end: Position,
    /// The batch reaches the end of a closed segment: delete it once acknowledged.
    closes_segment: bool,
}

/// Reads the spool in order for the publisher, and deletes what was acknowledged.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    durable: watch::Receiver<Position>,
    /// The next record to hand out.
    cursor: Position,
}

impl Reader {
    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The next batch of at most `max` records. A batch from the live segment waits up to
    /// `linger` for more records (so a steady trickle is not sent one by one); closed
    /// segments (a backlog) go out at once. `None` once the writer is gone.
    pub async fn next_batch(&mut self, max: usize, linger: Duration) -> Option<Batch> {
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            let durable = *self.durable.borrow_and_update();
            if self.cursor.segment < durable.segment {
                let path = segment_path(&self.shared.dir, self.cursor.segment);
                let from = self.cursor;
                let read =
                    tokio::task::spawn_blocking(move || read_records(&path, from, u64::MAX, max))
                        .await
                        .unwrap_or_else(|_| Read::empty(from));
                if read.records.is_empty() && read.at_end {
                    self.finish_segment(durable).await;
                    continue;
                }
                if let Some(batch) = read.into_batch() {
                    self.handing_out(&batch);
                    return Some(batch);
                }
                // Could not read the segment: try again later.
                tokio::time::sleep(RETRY_IO).await;
                continue;
            }
            if self.cursor.offset < durable.offset {
                let first = *since.get_or_insert_with(tokio::time::Instant::now);
                let ready = durable.offset - self.cursor.offset >= 256 * 1024;
                let deadline = first + linger;
                if ready || tokio::time::Instant::now() >= deadline {
                    let path = segment_path(&self.shared.dir, self.cursor.segment);
                    let from = self.cursor;
                    let read = tokio::task::spawn_blocking(move || {
                        read_records(&path, from, durable.offset, max)
                    })
                    .await
                    .unwrap_or_else(|_| Read::empty(from));
                    let end = read.end;
                    if let Some(mut batch) = read.into_batch() {
                        // The live segment is never deleted here; the writer closes it.
                        batch.closes_segment = false;
                        self.handing_out(&batch);
                        return Some(batch);
                    }
                    if end == from {
                        tokio::time::sleep(RETRY_IO).await;
                    }
                    // Only damaged lines: skip them.
                    self.cursor = end;
                    self.shared.set_delivered(end);
                    continue;
                }
                tokio::select! {
                    changed = self.durable.changed() => if changed.is_err() { return None },
                    () = tokio::time::sleep_until(deadline) => {}
                }
                continue;
            }
            if self.durable.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Records that `batch` was acknowledged: moves past it and deletes a finished segment.
    pub async fn ack(&mut self, batch: Batch) {
        if batch.closes_segment {
            let durable = *self.durable.borrow();
            self.finish_segment(durable).await;
        } else {
            self.cursor = batch.end;
            self.shared.set_delivered(batch.end);
        }
        // What is left is no older than the batch's last record (exact once handed out).
        let mut oldest = self.shared.oldest_pending();
        *oldest = if self.shared.all_delivered() {
            None
        } else {
            batch.records.last().map(|r| r.ts)
        };
    }

    /// `batch` goes out: its first record is the oldest not acknowledged.
    fn handing_out(&self, batch: &Batch) {
        *self.shared.oldest_pending() = batch.records.first().map(|r| r.ts);
    }

    /// Deletes the (closed) segment under the cursor and moves to the next one.
    async fn finish_segment(&mut self, durable: Position) {
        let shared = Arc::clone(&self.shared);
        let segment = self.cursor.segment;
        let next = tokio::task::spawn_blocking(move || {
            let path = segment_path(&shared.dir, segment);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => shared.sub_used(size),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "could not delete an acknowledged audit spool segment");
                }
            }
            list_segments(&shared.dir)
                .ok()
                .and_then(|s| s.into_iter().map(|(id, _)| id).find(|id| *id > segment))
        })
        .await
        .ok()
        .flatten();
        self.cursor = Position {
            segment: next
                .filter(|n| *n < durable.segment)
                .unwrap_or(durable.segment),
            offset: 0,
        };
        self.shared.set_delivered(self.cursor);
    }
}

/// What one read of a segment found.
#[derive(Debug)]
struct Read {
    records: Vec<Record>,
    node: String,
    end: Position,
    /// Nothing more can be read from this segment past `end`.
    at_end: bool,
}

impl Read {
    fn empty(at: Position) -> Self {
        Self {
            records: Vec::new(),
            node: String::new(),
            end: at,
            at_end: false,
        }
    }

    fn into_batch(self) -> Option<Batch> {
        (!self.records.is_empty()).then_some(Batch {
            node: self.node,
            records: self.records,
            end: self.end,
            closes_segment: self.at_end,
        })
    }
}

/// Reads up to `max` records of one node from `from` up to byte `limit` of the segment at
/// `path`. Damaged lines are skipped (logged); a last line without its newline (torn by a
/// crash) ends the segment.
fn read_records(path: &Path, from: Position, limit: u64, max: usize) -> Read {
    let mut read = Read::empty(from);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::error!(path = %path.display(), error = %e, "could not read the audit spool");
            } else {
                read.at_end = true;
            }
            return read;
        }
    };
    let mut file = BufReader::new(file);
    if let Err(e) = file.seek(SeekFrom::Start(from.offset)) {
        tracing::error!(path = %path.display(), error = %e, "could not read the audit spool");
        return read;
    }
    let mut offset = from.offset;
    let mut line = Vec::new();
    let mut other_node = false;
    while read.records.len() < max && offset < limit {
        line.clear();
        let n = match file.read_until(b'\n', &mut line) {
            Ok(n) => n as u64,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "could not read the audit spool");
                break;
            }
        };
        if n == 0 {
            read.at_end = true;
            break;
        }
        if line.last() != Some(&b'\n') {
            tracing::warn!(path = %path.display(), offset, bytes = n, "audit spool segment ends in a torn record; skipping it");
            offset += n;
            read.at_end = true;
            break;
        }
        match decode(&line) {
            Some(record) => {
                if read.records.is_empty() {
                    read.node.clone_from(&record.node);
                } else if record.node != read.node {
                    other_node = true;
                    break;
                }
                read.records.push(record);
            }
            None => {
                tracing::warn!(path = %path.display(), offset, "damaged audit spool record; skipping it");
                metrics::counter!(crate::metrics::AUDIT_DROPPED).increment(1);
            }
        }
        offset += n;
    }
    if !read.at_end && !other_node && limit == u64::MAX {
        // Peek: a closed segment read to its last byte is finished.
        read.at_end = file.fill_buf().map(|b| b.is_empty()).unwrap_or(false);
    }
    read.end = Position {
        segment: from.segment,
        offset,
    };
    read
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs::OpenOptions;

    use super::*;

    #[test]
    fn the_default_spool_is_in_the_users_state_directory_never_tmp() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let dir = |pairs: &[(&str, &str)]| SpoolConfig::default_dir("n/1", &env(pairs));
        assert_eq!(
            dir(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]),
            Path::new("/s/warden/audit-spool-n_1")
        );
        assert_eq!(
            dir(&[("HOME", "/h"), ("TMPDIR", "/tmp")]),
            Path::new("/h/.local/state/warden/audit-spool-n_1")
        );
        assert_eq!(dir(&[]), Path::new(".warden/audit-spool-n_1"));
        assert_eq!(
            dir(&[("HOME", "relative")]),
            Path::new(".warden/audit-spool-n_1")
        );
    }

    fn event(i: usize) -> Event {
        Event {
            id: format!("ev-{i:05}"),
            timestamp_ms: i64::try_from(i).unwrap(),
            action: "request",
            actor: "jwt:svc".into(),
            subject: "gpt-mock".into(),
            result: "ok".into(),
            detail: format!("request_id=r{i} status=200"),
        }
    }

    fn config(dir: &Path, max_bytes: u64, on_full: OnFull) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            on_full,
            previous_default: None,
        }
    }

    /// A spool with its writer on a thread.
    struct Running {
        shared: Arc<Shared>,
        tx: mpsc::Sender<Event>,
        writer: std::thread::JoinHandle<()>,
        reader: Reader,
    }

    fn start(config: &SpoolConfig) -> Running {
        let (shared, writer, reader) = open(config).unwrap();
        let (tx, rx) = mpsc::channel(10_000);
        let writer = writer
            .spawn("node-a".into(), rx, CancellationToken::new())
            .unwrap();
        Running {
            shared,
            tx,
            writer,
            reader,
        }
    }

    impl Running {
        async fn send(&self, events: impl IntoIterator<Item = Event>) {
            for e in events {
                self.tx.send(e).await.unwrap();
            }
        }

        /// Stops the writer (as a process exit would) and releases the directory.
        fn stop(self) {
            let Self {
                shared,
                tx,
                writer,
                reader,
            } = self;
            drop(tx);
            writer.join().unwrap();
            drop(reader);
            assert_eq!(Arc::strong_count(&shared), 1);
        }
    }

    /// Reads batches until `n` records came out, acknowledging each when `ack`.
    async fn read(reader: &mut Reader, n: usize, ack: bool) -> Vec<Record> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while out.len() < n {
                let batch = reader
                    .next_batch(100, Duration::from_millis(1))
                    .await
                    .unwrap();
                out.extend(batch.records.iter().cloned());
                if ack {
                    reader.ack(batch).await;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("only {} of {n} records came out", out.len()));
        out
    }

    fn ids(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.id.clone()).collect()
    }

    fn segments(dir: &Path) -> Vec<u64> {
        list_segments(&dir.join(super::super::spool_dir::PRIVATE))
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    #[tokio::test]
    async fn all_delivered_only_once_every_durable_record_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&config(dir.path(), 1 << 20, OnFull::Drop));
        assert!(
            s.shared.all_delivered(),
            "an empty spool has nothing to send"
        );
        s.send((0..5).map(event)).await;
        tokio::time::timeout(Duration::from_secs(10), async {
            while s.shared.handled() < 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert!(!s.shared.all_delivered(), "written, not acknowledged");
        let Running {
            shared,
            tx,
            writer,
            mut reader,
        } = s;
        read(&mut reader, 5, false).await;
        assert!(!shared.all_delivered(), "read, not acknowledged");
        read(&mut reader, 5, true).await;
        assert!(shared.all_delivered());
        drop(tx);
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn the_delivery_lag_is_the_age_of_the_oldest_unacknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&config(dir.path(), 1 << 20, OnFull::Drop));
        assert_eq!(s.shared.delivery_lag(), Duration::ZERO);
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let aged = |i: usize, age_ms: i64| Event {
            timestamp_ms: now - age_ms,
            ..event(i)
        };
        s.send([aged(0, 60_000), aged(1, 30_000)]).await;
        tokio::time::timeout(Duration::from_secs(10), async {
            while s.shared.handled() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let lag = s.shared.delivery_lag();
        assert!(
            lag >= Duration::from_secs(60) && lag < Duration::from_secs(70),
            "{lag:?}"
        );
        let Running {
            shared,
            tx,
            writer,
            mut reader,
        } = s;
        read(&mut reader, 2, true).await;
        assert_eq!(shared.delivery_lag(), Duration::ZERO, "all acknowledged");
        drop(tx);
        writer.join().unwrap();
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let line = encode(&event(7), "node-a").unwrap();
        let r = decode(&line).unwrap();
        assert_eq!(
            (r.id.as_str(), r.node.as_str(), r.ts),
            ("ev-00007", "node-a", 7)
        );
        assert_eq!(r.detail, "request_id=r7 status=200");
        let mut flipped = line.clone();
        let i = flipped.len() - 5;
        flipped[i] ^= 0x01;
        assert!(
            decode(&flipped).is_none(),
            "a flipped bit must fail the CRC"
        );
        assert!(
            decode(&line[..line.len() - 1]).is_none(),
            "torn: no newline"
        );
    }

    #[tokio::test]
    async fn events_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB: segments of 1 KiB, a few records each.
        let mut s = start(&config(dir.path(), 64 * 1024, OnFull::Closed));
        s.send((0..60).map(event)).await;
        let got = read(&mut s.reader, 60, true).await;
        assert_eq!(ids(&got), (0..60).map(|i| event(i).id).collect::<Vec<_>>());
        assert!(got.iter().all(|r| r.node == "node-a"));
        s.stop();
    }

    #[tokio::test]
    async fn a_segment_is_deleted_only_after_its_events_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = start(&config(dir.path(), 64 * 1024, OnFull::Closed));
        s.send((0..30).map(event)).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while s.shared.handled() < 30 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let before = segments(dir.path());
        assert!(before.len() > 2, "expected several segments: {before:?}");
        let used = s.shared.used_bytes();
        // Read the first segment without acknowledging: nothing is deleted.
        let batch = s
            .reader
            .next_batch(1000, Duration::from_millis(1))
            .await
            .unwrap();
        assert!(batch.closes_segment);
        assert_eq!(batch.records[0].id, event(0).id);
        assert_eq!(segments(dir.path()), before);
        assert_eq!(s.shared.used_bytes(), used);
        // Acknowledged: that segment (and only it) is gone, and its bytes are free.
        let n = batch.records.len();
        s.reader.ack(batch).await;
        assert_eq!(segments(dir.path()), before[1..]);
        assert!(s.shared.used_bytes() < used);
        let rest = read(&mut s.reader, 30 - n, true).await;
        assert_eq!(rest[0].id, event(n).id);
        s.stop();
    }

    #[tokio::test]
    async fn a_restart_replays_unacknowledged_events_exactly_once_before_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 64 * 1024, OnFull::Closed);
        let mut s = start(&cfg);
        s.send((0..40).map(event)).await;
        let acked = read(&mut s.reader, 10, true).await;
        s.stop();

        let mut s = start(&cfg);
        s.send((40..45).map(event)).await;
        let replay = read(&mut s.reader, 45 - acked.len(), true).await;
        // Acknowledged records of the last, still open segment may come again (the control
        // plane ignores them by id); nothing else may, and nothing is missing or doubled.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &replay {
            *seen.entry(r.id.clone()).or_default() += 1;
        }
        assert!(seen.values().all(|n| *n == 1), "a record came twice");
        for i in acked.len()..45 {
            assert!(
                seen.contains_key(&event(i).id),
                "{} is missing",
                event(i).id
            );
        }
        // Old events first, in order, then the new ones.
        let order: Vec<_> = ids(&replay);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        s.stop();
    }

    #[tokio::test]
    async fn a_torn_last_record_is_skipped_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1024 * 1024, OnFull::Closed);
        let s = start(&cfg);
        s.send((0..5).map(event)).await;
        s.stop();
        // A crash in the middle of the next append: half a record, no newline.
        let last = *segments(dir.path()).last().unwrap();
        let torn = encode(&event(5), "node-a").unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(
                &dir.path().join(super::super::spool_dir::PRIVATE),
                last,
            ))
            .unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);

        let mut s = start(&cfg);
        s.send((6..8).map(event)).await;
        let got = read(&mut s.reader, 7, true).await;
        assert_eq!(
            ids(&got),
            [0, 1, 2, 3, 4, 6, 7].map(|i| event(i).id).to_vec()
        );
        // The old segment, torn tail and all, is gone once read and acknowledged.
        assert!(!segments(dir.path()).contains(&last));
        s.stop();
    }

    #[tokio::test]
    async fn a_damaged_record_in_the_middle_is_skipped_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1024 * 1024, OnFull::Closed);
        let s = start(&cfg);
        s.send((0..3).map(event)).await;
        s.stop();
        let path = segment_path(
            &dir.path().join(super::super::spool_dir::PRIVATE),
            *segments(dir.path()).last().unwrap(),
        );
        let mut bytes = fs::read(&path).unwrap();
        let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 20;
        bytes[second] ^= 0x20;
        fs::write(&path, bytes).unwrap();
        let mut s = start(&cfg);
        let got = read(&mut s.reader, 2, true).await;
        assert_eq!(ids(&got), [event(0).id, event(2).id]);
        s.stop();
    }

    #[tokio::test]
    async fn one_process_per_spool_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1024 * 1024, OnFull::Closed);
        let s = start(&cfg);
        assert!(matches!(open(&cfg), Err(SpoolError::Locked(_))));
        s.stop();
        assert!(open(&cfg).is_ok(), "the lock goes with the process");
    }

    #[tokio::test]
    async fn full_in_closed_mode_refuses_until_events_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 8 * 1024, OnFull::Closed);
        let (sink, mut reader) =
            super::super::AuditSink::start(&cfg, "node-a", CancellationToken::new()).unwrap();
        assert_eq!(sink.unavailable(), None);
        let mut emitted = 0;
        while sink.unavailable().is_none() {
            assert!(emitted < 1000, "the spool never filled");
            sink.emit(
                "request",
                "jwt:svc".into(),
                "gpt-mock".into(),
                "ok".into(),
                format!("request_id=r{emitted}"),
            );
            emitted += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(sink.unavailable(), Some("audit spool full"));
        assert!(sink.spool().used_bytes() <= 8 * 1024);
        // Nothing was dropped: what did not fit waits in memory.
        assert_eq!(sink.spool().dropped(), 0);
        // The control plane takes everything: the node serves again.
        let got = read(&mut reader, emitted, true).await;
        assert_eq!(got.len(), emitted);
        tokio::time::timeout(Duration::from_secs(5), async {
            while sink.unavailable().is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn full_in_drop_mode_serves_and_counts_dropped_events() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 8 * 1024, OnFull::Drop);
        let (sink, _reader) =
            super::super::AuditSink::start(&cfg, "node-a", CancellationToken::new()).unwrap();
        for i in 0..200 {
            sink.emit(
                "request",
                "jwt:svc".into(),
                "gpt-mock".into(),
                "ok".into(),
                format!("request_id=r{i}"),
            );
        }
        assert!(sink.drain(Duration::from_secs(5)).await);
        assert_eq!(sink.unavailable(), None, "drop mode never refuses");
        assert!(sink.spool().used_bytes() <= 8 * 1024);
        let dropped = sink.spool().dropped();
        assert!(dropped > 100, "dropped {dropped}");
        let on_disk: usize = list_segments(&dir.path().join(super::super::spool_dir::PRIVATE))
            .unwrap()
            .iter()
            .map(|(_, p)| fs::read(p).unwrap().split(|b| *b == b'\n').count() - 1)
            .sum();
        assert_eq!(on_disk as u64 + dropped, 200);
    }
}
