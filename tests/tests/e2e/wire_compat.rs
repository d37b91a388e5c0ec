//! Mixed versions on the wire: the runbook's upgrade promise (deploy/README.md, "Upgrades
//! with mixed versions") tested against the oldest contract it covers.
//!
//! `old` is `warden.sync.v1` as commit 7b37173 released it (tests/proto/, compiled by this
//! crate's build.rs): the first contract with sealed secrets, whose snapshots are the
//! committed fixture `data-plane/tests/fixtures/snapshot-v2.bin`. It has no deltas
//! (`NodeHello.accepts_deltas`, `Snapshot.base_version`), no lockdown, suspensions, IP
//! blocks, DLP rules or client policy.
//!
//! - The v2 fixture is that contract byte for byte, and today's types decode and re-encode
//!   it unchanged (no field of the old contract was renumbered or retyped); the v1 fixture
//!   (clear secrets, the one deliberate break) decodes with no secret in it.
//! - An old node — a raw client of the old contract, its `NodeHello` without
//!   `accepts_deltas` — against today's control plane: every message is a full snapshot it
//!   decodes, whose sealed provider key and pepper it opens; its acks and audit batches in
//!   the old encoding are taken.
//! - Today's `warden-dp` against an old control plane — a server of the old contract that
//!   sends a full snapshot on every change and never a delta: the node serves a request
//!   with the key from it, applies the next full snapshot (a virtual key removed: 401), and
//!   its audit events arrive.

use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use warden_core::seal::{Binding, Field, NodeKeyPair, NodePublicKey, Sealed};
use warden_proto::sync::v1 as pb;
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, TestCluster, bin, eventually, free_port};
use warden_tests::mock::MockUpstream;

