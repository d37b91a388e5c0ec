//! The control plane's listeners on a real `warden-cp`: a slow unauthenticated upload is
//! cut by the request timeout while `Sync.Watch` and `AuditStream.Subscribe` streams
//! outlive it; connections that send no request are closed after the handshake timeout,
//! and no more than `max_connections` are served at once; the ops listener serves
//! `/healthz` and `/metrics`.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tonic::metadata::MetadataValue;
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_proto::audit::v1 as audit_pb;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;
use warden_proto::sync::v1 as sync_pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{Options, TestCluster, free_port};

fn bearer<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

fn with_server(settings: &str) -> Options {
    Options {
        cp_config: Some(format!("[server]\n{settings}\n")),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_slow_upload_is_cut_by_the_request_timeout_but_streams_outlive_it() {
    let c = TestCluster::start_with(0, with_server("request_timeout = \"5s\""))
        .await
        .unwrap();

    // Open a Watch (as a node) and a Subscribe (as an admin) before anything else.
    let channel = tonic::transport::Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let keys = warden_core::seal::NodeKeyPair::generate().unwrap();
    let hello = sync_pb::NodeHello {
        node_id: "long-watcher".into(),
        software_version: "e2e".into(),
        have_version: 0,
        seal_public_key: keys.public_key().to_bytes().to_vec(),
        accepts_deltas: false,
    };
    let mut watch = SyncClient::new(channel.clone())
        .watch(bearer(hello, &c.node_token))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    let mut records = AuditStreamClient::new(channel.clone())
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

    // A gRPC call whose request message never finishes arriving: 5 bytes of frame header
    // announcing 100 bytes, then nothing, sent with no credential.
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let prefix = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[
        0, 0, 0, 0, 100,
    ]))]);
    let body = reqwest::Body::wrap_stream(prefix.chain(futures::stream::pending()));
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(12),
        http.post(format!(
            "{}/warden.admin.v1.Admin/ListProviders",
            c.cp_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send(),
    )
    .await
    .expect("the control plane held a slow upload open for 12 s")
    .unwrap();
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(
        status.as_deref().is_some_and(|s| s != "0"),
        "the slow call ends with a gRPC error: {:?}",
        response.headers()
    );
    assert!(started.elapsed() < Duration::from_secs(9));

    // Both streams were opened well over the 5 s timeout ago and still deliver.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(started.elapsed() > Duration::from_secs(6));
    c.ctl_ok(
        &[
            "token",
            "issue",
            "--subject",
            "after-timeout",
            "--ttl",
            "1h",
        ],
        None,
    )
    .unwrap();
    c.ctl_ok(&["model", "add", "late-alias", "--provider", "mock"], None)
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch stream delivers after the request timeout")
        .unwrap()
        .expect("the watch stream ended");
    assert!(next.version > first.version);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = records.message().await.unwrap() {
            if r.action == "token.issue" {
                return true;
            }
        }
        false
    })
    .await
    .expect("the audit stream delivers after the request timeout");
    assert!(seen, "the audit stream ended");
}

#[tokio::test]
async fn silent_connections_are_closed_and_connections_are_capped() {
    let c = TestCluster::start_with(
        0,
        with_server("handshake_timeout = \"2s\"\nmax_connections = 2"),
    )
    .await
    .unwrap();
    let addr = format!("127.0.0.1:{}", c.cp_port);
    // Two connections that never send a byte take both places.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third client is not served while they hold them...
    let blocked = tokio::time::timeout(Duration::from_millis(800), async {
        let channel = tonic::transport::Endpoint::from_shared(c.cp_addr())
            .unwrap()
            .connect()
            .await?;
        AdminClient::new(channel)
            .list_providers(bearer(pb::ListProvidersRequest::default(), &c.admin_token))
            .await
            .map_err(anyhow::Error::from)
            .map(|_| ())
    })
    .await;
    assert!(
        blocked.is_err(),
        "a third connection was served past max_connections = 2"
    );
    // ...and the control plane closes them once the handshake timeout has passed.
    for mut s in silent {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // the server's HTTP/2 SETTINGS
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a connection that sent nothing was kept open"
        );
    }
    // Then a client is served again.
    let channel = tonic::transport::Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    AdminClient::new(channel)
        .list_providers(bearer(pb::ListProvidersRequest::default(), &c.admin_token))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_ops_listener_serves_health_and_metrics() {
    let port = free_port().unwrap();
    let c = TestCluster::start_with(
        0,
        Options {
            cp_env: vec![("WARDEN_OPS_ADDR".into(), format!("127.0.0.1:{port}"))],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let ops = format!("http://127.0.0.1:{port}");
    let health: serde_json::Value = c
        .http
        .get(format!("{ops}/healthz"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["snapshot_version"].as_u64().unwrap() > 0, "{health}");

    // One failed login, then the counters.
    let mut admin = AdminClient::connect(c.cp_addr()).await.unwrap();
    let _ = admin
        .list_providers(bearer(pb::ListProvidersRequest::default(), "wa_wrong"))
        .await
        .unwrap_err();
    let text = c
        .http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "warden_cp_rpcs_total{service=\"admin\"}",
        "warden_cp_failed_logins_total{kind=\"admin\",reason=",
        "warden_cp_snapshot_version ",
        "warden_cp_grpc_connections ",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(
        !text.contains(&c.admin_token),
        "no credential in the metrics"
    );
}
