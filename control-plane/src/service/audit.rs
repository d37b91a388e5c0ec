//! The audit log: appending rows (the service's own and those nodes deliver), following
//! appends, reading and verifying the hash chain.

use std::sync::Arc;

use tokio::sync::watch;
use warden_core::audit_detail::Detail;

use super::ControlPlane;
use crate::audit::{ChainHead, ChainedAudit, VerifyReport, node_events};
use crate::domain::AuditRecord;
use crate::error::ServiceError;

/// The control plane's clock, in milliseconds since the epoch.
fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX)
}

impl ControlPlane {
    /// Writes an audit row; a failure to audit is logged loudly (the audit issue makes
    /// delivery lossless).
    pub async fn audit(
        &self,
        action: &str,
        actor: &str,
        subject: &str,
        result: &str,
        detail: &str,
    ) {
        let record = AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp_ms: now_ms(),
            action: action.to_owned(),
            actor: actor.to_owned(),
            subject: subject.to_owned(),
            result: result.to_owned(),
            detail: warden_core::redact::redact(detail).into_owned(),
        };
        match self.store.append_audit(&record).await {
            Ok(link) => {
                self.audit_appended(link.seq);
                self.tell_replicas(super::replicas::AUDIT_CHANNEL, &link.seq.to_string())
                    .await;
            }
            Err(e) => tracing::error!(error = %e, action, "could not write audit row"),
        }
    }

    pub(super) fn audit_appended(&self, seq: u64) {
        self.audit_seq.send_if_modified(|current| {
            let newer = seq > *current;
            if newer {
                *current = seq;
            }
            newer
        });
        self.audit_wake.notify_waiters();
    }

    /// Follows appends to the audit log: the newest `seq` appended (by this replica, or by
    /// another one on the same PostgreSQL: `cluster`).
    pub fn audit_appends(&self) -> watch::Receiver<u64> {
        self.audit_seq.subscribe()
    }

    /// Woken after every append to the audit log.
    pub fn audit_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.audit_wake)
    }

    /// Up to `limit` audit rows with `seq >= from_seq`, in order, with their chain hashes.
    pub async fn audit_range(
        &self,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChainedAudit>, ServiceError> {
        Ok(self.store.list_audit_range(from_seq, limit).await?)
    }

    /// The newest row of the audit chain.
    pub async fn audit_head(&self) -> Result<ChainHead, ServiceError> {
        Ok(self.store.audit_head().await?)
    }

    /// Sets the per-node-credential ingest quota (`[audit] node_ingest_rate`,
    /// `node_ingest_burst`).
    pub fn set_node_ingest_quota(
        &self,
        rate: u32,
        burst: u32,
    ) -> Result<(), node_events::QuotaError> {
        self.node_ingest.configure(rate, burst)
    }

    /// Commits audit events delivered by node `node_id`, authenticated with the node
    /// credential `credential_id`. Every event is held to [`node_events`]'s rules first: one
    /// outside them refuses the whole batch (`InvalidArgument` naming the event, so that the
    /// node splits the batch and quarantines that record; audited as `node.event_refused`),
    /// and a batch over the
    /// credential's quota is refused whole (`RateLimited`, retried by the node). Timestamps
    /// are clamped into the last five minutes, the node's own time kept as `node_time_ms`;
    /// each row records `node` and `node_credential`. Events whose id is already stored
    /// (or repeat an earlier event of the batch) are redeliveries: not stored again, counted
    /// as accepted. The rest are appended in one transaction, together with other nodes'
    /// batches that arrived while the previous append ran
    /// ([`crate::audit::group_commit`]); a failure fails the batch, so that the node
    /// retries it.
    pub async fn ingest_node_events(
        &self,
        node_id: &str,
        credential_id: &str,
        events: Vec<AuditRecord>,
    ) -> Result<u32, ServiceError> {
        for event in &events {
            if let Err(refusal) = node_events::check(event) {
                let event_id: String = event.id.chars().take(64).collect();
                tracing::warn!(node_id, credential_id, event_id, %refusal, "audit event refused");
                // Audited too, within the credential's quota so that refusals cannot flood
                // the log either.
                if self.node_ingest.take(credential_id, 1) {
                    self.audit(
                        "node.event_refused",
                        &format!("node:{credential_id}"),
                        node_id,
                        "denied",
                        &Detail::new()
                            .with("event_id", &event_id)
                            .with("reason", &refusal)
                            .build(),
                    )
                    .await;
                }
                return Err(ServiceError::InvalidArgument(format!(
                    "audit event {event_id}: {refusal}"
                )));
            }
        }
        if !self.node_ingest.take(credential_id, events.len()) {
            return Err(ServiceError::RateLimited(format!(
                "node credential {credential_id} is over its audit ingest quota; retry later"
            )));
        }
        let accepted = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let now = now_ms();
        let events: Vec<AuditRecord> = events
            .into_iter()
            .map(|event| Self::node_row(event, node_id, credential_id, now))
            .collect();
        // One transaction and one insert for the batch (and for the batches of other nodes
        // that arrived meanwhile); events already stored (the node sends a batch again when
        // our acknowledgement was lost) are left out and acknowledged with the rest.
        let appended = self
            .node_appends
            .append(&self.store, events)
            .await
            .map_err(|e| ServiceError::Internal(format!("audit append: {e}")))?;
        if let Some(seq) = appended.last_seq {
            self.audit_appended(seq);
            if appended.first_in_group {
                // One notification per append for the other replicas' audit followers.
                self.tell_replicas(super::replicas::AUDIT_CHANNEL, &seq.to_string())
                    .await;
            }
        }
        Ok(accepted)
    }

    /// The row stored for a node's `event`: fields cut to their limits, the detail
    /// redacted, the timestamp clamped into the last five minutes of `now` (the node's own
    /// kept as `node_time_ms`), and which node sent it with which credential added.
    fn node_row(
        mut event: AuditRecord,
        node_id: &str,
        credential_id: &str,
        now: i64,
    ) -> AuditRecord {
        node_events::truncate_chars(&mut event.subject, 512);
        node_events::truncate_chars(&mut event.result, 64);
        node_events::truncate_chars(&mut event.detail, 2048);
        if let std::borrow::Cow::Owned(redacted) = warden_core::redact::redact(&event.detail) {
            event.detail = redacted;
        }
        let node_time = node_events::clamp_timestamp(event.timestamp_ms, now)
            .map(|clamped| std::mem::replace(&mut event.timestamp_ms, clamped));
        let added = Detail::new()
            .with("node", node_id)
            .with("node_credential", credential_id)
            .with_opt("node_time_ms", node_time)
            .build();
        if event.detail.is_empty() {
            event.detail = added;
        } else {
            event.detail.push(' ');
            event.detail.push_str(&added);
        }
        event
    }

    /// Verifies the audit log's hash chain (and its signed checkpoints, when their keys are
    /// known).
    pub async fn verify_audit(&self, from_seq: Option<u64>) -> Result<VerifyReport, ServiceError> {
        // The verification future is not provably `Send` (a rustc limitation with its
        // closures), so it runs on a blocking thread of its own; it is an admin operation.
        let store = Arc::clone(&self.store);
        // Checkpoints are checked against the control plane's checkpoint key, kept in its
        // secret store (never in the database a tamperer could rewrite).
        let keys = crate::audit::jobs::verification_keys(self.secrets.as_ref())
            .await
            .map_err(|e| ServiceError::Internal(format!("checkpoint key: {e}")))?;
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(
                async move { crate::audit::verify(store.as_ref(), &keys, from_seq).await },
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("audit verification did not finish: {e}")))?
        .map_err(|e| ServiceError::Internal(format!("audit verification failed to run: {e}")))
    }

    pub async fn list_audit(
        &self,
        limit: u32,
        action: Option<&str>,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        Ok(self.store.list_audit(limit.clamp(1, 1000), action).await?)
    }
}