/// `warden.sync.v1` as released at commit 7b37173.
mod old {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    tonic::include_proto!("warden.sync.v1");
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data-plane/tests/fixtures");

fn with_credential<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

#[test]
fn the_v2_fixture_is_the_old_contract_and_todays_types_keep_it_byte_for_byte() {
    let v2 = std::fs::read(format!("{FIXTURES}/snapshot-v2.bin")).expect("fixture missing");
    let old = old::Snapshot::decode(v2.as_slice()).unwrap();
    assert_eq!(
        old.encode_to_vec(),
        v2,
        "tests/proto/sync-v1-7b37173 is not the contract the v2 fixture was written with"
    );
    assert!(old.sealed_vkey_pepper.is_some() && !old.providers.is_empty());
    let today = pb::Snapshot::decode(v2.as_slice()).unwrap();
    assert_eq!(
        today.encode_to_vec(),
        v2,
        "today's warden.sync.v1 lost, renumbered or retyped a field of the old one"
    );
    assert_eq!(
        today.base_version, 0,
        "an old control plane's snapshot reads as full"
    );
    assert!(today.removed.is_none() && !today.lockdown && today.suspensions.is_empty());

    // v1: the provider key and pepper in the clear, in fields both contracts reserve.
    let v1 = std::fs::read(format!("{FIXTURES}/snapshot-v1.bin")).expect("fixture missing");
    let today = pb::Snapshot::decode(v1.as_slice()).unwrap();
    assert_eq!(today.version, 7);
    assert!(today.sealed_vkey_pepper.is_none());
    assert!(
        today.providers[0].keys[0].sealed_secret.is_none(),
        "a v1 snapshot carries nothing sealed: today's node refuses it (see compiled.rs)"
    );
}

/// Opens a value of a snapshot sent to `node_id`.
fn open(
    keys: &NodeKeyPair,
    node_id: &str,
    version: u64,
    field: Field<'_>,
    sealed: Option<&old::SealedSecret>,
) -> Vec<u8> {
    let sealed = sealed.unwrap_or_else(|| panic!("{field} is not sealed"));
    let binding = Binding {
        node_id,
        version,
        field,
    };
    keys.open(
        &binding,
        &Sealed {
            encapped_key: sealed.encapped_key.clone(),
            ciphertext: sealed.ciphertext.clone(),
        },
    )
    .unwrap()
    .expose_secret()
    .clone()
}

/// Checks that `s` is a full snapshot an old node can use: every provider and model, the
/// pepper and the mock's key open with `keys`.
fn assert_full_and_usable(s: &old::Snapshot, keys: &NodeKeyPair, node_id: &str) {
    assert!(s.version > 0);
    let pepper = open(
        keys,
        node_id,
        s.version,
        Field::VkeyPepper,
        s.sealed_vkey_pepper.as_ref(),
    );
    assert_eq!(
        pepper.len(),
        32,
        "the pepper travels in every full snapshot"
    );
    let mock = s
        .providers
        .iter()
        .find(|p| p.name == "mock")
        .expect("every provider in a full snapshot");
    let key = &mock.keys[0];
    let secret = open(
        keys,
        node_id,
        s.version,
        Field::UpstreamKey {
            provider: "mock",
            key_id: &key.id,
        },
        key.sealed_secret.as_ref(),
    );
    assert_eq!(secret, CANARY_UPSTREAM_KEY.as_bytes());
    assert!(s.models.iter().any(|m| m.alias == MODEL));
    assert!(s.jwt.as_ref().is_some_and(|j| !j.keys.is_empty()));
}

async fn next(stream: &mut tonic::Streaming<old::Snapshot>) -> old::Snapshot {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no snapshot within 10 s")
        .unwrap()
        .expect("stream ended")
}

#[tokio::test]
async fn an_old_node_gets_full_snapshots_from_todays_control_plane_and_is_heard() {
    const OLD_NODE: &str = "node-7b37173";
    let c = TestCluster::start(0).await.unwrap();
    let keys = NodeKeyPair::generate().unwrap();
    let mut client = old::sync_client::SyncClient::connect(c.cp_addr())
        .await
        .unwrap();
    let hello = old::NodeHello {
        node_id: OLD_NODE.into(),
        software_version: "0.1.0 (7b37173)".into(),
        have_version: 0,
        seal_public_key: keys.public_key().to_bytes().to_vec(),
    };
    let mut stream = client
        .watch(with_credential(hello, &c.node_token))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_full_and_usable(&first, &keys, OLD_NODE);
    let ack = |version: u64| {
        let mut client = client.clone();
        let request = with_credential(
            old::SnapshotAck {
                node_id: OLD_NODE.into(),
                version,
            },
            &c.node_token,
        );
        async move { client.ack(request).await.unwrap() }
    };
    ack(first.version).await;

    // A change arrives as a full snapshot again, never as a delta.
    c.ctl_ok(&["vkey", "create", "--name", "old-node-probe"], None)
        .unwrap();
    let second = next(&mut stream).await;
    assert!(second.version > first.version);
    assert_full_and_usable(&second, &keys, OLD_NODE);
    assert!(
        second
            .virtual_keys
            .iter()
            .any(|k| k.name == "old-node-probe")
    );

    // Its ack and an audit batch in the old encoding are taken.
    ack(second.version).await;
    eventually(
        Duration::from_secs(10),
        "the old node's ack in `wardenctl nodes`",
        || async {
            let nodes: Value =
                serde_json::from_str(&c.ctl_ok(&["nodes", "-o", "json"], None).ok()?).ok()?;
            nodes["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["node_id"] == OLD_NODE && n["acked_version"] == second.version)
                .then_some(())
        },
    )
    .await
    .unwrap();
    let marker = format!("req-{}", uuid::Uuid::new_v4().simple());
    let ack = client
        .publish_audit(with_credential(
            old::AuditBatch {
                node_id: OLD_NODE.into(),
                events: vec![old::AuditEvent {
                    id: uuid::Uuid::now_v7().to_string(),
                    timestamp_ms: i64::try_from(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis(),
                    )
                    .unwrap(),
                    action: "request".into(),
                    actor: "jwt:old-node-client".into(),
                    subject: MODEL.into(),
                    result: "ok".into(),
                    detail: format!("request_id={marker} endpoint=/v1/chat/completions status=200"),
                }],
            },
            &c.node_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);
    let rows = c
        .ctl_ok(
            &["audit", "list", "--action", "request", "-o", "json"],
            None,
        )
        .unwrap();
    assert!(rows.contains(&marker) && rows.contains(OLD_NODE), "{rows}");
}

/// What the node did, as the old control plane saw it.
#[derive(Default)]
struct Seen {
    hellos: Vec<(old::NodeHello, Option<String>)>,
    acks: Vec<u64>,
    events: Vec<old::AuditEvent>,
}

/// A control plane of the old contract: one full snapshot per change, from `content`
/// (version, whether the virtual key is in it).
#[derive(Clone)]
struct OldControlPlane {
    content: watch::Receiver<(u64, bool)>,
    seen: Arc<Mutex<Seen>>,
    base_url: String,
    vkey_hash: String,
}

const OLD_CP_UPSTREAM_KEY: &str = "sk-old-cp-UPSTREAM-0d9c8b7a";
const OLD_CP_PEPPER: [u8; 32] = [9; 32];
const OLD_CP_VKEY_ID: &str = "vk_0123456789abcdef";

fn seal(
    key: &NodePublicKey,
    node_id: &str,
    version: u64,
    field: Field<'_>,
    value: &[u8],
) -> old::SealedSecret {
    let sealed = key
        .seal(
            &Binding {
                node_id,
                version,
                field,
            },
            value,
        )
        .unwrap();
    old::SealedSecret {
        encapped_key: sealed.encapped_key,
        ciphertext: sealed.ciphertext,
    }
}

impl OldControlPlane {
    fn snapshot(&self, hello: &old::NodeHello, (version, with_vkey): (u64, bool)) -> old::Snapshot {
        let key = NodePublicKey::from_bytes(&hello.seal_public_key).unwrap();
        let node = hello.node_id.as_str();
        old::Snapshot {
            version,
            content_hash: format!("old-cp-{version}"),
            providers: vec![old::Provider {
                name: "mock".into(),
                format: old::ApiFormat::Openai as i32,
                base_url: self.base_url.clone(),
                keys: vec![old::UpstreamKey {
                    id: "key_1".into(),
                    fingerprint: warden_core::fingerprint::of(OLD_CP_UPSTREAM_KEY.as_bytes()),
                    sealed_secret: Some(seal(
                        &key,
                        node,
                        version,
                        Field::UpstreamKey {
                            provider: "mock",
                            key_id: "key_1",
                        },
                        OLD_CP_UPSTREAM_KEY.as_bytes(),
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            models: vec![old::Model {
                alias: MODEL.into(),
                provider: "mock".into(),
                upstream_model: "mock-model".into(),
                ..Default::default()
            }],
            jwt: Some(old::JwtSettings {
                issuer: "warden".into(),
                audience: "warden".into(),
                keys: Vec::new(),
                leeway_seconds: 30,
            }),
            virtual_keys: with_vkey
                .then(|| old::VirtualKey {
                    id: OLD_CP_VKEY_ID.into(),
                    hash: self.vkey_hash.clone(),
                    name: "old".into(),
                    owner: "ops".into(),
                    models: vec!["*".into()],
                    scopes: vec!["read".into(), "write".into()],
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            sealed_vkey_pepper: Some(seal(&key, node, version, Field::VkeyPepper, &OLD_CP_PEPPER)),
            ..Default::default()
        }
    }
}

type OldStream = Pin<Box<dyn Stream<Item = Result<old::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl old::sync_server::Sync for OldControlPlane {
    type WatchStream = OldStream;

    async fn watch(
        &self,
        request: Request<old::NodeHello>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let credential = request
            .metadata()
            .get(warden_proto::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let hello = request.into_inner();
        self.seen
            .lock()
            .unwrap()
            .hellos
            .push((hello.clone(), credential));
        let (tx, rx) = mpsc::channel(4);
        let (this, mut content) = (self.clone(), self.content.clone());
        tokio::spawn(async move {
            loop {
                let current = *content.borrow_and_update();
                if tx.send(Ok(this.snapshot(&hello, current))).await.is_err()
                    || content.changed().await.is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(
        &self,
        request: Request<old::SnapshotAck>,
    ) -> Result<Response<old::AckResponse>, Status> {
        self.seen
            .lock()
            .unwrap()
            .acks
            .push(request.into_inner().version);
        Ok(Response::new(old::AckResponse {}))
    }

    async fn report_key_rejected(
        &self,
        _: Request<old::KeyRejected>,
    ) -> Result<Response<old::AckResponse>, Status> {
        Ok(Response::new(old::AckResponse {}))
    }

    async fn publish_audit(
        &self,
        request: Request<old::AuditBatch>,
    ) -> Result<Response<old::AuditAck>, Status> {
        let events = request.into_inner().events;
        let accepted = u32::try_from(events.len()).unwrap();
        self.seen.lock().unwrap().events.extend(events);
        Ok(Response::new(old::AuditAck { accepted }))
    }
}

/// A `warden-dp` process, killed when dropped.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn todays_node_serves_from_an_old_control_plane_that_sends_only_full_snapshots() {
    let mock = MockUpstream::start().await.unwrap();
    let virtual_key = warden_core::credential::generate(warden_core::credential::Kind::VirtualKey);
    let (content, content_rx) = watch::channel((1u64, true));
    let cp = OldControlPlane {
        content: content_rx,
        seen: Arc::default(),
        base_url: mock.base_url(),
        vkey_hash: warden_core::credential::hash(&OLD_CP_PEPPER, &virtual_key),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(old::sync_server::SyncServer::new(cp.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let (port, ops_port) = (free_port().unwrap(), free_port().unwrap());
    let node_token = warden_core::credential::generate(warden_core::credential::Kind::Node);
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let _node = NodeProcess(
        Command::new(bin("warden-dp").unwrap())
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--ops-addr")
            .arg(format!("127.0.0.1:{ops_port}"))
            .arg("--cp-addr")
            .arg(format!("http://{cp_addr}"))
            .arg("--node-id")
            .arg("today-node")
            .arg("--audit-spool-dir")
            .arg(dir.path().join("spool"))
            .arg("--egress-allow-loopback")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WARDEN_NODE_TOKEN", node_token.expose_secret())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let node_log = || std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{ops_port}/readyz");
    if let Err(e) = eventually(Duration::from_secs(20), "the node to be ready", || async {
        let r = http.get(&ready).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await
    {
        panic!("{e}\n{}", node_log());
    }
    {
        let seen = cp.seen.lock().unwrap();
        let (hello, credential) = &seen.hellos[0];
        assert_eq!(hello.node_id, "today-node");
        assert_eq!(hello.seal_public_key.len(), 32);
        assert_eq!(
            credential.as_deref(),
            Some(format!("Bearer {}", node_token.expose_secret()).as_str())
        );
    }
    let chat = || async {
        http.post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .bearer_auth(virtual_key.expose_secret())
            .json(&TestCluster::chat_body(
                MODEL,
                "from an old control plane",
                false,
            ))
            .send()
            .await
            .unwrap()
    };
    let r = chat().await;
    assert_eq!(
        r.status(),
        200,
        "{}\n{}",
        r.text().await.unwrap(),
        node_log()
    );
    assert_eq!(
        mock.requests().last().and_then(|r| r.authorization.clone()),
        Some(format!("Bearer {OLD_CP_UPSTREAM_KEY}"))
    );

    // The next change is a whole snapshot without the key: applied, and the key refused.
    content.send((2, false)).unwrap();
    eventually(
        Duration::from_secs(10),
        "the node to ack version 2",
        || async { cp.seen.lock().unwrap().acks.contains(&2).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(chat().await.status(), 401);
    assert_eq!(
        cp.seen.lock().unwrap().hellos.len(),
        1,
        "no resync was needed"
    );

    // The node's audit events reach the old control plane.
    eventually(
        Duration::from_secs(20),
        "the node's request events at the old control plane",
        || async {
            let seen = cp.seen.lock().unwrap();
            seen.events
                .iter()
                .any(|e| {
                    e.action == "request"
                        && e.result == "ok"
                        && e.actor
                            == format!(
                                "vkey:{}",
                                warden_core::fingerprint::obfuscate(OLD_CP_VKEY_ID)
                            )
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(!node_log().contains(OLD_CP_UPSTREAM_KEY));
}
