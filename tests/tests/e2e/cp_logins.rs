//! Logins on a real `warden-cp`: failed admin and node logins from one address are
//! throttled past 20 a minute (`RESOURCE_EXHAUSTED` with a retry hint, before any lookup,
//! that address only) and audited in bounded form with the client address; and the Admin
//! and Audit APIs refuse HS256 JWTs — even one a compromised node signs with the shared
//! secret — while EdDSA admin JWTs work and nodes keep serving HS256 client tokens.

use std::collections::BTreeMap;
use std::net::IpAddr;

use secrecy::ExposeSecret as _;
use serde_json::Value;
use tonic::Code;
use tonic::metadata::MetadataValue;
use warden_core::jwt::{Claims, KeyMaterial, SigningAlgorithm};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_proto::audit::v1 as audit_pb;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;
use warden_proto::sync::v1 as sync_pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{MODEL, Options, TestCluster};

fn bearer<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

/// A channel to the control plane from the loopback alias `from`.
async fn channel_from(c: &TestCluster, from: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .local_address(Some(from.parse::<IpAddr>().unwrap()))
        .connect()
        .await
        .unwrap()
}

/// The `auth.*` audit rows of `action` as (detail pairs, result).
fn auth_rows(c: &TestCluster, action: &str) -> Vec<BTreeMap<String, String>> {
    let rows = c
        .ctl_ok(
            &["audit", "query", "--action", action, "--format", "json"],
            None,
        )
        .unwrap();
    rows.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["result"] == "denied")
        .map(|r| warden_core::audit_detail::parse(r["detail"].as_str().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_and_audited_once_a_minute() {
    let c = TestCluster::start(0).await.unwrap();
    let mut attacker = AdminClient::new(channel_from(&c, "127.0.0.2").await);
    let bogus = "wa_not-a-real-credential-0000000000000000";
    let mut codes = Vec::new();
    let mut last = None;
    for _ in 0..25 {
        match attacker
            .list_providers(bearer(pb::ListProvidersRequest::default(), bogus))
            .await
        {
            Ok(_) => codes.push(Code::Ok),
            Err(status) => {
                codes.push(status.code());
                last = Some(status);
            }
        }
    }
    assert!(
        codes[..20].iter().all(|c| *c == Code::Unauthenticated),
        "{codes:?}"
    );
    assert!(
        codes[20..].iter().all(|c| *c == Code::ResourceExhausted),
        "past 20 failures a minute the address is throttled: {codes:?}"
    );
    let message = last.unwrap().message().to_owned();
    assert!(message.contains("retry in"), "{message}");

    // Before any lookup: the real admin credential from that address is refused too...
    let refused = attacker
        .list_providers(bearer(pb::ListProvidersRequest::default(), &c.admin_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // ...while another address is not affected.
    let mut admin = AdminClient::new(channel_from(&c, "127.0.0.1").await);
    admin
        .list_providers(bearer(pb::ListProvidersRequest::default(), &c.admin_token))
        .await
        .unwrap();

    // Node credentials on the Sync API, from a third address.
    let mut node = SyncClient::new(channel_from(&c, "127.0.0.3").await);
    let mut node_codes = Vec::new();
    for _ in 0..22 {
        let ack = sync_pb::SnapshotAck {
            node_id: "edge-x".into(),
            version: 1,
        };
        node_codes.push(
            match node.ack(bearer(ack, "wn_forged-node-credential")).await {
                Ok(_) => Code::Ok,
                Err(s) => s.code(),
            },
        );
    }
    assert!(
        node_codes[..20].iter().all(|c| *c == Code::Unauthenticated),
        "{node_codes:?}"
    );
    assert_eq!(node_codes[21], Code::ResourceExhausted, "{node_codes:?}");

    // 26 failed admin logins from 127.0.0.2 made one row per reason (the first, at once,
    // with the address), not 26; the same for the 22 node logins.
    let admin_rows: Vec<_> = auth_rows(&c, "auth.admin")
        .into_iter()
        .filter(|d| d.get("client_ip").map(String::as_str) == Some("127.0.0.2"))
        .collect();
    assert!(
        (1..=2).contains(&admin_rows.len()),
        "one row for the failures and one for the throttled attempts: {admin_rows:?}"
    );
    assert_eq!(admin_rows[0].get("count").map(String::as_str), Some("1"));
    let reasons: Vec<&str> = admin_rows.iter().map(|d| d["reason"].as_str()).collect();
    assert!(reasons.contains(&"throttled"), "{reasons:?}");
    let node_rows: Vec<_> = auth_rows(&c, "auth.node")
        .into_iter()
        .filter(|d| d.get("client_ip").map(String::as_str) == Some("127.0.0.3"))
        .collect();
    assert!((1..=2).contains(&node_rows.len()), "{node_rows:?}");

    // An EdDSA JWT with the admin scope is an admin credential on the Admin API.
    let eddsa_admin = c
        .ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                "ops-bot",
                "--scopes",
                "admin",
                "--ttl",
                "1h",
            ],
            None,
        )
        .unwrap();
    admin
        .list_providers(bearer(pb::ListProvidersRequest::default(), &eddsa_admin))
        .await
        .expect("an EdDSA admin JWT is accepted");
}

/// Signs `claims` with the control plane's HS256 secret `kid`, read from its state store
/// as a compromised node would hold it.
async fn forge_hs256(c: &TestCluster, kid: &str, claims: &Claims) -> String {
    let secret = c.own_secret(&format!("warden/jwt/{kid}")).await.unwrap();
    let raw = hex::decode(secret.expose_secret()).unwrap();
    let key = KeyMaterial::from_stored(kid.to_owned(), SigningAlgorithm::HS256, raw).unwrap();
    key.sign(claims).unwrap().expose_secret().to_owned()
}

#[tokio::test]
async fn hs256_tokens_are_refused_by_the_admin_and_audit_apis_but_serve_on_nodes() {
    let c = TestCluster::start_with(
        1,
        Options {
            jwt_algorithm: Some("HS256".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    // The data path keeps HS256: a client token signed by the control plane serves.
    let client = c.issue_token("svc", MODEL).unwrap();
    let answer = c
        .chat(0, &client, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // A node holds the HS256 secret; with it, it can sign any claims it likes.
    let parts: Vec<&str> = client.split('.').collect();
    use base64::Engine as _;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    let kid = header["kid"].as_str().unwrap().to_owned();
    let now = warden_core::unix_now();
    let claims = |scope: &str| Claims {
        iss: "warden".into(),
        sub: "mallory".into(),
        aud: "warden".into(),
        exp: now + 600,
        nbf: Some(now),
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: scope.into(),
        models: Vec::new(),
    };
    let minted_admin = forge_hs256(&c, &kid, &claims("admin")).await;
    let minted_audit = forge_hs256(&c, &kid, &claims("audit")).await;
    // One the control plane issued itself, with the admin scope, is no better.
    let issued_admin = c
        .ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                "ops",
                "--scopes",
                "admin",
                "--ttl",
                "1h",
            ],
            None,
        )
        .unwrap();

    let channel = tonic::transport::Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel.clone());
    for token in [&minted_admin, &issued_admin] {
        let status = admin
            .list_providers(bearer(pb::ListProvidersRequest::default(), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("HS256"), "{status:?}");
    }
    let status = admin
        .list_audit(bearer(pb::ListAuditRequest::default(), &minted_audit))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut audit = AuditStreamClient::new(channel);
    let status = audit
        .subscribe(bearer(
            audit_pb::SubscribeRequest {
                history_only: true,
                ..Default::default()
            },
            &minted_audit,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("HS256"), "{status:?}");
    // Each refusal is audited with its reason.
    let reasons: Vec<String> = auth_rows(&c, "auth.admin")
        .into_iter()
        .filter_map(|d| d.get("reason").cloned())
        .collect();
    assert!(reasons.iter().any(|r| r == "jwt_not_eddsa"), "{reasons:?}");
}
