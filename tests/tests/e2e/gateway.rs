//! The request path through one node: completions, streaming, authorization, errors, and
//! the canary search for the upstream key.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, OTHER_MODEL, TestCluster};
use warden_tests::mock::Behavior;

fn assert_openai_error(body: &Value, code: &str) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    assert!(e["type"].is_string(), "no type: {body}");
    assert_eq!(e["code"], code, "{body}");
}

#[tokio::test]
async fn token_to_completion_injects_the_upstream_key_and_rewrites_the_model() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-a", "*").unwrap();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, "hello gateway", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock: hello gateway"
    );
    let seen = c.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {CANARY_UPSTREAM_KEY}").as_str())
    );
    assert_eq!(
        seen[0].body["model"], "mock-model",
        "alias must be rewritten to the upstream model"
    );
}

#[tokio::test]
async fn streaming_reaches_the_client_before_the_upstream_finishes() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-stream", "*").unwrap();
    c.mock.set_behavior(Behavior::GatedStream);
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, "one two three four", true),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    // The mock holds the rest of its answer until released: the first chunk can only
    // arrive here if the node forwards without buffering the whole response.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first chunk did not arrive while the upstream was still open")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.starts_with("data: {"), "{first}");
    assert!(
        !first.contains("[DONE]"),
        "the whole stream arrived at once: {first}"
    );
    c.mock.release_stream();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    let text: String = format!("{first}{rest}")
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "mock: one two three four");
}

#[tokio::test]
async fn allow_list_scopes_and_model_listing() {
    let c = TestCluster::start(1).await.unwrap();
    let limited = c.issue_token("svc-limited", MODEL).unwrap();
    let r = c
        .chat(
            0,
            &limited,
            &TestCluster::chat_body(OTHER_MODEL, "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_openai_error(&r.json().await.unwrap(), "model_not_allowed");
    // A model that does not exist is also 403 for a limited caller: no existence oracle.
    let r = c
        .chat(
            0,
            &limited,
            &TestCluster::chat_body("no-such-model", "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let all = c.issue_token("svc-all", "*").unwrap();
    let r = c
        .chat(
            0,
            &all,
            &TestCluster::chat_body("no-such-model", "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_openai_error(&r.json().await.unwrap(), "model_not_found");

    let models: Value = c
        .http
        .get(c.nodes[0].url("/v1/models"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![MODEL]);

    let read_only = c
        .ctl_ok(
            &["token", "issue", "--subject", "reader", "--scopes", "read"],
            None,
        )
        .unwrap();
    let r = c
        .chat(0, &read_only, &TestCluster::chat_body(MODEL, "x", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_openai_error(&r.json().await.unwrap(), "insufficient_scope");
    assert!(
        c.mock.requests().is_empty(),
        "a rejected request reached the provider"
    );
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_400s() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-bad", "*").unwrap();
    let url = c.nodes[0].url("/v1/chat/completions");
    for body in [
        "not json",
        "[]",
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"model":"gpt-mock"}"#,
    ] {
        let r = c
            .http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    for (method, path, status) in [
        ("GET", "/v1/chat/completions", 405u16),
        ("POST", "/v1/nothing", 404),
    ] {
        let r = c
            .http
            .request(method.parse().unwrap(), c.nodes[0].url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let huge = "x".repeat(11 * 1024 * 1024);
    let r = c
        .http
        .post(&url)
        .bearer_auth(&token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(c.mock.requests().is_empty());
}

#[tokio::test]
async fn virtual_keys_work_and_revocation_reaches_the_node_within_a_second() {
    let c = TestCluster::start(1).await.unwrap();
    let key = c
        .ctl_ok(
            &["vkey", "create", "--name", "team-a", "--models", MODEL],
            None,
        )
        .unwrap();
    assert!(key.starts_with("wk_"), "{key}");
    let r = c
        .chat(0, &key, &TestCluster::chat_body(MODEL, "via vkey", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // x-api-key works too.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/chat/completions"))
        .header("x-api-key", &key)
        .json(&TestCluster::chat_body(MODEL, "via header", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A typo fails the checksum and is rejected like any bad credential.
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'A' { b'B' } else { b'A' };
    let r = c
        .chat(
            0,
            &String::from_utf8(typo).unwrap(),
            &TestCluster::chat_body(MODEL, "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let list = c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap();
    let list: Value = serde_json::from_str(&list).unwrap();
    let id = list.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !list.to_string().contains(&key),
        "vkey list must not show the key"
    );

    let revoked_at = Instant::now();
    c.ctl_ok(&["vkey", "revoke", &id], None).unwrap();
    loop {
        let r = c
            .chat(0, &key, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "revocation took over 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = revoked_at.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "revocation took {elapsed:?}"
    );
}

#[tokio::test]
async fn upstream_errors_are_reshaped_and_never_leak_the_key() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-err", "*").unwrap();
    let mut bodies = Vec::new();
    // 400 is the request's fault (passed on); 500 fails over to the next key (there is none:
    // 502); 401 takes the only key out of service (502), after which the gateway has no key
    // left and says so (429, checked below).
    for (status, expect) in [(400u16, 400u16), (500, 502), (401, 502)] {
        c.mock.set_behavior(Behavior::Error {
            status,
            body: serde_json::json!({"error": {
                "message": format!("Incorrect API key provided: {CANARY_UPSTREAM_KEY}. You can find your API key at …"),
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        });
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expect, "upstream {status}");
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].is_string(), "{text}");
        bodies.push(text);
    }
    for b in &bodies {
        assert!(
            !b.contains(CANARY_UPSTREAM_KEY),
            "key leaked in a response: {b}"
        );
        assert!(
            !b.contains("canary-UPSTREAM"),
            "part of the key leaked: {b}"
        );
    }
    // Streaming and plain successes too, then search every log and stored file.
    c.mock.set_behavior(Behavior::Normal);
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "x", true))
        .await
        .unwrap();
    let streamed = r.text().await.unwrap();
    assert!(!streamed.contains(CANARY_UPSTREAM_KEY));
    let providers = c.ctl_ok(&["provider", "list", "-o", "json"], None).unwrap();
    assert!(!providers.contains(CANARY_UPSTREAM_KEY));
    assert!(providers.contains(&warden_core::fingerprint::of(
        CANARY_UPSTREAM_KEY.as_bytes()
    )));
    let hits = c.find_everywhere(CANARY_UPSTREAM_KEY);
    assert!(hits.is_empty(), "the upstream key was found in {hits:?}");
    // The logs did see the failures (so the search above looked at real content).
    assert!(c.logs().contains("upstream answered with an error"));
}
