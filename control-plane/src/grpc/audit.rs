//! `warden.audit.v1.AuditStream`: the audit log as a resumable stream for SIEM consumers
//! and `wardenctl audit tail|query`. History comes from the store in pages, then live
//! records as the control plane appends them; the cursor is the chain position (`seq`).

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warden_core::audit_detail::{self, Detail};
use warden_proto::audit::v1 as pb;
use warden_proto::audit::v1::audit_stream_server::AuditStream;

use crate::audit::ChainedAudit;
use crate::audit::node_events::CLOCK_SKEW_MS;
use crate::service::ControlPlane;

/// Rows read from the store per page.
const PAGE: u32 = 500;

pub struct AuditStreamService {
    cp: Arc<ControlPlane>,
    shutdown: CancellationToken,
}

impl AuditStreamService {
    pub fn new(cp: Arc<ControlPlane>, shutdown: CancellationToken) -> Self {
        Self { cp, shutdown }
    }
}

/// A validated filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    actions: Vec<String>,
    actor: String,
    subject: String,
    result: String,
    until_ms: i64,
    since_ms: i64,
}

impl Filter {
    fn from_wire(f: Option<pb::Filter>) -> Result<Self, Status> {
        let f = f.unwrap_or_default();
        if f.actions.len() > 32 {
            return Err(Status::invalid_argument("filter: at most 32 actions"));
        }
        for text in f.actions.iter().chain([&f.actor, &f.subject, &f.result]) {
            if text.len() > 256 {
                return Err(Status::invalid_argument(
                    "filter: values are at most 256 characters",
                ));
            }
        }
        Ok(Self {
            actions: f.actions,
            actor: f.actor,
            subject: f.subject,
            result: f.result,
            until_ms: f.until_ms,
            since_ms: 0,
        })
    }

    fn matches(&self, r: &ChainedAudit) -> bool {
        let rec = &r.record;
        (self.actions.is_empty()
            || self.actions.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => rec.action.starts_with(prefix),
                None => &rec.action == a,
            }))
            && (self.actor.is_empty() || rec.actor.contains(&self.actor))
            && (self.subject.is_empty() || rec.subject.contains(&self.subject))
            && (self.result.is_empty() || rec.result == self.result)
            && (self.until_ms == 0 || rec.timestamp_ms < self.until_ms)
            && rec.timestamp_ms >= self.since_ms
    }

    fn describe(&self) -> Detail {
        Detail::new()
            .with_opt(
                "actions",
                (!self.actions.is_empty()).then(|| self.actions.join(",")),
            )
            .with_opt("actor", (!self.actor.is_empty()).then_some(&self.actor))
            .with_opt(
                "subject",
                (!self.subject.is_empty()).then_some(&self.subject),
            )
            .with_opt("result", (!self.result.is_empty()).then_some(&self.result))
            .with_opt("until_ms", (self.until_ms > 0).then_some(self.until_ms))
    }
}

pub fn to_wire(r: ChainedAudit) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: r.seq,
        attributes: audit_detail::parse(&r.record.detail).into_iter().collect(),
        id: r.record.id,
        timestamp_ms: r.record.timestamp_ms,
        action: r.record.action,
        actor: r.record.actor,
        subject: r.record.subject,
        result: r.record.result,
        detail: r.record.detail,
        hash: r.hash,
        prev_hash: r.prev_hash,
    }
}

/// The cursor to start after so that the stream begins with the last `tail` matching
/// records: walks back from the head a page at a time.
async fn tail_start(cp: &ControlPlane, filter: &Filter, tail: u32) -> Result<u64, Status> {
    let head = cp.audit_head().await?.seq;
    let mut hi = head;
    let mut found = 0u32;
    while hi > 0 {
        let lo = hi.saturating_sub(u64::from(PAGE) - 1).max(1);
        let page = cp.audit_range(lo, PAGE).await?;
        for r in page.iter().rev().filter(|r| r.seq <= hi) {
            if filter.matches(r) {
                found += 1;
                if found == tail {
                    return Ok(r.seq - 1);
                }
            }
        }
        hi = lo - 1;
    }
    Ok(0)
}

