//! A compromised node attacks the audit log through `Sync.PublishAudit` on a real
//! `warden-cp`: a raw gRPC client with a node credential of its own (`wardenctl node
//! credential issue`) submits an admin action, a forged actor, a timestamp a day ahead and a
//! flood. The first two are refused (`InvalidArgument` naming the event, nothing stored,
//! the refusal audited as `node.event_refused`), the
//! timestamp is clamped (the node's time kept as `node_time_ms`) so that `wardenctl audit
//! query --until` still lists the rows after it, the flood hits `ResourceExhausted` — and
//! the real node keeps serving and auditing throughout.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tonic::Code;
use tonic::metadata::MetadataValue;
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{MODEL, Options, TestCluster, eventually};

const ROGUE: &str = "rogue-node";

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn event(id: &str, action: &str, actor: &str, timestamp_ms: i64) -> pb::AuditEvent {
    pb::AuditEvent {
        id: id.to_owned(),
        timestamp_ms,
        action: action.to_owned(),
        actor: actor.to_owned(),
        subject: MODEL.to_owned(),
        result: "ok".to_owned(),
        detail: "status=200".to_owned(),
    }
}

async fn publish(
    client: &mut SyncClient<tonic::transport::Channel>,
    credential: &str,
    events: Vec<pb::AuditEvent>,
) -> Result<u32, tonic::Status> {
    let mut request = tonic::Request::new(pb::AuditBatch {
        node_id: ROGUE.to_owned(),
        events,
    });
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    client
        .publish_audit(request)
        .await
        .map(|r| r.into_inner().accepted)
}

/// `wardenctl audit query ARGS --format json`, as rows with their attributes.
fn query(c: &TestCluster, args: &[&str]) -> Vec<(Value, BTreeMap<String, String>)> {
    let mut all = vec!["audit", "query", "--format", "json"];
    all.extend_from_slice(args);
    c.ctl_ok(&all, None)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let attrs = warden_core::audit_detail::parse(v["detail"].as_str().unwrap());
            (v, attrs)
        })
        .collect()
}

/// Sends one chat request through the real node and waits for its audit row.
async fn served_and_audited(c: &TestCluster, token: &str, subject: &str) {
    let r = c
        .chat(0, token, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the node stopped serving");
    let actor = format!("jwt:{subject}");
    eventually(
        Duration::from_secs(10),
        "the real node's request event",
        || {
            let rows = query(c, &["--action", "request", "--actor", &actor]);
            async move { (!rows.is_empty()).then_some(()) }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rogue_node_cannot_poison_hide_or_flood_the_audit_log() {
    let c = TestCluster::start_with(
        1,
        Options {
            cp_config: Some("[audit]\nnode_ingest_rate = 5\nnode_ingest_burst = 1000\n".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let rogue = c
        .ctl_ok(&["node", "credential", "issue", "--name", "rogue"], None)
        .unwrap();
    let mut client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let now = now_ms();

    // An admin action, hidden in a batch behind a plausible event: the batch is refused,
    // naming the event, and nothing of it is stored.
    let err = publish(
        &mut client,
        &rogue,
        vec![
            event("rogue-plausible", "request", "jwt:svc", now),
            event("rogue-revoke", "token.revoke", "admin:wa_forged", now),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("rogue-revoke"), "{err:?}");
    // A forged actor on an allowed action.
    let err = publish(
        &mut client,
        &rogue,
        vec![event("rogue-actor", "request", "admin:wa_forged", now)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("rogue-actor"), "{err:?}");
    // Both refusals are audited, naming the rogue node and the events.
    let refused = query(&c, &["--action", "node.event_refused"]);
    for id in ["rogue-revoke", "rogue-actor"] {
        assert!(
            refused
                .iter()
                .any(|(r, a)| r["subject"] == ROGUE
                    && a.get("event_id").map(String::as_str) == Some(id)),
            "no node.event_refused row for {id}: {refused:?}"
        );
    }
    let everything = query(&c, &[]);
    for (row, _) in &everything {
        let id = row["id"].as_str().unwrap();
        assert!(
            !id.starts_with("rogue-"),
            "a refused event was stored: {row}"
        );
        assert_ne!(row["action"], "token.revoke", "{row}");
    }

    // A timestamp a day ahead is accepted, clamped to the control plane's now.
    let day = 86_400_000;
    assert_eq!(
        publish(
            &mut client,
            &rogue,
            vec![event("rogue-future", "request", "jwt:svc", now + day)],
        )
        .await
        .unwrap(),
        1
    );
    // The real node serves a request after it; `--until now` still lists that request.
    let token = c.issue_token("after-future", "*").unwrap();
    served_and_audited(&c, &token, "after-future").await;
    let until_now = query(&c, &["--until", "0s"]);
    let future = until_now
        .iter()
        .find(|(r, _)| r["id"] == "rogue-future")
        .expect("the clamped event is missing from --until now");
    assert!(future.0["timestamp_ms"].as_i64().unwrap() <= now_ms());
    assert_eq!(
        future.1.get("node_time_ms"),
        Some(&(now + day).to_string()),
        "{future:?}"
    );
    assert_eq!(future.1.get("node").map(String::as_str), Some(ROGUE));
    let later = until_now
        .iter()
        .find(|(r, _)| r["actor"] == "jwt:after-future")
        .expect("a row after the far-future event is hidden from --until");
    // Each row names the credential that delivered it: the rogue's is not the real node's.
    let rogue_credential = future.1.get("node_credential").expect("no node_credential");
    let real_credential = later.1.get("node_credential").expect("no node_credential");
    assert!(!rogue_credential.is_empty());
    assert_ne!(rogue_credential, real_credential);

    // A flood: one full burst, then ResourceExhausted. The three events above took three
    // of the 1,000 tokens; at 5/s they are back within 0.6 s.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let batch = |prefix: &str, n: usize| -> Vec<pb::AuditEvent> {
        (0..n)
            .map(|i| event(&format!("{prefix}-{i}"), "request", "jwt:flood", now_ms()))
            .collect()
    };
    assert_eq!(
        publish(&mut client, &rogue, batch("flood-a", 1000))
            .await
            .unwrap(),
        1000
    );
    let err = publish(&mut client, &rogue, batch("flood-b", 1000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The real node, on its own credential, is not held back.
    let token = c.issue_token("during-flood", "*").unwrap();
    served_and_audited(&c, &token, "during-flood").await;
    // After backing off, the rogue's credential is accepted again at its rate.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        publish(&mut client, &rogue, batch("resume", 5))
            .await
            .unwrap(),
        5
    );
    let flood_b = query(&c, &["--actor", "jwt:flood"])
        .into_iter()
        .filter(|(r, _)| r["id"].as_str().unwrap().starts_with("flood-b-"))
        .count();
    assert_eq!(flood_b, 0, "events of a refused batch were stored");
}
