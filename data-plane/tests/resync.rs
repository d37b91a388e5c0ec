//! The resync path on a real node (`warden_data_plane::run_on`) against an in-process
//! `Sync` server: a full snapshot, then a delta whose `base_version` is not the version the
//! node holds. The node must drop the stream, watch again (saying which version it has),
//! apply the full snapshot that the new session starts with, and count one resync in
//! `warden_snapshot_resyncs_total`. The server seals the pepper to the key in `NodeHello`,
//! as the control plane does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warden_core::seal::{Binding, Field, NodePublicKey};
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_server::{Sync, SyncServer};

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

/// What the node did, as the server saw it.
#[derive(Default)]
struct Seen {
    hellos: Vec<pb::NodeHello>,
    acks: Vec<u64>,
    /// Senders of open streams, kept so the server never ends a stream itself.
    open: Vec<mpsc::Sender<Result<pb::Snapshot, Status>>>,
}

#[derive(Clone, Default)]
struct Server {
    seen: Arc<Mutex<Seen>>,
}

/// A full snapshot (`base_version` 0) or a delta, with the pepper sealed to `hello`'s key.
fn snapshot(hello: &pb::NodeHello, version: u64, base_version: u64) -> pb::Snapshot {
    let key = NodePublicKey::from_bytes(&hello.seal_public_key).unwrap();
    let binding = Binding {
        node_id: &hello.node_id,
        version,
        field: Field::VkeyPepper,
    };
    let sealed = key.seal(&binding, &[7u8; 32]).unwrap();
    pb::Snapshot {
        version,
        content_hash: format!("test-{version}"),
        jwt: Some(pb::JwtSettings {
            issuer: "warden".into(),
            audience: "warden".into(),
            keys: Vec::new(),
            leeway_seconds: 30,
        }),
        sealed_vkey_pepper: Some(pb::SealedSecret {
            encapped_key: sealed.encapped_key,
            ciphertext: sealed.ciphertext,
        }),
        base_version,
        removed: (base_version > 0).then(pb::SnapshotRemovals::default),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Sync for Server {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<pb::NodeHello>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let hello = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let session = {
            let mut seen = self.seen.lock().unwrap();
            seen.hellos.push(hello.clone());
            seen.open.push(tx.clone());
            seen.hellos.len()
        };
        if session == 1 {
            // Version 1 in full, then a delta based on version 5, which the node never had.
            tx.send(Ok(snapshot(&hello, 1, 0))).await.unwrap();
            tx.send(Ok(snapshot(&hello, 6, 5))).await.unwrap();
        } else {
            tx.send(Ok(snapshot(&hello, 6, 0))).await.unwrap();
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(
        &self,
        request: Request<pb::SnapshotAck>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.seen
            .lock()
            .unwrap()
            .acks
            .push(request.into_inner().version);
        Ok(Response::new(pb::AckResponse {}))
    }

    async fn report_key_rejected(
        &self,
        _: Request<pb::KeyRejected>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        Ok(Response::new(pb::AckResponse {}))
    }

    async fn publish_audit(
        &self,
        _: Request<pb::AuditBatch>,
    ) -> Result<Response<pb::AuditAck>, Status> {
        Ok(Response::new(pb::AuditAck::default()))
    }
}

/// `GET /metrics` on the node's ops listener, as text.
async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_on_a_version_the_node_does_not_hold_resyncs_with_a_full_snapshot() {
    let server = Server::default();
    let cp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SyncServer::new(server.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(cp),
                stop.clone().cancelled_owned(),
            ),
    );

    let spool = tempfile::tempdir().unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_addr = ops.local_addr().unwrap();
    let mut config = warden_data_plane::NodeConfig::new(
        api.local_addr().unwrap(),
        format!("http://{cp_addr}"),
        "resync-node".into(),
        SecretString::from("wn_test"),
    );
    config.audit_spool.dir = spool.path().join("spool");
    let node = tokio::spawn(warden_data_plane::run_on(
        config,
        warden_data_plane::Listeners {
            api,
            ops: Some(ops),
        },
        stop.clone(),
    ));

    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (sessions, acks) = {
            let seen = server.seen.lock().unwrap();
            (seen.hellos.len(), seen.acks.clone())
        };
        if sessions >= 2 && acks.contains(&6) {
            break;
        }
        assert!(
            Instant::now() < until,
            "no resync within 10 s: {sessions} session(s), acks {acks:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (hellos, acks) = {
        let seen = server.seen.lock().unwrap();
        (seen.hellos.clone(), seen.acks.clone())
    };
    assert_eq!(hellos.len(), 2, "watched again once");
    assert!(hellos.iter().all(|h| h.accepts_deltas));
    assert_eq!(hellos[0].have_version, 0);
    assert_eq!(
        hellos[1].have_version, 1,
        "the second watch says the node still serves version 1"
    );
    assert_eq!(
        acks,
        vec![1, 6],
        "the full snapshot and the resync's full snapshot were applied, the delta never"
    );

    let text = metrics(ops_addr).await;
    let resyncs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("warden_snapshot_resyncs_total"))
        .collect();
    assert_eq!(resyncs, vec!["warden_snapshot_resyncs_total 1"], "{text}");

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), node).await;
}
