//! `warden.sync.v1.Sync`: nodes authenticate with their node credential, receive the
//! current snapshot at once and every newer one as it is published, and ACK what they
//! applied. Streams end cleanly on shutdown.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_server::Sync;

use crate::domain::ApiFormat;
use crate::service::ControlPlane;
use crate::snapshot::SnapshotData;

/// The Sync service.
#[derive(Debug, Clone)]
pub struct SyncService {
    cp: Arc<ControlPlane>,
    shutdown: CancellationToken,
}

impl SyncService {
    pub fn new(cp: Arc<ControlPlane>, shutdown: CancellationToken) -> Self {
        Self { cp, shutdown }
    }
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

fn policy(l: &crate::domain::Limits) -> pb::Policy {
    pb::Policy {
        rpm: l.rpm,
        tpm: l.tpm,
        max_parallel: l.max_parallel,
        max_budget_micros: l.max_budget_micros,
        budget_period_seconds: l.budget_period_secs,
        max_tokens: l.max_tokens,
    }
}

/// Converts a snapshot to its wire form, with its content hash.
pub fn to_proto(s: &SnapshotData) -> pb::Snapshot {
    let format = |f: ApiFormat| match f {
        ApiFormat::OpenAi => pb::ApiFormat::Openai as i32,
        ApiFormat::Anthropic => pb::ApiFormat::Anthropic as i32,
        ApiFormat::Echo => pb::ApiFormat::Echo as i32,
    };
    let mut snapshot = pb::Snapshot {
        version: 0,
        content_hash: String::new(),
        providers: s
            .providers
            .iter()
            .map(|p| pb::Provider {
                name: p.name.clone(),
                format: format(p.format),
                base_url: p.base_url.clone(),
                passthrough: p.passthrough,
                drop_params: p.drop_params.clone(),
                keys: p
                    .keys
                    .iter()
                    .map(|k| pb::UpstreamKey {
                        id: k.id.clone(),
                        fingerprint: k.fingerprint.clone(),
                        secret: k.secret.expose_secret().to_owned(),
                        disabled_reason: k.disabled_reason.clone(),
                        health_epoch: k.health_epoch,
                    })
                    .collect(),
            })
            .collect(),
        models: s
            .models
            .iter()
            .map(|m| pb::Model {
                alias: m.alias.clone(),
                provider: m.provider.clone(),
                upstream_model: m.upstream_model.clone(),
                weight: m.weight,
                deployments: m
                    .deployments
                    .iter()
                    .map(|(provider, upstream_model, weight)| pb::Deployment {
                        provider: provider.clone(),
                        upstream_model: upstream_model.clone(),
                        weight: *weight,
                    })
                    .collect(),
                fallbacks: m.fallbacks.clone(),
                policy: Some(policy(&m.policy)),
                price: Some(pb::Price {
                    input_per_mtok: m.price.input_per_mtok,
                    output_per_mtok: m.price.output_per_mtok,
                }),
            })
            .collect(),
        jwt: Some(pb::JwtSettings {
            issuer: s.jwt_issuer.clone(),
            audience: s.jwt_audience.clone(),
            keys: s
                .jwt_keys
                .iter()
                .map(|k| pb::JwtVerificationKey {
                    kid: k.kid.clone(),
                    algorithm: k.algorithm.clone(),
                    key: k.key.expose_secret().clone(),
                })
                .collect(),
            leeway_seconds: s.jwt_leeway_seconds,
        }),
        virtual_keys: s
            .virtual_keys
            .iter()
            .map(|k| pb::VirtualKey {
                id: k.id.clone(),
                hash: k.hash.clone(),
                name: k.name.clone(),
                owner: k.owner.clone(),
                models: k.models.clone(),
                scopes: k.scopes.clone(),
                expires_at: k.expires_at,
                policy: Some(policy(&k.policy)),
                previous_hash: k.previous.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
                previous_expires_at: k.previous.as_ref().map_or(0, |p| p.1),
            })
            .collect(),
        revoked_tokens: s
            .revoked_tokens
            .iter()
            .map(|(jti, exp)| pb::RevokedToken {
                jti: jti.clone(),
                expires_at: *exp,
            })
            .collect(),
        vkey_pepper: s.vkey_pepper.expose_secret().clone(),
        global_policy: Some(policy(&s.global_policy)),
        subject_policies: s
            .subject_policies
            .iter()
            .map(|(subject, l)| pb::SubjectPolicy {
                subject: subject.clone(),
                policy: Some(policy(l)),
            })
            .collect(),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &snapshot.encode_to_vec());
    snapshot.content_hash = hex::encode(digest.as_ref());
    snapshot.version = s.version;
    snapshot
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
        let hello = request.into_inner();
        if !valid_node_id(&hello.node_id) {
            return Err(Status::invalid_argument(
                "node_id must be 1-128 characters of [A-Za-z0-9._:-]",
            ));
        }
        let credential = self
            .cp
            .authenticate_node(presented.as_deref(), &hello.node_id)
            .await?;
        self.cp
            .node_connected(
                &hello.node_id,
                &credential.id,
                &hello.software_version,
                hello.have_version,
            )
            .await?;
        tracing::info!(node = %hello.node_id, have = hello.have_version, "node connected");

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut snapshots = self.cp.subscribe();
        let cp = Arc::clone(&self.cp);
        let shutdown = self.shutdown.clone();
        let node_id = hello.node_id;
        tokio::spawn(async move {
            loop {
                let current = snapshots.borrow_and_update().clone();
                if tx.send(Ok(to_proto(&current))).await.is_err() {
                    break;
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { break },
                    () = tx.closed() => break,
                    () = shutdown.cancelled() => break,
                }
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
        let report = request.into_inner();
        if !valid_node_id(&report.node_id) {
            return Err(Status::invalid_argument("invalid node_id"));
        }
        self.cp
            .authenticate_node(presented.as_deref(), &report.node_id)
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
        let batch = request.into_inner();
        if !valid_node_id(&batch.node_id) {
            return Err(Status::invalid_argument("invalid node_id"));
        }
        if batch.events.len() > 1000 {
            return Err(Status::invalid_argument("at most 1000 events per batch"));
        }
        self.cp
            .authenticate_node(presented.as_deref(), &batch.node_id)
            .await?;
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
        let accepted = self.cp.ingest_node_events(&batch.node_id, events).await?;
        Ok(Response::new(pb::AuditAck { accepted }))
    }

    async fn ack(
        &self,
        request: Request<pb::SnapshotAck>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let presented = warden_proto::bearer(&request).map(str::to_owned);
        let ack = request.into_inner();
        if !valid_node_id(&ack.node_id) {
            return Err(Status::invalid_argument("invalid node_id"));
        }
        let credential = self
            .cp
            .authenticate_node(presented.as_deref(), &ack.node_id)
            .await?;
        self.cp
            .node_acked(&ack.node_id, &credential.id, ack.version)
            .await?;
        Ok(Response::new(pb::AckResponse {}))
    }
}
