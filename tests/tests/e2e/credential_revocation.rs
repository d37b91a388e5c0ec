//! Revoking node and admin credentials on a real `warden-cp`: a raw `Sync.Watch` client
//! holding two streams with its own node credential (`wardenctl node credential issue`)
//! sees both end within two seconds of `wardenctl node credential revoke ID`, receives no
//! snapshot published afterwards and cannot reconnect; `--name N --all` revokes every
//! credential of a name; an `AuditStream.Subscribe` follower's admin credential revoked
//! (`wardenctl admin credential revoke ID`) ends its stream and its next Admin call is
//! `Unauthenticated`. Every revocation is audited, and the harness's node keeps serving.

use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Code;
use tonic::metadata::MetadataValue;
use warden_core::seal::NodeKeyPair;
use warden_proto::admin::v1 as admin_pb;
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_proto::audit::v1 as audit_pb;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{MODEL, TestCluster, eventually};

fn bearer<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

fn hello(node_id: &str, credential: &str) -> tonic::Request<pb::NodeHello> {
    let keys = NodeKeyPair::generate().unwrap();
    bearer(
        pb::NodeHello {
            node_id: node_id.to_owned(),
            software_version: "e2e".to_owned(),
            have_version: 0,
            seal_public_key: keys.public_key().to_bytes().to_vec(),
            accepts_deltas: false,
        },
        credential,
    )
}

/// `wardenctl ARGS --format json` (with the cluster's admin credential), parsed.
fn ctl_json(c: &TestCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--output", "json"]);
    serde_json::from_str(&c.ctl_ok(&all, None).unwrap()).unwrap()
}

/// The listed credential `id` (`wardenctl node|admin credential list`).
fn listed(c: &TestCluster, kind: &str, id: &str) -> Value {
    let list = ctl_json(c, &[kind, "credential", "list"]);
    list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{kind} credential {id} not listed: {list}"))
        .clone()
}

/// Reads `stream` until it ends: every snapshot it still delivered, and how it ended.
async fn drain(
    stream: &mut tonic::Streaming<pb::Snapshot>,
    within: Duration,
) -> (Vec<u64>, Option<Code>) {
    let mut delivered = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Err(_) => panic!("the Watch stream outlived its revoked credential by {within:?}"),
            Ok(Ok(Some(s))) => delivered.push(s.version),
            Ok(Ok(None)) => return (delivered, None),
            Ok(Err(status)) => return (delivered, Some(status.code())),
        }
    }
}

