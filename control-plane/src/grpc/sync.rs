//! `warden.sync.v1.Sync`: nodes authenticate with their node credential, receive the
//! current snapshot at once and every newer one as it is published, and ACK what they
//! applied. Streams end cleanly on shutdown, and at once when their credential is revoked
//! (checked again before every snapshot is sent).
//!
//! Every secret in a snapshot is sealed to the public key the node sent in its `NodeHello`
//! ([`warden_core::seal`]); each delivery is audited as `secret.release` with the
//! fingerprints of the provider keys it carries.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_server::Sync;

use warden_core::jwt::SigningAlgorithm;
use warden_core::seal::NodePublicKey;

use crate::domain::{ApiFormat, SuspensionTarget};
use crate::grpc::delivery::Deliveries;
use crate::grpc::delivery::seal;
use crate::grpc::limits::client_certificate;
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

/// The node a snapshot is converted for: its secrets are sealed to `key`, bound to
/// `node_id`.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub node_id: &'a str,
    pub key: &'a NodePublicKey,
}

/// Converts a snapshot to its wire form for one node, every secret sealed to the node's key,
/// with its content hash (which therefore covers the sealed bytes of this delivery).
pub fn to_proto(s: &SnapshotData, to: Recipient<'_>) -> Result<pb::Snapshot, String> {
    let state = warden_proto::sync_delta::SnapshotState::from_full(&unsealed(s));
    super::delivery::seal(state.to_full(), None, s, to).map(|(wire, _)| wire)
}

/// A snapshot's wire form with no secret in it: every `sealed_*` field is absent (they are
/// filled per node by [`super::delivery::seal`]). The same for every node, so it is made
/// once per version.
pub fn unsealed(s: &SnapshotData) -> pb::Snapshot {
    let format = |f: ApiFormat| match f {
        ApiFormat::OpenAi => pb::ApiFormat::Openai as i32,
        ApiFormat::Anthropic => pb::ApiFormat::Anthropic as i32,
        ApiFormat::Echo => pb::ApiFormat::Echo as i32,
    };
    let mut providers = Vec::with_capacity(s.providers.len());
    for p in &s.providers {
        let mut keys = Vec::with_capacity(p.keys.len());
        for k in &p.keys {
            keys.push(pb::UpstreamKey {
                id: k.id.clone(),
                fingerprint: k.fingerprint.clone(),
                sealed_secret: None,
                disabled_reason: k.disabled_reason.clone(),
                health_epoch: k.health_epoch,
            });
        }
        providers.push(pb::Provider {
            name: p.name.clone(),
            format: format(p.format),
            base_url: p.base_url.clone(),
            passthrough: p.passthrough,
            drop_params: p.drop_params.clone(),
            ca_pem: p.ca_pem.clone().unwrap_or_default(),
            keys,
        });
    }
    let mut jwt_keys = Vec::with_capacity(s.jwt_keys.len());
    for k in &s.jwt_keys {
        // An EdDSA key is a public key and travels as it is; anything else is a shared
        // secret (HS256), sealed per node.
        let key = match SigningAlgorithm::parse(&k.algorithm) {
            Some(SigningAlgorithm::EdDSA) => k.key.expose_secret().clone(),
            _ => Vec::new(),
        };
        jwt_keys.push(pb::JwtVerificationKey {
            kid: k.kid.clone(),
            algorithm: k.algorithm.clone(),
            key,
            sealed_key: None,
        });
    }
    pb::Snapshot {
        version: s.version,
        content_hash: String::new(),
        providers,
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
            keys: jwt_keys,
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
                allowed_ips: k.access.allowed_ips.clone(),
                allowed_origins: k.access.allowed_origins.clone(),
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
        sealed_vkey_pepper: None,
        global_policy: Some(policy(&s.global_policy)),
        subject_policies: s
            .subject_policies
            .iter()
            .map(|s| pb::SubjectPolicy {
                subject: s.subject.clone(),
                policy: s.limits.as_ref().map(policy),
                allowed_ips: s.access.allowed_ips.clone(),
                allowed_origins: s.access.allowed_origins.clone(),
            })
            .collect(),
        lockdown: s.lockdown,
        suspensions: s
            .suspensions
            .iter()
            .map(|t| match t {
                SuspensionTarget::Subject(v) => pb::Suspension {
                    subject: v.clone(),
                    prefix: String::new(),
                },
                SuspensionTarget::Prefix(v) => pb::Suspension {
                    subject: String::new(),
                    prefix: v.clone(),
                },
            })
            .collect(),
        ip_blocks: s
            .ip_blocks
            .iter()
            .map(|(cidr, expires_at)| pb::IpBlock {
                cidr: cidr.clone(),
                expires_at: expires_at.unwrap_or(0),
            })
            .collect(),
        dlp_rules: s.dlp_rules.iter().map(dlp_rule).collect(),
        client_policy: client_policy(&s.client_access),
        base_version: 0,
        removed: None,
    }
}

