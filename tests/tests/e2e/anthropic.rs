//! The API surface with real clients: the official `anthropic` and `openai` Python SDKs
//! through a node, on a provider of their own format and — translated — of the other one.

use std::collections::HashMap;

use serde_json::Value;
use warden_tests::cluster::{
    CANARY_ANTHROPIC_KEY, CANARY_UPSTREAM_KEY, CLAUDE_MODEL, MODEL, TestCluster,
};
use warden_tests::mock::Behavior;

async fn run_script(script: &str, env: HashMap<String, String>) -> Value {
    warden_tests::cluster::run_python_script(script, env)
        .await
        .unwrap()
}

fn assert_anthropic_sdk_result(r: &Value) {
    assert_eq!(r["plain_type"], "message", "{r}");
    assert_eq!(r["plain_content"], "mock: ", "{r}");
    assert_eq!(r["plain_stop_reason"], "end_turn", "{r}");
    assert!(r["plain_output_tokens"].as_u64().unwrap() > 0, "{r}");
    let events: Vec<&str> = r["stream_event_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{events:?}");
    assert_eq!(events.last(), Some(&"message_stop"), "{events:?}");
    assert!(
        events.contains(&"content_block_delta") && events.contains(&"message_delta"),
        "{events:?}"
    );
    assert_eq!(r["stream_stop_reason"], "end_turn");
    assert_eq!(r["tool_stop_reason"], "tool_use", "{r}");
    assert_eq!(r["tool_name"], "get_weather");
    assert_eq!(r["tool_input"]["city"], "Paris");
    assert_eq!(r["stream_tool_stop_reason"], "tool_use", "{r}");
    assert_eq!(r["stream_tool_input"]["city"], "Paris", "{r}");
    assert!(r["count_input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r["bad_credential_error"], "AuthenticationError", "{r}");
    assert_eq!(r["bad_credential_status"], 401);
    assert_eq!(r["bad_credential_error_type"], "authentication_error");
    assert_eq!(r["forbidden_error"], "PermissionDeniedError", "{r}");
    assert_eq!(r["forbidden_status"], 403);
}

#[tokio::test]
async fn anthropic_sdk_on_an_anthropic_provider_and_translated_onto_an_openai_one() {
    let c = TestCluster::start(1).await.unwrap();
    for model in [CLAUDE_MODEL, MODEL] {
        let token = c
            .issue_token(&format!("anthropic-sdk-{model}"), model)
            .unwrap();
        let r = run_script("sdk_anthropic.py", c.env_for_model(0, &token, model, "")).await;
        assert!(
            r["plain_content"].as_str().unwrap().starts_with("mock: "),
            "{model}: {r}"
        );
        let mut r = r;
        r["plain_content"] = "mock: ".into();
        assert_anthropic_sdk_result(&r);
    }
    // The native request went to /v1/messages with the Anthropic key; the translated one
    // to /v1/chat/completions with the OpenAI key. Neither client credential went upstream.
    let seen = c.mock.requests();
    let native: Vec<_> = seen.iter().filter(|r| r.path == "/v1/messages").collect();
    assert!(!native.is_empty());
    for r in &native {
        assert_eq!(r.x_api_key.as_deref(), Some(CANARY_ANTHROPIC_KEY));
        assert!(
            r.authorization.is_none(),
            "a bearer header went to the Anthropic provider"
        );
        assert_eq!(r.body["model"], "claude-mock-model");
    }
    let translated: Vec<_> = seen
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert!(!translated.is_empty());
    for r in &translated {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {CANARY_UPSTREAM_KEY}").as_str())
        );
        assert_eq!(r.body["model"], "mock-model");
        assert!(
            r.body.get("messages").is_some(),
            "not translated: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn openai_sdk_translated_onto_an_anthropic_provider() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("openai-on-claude", CLAUDE_MODEL).unwrap();
    let r = run_script(
        "sdk_openai.py",
        c.env_for_model(0, &token, CLAUDE_MODEL, "/v1"),
    )
    .await;
    assert_eq!(r["plain_content"], "mock: hello from the sdk", "{r}");
    assert_eq!(r["plain_finish_reason"], "stop");
    assert!(r["plain_total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        r["stream_content"], "mock: stream these words please",
        "{r}"
    );
    assert_eq!(r["stream_finish_reason"], "stop");
    assert_eq!(r["tool_finish_reason"], "tool_calls", "{r}");
    assert_eq!(r["tool_name"], "get_weather");
    assert_eq!(r["tool_arguments"]["city"], "Paris");
    assert_eq!(r["bad_credential_error"], "AuthenticationError");
    assert_eq!(r["forbidden_error"], "PermissionDeniedError");
    let seen = c.mock.requests();
    assert!(
        seen.iter().all(|r| r.path == "/v1/messages"),
        "went to the wrong endpoint"
    );
    assert!(
        seen.iter()
            .all(|r| r.x_api_key.as_deref() == Some(CANARY_ANTHROPIC_KEY))
    );
    assert!(seen.iter().all(|r| r.anthropic_version.is_some()));
}

#[tokio::test]
async fn sdk_error_classes_match_the_gateway_answers() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("errors", "*").unwrap();
    for (sdk, base, model) in [("openai", "/v1", MODEL), ("anthropic", "", CLAUDE_MODEL)] {
        let mut env = c.env_for_model(0, &token, model, base);
        env.insert("WARDEN_SDK".into(), sdk.into());
        env.insert("WARDEN_BAD_BODY".into(), "1".into());
        let r = run_script("sdk_error.py", env).await;
        assert_eq!(r["error"], "BadRequestError", "{sdk}: {r}");
        assert_eq!(r["status"], 400);
    }
    // The provider rate limits the only key of each provider: the gateway answers 429
    // with Retry-After, and both SDKs raise RateLimitError.
    c.mock.set_behavior(Behavior::Error {
        status: 429,
        body: serde_json::json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
    });
    for (sdk, base, model) in [("openai", "/v1", MODEL), ("anthropic", "", CLAUDE_MODEL)] {
        let mut env = c.env_for_model(0, &token, model, base);
        env.insert("WARDEN_SDK".into(), sdk.into());
        let r = run_script("sdk_error.py", env).await;
        assert_eq!(r["error"], "RateLimitError", "{sdk}: {r}");
        assert_eq!(r["status"], 429);
        assert!(
            r["retry_after"]
                .as_str()
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            "{sdk}: {r}"
        );
    }
}

#[tokio::test]
async fn embeddings_responses_and_count_tokens() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("other-endpoints", "*").unwrap();
    let post = |path: &str, body: Value| {
        c.http
            .post(c.nodes[0].url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = post(
        "/v1/embeddings",
        serde_json::json!({"model": MODEL, "input": ["a", "b"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    let r = post(
        "/v1/responses",
        serde_json::json!({"model": MODEL, "input": "hello responses"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response", "{v}");
    // Embeddings need an OpenAI-format provider: a clear 400, nothing sent upstream.
    let before = c.mock.requests().len();
    let r = post(
        "/v1/embeddings",
        serde_json::json!({"model": CLAUDE_MODEL, "input": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OpenAI-format"),
        "{v}"
    );
    assert_eq!(c.mock.requests().len(), before);
    // count_tokens is answered locally.
    let r = post(
        "/v1/messages/count_tokens",
        serde_json::json!({"model": CLAUDE_MODEL, "messages": [{"role": "user", "content": "count me please"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    // Errors on the Anthropic endpoint come in the Anthropic shape.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .header("x-api-key", "nope")
        .json(&serde_json::json!({"model": CLAUDE_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    // provider:model addressing, for a caller allowed it.
    let scoped = c.issue_token("addressing", "mock:*").unwrap();
    let r = c
        .chat(
            0,
            &scoped,
            &TestCluster::chat_body("mock:some-upstream-model", "direct", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.mock.requests().last().unwrap().body["model"],
        "some-upstream-model"
    );
    let r = c
        .chat(
            0,
            &scoped,
            &TestCluster::chat_body("mock-anthropic:claude-x", "direct", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "provider:model outside the allow-list");
    let hits = c.find_everywhere(CANARY_ANTHROPIC_KEY);
    assert!(hits.is_empty(), "{hits:?}");
}

#[tokio::test]
async fn passthrough_providers_use_the_clients_own_key_and_drop_params() {
    let c = TestCluster::start(1).await.unwrap();
    let base = c.mock.base_url();
    c.ctl_ok(
        &[
            "provider",
            "add",
            "byok",
            "--format",
            "openai",
            "--base-url",
            &base,
            "--passthrough",
            "--drop-param",
            "seed,logit_bias",
        ],
        None,
    )
    .unwrap();
    let out = c
        .ctl(
            &["provider", "key", "add", "byok"],
            Some("sk-must-not-be-stored-1234"),
        )
        .unwrap();
    assert!(
        !out.status.success(),
        "a passthrough provider must refuse stored keys"
    );
    c.ctl_ok(
        &[
            "model",
            "add",
            "byok-model",
            "--provider",
            "byok",
            "--upstream-model",
            "mock-model",
        ],
        None,
    )
    .unwrap();
    let token = c.issue_token("byok-user", "*").unwrap();
    let mut body = TestCluster::chat_body("byok-model", "bring your own key", false);
    body["seed"] = 7.into();
    // Without the client's key: 401 that says what is missing.
    let r = c.chat(0, &token, &body).await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-warden-upstream-key"),
        "{v}"
    );
    assert!(c.mock.requests().is_empty());
    // With it: the client's key goes upstream, the gateway's credential does not, and the
    // dropped parameter is gone.
    let client_key = "sk-client-own-key-0a1b2c3d4e5f";
    let r = c
        .http
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("x-warden-upstream-key", client_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = c.mock.requests();
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {client_key}").as_str())
    );
    assert!(
        seen[0].body.get("seed").is_none(),
        "seed was not dropped: {}",
        seen[0].body
    );
    // The client's key is never stored or logged; the audit has only its fingerprint.
    let fp = warden_core::fingerprint::of(client_key.as_bytes());
    let audit = warden_tests::cluster::eventually(
        std::time::Duration::from_secs(5),
        "the request's audit event",
        || async {
            let a = c
                .ctl_ok(
                    &["audit", "list", "--action", "request", "-o", "json"],
                    None,
                )
                .ok()?;
            a.contains(&fp).then_some(a)
        },
    )
    .await
    .unwrap();
    assert!(!audit.contains(client_key));
    let hits = c.find_everywhere(client_key);
    assert!(
        hits.is_empty(),
        "the client's upstream key was found in {hits:?}"
    );
    // The provider rejecting the client's key is the client's problem: 401, and the
    // provider stays usable for others.
    c.mock.set_behavior(Behavior::KeyError {
        key: "sk-bad-client-key-999999".into(),
        status: 401,
        retry_after: None,
    });
    let r = c
        .http
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("x-warden-upstream-key", "sk-bad-client-key-999999")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_key_rejected", "{v}");
    let r = c
        .http
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("x-warden-upstream-key", client_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn max_tokens_is_capped_per_credential_and_per_model() {
    let c = TestCluster::start(1).await.unwrap();
    let key = c
        .ctl_ok(
            &["vkey", "create", "--name", "capped", "--max-tokens", "100"],
            None,
        )
        .unwrap();
    let mut body = TestCluster::chat_body(MODEL, "x", false);
    body["max_tokens"] = 5000.into();
    assert_eq!(c.chat(0, &key, &body).await.unwrap().status(), 200);
    assert_eq!(c.mock.requests().last().unwrap().body["max_tokens"], 100);
    // Absent → set to the cap; below the cap → kept.
    assert_eq!(
        c.chat(0, &key, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(c.mock.requests().last().unwrap().body["max_tokens"], 100);
    body["max_tokens"] = 7.into();
    assert_eq!(c.chat(0, &key, &body).await.unwrap().status(), 200);
    assert_eq!(c.mock.requests().last().unwrap().body["max_tokens"], 7);
    // A model's cap applies to everyone; the tightest cap wins. On /v1/messages the
    // translated request carries it too.
    c.ctl_ok(
        &[
            "policy",
            "set",
            "--model",
            CLAUDE_MODEL,
            "--max-tokens",
            "40",
        ],
        None,
    )
    .unwrap();
    let token = c.issue_token("anyone", "*").unwrap();
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"model": CLAUDE_MODEL, "max_tokens": 900, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.mock.requests().last().unwrap().body["max_tokens"], 40);
}

#[tokio::test]
async fn one_alias_balances_across_weighted_deployments_and_fails_over_between_them() {
    let c = TestCluster::start(1).await.unwrap();
    c.ctl_ok(
        &[
            "model",
            "add",
            "balanced",
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
        ],
        None,
    )
    .unwrap();
    c.ctl_ok(
        &[
            "model",
            "deployment",
            "add",
            "balanced",
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
            "--weight",
            "3",
        ],
        None,
    )
    .unwrap();
    c.ctl_ok(
        &[
            "model",
            "deployment",
            "add",
            "balanced",
            "--provider",
            "mock-anthropic",
            "--upstream-model",
            "claude-mock-model",
            "--weight",
            "1",
        ],
        None,
    )
    .unwrap();
    let listed: Value =
        serde_json::from_str(&c.ctl_ok(&["model", "list", "-o", "json"], None).unwrap()).unwrap();
    let m = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["alias"] == "balanced")
        .unwrap()
        .clone();
    assert_eq!(m["weight"], 3, "{m}");
    assert_eq!(m["deployments"][0]["provider"], "mock-anthropic", "{m}");
    let token = c.issue_token("balancer", "*").unwrap();
    let n = 400;
    for _ in 0..n {
        let r = c
            .chat(
                0,
                &token,
                &TestCluster::chat_body("balanced", "spread me", false),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("x-warden-fallback").is_none(),
            "a deployment is not a fallback"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
    }
    let seen = c.mock.requests();
    let openai = seen
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count() as f64;
    let share = openai / f64::from(n);
    assert!(
        (0.68..=0.82).contains(&share),
        "weight 3:1 gave an OpenAI share of {share:.2}"
    );
    // The OpenAI deployment's only key is rate limited: every request goes to the other one.
    c.mock.set_behavior(Behavior::KeyError {
        key: CANARY_UPSTREAM_KEY.into(),
        status: 429,
        retry_after: Some(30),
    });
    let before = c.mock.requests().len();
    for _ in 0..10 {
        let r = c
            .chat(0, &token, &TestCluster::chat_body("balanced", "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after: Vec<_> = c.mock.requests()[before..].to_vec();
    let served_by_anthropic = after.iter().filter(|r| r.path == "/v1/messages").count();
    assert_eq!(served_by_anthropic, 10, "{after:?}");
    c.ctl_ok(
        &[
            "model",
            "deployment",
            "remove",
            "balanced",
            "--provider",
            "mock-anthropic",
            "--upstream-model",
            "claude-mock-model",
        ],
        None,
    )
    .unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body("balanced", "x", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the only deployment left is cooling down");
}
