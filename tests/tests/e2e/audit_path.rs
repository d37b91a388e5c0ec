//! One request must not silence a node's audit trail or take the node down: an oversized
//! `model` is refused, a record the control plane refuses is quarantined instead of being
//! retried forever, and the dangerous settings in effect are audited at start-up.

use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::cluster::{MODEL, Options, TestCluster, eventually};

/// Every audit row the control plane holds (newest 1000).
fn audit_rows(c: &TestCluster) -> Option<Vec<Value>> {
    let out = c
        .ctl_ok(&["audit", "list", "--limit", "1000", "-o", "json"], None)
        .ok()?;
    let rows: Value = serde_json::from_str(&out).ok()?;
    rows.as_array().cloned()
}

/// Waits until an audit row satisfies `matches`, and returns it.
async fn audited(c: &TestCluster, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(30), what, || async {
        audit_rows(c)?.into_iter().find(|r| matches(r))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            c.logs()
                .lines()
                .filter(|l| l.contains("audit"))
                .take(30)
                .map(|l| l.chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Whether the request with `x-request-id` `id` has an audit row.
fn is_request(row: &Value, id: &str) -> bool {
    row["action"] == "request"
        && row["detail"].as_str().is_some_and(|d| {
            warden_core::audit_detail::parse(d).get("request_id") == Some(&id.to_owned())
        })
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_five_mib_model_name_is_refused_and_the_audit_trail_keeps_flowing() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-huge-model", "*").unwrap();
    let huge = "m".repeat(5 * 1024 * 1024);
    let r = c
        .chat(0, &token, &TestCluster::chat_body(&huge, "hi", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let refused_id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 256 bytes"),
        "{body}"
    );
    // The node keeps serving, and its events (the refusal's among them) keep arriving.
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "after", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served_id = request_id(&r);
    audited(&c, "the request after the huge model", |row| {
        is_request(row, &served_id)
    })
    .await;
    let refused = audited(&c, "the refused request", |row| {
        is_request(row, &refused_id)
    })
    .await;
    assert!(
        refused["subject"].as_str().unwrap().len() <= 256,
        "{refused}"
    );
    assert!(c.find_everywhere(&"m".repeat(1000)).is_empty());
}

/// CRC-32 (IEEE), as the spool writes it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One spool line for an event of `node`.
fn spool_line(id: &str, node: &str, actor: &str, detail: &str) -> Vec<u8> {
    let json = serde_json::to_vec(&json!({
        "id": id, "ts": 1_700_000_000_000_i64, "node": node, "action": "request",
        "actor": actor, "subject": "seeded", "result": "ok", "detail": detail,
    }))
    .unwrap();
    let mut line = format!("{:08x} ", crc32(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

#[tokio::test]
async fn a_record_the_control_plane_refuses_is_quarantined_and_the_spool_moves_on() {
    let mut c = TestCluster::start(1).await.unwrap();
    // The spool a node finds at start, left by a previous process of the old layout
    // (segments straight in the configured directory: moved into `segments/` at start-up,
    // so a node upgraded in place loses nothing): a record the control
    // plane refuses (an actor of no credential kind, over its 256-byte limit) between valid
    // ones (`jwt:` actors, as a node writes them), one of them larger
    // than the 4 MiB a gRPC server takes by default.
    let node = "node-2";
    let dir = c.spool_dir(node);
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut segment = Vec::new();
    segment.extend(spool_line(&ids[0], node, "jwt:before", "k=v"));
    segment.extend(spool_line(&ids[1], node, &"a".repeat(300), "k=v"));
    segment.extend(spool_line(
        &ids[2],
        node,
        "jwt:huge",
        &"d".repeat(5 * 1024 * 1024),
    ));
    segment.extend(spool_line(&ids[3], node, "jwt:after", "k=v"));
    std::fs::write(dir.join(format!("{:020}.seg", 1)), segment).unwrap();

    let index = c.add_node().await.unwrap();
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != 1) {
        audited(&c, &format!("seeded record {i}"), |row| {
            row["id"] == id.as_str()
        })
        .await;
    }
    let report = audited(&c, "the quarantine report", |row| {
        row["action"] == "node.audit_quarantine"
    })
    .await;
    assert_eq!(report["subject"], ids[1].as_str(), "{report}");
    let detail = warden_core::audit_detail::parse(report["detail"].as_str().unwrap());
    assert!(
        detail
            .get("bytes")
            .is_some_and(|b| b.parse::<u64>().unwrap() > 300),
        "{report}"
    );
    let rows = audit_rows(&c).unwrap();
    assert!(!rows.iter().any(|r| r["id"] == ids[1].as_str()));
    // Kept, not lost.
    let dead = std::fs::read_to_string(dir.join("segments").join("dead").join("quarantine.jsonl"))
        .unwrap();
    assert_eq!(dead.lines().count(), 1);
    assert!(dead.contains(&ids[1]));
    // The node serves, and what it serves is audited.
    let token = c.issue_token("svc-after-quarantine", "*").unwrap();
    let r = c
        .chat(
            index,
            &token,
            &TestCluster::chat_body(MODEL, "after", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served = request_id(&r);
    audited(&c, "a request after the quarantine", |row| {
        is_request(row, &served)
    })
    .await;
    let metrics = c
        .http
        .get(c.nodes[index].ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "warden_audit_quarantined_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn dangerous_settings_in_effect_are_audited_at_start_up() {
    let c = TestCluster::start_with(
        1,
        Options {
            jwt_algorithm: Some("HS256".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let cp = audited(&c, "the control plane's dangerous settings", |row| {
        row["action"] == "cp.dangerous_settings"
    })
    .await;
    let detail = warden_core::audit_detail::parse(cp["detail"].as_str().unwrap());
    assert_eq!(
        detail.get("jwt_algorithm").map(String::as_str),
        Some("HS256"),
        "{cp}"
    );
    let node = audited(&c, "the node's dangerous settings", |row| {
        row["action"] == "node.dangerous_settings"
    })
    .await;
    assert_eq!(node["subject"], c.nodes[0].id.as_str(), "{node}");
    let detail = warden_core::audit_detail::parse(node["detail"].as_str().unwrap());
    assert_eq!(
        detail.get("redis_failure_mode").map(String::as_str),
        Some("open"),
        "{node}"
    );
    let rows = audit_rows(&c).unwrap();
    for action in ["cp.dangerous_settings", "node.dangerous_settings"] {
        assert_eq!(
            rows.iter().filter(|r| r["action"] == action).count(),
            1,
            "{action}"
        );
    }
    assert!(
        c.logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("--redis-failure-mode open")),
        "no start-up warning naming the mode"
    );
}