/// A DLP rule on the wire.
fn dlp_rule(r: &warden_core::dlp::RuleSpec) -> pb::DlpRule {
    let (kind, id) = r.scope.parts();
    pb::DlpRule {
        name: r.name.clone(),
        detector: r.detector.as_str().to_owned(),
        pattern: r.pattern.clone(),
        action: r.action.as_str().to_owned(),
        scope_kind: kind.to_owned(),
        scope_id: id.to_owned(),
    }
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

/// The gateway's IP allow-list and CORS on the wire; `None` when nothing is set.
fn client_policy(a: &crate::domain::AccessPolicy) -> Option<pb::ClientPolicy> {
    if a.is_empty() {
        return None;
    }
    Some(pb::ClientPolicy {
        allowed_ips: a.allowed_ips.clone(),
        cors: (!a.allowed_origins.is_empty()).then(|| pb::Cors {
            origins: a.allowed_origins.clone(),
            methods: a.cors_methods.clone(),
            headers: a.cors_headers.clone(),
            expose_headers: a.cors_expose_headers.clone(),
            max_age_seconds: a.cors_max_age_seconds,
            allow_credentials: a.cors_allow_credentials,
        }),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use secrecy::{SecretBox, SecretString};
    use warden_core::seal::{Binding, Field, NodeKeyPair, Sealed};

    use super::*;
    use crate::domain::{Limits, Price};
    use crate::snapshot::{SnapshotJwtKey, SnapshotKey, SnapshotModel, SnapshotProvider};

    const CANARY: &str = "sk-canary-to-proto-91b2c3d4e5f6";
    const PEPPER: &[u8] = b"pepper-canary-0123456789abcdef01";
    const HS_SECRET: &[u8] = b"hs256-canary-secret-abcdefghijkl";

    pub(crate) fn snapshot() -> SnapshotData {
        SnapshotData {
            version: 12,
            providers: vec![SnapshotProvider {
                name: "openai".into(),
                format: ApiFormat::OpenAi,
                base_url: "https://api.openai.com/v1".into(),
                passthrough: false,
                drop_params: Vec::new(),
                ca_pem: None,
                keys: vec![SnapshotKey {
                    id: "key_1".into(),
                    fingerprint: warden_core::fingerprint::of(CANARY.as_bytes()),
                    secret: SecretString::from(CANARY),
                    disabled_reason: String::new(),
                    health_epoch: 0,
                }],
            }],
            models: vec![SnapshotModel {
                alias: "gpt".into(),
                provider: "openai".into(),
                upstream_model: "gpt-4o".into(),
                fallbacks: Vec::new(),
                policy: Limits::default(),
                price: Price::default(),
                weight: 1,
                deployments: Vec::new(),
            }],
            jwt_issuer: "warden".into(),
            jwt_audience: "warden".into(),
            jwt_leeway_seconds: 30,
            jwt_keys: vec![
                SnapshotJwtKey {
                    kid: "ed".into(),
                    algorithm: "EdDSA".into(),
                    key: SecretBox::new(Box::new(vec![7; 32])),
                },
                SnapshotJwtKey {
                    kid: "hs".into(),
                    algorithm: "HS256".into(),
                    key: SecretBox::new(Box::new(HS_SECRET.to_vec())),
                },
            ],
            virtual_keys: Vec::new(),
            revoked_tokens: Vec::new(),
            vkey_pepper: SecretBox::new(Box::new(PEPPER.to_vec())),
            global_policy: Limits::default(),
            subject_policies: Vec::new(),
            lockdown: false,
            suspensions: Vec::new(),
            ip_blocks: Vec::new(),
            dlp_rules: Vec::new(),
            client_access: crate::domain::AccessPolicy::default(),
        }
    }

    fn sealed(s: Option<&pb::SealedSecret>) -> Sealed {
        let s = s.expect("sealed value missing");
        Sealed {
            encapped_key: s.encapped_key.clone(),
            ciphertext: s.ciphertext.clone(),
        }
    }

    #[test]
    fn secrets_leave_only_sealed_to_the_node() {
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let wire = to_proto(&snapshot(), to).unwrap();
        let bytes = wire.encode_to_vec();
        for secret in [CANARY.as_bytes(), PEPPER, HS_SECRET] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "a secret is in the clear on the wire"
            );
        }
        // The node opens each value under its own binding.
        let binding = |field| Binding {
            node_id: "node-1",
            version: 12,
            field,
        };
        let key = &wire.providers[0].keys[0];
        let opened = node
            .open(
                &binding(Field::UpstreamKey {
                    provider: "openai",
                    key_id: "key_1",
                }),
                &sealed(key.sealed_secret.as_ref()),
            )
            .unwrap();
        assert_eq!(opened.expose_secret().as_slice(), CANARY.as_bytes());
        let pepper = node
            .open(
                &binding(Field::VkeyPepper),
                &sealed(wire.sealed_vkey_pepper.as_ref()),
            )
            .unwrap();
        assert_eq!(pepper.expose_secret().as_slice(), PEPPER);
        // EdDSA: a public key, in the clear; HS256: sealed, `key` empty.
        let jwt = wire.jwt.as_ref().unwrap();
        assert_eq!(jwt.keys[0].key, vec![7; 32]);
        assert!(jwt.keys[0].sealed_key.is_none());
        assert!(jwt.keys[1].key.is_empty());
        let hs = node
            .open(
                &binding(Field::Jwt { kid: "hs" }),
                &sealed(jwt.keys[1].sealed_key.as_ref()),
            )
            .unwrap();
        assert_eq!(hs.expose_secret().as_slice(), HS_SECRET);
        // Another node's key opens nothing.
        let other = NodeKeyPair::generate().unwrap();
        assert!(
            other
                .open(
                    &binding(Field::VkeyPepper),
                    &sealed(wire.sealed_vkey_pepper.as_ref())
                )
                .is_err()
        );
    }

    #[test]
    fn content_hash_covers_the_delivery_without_version_and_hash() {
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let wire = to_proto(&snapshot(), to).unwrap();
        let mut unhashed = wire.clone();
        unhashed.version = 0;
        unhashed.content_hash.clear();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &unhashed.encode_to_vec());
        assert_eq!(wire.content_hash, hex::encode(digest.as_ref()));
        assert_eq!(wire.version, 12);
        // HPKE is randomised: every delivery seals afresh, so its hash differs.
        assert_ne!(
            to_proto(&snapshot(), to).unwrap().content_hash,
            wire.content_hash
        );
    }

    #[test]
    fn release_audit_names_fingerprints_never_values() {
        let s = snapshot();
        let node = NodeKeyPair::generate().unwrap();
        let to = Recipient {
            node_id: "node-1",
            key: node.public_key(),
        };
        let state = warden_proto::sync_delta::SnapshotState::from_full(&unsealed(&s));
        let (_, released) = seal(state.to_full(), None, &s, to).unwrap();
        let subject = released.subject(s.version);
        let detail = released.detail(node.public_key(), 0);
        let fp = warden_core::fingerprint::of(CANARY.as_bytes());
        assert_eq!(subject, format!("v12 keys=openai/key_1:{fp}"));
        assert_eq!(
            detail,
            format!(
                "node_key={} upstream_keys=1 vkey_pepper=1 jwt_secrets=1 base_version=0",
                node.public_key().fingerprint()
            )
        );
        for text in [&subject, &detail] {
            assert!(!text.contains(CANARY));
        }
    }
}
