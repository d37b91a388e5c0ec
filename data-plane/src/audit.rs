//! Audit events of this node — every proxied request and every failed authentication — sent
//! to the control plane in batches over `Sync.PublishAudit` (idempotent by event id,
//! acknowledged after commit). Events wait in a bounded in-memory queue while the control
//! plane is unreachable and are retried until acknowledged; when the queue is full new
//! events are dropped, counted and logged. (A local on-disk spool and fail-closed mode are
//! the audit issue's work.) Events never carry a secret, a prompt or a response body.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

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

/// Largest number of events waiting for the control plane.
pub const QUEUE: usize = 50_000;

/// Where request handlers put events.
#[derive(Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl AuditSink {
    pub fn new() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Self {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
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
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            action,
            actor,
            subject,
            result,
            detail: warden_core::redact::redact(&detail).into_owned(),
        };
        if self.tx.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!(crate::metrics::AUDIT_DROPPED).increment(1);
            if n.is_power_of_two() {
                tracing::error!(
                    dropped = n,
                    "audit queue full: events dropped (control plane unreachable for long?)"
                );
            }
        }
    }
}
