//! `warden.sync.v1.Sync`: nodes authenticate with their node credential, receive the
//! current snapshot at once and every newer one as it is published, and ACK what they
//! applied. Streams end cleanly on shutdown, and at once when their credential is revoked
//! (checked again before every snapshot is sent).
//!
//! The first message of a stream is a full snapshot; after it, a node that said
//! `accepts_deltas` gets deltas from what this stream last sent ([`super::delivery`]).
//! Every secret sent is sealed to the public key the node sent in its `NodeHello`
//! ([`warden_core::seal`]); each delivery that releases a secret is audited as
//! `secret.release` with the fingerprints of the provider keys it carries (a delta that
//! releases none has no row).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_server::Sync;

use warden_core::seal::NodePublicKey;

use crate::grpc::delivery::{Deliveries, seal};
use crate::grpc::limits::client_certificate;
use crate::grpc::snapshot_wire::Recipient;
use crate::service::{ClientKey, ControlPlane};
use crate::snapshot::SnapshotData;
use crate::tls::ClientCertMode;
use warden_proto::sync_delta::SnapshotState;

/// The Sync service.
#[derive(Debug, Clone)]
pub struct SyncService {
    cp: Arc<ControlPlane>,
    shutdown: CancellationToken,
    client_certs: ClientCertMode,
    /// Wire states and deltas shared by every stream.
    deliveries: Arc<Deliveries>,
}

impl SyncService {
    pub fn new(cp: Arc<ControlPlane>, shutdown: CancellationToken) -> Self {
        Self {
            cp,
            shutdown,
            client_certs: ClientCertMode::Off,
            deliveries: Arc::new(Deliveries::default()),
        }
    }

    /// How the listener treats client certificates: when it checks them at all
    /// (`client_ca_file`, required or optional), every Sync call must come over a
    /// connection with a verified client certificate — so a node's sealing key
    /// (`NodeHello`) is accepted only from a holder of a key the CA vouched for.
    pub fn with_client_certs(mut self, mode: ClientCertMode) -> Self {
        self.client_certs = mode;
        self
    }

