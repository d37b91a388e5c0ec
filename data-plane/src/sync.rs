//! The node's link to the control plane: `Sync.Watch` with the node credential, apply each
//! snapshot atomically, ACK it, and reconnect with jittered exponential backoff when the
//! stream breaks. While the control plane is away the node keeps serving from the last
//! snapshot it applied.
//!
//! The node's sealing key pair ([`NodeKeyPair`], made once at start-up, memory only) goes
//! with every `Watch`: its public half in `NodeHello`, its private half opens the secrets
//! of each snapshot. A snapshot whose secrets do not open is not applied and not ACKed.

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

use crate::compiled::{Recipient, Snapshot};
use crate::config::NodeConfig;
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
}

fn endpoint(config: &NodeConfig) -> Result<Endpoint, SyncError> {
    let mut ep = Endpoint::from_shared(config.cp_addr.clone())
        .map_err(|e| SyncError::Endpoint(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if config.cp_addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &config.cp_ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| SyncError::Endpoint(format!("{}: {e}", ca.display())))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
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

/// Runs the link until `shutdown`; snapshot secrets are sealed to `keys`.
pub async fn run(
    config: Arc<NodeConfig>,
    state: Arc<AppState>,
    keys: Arc<NodeKeyPair>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jittered();
    loop {
        let session = watch_once(&config, &state, &keys, &shutdown);
        let result = tokio::select! {
            r = session => r,
            () = shutdown.cancelled() => return,
        };
        state.cp_connected.store(false, Ordering::Relaxed);
        match result {
            Ok(true) => backoff.reset(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "control plane link down; serving from the last snapshot")
            }
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// One watch session. Returns whether at least one snapshot arrived.
async fn watch_once(
    config: &NodeConfig,
    state: &AppState,
    keys: &Arc<NodeKeyPair>,
    shutdown: &CancellationToken,
) -> Result<bool, SyncError> {
    let channel: Channel = endpoint(config)?.connect().await?;
    let mut client = SyncClient::new(channel);
    let have_version = state.snapshot().map_or(0, |r| r.version);
    let hello = pb::NodeHello {
        node_id: config.node_id.clone(),
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
        have_version,
        seal_public_key: keys.public_key().to_bytes().to_vec(),
    };
    let mut stream = client
        .watch(with_credential(config, hello)?)
        .await?
        .into_inner();
    state.cp_connected.store(true, Ordering::Relaxed);
    tracing::info!(cp = %config.cp_addr, "connected to the control plane");
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
        // Opening a sealed secret costs about 0.1 ms: compile off the async workers.
        let compiled = {
            let (keys, node_id) = (Arc::clone(keys), config.node_id.clone());
            tokio::task::spawn_blocking(move || {
                let to = Recipient {
                    node_id: &node_id,
                    keys: &keys,
                };
                Snapshot::compile(snapshot, to).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("snapshot compilation failed: {e}")))
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
                tracing::info!(version, content_hash = %hash, "applied snapshot");
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
    shutdown: CancellationToken,
) {
    let Ok(endpoint) = endpoint(&config) else {
        return;
    };
    let mut client = SyncClient::new(endpoint.connect_lazy());
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
/// How long a batch from the live spool segment waits to fill up.
const AUDIT_LINGER: Duration = Duration::from_millis(200);

/// Sends the spooled audit events to the control plane in order, in batches (up to 500
/// events, waiting up to 200 ms to fill one), retrying a batch with backoff until it is
/// acknowledged (after commit, idempotent by event id); then the spool may delete them.
pub async fn publish_audit(
    config: Arc<NodeConfig>,
    mut spool: crate::audit::spool::Reader,
    shutdown: CancellationToken,
) {
    let Ok(endpoint) = endpoint(&config) else {
        return;
    };
    let mut client = SyncClient::new(endpoint.connect_lazy());
    loop {
        let batch = tokio::select! {
            b = spool.next_batch(AUDIT_BATCH, AUDIT_LINGER) => match b { Some(b) => b, None => return },
            () = shutdown.cancelled() => return,
        };
        let message = pb::AuditBatch {
            node_id: batch.node.clone(),
            events: batch.records.iter().map(to_wire).collect(),
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let sent = match with_credential(&config, message.clone()) {
                Ok(request) => client
                    .publish_audit(request)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, events = message.events.len(), "audit batch not delivered; retrying");
                    if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                        return;
                    }
                }
            }
        }
        spool.ack(batch).await;
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
