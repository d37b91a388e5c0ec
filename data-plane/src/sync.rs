//! The node's link to the control plane: `Sync.Watch` with the node credential, apply each
//! snapshot atomically, ACK it, and reconnect when the stream breaks. With several replicas
//! (`--cp-addr a,b,c`, or a name with several records) a connect round tries them in order,
//! starting after the one that just failed, and the node stays with the first that answers;
//! after a round where none answered it backs off (jittered, exponential). The node's other
//! calls (`PublishAudit`, `ReportKeyRejected`) go to the replica the watch is attached to
//! ([`Replica`]). While no replica answers the node keeps serving from the last snapshot it
//! applied (up to `--max-snapshot-age`, see [`crate::freshness`]).
//!
//! The node's sealing key pair ([`NodeKeyPair`], made once at start-up, memory only) goes
//! with every `Watch`: its public half in `NodeHello`, its private half opens the secrets
//! of each snapshot. A snapshot whose secrets do not open is not applied and not ACKed.
//!
//! The node says `accepts_deltas` and keeps its last applied state in memory
//! ([`crate::held::Held`]); a delta that is not based on that state's version, or does not
//! apply to it, drops the stream and watches again: a resync, whose first message is a full
//! snapshot (logged, counted in `warden_snapshot_resyncs_total`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use warden_core::backoff::Backoff;
use warden_core::seal::NodeKeyPair;
use warden_core::shutdown::sleep_or_cancel;
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_client::SyncClient;

use crate::compiled::Recipient;
use crate::config::NodeConfig;
use crate::cp_addrs::{self, Target};
use crate::held::Held;
use crate::state::AppState;

/// Errors on the link; all of them lead to a reconnect.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("control plane address: {0}")]
    Endpoint(String),
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("watch: {0}")]
    Status(#[from] tonic::Status),
    #[error("resync: {0}")]
    Resync(String),
}

/// The replica the Watch stream is attached to: its channel, and its position in
/// `--cp-addr`. `None` while the node is attached to none.
#[derive(Debug, Clone)]
pub struct Replica {
    pub channel: Channel,
    pub index: usize,
}

/// Where the link publishes the replica it is attached to.
pub type Attached = tokio::sync::watch::Sender<Option<Replica>>;
/// Where the node's other calls read it.
pub type Follow = tokio::sync::watch::Receiver<Option<Replica>>;

fn endpoint(config: &NodeConfig, target: &Target) -> Result<Endpoint, SyncError> {
    if config.cp_addr_in_clear().is_some() && !config.allow_plaintext {
        return Err(SyncError::Endpoint(
            "an http:// control plane off loopback needs --allow-plaintext".into(),
        ));
    }
    let mut ep = Endpoint::from_shared(target.url.clone())
        .map_err(|e| SyncError::Endpoint(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(origin) = &target.origin {
        // A resolved record: requests still name the configured host.
        let origin = origin
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| {
                SyncError::Endpoint(e.to_string())
            })?;
        ep = ep.origin(origin);
    }
    if target.url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(name) = &target.name {
            // The certificate is checked against the configured name, not the record.
            tls = tls.domain_name(name.clone());
        }
        if let Some(ca) = &config.cp_ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| SyncError::Endpoint(format!("{}: {e}", ca.display())))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        // Read at every connection: a renewed certificate is used from the next one.
        if let Some((cert, key)) = &config.cp_client_identity {
            let read = |path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| SyncError::Endpoint(format!("{}: {e}", path.display())))
            };
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        ep = ep.tls_config(tls)?;
    }
    Ok(ep)
}

fn with_credential<T>(config: &NodeConfig, message: T) -> Result<tonic::Request<T>, SyncError> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {}", config.node_token.expose_secret())
        .parse()
        .map_err(|_| SyncError::Endpoint("node credential is not a valid header value".into()))?;
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    Ok(request)
}