    /// What a connection that presented a certificate of key `spki_sha256` proved.
    fn key_of<'k>(&self, spki_sha256: Option<&'k str>) -> ClientKey<'k> {
        ClientKey {
            spki_sha256,
            required: self.client_certs != ClientCertMode::Off,
        }
    }
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Sync for SyncService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::NodeHello>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let presented = warden_proto::bearer(&request).map(str::to_owned);
        let peer = request.remote_addr().map(|a| a.ip());
        let spki = client_certificate(&request).map(|c| c.spki_sha256().to_owned());
        let hello = request.into_inner();
        if !valid_node_id(&hello.node_id) {
            return Err(Status::invalid_argument(
                "node_id must be 1-128 characters of [A-Za-z0-9._:-]",
            ));
        }
        let credential = self
            .cp
            .authenticate_node(
                peer,
                self.key_of(spki.as_deref()),
                presented.as_deref(),
                &hello.node_id,
            )
            .await?;
        // Cancelled when the credential is revoked; refused when it already is.
        let revoked = self.cp.open_credential_stream(&credential.id)?;
        let key = NodePublicKey::from_bytes(&hello.seal_public_key).map_err(|e| {
            tracing::warn!(node = %hello.node_id, error = %e, "watch refused: no usable seal_public_key");
            Status::invalid_argument(format!(
                "seal_public_key: {e}; a node must send the raw 32-byte X25519 public key that its snapshot secrets are sealed to"
            ))
        })?;
        self.cp
            .node_connected(
                &hello.node_id,
                &credential.id,
                &hello.software_version,
                hello.have_version,
            )
            .await?;
        tracing::info!(
            node = %hello.node_id,
            have = hello.have_version,
            node_key = %key.fingerprint(),
            "node connected"
        );

        // A node that failed over from another replica may hold a newer version than this
        // replica sends yet: catch up with the database first, so it is never sent an older
        // one.
        if hello.have_version > self.cp.current_version()
            && let Err(e) = self.cp.refresh().await
        {
            tracing::warn!(node = %hello.node_id, error = %e, "could not catch up with the database before serving a node");
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut snapshots = self.cp.subscribe();
        let cp = Arc::clone(&self.cp);
        let shutdown = self.shutdown.clone();
        let node_id = hello.node_id;
        let credential_id = credential.id.clone();
        let deliveries = Arc::clone(&self.deliveries);
        let accepts_deltas = hello.accepts_deltas;
        tokio::spawn(async move {
            // What this stream last sent: the next message is a delta against it (when the
            // node accepts deltas), else a full snapshot.
            let mut last: Option<(Arc<SnapshotData>, Arc<SnapshotState>)> = None;
            loop {
                if !cp.node_credential_live(&credential).await {
                    break;
                }
                let current = snapshots.borrow_and_update().clone();
                let base = last
                    .as_ref()
                    .filter(|(s, _)| accepts_deltas && s.version > 0)
                    .cloned();
                let sealed = {
                    let (current, node_id, key, deliveries) = (
                        Arc::clone(&current),
                        node_id.clone(),
                        key.clone(),
                        Arc::clone(&deliveries),
                    );
                    // One HPKE encapsulation per secret sent: off the async workers.
                    tokio::task::spawn_blocking(move || {
                        let started = std::time::Instant::now();
                        let to = Recipient {
                            node_id: &node_id,
                            key: &key,
                        };
                        let state = deliveries.state(&current);
                        let (wire, released) = match &base {
                            Some((old, old_state)) => {
                                let delta = deliveries.delta((old, old_state), (&current, &state));
                                seal((*delta).clone(), Some(old), &current, to)?
                            }
                            None => seal(state.to_full(), None, &current, to)?,
                        };
                        Ok::<_, String>((wire, released, state, started.elapsed()))
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                };
                let (snapshot, released, state, took) = match sealed {
                    Ok(sealed) => sealed,
                    Err(error) => {
                        tracing::error!(node = %node_id, version = current.version, %error, "could not seal the snapshot");
                        let _ = tx
                            .send(Err(Status::internal("could not seal the snapshot")))
                            .await;
                        break;
                    }
                };
                if cp.credential_revoked(&credential_id) {
                    break;
                }
                cp.metrics().snapshot_sealed(took);
                tracing::info!(
                    node = %node_id,
                    version = current.version,
                    base_version = snapshot.base_version,
                    bytes = snapshot.encoded_len(),
                    secrets_sealed = released.upstream_keys.len() + usize::from(released.vkey_pepper) + released.jwt_secrets,
                    seal_ms = took.as_secs_f64() * 1000.0,
                    "sending snapshot"
                );
                // Audited before it leaves, so no release goes unrecorded; a delta that
                // releases no secret has no `secret.release` row.
                if !released.is_empty() {
                    cp.audit(
                        "secret.release",
                        &format!("node:{node_id}"),
                        &released.subject(current.version),
                        "ok",
                        &released.detail(&key, snapshot.base_version),
                    )
                    .await;
                }
                last = Some((Arc::clone(&current), state));
                if tx.send(Ok(snapshot)).await.is_err() {
                    break;
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                    () = shutdown.cancelled() => break,
                    () = revoked.cancelled() => break,
                }
            }
            if cp.credential_revoked(&credential_id) {
                tracing::warn!(node = %node_id, credential = %credential_id, "watch ended: credential revoked");
                let _ = tx.try_send(Err(Status::unauthenticated("node credential revoked")));
            }
            cp.node_disconnected(&node_id);
            tracing::info!(node = %node_id, "node disconnected");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report_key_rejected(
        &self,
        request: Request<pb::KeyRejected>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let presented = warden_proto::bearer(&request).map(str::to_owned);
        let peer = request.remote_addr().map(|a| a.ip());
        let spki = client_certificate(&request).map(|c| c.spki_sha256().to_owned());
        let report = request.into_inner();
        if !valid_node_id(&report.node_id) {
            return Err(Status::invalid_argument("invalid node_id"));
        }
        self.cp
            .authenticate_node(
                peer,
                self.key_of(spki.as_deref()),
                presented.as_deref(),
                &report.node_id,
            )
            .await?;
        let reason: String = warden_core::redact::redact(&report.reason)
            .chars()
            .take(200)
            .collect();
        self.cp
            .upstream_key_rejected(
                &report.node_id,
                &report.provider,
                &report.key_id,
                &report.fingerprint,
                report.status,
                &reason,
            )
            .await?;
        Ok(Response::new(pb::AckResponse {}))
    }

    async fn publish_audit(
        &self,
        request: Request<pb::AuditBatch>,
    ) -> Result<Response<pb::AuditAck>, Status> {
        let presented = warden_proto::bearer(&request).map(str::to_owned);
        let peer = request.remote_addr().map(|a| a.ip());
        let spki = client_certificate(&request).map(|c| c.spki_sha256().to_owned());
        let batch = request.into_inner();
        if !valid_node_id(&batch.node_id) {
            return Err(Status::invalid_argument("invalid node_id"));
        }
        if batch.events.len() > 1000 {
            return Err(Status::invalid_argument("at most 1000 events per batch"));
        }
        let credential = self
            .cp
            .authenticate_node(
                peer,
                self.key_of(spki.as_deref()),
                presented.as_deref(),
                &batch.node_id,
            )
            .await?;
        let oldest_ms = batch.events.iter().map(|e| e.timestamp_ms).min();
        let events = batch
            .events
            .into_iter()
            .map(|e| crate::domain::AuditRecord {
                id: e.id,
                timestamp_ms: e.timestamp_ms,
                action: e.action,
                actor: e.actor,
                subject: e.subject,
                result: e.result,
                detail: e.detail,
            })
            .collect();
        let accepted = self
            .cp
            .ingest_node_events(&batch.node_id, &credential.id, events)
            .await?;
        self.cp.metrics().audit_ingested(accepted, oldest_ms);
        Ok(Response::new(pb::AuditAck { accepted }))
    }

    async fn ack(
        &self,
        request: Request<pb::SnapshotAck>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let presented = warden_proto::bearer(&request).map(str::to_owned);
        let peer = request.remote_addr().map(|a| a.ip());
        let spki = client_certificate(&request).map(|c| c.spki_sha256().to_owned());
        let ack = request.into_inner();
        if !valid_node_id(&ack.node_id) {
            return Err(Status::invalid_argument("invalid node_id"));
        }
        let credential = self
            .cp
            .authenticate_node(
                peer,
                self.key_of(spki.as_deref()),
                presented.as_deref(),
                &ack.node_id,
            )
            .await?;
        self.cp
            .node_acked(&ack.node_id, &credential.id, ack.version)
            .await?;
        Ok(Response::new(pb::AckResponse {}))
    }
}