/// The cursor just before the first record at or after `since_ms − CLOCK_SKEW_MS`: every
/// record is stamped at most that long before it was appended (node events are clamped,
/// `audit::node_events`), so none appended after it is older than `since_ms`.
async fn since_start(cp: &ControlPlane, since_ms: i64) -> Result<u64, Status> {
    let since_ms = since_ms.saturating_sub(CLOCK_SKEW_MS);
    let mut from = 1;
    loop {
        let page = cp.audit_range(from, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(from.saturating_sub(1));
        };
        if let Some(first) = page.iter().find(|r| r.record.timestamp_ms >= since_ms) {
            return Ok(first.seq - 1);
        }
        from = last.seq + 1;
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

#[tonic::async_trait]
impl AuditStream for AuditStreamService {
    type SubscribeStream = RecordStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let actor = self
            .cp
            .authenticate_audit_reader(
                request.remote_addr().map(|a| a.ip()),
                crate::service::ClientKey {
                    spki_sha256: crate::grpc::limits::client_certificate(&request)
                        .map(|c| c.spki_sha256()),
                    required: false,
                },
                warden_proto::bearer(&request),
                "audit.subscribe",
            )
            .await?;
        // An admin credential's stream ends when it is revoked (a JWT's has no credential).
        let credential_id = actor.0.strip_prefix("admin:").map(str::to_owned);
        let revoked = match &credential_id {
            Some(id) => self.cp.open_credential_stream(id)?,
            None => CancellationToken::new(),
        };
        let r = request.into_inner();
        let mut filter = Filter::from_wire(r.filter)?;
        let mut cursor = if r.after_seq > 0 {
            r.after_seq
        } else if r.tail > 0 {
            tail_start(&self.cp, &filter, r.tail.min(10_000)).await?
        } else if r.since_ms > 0 {
            // Rows from the skew window before `since` are read, not sent.
            filter.since_ms = r.since_ms;
            since_start(&self.cp, r.since_ms).await?
        } else {
            0
        };
        // History ends at the head as of now (not at this subscription's own record).
        let history_end = self.cp.audit_head().await?.seq;
        // Reading the audit log is itself audited, once per subscription.
        self.cp
            .audit(
                "audit.subscribe",
                &actor.0,
                "",
                "ok",
                &filter
                    .describe()
                    .with("after_seq", cursor)
                    .with("follow", !r.history_only)
                    .build(),
            )
            .await;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let cp = Arc::clone(&self.cp);
        let shutdown = self.shutdown.clone();
        let history_only = r.history_only;
        tokio::spawn(async move {
            let mut appended = cp.audit_appends();
            loop {
                // Mark the current append position seen before reading, so an append
                // during the read is not missed.
                appended.borrow_and_update();
                let page = match cp.audit_range(cursor + 1, PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_status())).await;
                        return;
                    }
                };
                let full = page.len() == PAGE as usize;
                for rec in page {
                    if history_only && rec.seq > history_end {
                        return;
                    }
                    cursor = rec.seq;
                    // Rows are stamped at most CLOCK_SKEW_MS before they are appended
                    // (`audit::node_events`): after one stamped `until + CLOCK_SKEW_MS` no
                    // later row can be older than `until`.
                    if filter.until_ms > 0
                        && rec.record.timestamp_ms >= filter.until_ms.saturating_add(CLOCK_SKEW_MS)
                    {
                        return;
                    }
                    if revoked.is_cancelled()
                        || credential_id
                            .as_deref()
                            .is_some_and(|id| cp.credential_revoked(id))
                    {
                        let _ = tx.try_send(Err(Status::unauthenticated("credential revoked")));
                        return;
                    }
                    if filter.matches(&rec) && tx.send(Ok(to_wire(rec))).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                if history_only {
                    return;
                }
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => return,
                    () = revoked.cancelled() => {
                        let _ = tx.try_send(Err(Status::unauthenticated("credential revoked")));
                        return;
                    }
                    // Rows appended by another writer of the same database.
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