/// Runs the link until `shutdown`; snapshot secrets are sealed to `keys`; the replica the
/// watch is attached to is published on `attached`.
pub async fn run(
    config: Arc<NodeConfig>,
    state: Arc<AppState>,
    keys: Arc<NodeKeyPair>,
    attached: Attached,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jittered();
    let mut last: Option<Target> = None;
    // The last applied snapshot as state and secrets, the base of the next delta (memory
    // only; a resync starts the next session with a full snapshot anyway).
    let mut held: Option<Held> = None;
    detach(&state, &attached);
    loop {
        let targets = cp_addrs::rotate(cp_addrs::resolve(&config.cp_addrs).await, last.as_ref());
        let mut answered = false;
        for target in targets {
            let session = watch_once(
                &config, &state, &keys, &target, &attached, &shutdown, &mut held,
            );
            let result = tokio::select! {
                r = session => r,
                () = shutdown.cancelled() => return,
            };
            let was_attached = state.cp_connected.load(Ordering::Relaxed);
            detach(&state, &attached);
            if was_attached {
                // It answered, then went away (or ended the stream): start the next round
                // after it, so that the other replicas are tried first.
                answered = true;
                last = Some(target);
                if let Err(SyncError::Resync(reason)) = &result {
                    metrics::counter!(crate::metrics::SNAPSHOT_RESYNCS).increment(1);
                    tracing::warn!(%reason, "delta did not apply; watching again for a full snapshot (resync)");
                } else if let Err(e) = result {
                    tracing::warn!(cp = %target_label(&config, last.as_ref()), error = %e, "control plane link down; serving from the last snapshot");
                }
                break;
            }
            if let Err(e) = result {
                tracing::warn!(cp = %target.url, index = target.index, error = %e, "control plane replica did not answer; trying the next");
            }
        }
        if answered {
            backoff.reset();
        } else {
            tracing::warn!(
                replicas = config.cp_addrs.len(),
                "no control plane replica answered; serving from the last snapshot"
            );
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// The configured address of `target`, for logs.
fn target_label(config: &NodeConfig, target: Option<&Target>) -> String {
    target
        .and_then(|t| config.cp_addrs.get(t.index))
        .cloned()
        .unwrap_or_default()
}

/// The node is attached to no replica.
fn detach(state: &AppState, attached: &Attached) {
    state.cp_connected.store(false, Ordering::Relaxed);
    state.freshness.link_down();
    attached.send_replace(None);
    metrics::gauge!(crate::metrics::CP_CONNECTED).set(0.0);
    metrics::gauge!(crate::metrics::CP_REPLICA).set(-1.0);
}

/// The Watch stream to `replica` is open: the node is attached to it; a stale episode that
/// ends here is audited once.
fn attach(config: &NodeConfig, state: &AppState, attached: &Attached, replica: Replica) {
    let index = replica.index;
    state.cp_connected.store(true, Ordering::Relaxed);
    attached.send_replace(Some(replica));
    metrics::gauge!(crate::metrics::CP_CONNECTED).set(1.0);
    #[expect(clippy::cast_precision_loss, reason = "an index below 16")]
    metrics::gauge!(crate::metrics::CP_REPLICA).set(index as f64);
    let cp = config.cp_addrs.get(index).cloned().unwrap_or_default();
    tracing::info!(cp = %cp, index, "connected to the control plane");
    if let Some(episode) = state.freshness.link_up() {
        tracing::warn!(
            cp = %cp,
            offline_seconds = episode.offline.as_secs(),
            stale_seconds = episode.stale.as_secs(),
            requests_refused = episode.refused,
            "control plane reachable again: client credentials are served again"
        );
        state.audit.emit(
            "node.snapshot_stale",
            format!("node:{}", config.node_id),
            config.node_id.clone(),
            "reconnected".to_owned(),
            warden_core::audit_detail::Detail::new()
                .with("seconds_stale", episode.stale.as_secs())
                .with("seconds_offline", episode.offline.as_secs())
                .with("max_snapshot_age_seconds", episode.bound.as_secs())
                .with("requests_refused", episode.refused)
                .with("replica_index", index)
                .build(),
        );
    }
}

/// One watch session with `target`. Returns whether at least one snapshot arrived.
async fn watch_once(
    config: &NodeConfig,
    state: &AppState,
    keys: &Arc<NodeKeyPair>,
    target: &Target,
    attached: &Attached,
    shutdown: &CancellationToken,
    held: &mut Option<Held>,
) -> Result<bool, SyncError> {
    let channel: Channel = endpoint(config, target)?.connect().await?;
    let mut client = SyncClient::new(channel.clone())
        .max_decoding_message_size(warden_proto::GRPC_RESPONSE_MAX_BYTES)
        .max_encoding_message_size(warden_proto::GRPC_REQUEST_MAX_BYTES);
    let have_version = state.snapshot().map_or(0, |r| r.version);
    let hello = pb::NodeHello {
        node_id: config.node_id.clone(),
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
        have_version,
        seal_public_key: keys.public_key().to_bytes().to_vec(),
        accepts_deltas: true,
    };
    let mut stream = client
        .watch(with_credential(config, hello)?)
        .await?
        .into_inner();
    attach(
        config,
        state,
        attached,
        Replica {
            channel,
            index: target.index,
        },
    );
    let mut received = false;
    loop {
        let message = tokio::select! {
            m = stream.message() => m?,
            () = shutdown.cancelled() => return Ok(received),
        };
        let Some(snapshot) = message else {
            tracing::info!("control plane ended the watch stream");
            return Ok(received);
        };
        received = true;
        let version = snapshot.version;
        let hash = snapshot.content_hash.clone();
        let base_version = snapshot.base_version;
        let delta = base_version > 0;
        if delta && held.as_ref().map(Held::version) != Some(base_version) {
            return Err(SyncError::Resync(format!(
                "delta {version} is based on version {base_version}, which this node does not hold"
            )));
        }
        // Opening a sealed secret costs about 0.1 ms, and compiling 100,000 keys far more:
        // off the async workers.
        let started = std::time::Instant::now();
        let compiled = {
            let (keys, node_id) = (Arc::clone(keys), config.node_id.clone());
            let clients = Arc::clone(state.upstream.clients());
            let base = if delta { held.take() } else { None };
            tokio::task::spawn_blocking(move || {
                let to = Recipient {
                    node_id: &node_id,
                    keys: &keys,
                };
                let next = match base {
                    Some(base) => base.apply(&snapshot, to),
                    None => Held::from_full(&snapshot, to),
                };
                next.and_then(|next| Ok((next.compile(&clients)?, next)))
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("snapshot compilation failed: {e}")))
        };
        let took = started.elapsed();
        let kind = if delta { "delta" } else { "full" };
        metrics::histogram!(crate::metrics::SNAPSHOT_APPLY_SECONDS, "kind" => kind)
            .record(took.as_secs_f64());
        let compiled = match compiled {
            Ok((compiled, next)) => {
                *held = Some(next);
                Ok(compiled)
            }
            // The state the delta was based on is gone: the resync brings a full snapshot.
            Err(e) if delta => return Err(SyncError::Resync(format!("delta {version}: {e}"))),
            Err(e) => Err(e),
        };
        match compiled {
            Ok(compiled) => {
                if let Some(current) = state.snapshot()
                    && current.version > version
                {
                    tracing::warn!(
                        current = current.version,
                        version,
                        "control plane sent an older snapshot version; applying it (control plane state was reset?)"
                    );
                }
                state.install(compiled);
                tracing::info!(
                    version,
                    base_version,
                    content_hash = %hash,
                    apply_ms = took.as_secs_f64() * 1000.0,
                    "applied snapshot"
                );
                let ack = pb::SnapshotAck {
                    node_id: config.node_id.clone(),
                    version,
                };
                if let Err(e) = client.ack(with_credential(config, ack)?).await {
                    tracing::warn!(error = %e, version, "could not acknowledge snapshot");
                }
            }
            Err(e) => {
                tracing::error!(version, content_hash = %hash, error = %e, "rejected snapshot; keeping the last good one");
            }
        }
    }
}

/// Forwards provider rejections of upstream keys to the control plane, which records and
/// audits them and takes the key out of every node's snapshot. Best effort: the shared
/// health record in Redis already keeps every node away from the key.
pub async fn report_rejections(
    config: Arc<NodeConfig>,
    mut rx: tokio::sync::mpsc::Receiver<crate::upstream::KeyRejection>,
    mut replica: Follow,
    shutdown: CancellationToken,
) {
    loop {
        let rejection = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => return },
            () = shutdown.cancelled() => return,
        };
        let report = pb::KeyRejected {
            node_id: config.node_id.clone(),
            provider: rejection.provider,
            key_id: rejection.key_id,
            fingerprint: rejection.fingerprint,
            status: u32::from(rejection.status),
            reason: rejection.reason,
        };
        let Some(mut client) = attached_client(&mut replica, &shutdown).await else {
            return;
        };
        match with_credential(&config, report) {
            Ok(request) => {
                if let Err(e) = client.report_key_rejected(request).await {
                    tracing::warn!(error = %e, "could not report a rejected upstream key to the control plane");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not build a key report"),
        }
    }
}

/// Most events in one `PublishAudit` call.
const AUDIT_BATCH: usize = 500;
/// Largest encoded size of one `PublishAudit` message (a record larger than this goes
/// alone), well under the control plane's limit ([`warden_proto::GRPC_REQUEST_MAX_BYTES`]).
pub const AUDIT_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// How long a batch from the live spool segment waits to fill up.
const AUDIT_LINGER: Duration = Duration::from_millis(200);

/// Sends the spooled audit events to the control plane in order, in batches (up to 500
/// events and 1 MiB, waiting up to 200 ms to fill one), retrying a batch with backoff until
/// it is acknowledged (after commit, idempotent by event id); then the spool may delete
/// them. A batch the control plane refuses as malformed or too large is split in halves;
/// a single record still refused is kept in the spool's `dead/` directory and reported as a
/// `node.audit_quarantine` event, so one bad record cannot stop the node's audit trail.
pub async fn publish_audit(
    config: Arc<NodeConfig>,
    mut spool: crate::audit::spool::Reader,
    mut replica: Follow,
    shutdown: CancellationToken,
) {
    loop {
        let mut batch = tokio::select! {
            b = spool.next_batch(AUDIT_BATCH, AUDIT_LINGER) => match b { Some(b) => b, None => return },
            () = shutdown.cancelled() => return,
        };
        let records = std::mem::take(&mut batch.records);
        let mut pending: VecDeque<Vec<pb::AuditEvent>> =
            split_by_size(records.iter().map(to_wire).collect(), AUDIT_BATCH_MAX_BYTES);
        while let Some(mut part) = pending.pop_front() {
            let refused = match deliver(&config, &mut replica, &batch.node, &part, &shutdown).await
            {
                None => return,
                Some(Ok(())) => continue,
                Some(Err(status)) => status,
            };
            if part.len() > 1 {
                let second = part.split_off(part.len() / 2);
                pending.push_front(second);
                pending.push_front(part);
                continue;
            }
            let Some(event) = part.pop() else { continue };
            let Some(record) = records.iter().find(|r| r.id == event.id) else {
                continue;
            };
            let report = quarantine(spool.dir(), record, &event, &refused).await;
            match deliver(&config, &mut replica, &batch.node, &[report], &shutdown).await {
                // Not acknowledged: the next start quarantines and reports it again.
                None => return,
                Some(Ok(())) => {}
                Some(Err(status)) => {
                    tracing::error!(code = ?status.code(), "the control plane refused the report of a quarantined audit record");
                }
            }
        }
        spool.ack(batch).await;
    }
}

/// A Sync client on the replica the watch is attached to, waiting until there is one;
/// `None` at `shutdown`.
async fn attached_client(
    replica: &mut Follow,
    shutdown: &CancellationToken,
) -> Option<SyncClient<Channel>> {
    let current = tokio::select! {
        r = replica.wait_for(Option::is_some) => r.ok()?.clone()?,
        () = shutdown.cancelled() => return None,
    };
    Some(
        SyncClient::new(current.channel)
            .max_decoding_message_size(warden_proto::GRPC_RESPONSE_MAX_BYTES)
            .max_encoding_message_size(warden_proto::GRPC_REQUEST_MAX_BYTES),
    )
}

/// Sends `events` until the control plane acknowledges them (`Some(Ok)`), refuses them as
/// malformed or too large (`Some(Err)`: retrying cannot help), or `shutdown` (`None`).
/// Other failures (control plane away, overloaded, node not yet authorised) are retried
/// with backoff, each try on the replica the watch is attached to at the time.
async fn deliver(
    config: &NodeConfig,
    replica: &mut Follow,
    node: &str,
    events: &[pb::AuditEvent],
    shutdown: &CancellationToken,
) -> Option<Result<(), tonic::Status>> {
    let message = pb::AuditBatch {
        node_id: node.to_owned(),
        events: events.to_vec(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let mut client = attached_client(replica, shutdown).await?;
        let sent = match with_credential(config, message.clone()) {
            Ok(request) => client.publish_audit(request).await.map(|_| ()),
            Err(e) => Err(tonic::Status::internal(e.to_string())),
        };
        match sent {
            Ok(()) => return Some(Ok(())),
            Err(status) if refused(&status) => {
                tracing::warn!(code = ?status.code(), error = %status.message().chars().take(200).collect::<String>(), events = events.len(), "audit batch refused by the control plane");
                return Some(Err(status));
            }
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "audit batch not delivered; retrying");
                if !sleep_or_cancel(backoff.next_delay(), shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Whether the control plane (or this client's own message limit) refused a batch for its
/// content or size: sending it again cannot succeed.
fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    )
}

/// `events` in order, cut into parts whose `AuditBatch` encodes to at most `max` bytes (a
/// part of one event may be larger).
fn split_by_size(events: Vec<pb::AuditEvent>, max: usize) -> VecDeque<Vec<pb::AuditEvent>> {
    use prost::Message as _;
    // The batch's node id (at most 128 bytes) and its field header.
    const BATCH_OVERHEAD: usize = 140;
    let mut parts = VecDeque::new();
    let mut part = Vec::new();
    let mut size = BATCH_OVERHEAD;
    for event in events {
        let len = event.encoded_len();
        // Field tag and length prefix.
        let framed = len + 1 + prost::length_delimiter_len(len);
        if !part.is_empty() && size + framed > max {
            parts.push_back(std::mem::take(&mut part));
            size = BATCH_OVERHEAD;
        }
        size += framed;
        part.push(event);
    }
    if !part.is_empty() {
        parts.push_back(part);
    }
    parts
}

/// Keeps `record`, refused alone with `status`, in the spool's `dead/` directory and
/// returns the event that reports it (by id and size) to the control plane.
async fn quarantine(
    spool_dir: &std::path::Path,
    record: &crate::audit::spool::Record,
    wire: &pb::AuditEvent,
    status: &tonic::Status,
) -> pb::AuditEvent {
    use prost::Message as _;
    let reason = format!("{:?}", status.code());
    let kept = {
        let (dir, record, reason) = (spool_dir.to_owned(), record.clone(), reason.clone());
        tokio::task::spawn_blocking(move || crate::audit::quarantine::keep(&dir, &record, &reason))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    };
    let bytes = wire.encoded_len();
    let id: String = record.id.chars().take(64).collect();
    match &kept {
        Ok(()) => {
            metrics::counter!(crate::metrics::AUDIT_QUARANTINED).increment(1);
            tracing::error!(id = %id, bytes, code = %reason, "the control plane refused an audit record; kept it in the spool's dead/ directory");
        }
        Err(e) => {
            metrics::counter!(crate::metrics::AUDIT_DROPPED).increment(1);
            tracing::error!(id = %id, bytes, code = %reason, error = %e, "the control plane refused an audit record and it could not be kept; dropped");
        }
    }
    pb::AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        timestamp_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
        action: "node.audit_quarantine".to_owned(),
        actor: format!("node:{}", crate::audit::clip(record.node.clone(), 128)),
        subject: id,
        result: if kept.is_ok() { "kept" } else { "dropped" }.to_owned(),
        detail: warden_core::audit_detail::Detail::new()
            .with("bytes", bytes)
            .with("action", crate::audit::clip(record.action.clone(), 64))
            .with("refused", reason)
            .build(),
    }
}

fn to_wire(r: &crate::audit::spool::Record) -> pb::AuditEvent {
    pb::AuditEvent {
        id: r.id.clone(),
        timestamp_ms: r.ts,
        action: r.action.clone(),
        actor: r.actor.clone(),
        subject: r.subject.clone(),
        result: r.result.clone(),
        detail: r.detail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail_bytes: usize) -> pb::AuditEvent {
        pb::AuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            action: "request".into(),
            detail: "x".repeat(detail_bytes),
            ..Default::default()
        }
    }

    #[test]
    fn audit_batches_stay_under_the_size_cap_and_keep_order() {
        use prost::Message as _;
        let events: Vec<_> = (0..500)
            .map(|_| event(4000))
            .chain([event(3_000_000), event(10)])
            .collect();
        let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
        let parts = split_by_size(events, AUDIT_BATCH_MAX_BYTES);
        assert!(parts.len() > 2);
        for part in &parts {
            let batch = pb::AuditBatch {
                node_id: "n".repeat(128),
                events: part.clone(),
            };
            assert!(
                part.len() == 1 || batch.encoded_len() <= AUDIT_BATCH_MAX_BYTES,
                "{} bytes",
                batch.encoded_len()
            );
        }
        let again: Vec<_> = parts.into_iter().flatten().map(|e| e.id).collect();
        assert_eq!(again, ids);
    }
}
