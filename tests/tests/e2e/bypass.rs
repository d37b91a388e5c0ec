//! Attacks on budgets, model allow-lists, token caps and state kept at the provider,
//! replayed against real processes: `provider:model` addressing that skipped budgets and
//! was granted by `*`, `n` multiplying the output-token cap, and `/v1/responses` state
//! (`store`, `background`, `previous_response_id`) shared through Warden's provider key.

use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::cluster::{MODEL, OTHER_MODEL, Options, TestCluster, eventually};

async fn cluster() -> TestCluster {
    let redis_url = std::env::var("WARDEN_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_REDIS_URL is not set: run scripts/test.sh (CI has Redis on 127.0.0.1:6379)"
        )
    });
    TestCluster::start_with(
        1,
        Options {
            redis_url: Some(redis_url),
            node_count: Some(1),
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

fn vkey(c: &TestCluster, args: &[&str]) -> String {
    let mut all = vec!["vkey", "create"];
    all.extend_from_slice(args);
    c.ctl_ok(&all, None).unwrap()
}

fn spent_usd(c: &TestCluster, name: &str) -> f64 {
    let list: Value =
        serde_json::from_str(&c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap()).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let info: Value = serde_json::from_str(
        &c.ctl_ok(&["vkey", "info", &id, "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    info["usage"]["spent_usd"].as_f64().unwrap_or(0.0)
}

async fn post(c: &TestCluster, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = c
        .http
        .post(c.nodes[0].url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The node still serves an ordinary request after the attacks.
async fn still_serving(c: &TestCluster) {
    let key = vkey(c, &["--name", "bystander"]);
    let (status, body) = post(
        c,
        "/v1/chat/completions",
        &key,
        &TestCluster::chat_body(MODEL, "still there?", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn provider_model_addressing_is_metered_and_needs_its_own_grant() {
    let c = cluster().await;
    // An alias priced at $10,000 per million tokens (a cent a token) for an upstream model
    // that can also be addressed as `mock:priced-upstream`.
    c.ctl_ok(
        &[
            "model",
            "add",
            "pricey",
            "--provider",
            "mock",
            "--upstream-model",
            "priced-upstream",
            "--input-price",
            "10000",
            "--output-price",
            "10000",
        ],
        None,
    )
    .unwrap();
    let budgeted = vkey(
        &c,
        &[
            "--name",
            "budgeted",
            "--models",
            "pricey,mock:*",
            "--max-budget",
            "0.05",
            "--budget-period",
            "1h",
        ],
    );

    // Addressing the priced model directly is charged at the alias's price: the spend
    // grows, and the budget ends it (before the fix the spend stayed at zero forever).
    let body = TestCluster::chat_body("mock:priced-upstream", "one two three", false);
    let (status, answer) = post(&c, "/v1/chat/completions", &budgeted, &body).await;
    assert_eq!(status, 200, "{answer}");
    let refused = eventually(Duration::from_secs(3), "the budget to be spent", || async {
        let (status, answer) = post(&c, "/v1/chat/completions", &budgeted, &body).await;
        (status == 429).then_some(answer)
    })
    .await
    .unwrap();
    assert_eq!(refused["error"]["code"], "insufficient_quota", "{refused}");
    assert!(spent_usd(&c, "budgeted") >= 0.05);

    // An upstream model with no priced alias cannot be metered: refused under a budget,
    // in the OpenAI shape.
    let fresh = vkey(
        &c,
        &[
            "--name",
            "fresh",
            "--models",
            "mock:*",
            "--max-budget",
            "5",
            "--budget-period",
            "1h",
        ],
    );
    for model in ["mock:mock-model", "mock:never-priced"] {
        let (status, answer) = post(
            &c,
            "/v1/chat/completions",
            &fresh,
            &TestCluster::chat_body(model, "free lunch", false),
        )
        .await;
        assert_eq!(status, 400, "{model}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("has no price"),
            "{answer}"
        );
    }
    assert_eq!(spent_usd(&c, "fresh"), 0.0);

    // `*` (the default allow-list) covers aliases, not `provider:model`.
    let star = vkey(&c, &["--name", "star"]);
    let (status, answer) = post(
        &c,
        "/v1/chat/completions",
        &star,
        &TestCluster::chat_body("mock:mock-model", "hi", false),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "model_not_allowed", "{answer}");
    // The alias itself still works for it; `*:*` grants direct addressing.
    let (status, answer) = post(
        &c,
        "/v1/chat/completions",
        &star,
        &TestCluster::chat_body(MODEL, "hi", false),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let everything = vkey(&c, &["--name", "everything", "--models", "*:*"]);
    let (status, answer) = post(
        &c,
        "/v1/chat/completions",
        &everything,
        &TestCluster::chat_body("mock:mock-model", "hi", false),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // Each refusal is audited with its principal and model.
    eventually(
        Duration::from_secs(10),
        "the refusal in the audit log",
        || async {
            let audit = c
                .ctl_ok(
                    &["audit", "query", "--action", "request", "--format", "json"],
                    None,
                )
                .ok()?;
            audit
                .lines()
                .any(|l| l.contains("mock:never-priced") && l.contains("400"))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // The control plane warns when a budget meets an unpriced model: at `policy set` and at
    // `model add` (logged, and in the audit record).
    c.ctl_ok(
        &["policy", "set", "--model", OTHER_MODEL, "--max-budget", "1"],
        None,
    )
    .unwrap();
    c.ctl_ok(&["model", "add", "free-ride", "--provider", "mock"], None)
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the warnings in the audit log",
        || async {
            let audit = c
                .ctl_ok(&["audit", "query", "--format", "json"], None)
                .ok()?;
            let warned = |action: &str, model: &str| {
                audit.lines().any(|l| {
                    l.contains(action) && l.contains(model) && l.contains("unpriced models")
                })
            };
            (warned("policy.set", OTHER_MODEL) && warned("model.warning", "free-ride"))
                .then_some(())
        },
    )
    .await
    .unwrap();
    still_serving(&c).await;
}

#[tokio::test]
async fn n_cannot_multiply_the_output_token_cap() {
    let c = cluster().await;
    let capped = vkey(&c, &["--name", "capped", "--max-tokens", "100"]);

    // 50 choices of 50 tokens each would be 2,500 tokens past a cap of 100: the cap covers
    // all choices (the provider is asked for at most 100 in total) or the request is
    // refused.
    let mut body = TestCluster::chat_body(MODEL, "many choices", false);
    body["n"] = json!(50);
    body["max_tokens"] = json!(50);
    let before = c.mock.requests().len();
    let (status, answer) = post(&c, "/v1/chat/completions", &capped, &body).await;
    if status == 200 {
        let sent = c.mock.requests()[before..]
            .iter()
            .rev()
            .find(|r| r.path.ends_with("/chat/completions"))
            .unwrap()
            .body
            .clone();
        let n = sent["n"].as_u64().unwrap_or(1);
        let per_choice = sent["max_tokens"]
            .as_u64()
            .or_else(|| sent["max_completion_tokens"].as_u64())
            .unwrap();
        assert!(
            n * per_choice <= 100,
            "forwarded n={n} × {per_choice}: {sent}"
        );
    } else {
        assert_eq!(status, 400, "{answer}");
    }

    // `n` beyond what one request may ask, negative, zero or not an integer: refused with
    // a 400 in the OpenAI shape, before anything reaches the provider.
    let before = c.mock.requests().len();
    for n in [
        json!(1_000_000),
        json!(-1),
        json!(0),
        json!(2.5),
        json!("2"),
    ] {
        let mut body = TestCluster::chat_body(MODEL, "bad n", false);
        body["n"] = n.clone();
        let (status, answer) = post(&c, "/v1/chat/completions", &capped, &body).await;
        assert_eq!(status, 400, "n={n}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains("`n`"),
            "{answer}"
        );
    }
    assert_eq!(
        c.mock.requests().len(),
        before,
        "a bad `n` reached the provider"
    );

    // A caller without a cap may still ask for a few choices.
    let free = vkey(&c, &["--name", "free"]);
    let mut body = TestCluster::chat_body(MODEL, "three choices", false);
    body["n"] = json!(3);
    body["max_tokens"] = json!(10);
    let (status, answer) = post(&c, "/v1/chat/completions", &free, &body).await;
    assert_eq!(status, 200, "{answer}");
    still_serving(&c).await;
}

#[tokio::test]
async fn responses_state_at_the_provider_needs_the_responses_state_scope() {
    let c = cluster().await;
    let plain = vkey(&c, &["--name", "plain"]);
    let base = json!({"model": MODEL, "input": "hello"});
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    let attempts = [
        with("previous_response_id", json!("resp_of_another_tenant")),
        with("store", json!(true)),
        with("background", json!(true)),
        with("conversation", json!("conv_of_another_tenant")),
    ];

    // Without the scope: refused (403, OpenAI shape), nothing reaches the provider.
    let before = c.mock.requests().len();
    for body in &attempts {
        let (status, answer) = post(&c, "/v1/responses", &plain, body).await;
        assert_eq!(status, 403, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "insufficient_scope", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("responses_state"),
            "{answer}"
        );
    }
    assert_eq!(c.mock.requests().len(), before);
    // A plain request is served, and the provider is told not to store it.
    let (status, answer) = post(&c, "/v1/responses", &plain, &base).await;
    assert_eq!(status, 200, "{answer}");
    let sent = c.mock.requests().last().unwrap().body.clone();
    assert_eq!(sent["store"], json!(false), "{sent}");

    // With the scope: the same requests go through untouched.
    let stateful = vkey(
        &c,
        &[
            "--name",
            "stateful",
            "--scopes",
            "read,write,responses_state",
        ],
    );
    for body in &attempts[..2] {
        let (status, answer) = post(&c, "/v1/responses", &stateful, body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        let sent = c.mock.requests().last().unwrap().body.clone();
        for (k, v) in body
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "model")
        {
            assert_eq!(&sent[k], v, "{sent}");
        }
    }
    still_serving(&c).await;
}
