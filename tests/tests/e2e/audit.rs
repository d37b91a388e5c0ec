//! The audit trail as a SIEM sees it: the request event schema (usage, cost, client,
//! upstream key fingerprint — never a secret), `AuditStream/Subscribe` resuming from its
//! cursor without gaps, `wardenctl audit tail|query` in JSON, OCSF and CEF, the `audit`
//! scope, and reads of the log audited themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use warden_proto::audit::v1 as pb;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, TestCluster, eventually};

async fn client(
    cluster: &TestCluster,
    token: &str,
) -> AuditStreamClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
    >,
> {
    let channel = tonic::transport::Endpoint::from_shared(cluster.cp_addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    AuditStreamClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", header.clone());
        Ok(r)
    })
}

/// The request events in the log, as attribute maps, once `n` are there.
async fn request_events(cluster: &TestCluster, n: usize) -> Vec<(Value, BTreeMap<String, String>)> {
    eventually(Duration::from_secs(10), "request audit events", || async {
        let out = cluster
            .ctl_ok(
                &["audit", "query", "--action", "request", "--format", "json"],
                None,
            )
            .ok()?;
        let rows: Vec<(Value, BTreeMap<String, String>)> = out
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let attrs = warden_core::audit_detail::parse(v["detail"].as_str().unwrap());
                (v, attrs)
            })
            .collect();
        (rows.len() >= n).then_some(rows)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn request_events_carry_usage_cost_client_and_key_fingerprint() {
    let cluster = TestCluster::start(1).await.unwrap();
    let token = cluster.issue_token("svc-schema", "*").unwrap();
    let plain = cluster
        .http
        .post(cluster.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("user-agent", "schema-test/1.0 (e2e)")
        .json(&TestCluster::chat_body(MODEL, "hello there", false))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let plain_id = plain.headers()["x-request-id"].to_str().unwrap().to_owned();
    let _ = plain.bytes().await.unwrap();
    let streamed = cluster
        .chat(0, &token, &TestCluster::chat_body(MODEL, "stream me", true))
        .await
        .unwrap();
    let stream_id = streamed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = streamed.bytes().await.unwrap();

    let events = request_events(&cluster, 2).await;
    let by_id = |id: &str| {
        events
            .iter()
            .find(|(_, a)| a.get("request_id").map(String::as_str) == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("no event for {id}: {events:?}"))
    };
    let fp = warden_core::fingerprint::of(CANARY_UPSTREAM_KEY.as_bytes());
    for id in [&plain_id, &stream_id] {
        let (record, a) = by_id(id);
        assert_eq!(record["actor"], "jwt:svc-schema");
        assert_eq!(record["subject"], MODEL);
        assert_eq!(record["result"], "ok");
        assert_eq!(a["status"], "200");
        assert_eq!(a["endpoint"], "/v1/chat/completions");
        assert_eq!(a["client_ip"], "127.0.0.1");
        assert_eq!(a["provider"], "mock");
        assert_eq!(a["upstream_key_fp"], fp);
        assert_eq!(a["outcome"], "completed");
        assert!(a["credential"].starts_with("tok-") && a["credential"].contains("****"));
        assert!(a["tokens_in"].parse::<u64>().unwrap() > 0, "{a:?}");
        assert!(a["tokens_out"].parse::<u64>().unwrap() > 0, "{a:?}");
        assert!(a.contains_key("cost_usd") && a.contains_key("latency_ms"));
        let uuid = uuid::Uuid::parse_str(record["id"].as_str().unwrap()).unwrap();
        assert_eq!(uuid.get_version_num(), 7, "event ids are UUIDv7");
    }
    assert_eq!(by_id(&plain_id).1["user_agent"], "schema-test/1.0 (e2e)");

    // OCSF and CEF renderings of the same records hold no secret either.
    for format in ["ocsf", "cef"] {
        let out = cluster
            .ctl_ok(&["audit", "query", "--format", format], None)
            .unwrap();
        assert!(out.lines().count() >= 2);
        if format == "ocsf" {
            let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
            assert_eq!(first["class_uid"], 6003);
        } else {
            assert!(out.lines().all(|l| l.starts_with("CEF:0|Warden|")), "{out}");
        }
        assert!(!out.contains(CANARY_UPSTREAM_KEY));
        assert!(!out.contains(&token));
    }
    assert!(cluster.find_everywhere(CANARY_UPSTREAM_KEY).is_empty());
}

#[tokio::test]
async fn subscribers_resume_from_their_cursor_without_gaps() {
    let cluster = TestCluster::start(0).await.unwrap();
    let mut audit = client(&cluster, &cluster.admin_token).await;
    let mut stream = audit
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::Filter {
                actions: vec!["vkey.*".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        cluster
            .ctl_ok(&["vkey", "create", "--name", &format!("k{i}")], None)
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.action, "vkey.create");
        seen.push(r.seq);
    }
    // The subscriber drops mid-stream; more happens while it is away.
    drop(stream);
    for i in 5..8 {
        cluster
            .ctl_ok(&["vkey", "create", "--name", &format!("k{i}")], None)
            .unwrap();
    }
    let mut resumed = audit
        .subscribe(pb::SubscribeRequest {
            after_seq: *seen.last().unwrap(),
            filter: Some(pb::Filter {
                actions: vec!["vkey.create".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while seen.len() < 8 {
        let r = tokio::time::timeout(Duration::from_secs(10), resumed.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(r.seq);
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, seen, "in order, no duplicates: {seen:?}");
    // And nothing missing: the same records as a history-only query.
    let query = cluster
        .ctl_ok(&["audit", "query", "--action", "vkey.create"], None)
        .unwrap();
    let all: Vec<u64> = query
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(all, seen);
    // The stream goes live: a record committed now arrives without a new subscription.
    cluster
        .ctl_ok(&["vkey", "create", "--name", "live"], None)
        .unwrap();
    let live = tokio::time::timeout(Duration::from_secs(10), resumed.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(live.seq > *seen.last().unwrap());
    assert_eq!(live.action, "vkey.create");
}

#[tokio::test]
async fn reading_the_audit_log_needs_the_audit_scope_and_is_audited() {
    let cluster = TestCluster::start(0).await.unwrap();
    let admin_only = cluster
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
    let siem = cluster
        .ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                "siem",
                "--scopes",
                "audit",
                "--ttl",
                "1h",
            ],
            None,
        )
        .unwrap();
    // An admin JWT without `audit` can administer but not read the log.
    let out = cluster
        .ctl_with(
            &["audit", "query"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &admin_only)],
        )
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit"), "{err}");
    let mut denied = client(&cluster, &admin_only).await;
    let status = denied
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // A SIEM token with only `audit` reads, but cannot administer.
    let out = cluster
        .ctl_with(
            &["audit", "tail", "-n", "5"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &siem)],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let out = cluster
        .ctl_with(&["vkey", "list"], None, &[("WARDEN_ADMIN_TOKEN", &siem)])
        .unwrap();
    assert!(!out.status.success());

    // Every read is in the log: who read, and with what filter.
    let reads = cluster
        .ctl_ok(&["audit", "query", "--action", "audit.*"], None)
        .unwrap();
    assert!(reads.contains("jwt:siem"), "{reads}");
    let denials = cluster
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "auth.admin",
                "--result",
                "denied",
            ],
            None,
        )
        .unwrap();
    assert!(denials.contains("missing_audit_scope"), "{denials}");
    assert!(!reads.contains(&siem) && !denials.contains(&admin_only));
}

#[tokio::test]
async fn running_control_plane_signs_checkpoints_and_writes_jsonl() {
    let out = tempfile::tempdir().unwrap();
    let jsonl = out.path().join("audit.jsonl");
    let cluster = TestCluster::start_with(
        1,
        warden_tests::cluster::Options {
            cp_config: Some(format!(
                "[audit]\ncheckpoint_interval = \"200ms\"\n[audit.jsonl]\npath = \"{}\"\n",
                jsonl.display()
            )),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let token = cluster.issue_token("svc-jsonl", "*").unwrap();
    let response = cluster
        .chat(0, &token, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.bytes().await.unwrap();
    // The JSONL sink follows the chain: the request's event lands in the file.
    let lines = eventually(
        Duration::from_secs(10),
        "the request in the JSONL file",
        || async {
            let text = std::fs::read_to_string(&jsonl).ok()?;
            text.contains(&request_id).then_some(text)
        },
    )
    .await
    .unwrap();
    let seqs: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every record, in order"
    );
    assert!(!lines.contains(CANARY_UPSTREAM_KEY) && !lines.contains(&token));
    // The checkpoint signer signs the head; `audit verify` checks the signatures.
    let report: Value = eventually(Duration::from_secs(10), "a signed checkpoint", || async {
        let v: Value = serde_json::from_str(
            &cluster
                .ctl_ok(&["-o", "json", "audit", "verify"], None)
                .ok()?,
        )
        .ok()?;
        (v["checkpoints_checked"].as_u64()? > 0).then_some(v)
    })
    .await
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");
}