#[tokio::test]
async fn revoked_credentials_lose_their_live_streams_and_their_next_call() {
    let c = TestCluster::start(1).await.unwrap();

    // A node credential of its own, and two Watch streams with it, each at the snapshot.
    let issued = ctl_json(&c, &["node", "credential", "issue", "--name", "rogue"]);
    let (credential, id) = (
        issued["credential"].as_str().unwrap().to_owned(),
        issued["id"].as_str().unwrap().to_owned(),
    );
    let mut client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let mut streams = Vec::new();
    for node in ["rogue-1", "rogue-2"] {
        let mut stream = client
            .watch(hello(node, &credential))
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("no snapshot within 10 s")
            .unwrap()
            .expect("stream ended before the first snapshot");
        streams.push(stream);
    }
    let row = listed(&c, "node", &id);
    assert_eq!(row["name"], "rogue");
    assert_eq!(row["revoked_at"], 0);
    assert!(row["last_used_at"].as_i64().unwrap() > 0, "{row}");

    // Revoked: both streams end within two seconds, before the next snapshot is published.
    let out = ctl_json(&c, &["node", "credential", "revoke", &id]);
    assert_eq!(out["revoked_ids"], serde_json::json!([id]));
    let revoked_at = Instant::now();
    c.ctl_ok(
        &["model", "add", "after-revoke", "--provider", "mock"],
        None,
    )
    .unwrap();
    for stream in &mut streams {
        let (delivered, ended) = drain(stream, Duration::from_secs(2)).await;
        assert!(
            delivered.is_empty(),
            "snapshots {delivered:?} were sent after revocation"
        );
        assert_eq!(ended, Some(Code::Unauthenticated));
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    assert!(listed(&c, "node", &id)["revoked_at"].as_i64().unwrap() > 0);

    // It cannot reconnect.
    let refused = client
        .watch(hello("rogue-1", &credential))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // `--name N --all` revokes every live credential of the name (names are not unique).
    let batch: Vec<String> = (0..2)
        .map(|_| {
            ctl_json(&c, &["node", "credential", "issue", "--name", "batch"])["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let out = ctl_json(
        &c,
        &["node", "credential", "revoke", "--name", "batch", "--all"],
    );
    let mut revoked: Vec<String> = serde_json::from_value(out["revoked_ids"].clone()).unwrap();
    revoked.sort();
    let mut expected = batch.clone();
    expected.sort();
    assert_eq!(revoked, expected);
    for b in &batch {
        assert!(listed(&c, "node", b)["revoked_at"].as_i64().unwrap() > 0);
    }
    // Revoking again finds nothing live.
    let again = c.ctl(&["node", "credential", "revoke", &id], None).unwrap();
    assert!(!again.status.success());

    // A JWT with the `admin` and `audit` scopes, to act and read the audit log once the admin credential is gone.
    let jwt = c
        .ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                "ops",
                "--scopes",
                "admin,audit",
                "--ttl",
                "1h",
            ],
            None,
        )
        .unwrap();

    // An audit follower on the admin credential; the credential revokes itself.
    let admin_id = ctl_json(&c, &["admin", "credential", "list"])["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revoked_at"] == 0)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let channel = tonic::transport::Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut follower = AuditStreamClient::new(channel.clone())
        .subscribe(bearer(
            audit_pb::SubscribeRequest {
                tail: 1,
                ..Default::default()
            },
            &c.admin_token,
        ))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), follower.message())
        .await
        .expect("no audit row within 10 s")
        .unwrap()
        .expect("audit stream ended early");
    let out = ctl_json(&c, &["admin", "credential", "revoke", &admin_id]);
    assert_eq!(out["revoked_ids"], serde_json::json!([admin_id]));
    let ended = async {
        loop {
            match follower.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(2), ended)
        .await
        .expect("the audit stream outlived its revoked credential");
    assert_eq!(ended, Some(Code::Unauthenticated));
    let mut admin = AdminClient::new(channel);
    let next = admin
        .list_nodes(bearer(
            admin_pb::ListNodesRequest::default(),
            &c.admin_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(next.code(), Code::Unauthenticated);

    // Every revocation is audited, naming the credentials revoked and who revoked them.
    let rows = c
        .ctl_with(
            &["audit", "query", "--format", "json"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &jwt)],
        )
        .unwrap();
    assert!(
        rows.status.success(),
        "{}",
        String::from_utf8_lossy(&rows.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(rows.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let audited = |action: &str, subject: &str| {
        rows.iter().any(|r| {
            r["action"] == action
                && r["result"] == "ok"
                && r["subject"] == subject
                && r["actor"] == format!("admin:{admin_id}")
        })
    };
    assert!(audited("node_credential.revoke", &id), "{rows:#?}");
    assert!(
        audited("node_credential.revoke", &batch.join(","))
            || audited("node_credential.revoke", &expected.join(",")),
        "batch revoke not audited"
    );
    assert!(audited("admin_credential.revoke", &admin_id));

    // The harness's node, on its own credential, still serves.
    let token = c
        .ctl_with(
            &[
                "token",
                "issue",
                "--subject",
                "svc-after",
                "--models",
                "*",
                "--ttl",
                "1h",
            ],
            None,
            &[("WARDEN_ADMIN_TOKEN", &jwt)],
        )
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, "still here", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(5), "node still connected", || async {
        let out = c
            .ctl_with(
                &["nodes", "--output", "json"],
                None,
                &[("WARDEN_ADMIN_TOKEN", &jwt)],
            )
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["node_id"] == c.nodes[0].id && n["connected"] == true)
            .then_some(())
    })
    .await
    .unwrap();
}
