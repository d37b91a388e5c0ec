//! Sealed delivery of snapshot secrets: a raw `Sync.Watch` client with its own key pair sees
//! no provider key on the wire (only values sealed to its key), a `Watch` without a key is
//! refused, and every release is audited by fingerprint — while the harness's node, which
//! opens its own snapshots, still serves with the key. With HS256 the shared JWT secret
//! travels sealed the same way.

use std::time::Duration;

use prost::Message as _;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use tonic::metadata::MetadataValue;
use warden_core::seal::{Binding, Field, NodeKeyPair, Sealed};
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{
    CANARY_ANTHROPIC_KEY, CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster, eventually,
};

const WATCHER: &str = "raw-watcher";

fn hello(node_id: &str, key: Vec<u8>, credential: &str) -> tonic::Request<pb::NodeHello> {
    let mut request = tonic::Request::new(pb::NodeHello {
        node_id: node_id.to_owned(),
        software_version: "e2e".to_owned(),
        have_version: 0,
        seal_public_key: key,
        accepts_deltas: false,
    });
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn snapshot_secrets_are_sealed_to_the_watching_node_and_every_release_is_audited() {
    let c = TestCluster::start(1).await.unwrap();

    // A raw client with a valid node credential and its own key pair gets a snapshot...
    let keys = NodeKeyPair::generate().unwrap();
    let mut client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let mut stream = client
        .watch(hello(
            WATCHER,
            keys.public_key().to_bytes().to_vec(),
            &c.node_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no snapshot within 10 s")
        .unwrap()
        .expect("stream ended before the first snapshot");
    let bytes = snapshot.encode_to_vec();
    // ...in which no provider key appears, anywhere in the encoding.
    for canary in [CANARY_UPSTREAM_KEY, CANARY_ANTHROPIC_KEY] {
        assert!(
            !contains(&bytes, canary),
            "a provider key is in the clear in the snapshot"
        );
    }
    // It is there, sealed: this client's key opens it, bound to its node id and version.
    let mock = snapshot
        .providers
        .iter()
        .find(|p| p.name == "mock")
        .expect("provider mock missing");
    let key = &mock.keys[0];
    let sealed = key.sealed_secret.as_ref().expect("upstream key not sealed");
    let sealed = Sealed {
        encapped_key: sealed.encapped_key.clone(),
        ciphertext: sealed.ciphertext.clone(),
    };
    let binding = Binding {
        node_id: WATCHER,
        version: snapshot.version,
        field: Field::UpstreamKey {
            provider: "mock",
            key_id: &key.id,
        },
    };
    assert_eq!(
        keys.open(&binding, &sealed).unwrap().expose_secret(),
        CANARY_UPSTREAM_KEY.as_bytes()
    );
    assert!(
        NodeKeyPair::generate()
            .unwrap()
            .open(&binding, &sealed)
            .is_err()
    );
    assert!(
        keys.open(
            &Binding {
                node_id: "node-1",
                ..binding
            },
            &sealed
        )
        .is_err()
    );
    drop(stream);

    // A node started by the harness opens its own snapshot and serves with the key.
    let token = c.issue_token("svc-sealed", "*").unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "sealed", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = c.mock.requests();
    assert_eq!(
        seen.last().and_then(|s| s.authorization.as_deref()),
        Some(format!("Bearer {CANARY_UPSTREAM_KEY}").as_str())
    );

    // Every delivery is audited: actor the node, subject the version and fingerprints.
    let fingerprint = warden_core::fingerprint::of(CANARY_UPSTREAM_KEY.as_bytes());
    let audit = eventually(
        Duration::from_secs(5),
        "secret.release rows for both nodes",
        || async {
            let a = c
                .ctl_ok(
                    &[
                        "audit",
                        "list",
                        "--action",
                        "secret.release",
                        "--limit",
                        "200",
                        "-o",
                        "json",
                    ],
                    None,
                )
                .ok()?;
            let rows: Value = serde_json::from_str(&a).ok()?;
            let actors: Vec<&str> = rows
                .as_array()?
                .iter()
                .filter_map(|r| r["actor"].as_str())
                .collect();
            (actors.contains(&"node:node-1")
                && actors.contains(&format!("node:{WATCHER}").as_str()))
            .then_some(a)
        },
    )
    .await
    .unwrap();
    let rows: Value = serde_json::from_str(&audit).unwrap();
    let watcher_row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["actor"] == format!("node:{WATCHER}")
                && r["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("v{} ", snapshot.version)))
        })
        .unwrap_or_else(|| panic!("no release row for the snapshot the watcher got: {audit}"));
    let subject = watcher_row["subject"].as_str().unwrap();
    assert!(
        subject.contains(&format!("mock/{}:{fingerprint}", key.id)),
        "{subject}"
    );
    assert!(
        watcher_row["detail"]
            .as_str()
            .unwrap()
            .contains(&keys.public_key().fingerprint()),
        "{watcher_row}"
    );
    for canary in [CANARY_UPSTREAM_KEY, CANARY_ANTHROPIC_KEY] {
        assert!(
            !audit.contains(canary),
            "a provider key is in the audit log"
        );
    }
    // Nor anywhere else the cluster wrote.
    assert!(
        c.find_everywhere(CANARY_UPSTREAM_KEY).is_empty(),
        "{:?}",
        c.find_everywhere(CANARY_UPSTREAM_KEY)
    );
}

#[tokio::test]
async fn a_watch_without_a_usable_public_key_is_refused() {
    let c = TestCluster::start(0).await.unwrap();
    let mut client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let low_order = {
        let mut k = vec![0u8; 32];
        k[0] = 1;
        k
    };
    for (what, key) in [
        ("no key", Vec::new()),
        ("a short key", vec![9; 31]),
        ("a low-order point", low_order),
    ] {
        let status = client
            .watch(hello(WATCHER, key, &c.node_token))
            .await
            .err()
            .unwrap_or_else(|| panic!("a watch with {what} was accepted"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(
            status.message().contains("seal_public_key"),
            "{what}: {}",
            status.message()
        );
    }
    // Nothing was released to the refused watcher.
    let audit = c
        .ctl_ok(
            &["audit", "list", "--action", "secret.release", "-o", "json"],
            None,
        )
        .unwrap();
    assert!(!audit.contains(WATCHER), "{audit}");
}

#[tokio::test]
async fn hs256_secrets_travel_sealed_and_nodes_still_verify_tokens() {
    let c = TestCluster::start_with(
        1,
        Options {
            jwt_algorithm: Some("HS256".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let keys = NodeKeyPair::generate().unwrap();
    let mut client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let mut stream = client
        .watch(hello(
            WATCHER,
            keys.public_key().to_bytes().to_vec(),
            &c.node_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no snapshot within 10 s")
        .unwrap()
        .expect("stream ended before the first snapshot");
    drop(stream);
    let jwt = snapshot.jwt.as_ref().expect("no JWT settings");
    let hs: Vec<_> = jwt.keys.iter().filter(|k| k.algorithm == "HS256").collect();
    assert!(!hs.is_empty(), "no HS256 key in {:?}", jwt.keys);
    for k in hs {
        assert!(k.key.is_empty(), "HS256 secret {} in the clear", k.kid);
        let sealed = k.sealed_key.as_ref().expect("HS256 secret not sealed");
        let binding = Binding {
            node_id: WATCHER,
            version: snapshot.version,
            field: Field::Jwt { kid: &k.kid },
        };
        let secret = keys
            .open(
                &binding,
                &Sealed {
                    encapped_key: sealed.encapped_key.clone(),
                    ciphertext: sealed.ciphertext.clone(),
                },
            )
            .unwrap();
        assert!(secret.expose_secret().len() >= 32);
    }
    // The harness's node opens the secret and verifies the control plane's tokens with it.
    let token = c.issue_token("svc-hs256", "*").unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "hs256", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
