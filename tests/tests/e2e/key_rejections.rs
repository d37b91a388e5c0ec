//! A provider's 401/403 and the gateway's keys, against real nodes sharing Redis: a request
//! refused for its own reasons leaves the key in service for everyone, a key the provider
//! calls invalid is disabled everywhere (and audited with the marker, never the key), and a
//! client that keeps drawing ambiguous rejections cannot rest more than a few keys a minute.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster, eventually};
use warden_tests::mock::Behavior;

fn redis_url() -> String {
    std::env::var("WARDEN_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_REDIS_URL is not set: run scripts/test.sh (CI has Redis on 127.0.0.1:6379)"
        )
    })
}

async fn cluster() -> TestCluster {
    TestCluster::start_with(
        2,
        Options {
            redis_url: Some(redis_url()),
            node_count: Some(2),
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// The text that makes the mock refuse a request.
const MARKER: &str = "please-refuse-this-request-7c1d";

fn refused(body: Value, status: u16) -> Behavior {
    Behavior::MarkedError {
        marker: MARKER.into(),
        status,
        body,
    }
}

#[tokio::test]
async fn a_request_refused_for_its_own_reasons_leaves_the_key_in_service() {
    let c = cluster().await;
    let attacker = c.issue_token("refused-client", "*").unwrap();
    let other = c.issue_token("other-client", "*").unwrap();
    // Anthropic's wording for "not allowed to use this" and OpenAI's for a model the
    // project cannot use: both about the request, neither about the key.
    for body in [
        json!({"type": "error", "error": {"type": "permission_error",
            "message": "Your project is not entitled to this model."}}),
        json!({"error": {"message": "The model does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
    ] {
        c.mock.set_behavior(refused(body.clone(), 403));
        let r = c
            .chat(0, &attacker, &TestCluster::chat_body(MODEL, MARKER, false))
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "the provider's refusal goes back");
        let v: Value = r.json().await.unwrap();
        let expected = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap();
        assert_eq!(v["error"]["message"], expected, "{v}");
        assert!(!v.to_string().contains(CANARY_UPSTREAM_KEY));
        // The only key is still in service, for another client, on every node.
        for node in [0, 1] {
            let r = c
                .chat(node, &other, &TestCluster::chat_body(MODEL, "hello", false))
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "node {node}: {}", r.text().await.unwrap());
        }
    }
    let providers = c.ctl_ok(&["provider", "list", "-o", "json"], None).unwrap();
    assert!(
        !providers.contains("rejected by the provider"),
        "{providers}"
    );
}

#[tokio::test]
async fn a_key_the_provider_calls_invalid_is_disabled_everywhere() {
    let c = cluster().await;
    let client = c.issue_token("first-client", "*").unwrap();
    let other = c.issue_token("second-client", "*").unwrap();
    c.mock.set_behavior(refused(
        json!({"error": {"message": "Incorrect API key provided: sk-canary-UPSTREAM-4f1c****5e6f.",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        401,
    ));
    let r = c
        .chat(0, &client, &TestCluster::chat_body(MODEL, MARKER, false))
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "the only key is gone");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_auth_failed"
    );
    // Another client, on the other node, finds no key left.
    c.mock.set_behavior(Behavior::Normal);
    let r = c
        .chat(1, &other, &TestCluster::chat_body(MODEL, "hello", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_keys_exhausted"
    );
    // Recorded with the marker that decided it, never the key.
    let audit = eventually(
        Duration::from_secs(5),
        "the rejection in the audit log",
        || async {
            let a = c
                .ctl_ok(&["audit", "list", "--limit", "50", "-o", "json"], None)
                .ok()?;
            a.contains("provider.key.rejected").then_some(a)
        },
    )
    .await
    .unwrap();
    assert!(audit.contains("invalid_api_key"), "{audit}");
    assert!(!audit.contains(CANARY_UPSTREAM_KEY));
    assert!(!c.logs().contains(CANARY_UPSTREAM_KEY));
}

#[tokio::test]
async fn a_client_drawing_ambiguous_rejections_rests_only_a_few_keys() {
    let c = cluster().await;
    for key in [
        "sk-second-rejection-key-1a2b3c",
        "sk-third-rejection-key-4d5e6f",
        "sk-fourth-rejection-key-7a8b9c",
    ] {
        c.ctl_ok(&["provider", "key", "add", "mock"], Some(key))
            .unwrap();
    }
    let attacker = c.issue_token("provoking-client", "*").unwrap();
    let other = c.issue_token("innocent-client", "*").unwrap();
    // A 403 that does not say why: each one rests the key that drew it — but one client
    // only gets a few of those a minute, counted across both nodes.
    c.mock.set_behavior(refused(
        json!({"error": {"message": "Forbidden.", "type": "invalid_request_error",
            "param": null, "code": null}}),
        403,
    ));
    // The budget counts per minute: start early in one, so the whole run stays in it.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 40 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    for i in 0..8 {
        let r = c
            .chat(
                i % 2,
                &attacker,
                &TestCluster::chat_body(MODEL, MARKER, false),
            )
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 403, "request {i}: {v}");
        assert_eq!(v["error"]["message"], "Forbidden.", "{v}");
    }
    // Three keys rest for 30 s; the fourth still serves everyone else, on both nodes.
    let before = c.mock.requests().len();
    for i in 0..6 {
        let r = c
            .chat(
                i % 2,
                &other,
                &TestCluster::chat_body(MODEL, "hello", false),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}: {}", r.text().await.unwrap());
    }
    let used: HashSet<String> = c.mock.requests()[before..]
        .iter()
        .filter_map(|r| r.authorization.clone())
        .collect();
    assert_eq!(used.len(), 1, "three keys rest, one serves: {used:?}");
    // Each rest is logged with why (no marker), never the key.
    let logs = c.logs();
    assert_eq!(
        logs.matches("provider rejected the key without saying why")
            .count(),
        3,
        "{logs}"
    );
    assert!(logs.contains("budget spent"), "{logs}");
    assert!(!logs.contains(CANARY_UPSTREAM_KEY));
}
