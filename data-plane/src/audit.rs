//! Audit events of this node — every proxied request and every failed authentication — sent
//! to the control plane in batches over `Sync.PublishAudit` (idempotent by event id,
//! acknowledged after commit). Events never carry a secret, a prompt or a response body.
//!
//! [`AuditSink::emit`] only queues an event in memory (never disk I/O, never an await); the
//! [`spool`] writer thread appends it to the node's on-disk spool, and the publisher
//! ([`crate::sync::publish_audit`]) sends it from there and deletes it once acknowledged. So
//! events survive a restart of the node while the control plane is away. When the spool is
//! full the node either refuses new requests ([`spool::OnFull::Closed`], the default: see
//! [`AuditSink::unavailable`]) or drops events, counted and logged ([`spool::OnFull::Drop`]).

pub mod quarantine;
pub mod spool;
pub mod spool_dir;
mod spool_record;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub timestamp_ms: i64,
    pub action: &'static str,
    pub actor: String,
    pub subject: String,
    pub result: String,
    pub detail: String,
}

impl Event {
    /// A new event recorded now, with a new id: each field clipped to what the control
    /// plane keeps, the detail redacted.
    pub fn new(
        action: &'static str,
        actor: String,
        subject: String,
        result: String,
        detail: String,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            action,
            actor: clip(actor, ACTOR_MAX_BYTES),
            subject: clip(subject, SUBJECT_MAX_BYTES),
            result: clip(result, RESULT_MAX_BYTES),
            // Redacted before it is cut, so that a cut cannot hide a secret from redaction.
            detail: clip(
                warden_core::redact::redact(&detail).into_owned(),
                DETAIL_MAX_BYTES,
            ),
        }
    }
}

/// Largest number of events waiting in memory for the spool writer.
pub const QUEUE: usize = 50_000;
/// The control plane refuses longer actors; clip rather than have a batch refused forever.
const ACTOR_MAX_BYTES: usize = 256;
/// Longest subject kept (it can carry a client's string, such as the requested model); the
/// control plane keeps 512 characters.
pub const SUBJECT_MAX_BYTES: usize = 256;
/// Longest result kept (the control plane keeps 64 characters).
const RESULT_MAX_BYTES: usize = 64;
/// Longest detail kept, as the control plane keeps it (2048 characters).
const DETAIL_MAX_BYTES: usize = 2048;

/// Where request handlers put events.
#[derive(Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Event>,
    spool: Arc<spool::Shared>,
    /// Events handed to the writer.
    queued: AtomicU64,
    /// Events promised but not yet emitted (answers whose body is still going out).
    pending: Arc<AtomicU64>,
}

/// An event that will be emitted (a streaming answer's, when its body ends): while one is
/// held, [`AuditSink::drain`] waits for it.
#[derive(Debug)]
pub struct PendingEvent(Arc<AtomicU64>);

impl Drop for PendingEvent {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AuditSink {
    /// Opens the spool and starts its writer thread; returns the sink for request handlers
    /// and the reader for the publisher. Each event is recorded with `node_id`.
    pub fn start(
        config: &spool::SpoolConfig,
        node_id: &str,
        shutdown: CancellationToken,
    ) -> Result<(Self, spool::Reader), spool::SpoolError> {
        let (shared, writer, reader) = spool::open(config)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        writer
            .spawn(node_id.to_owned(), rx, shutdown)
            .map_err(|source| spool::SpoolError::Io {
                path: config.dir.clone(),
                source,
            })?;
        Ok((
            Self {
                tx,
                spool: shared,
                queued: AtomicU64::new(0),
                pending: Arc::new(AtomicU64::new(0)),
            },
            reader,
        ))
    }

    /// Queues an event; never blocks a request.
    pub fn emit(
        &self,
        action: &'static str,
        actor: String,
        subject: String,
        result: String,
        detail: String,
    ) {
        let event = Event::new(action, actor, subject, result, detail);
        if self.tx.try_send(event).is_ok() {
            self.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            self.spool.drop_events(
                1,
                "audit queue full: the spool writer is stalled (disk slow or spool full)",
            );
        }
    }

    /// How long ago the oldest audit event not yet acknowledged by the control plane was
    /// recorded ([`crate::metrics::AUDIT_DELIVERY_LAG_SECONDS`]).
    pub fn delivery_lag(&self) -> std::time::Duration {
        self.spool.delivery_lag()
    }

    /// Why the node must refuse new requests now, if it must: `--audit-on-full closed` and
    /// the spool is (nearly) full or cannot be written, or the queue to it is full. Checked
    /// at admission, since a request's event is emitted only after its response.
    pub fn unavailable(&self) -> Option<&'static str> {
        if self.spool.on_full() == spool::OnFull::Drop {
            return None;
        }
        if self.tx.is_closed() {
            return Some("audit spool writer stopped");
        }
        if self.tx.capacity() == 0 {
            return Some("audit queue full");
        }
        self.spool.unavailable()
    }

    /// The spool's shared state (size, drops).
    pub fn spool(&self) -> &spool::Shared {
        &self.spool
    }

    /// Holds a place for an event to be emitted later; drop it after emitting.
    pub fn pending_event(&self) -> PendingEvent {
        self.pending.fetch_add(1, Ordering::Relaxed);
        PendingEvent(Arc::clone(&self.pending))
    }

    /// Waits until every pending event is emitted and every queued one is on disk (or
    /// dropped), at most `timeout`; for a clean shutdown.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.pending.load(Ordering::Relaxed) == 0
                && self.spool.handled() >= self.queued.load(Ordering::Relaxed)
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
