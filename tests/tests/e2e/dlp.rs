//! DLP on request content (#14 item 4), against real processes: rules set with `wardenctl
//! dlp` reach the node in the snapshot; `block` answers 400 naming the rule in the
//! endpoint's error shape (OpenAI and Anthropic) and the provider never sees the request;
//! `redact` forwards `[REDACTED:<rule>]` (the mock provider records what it received);
//! `flag` passes the request and the audit row names the rule — and the answer's text,
//! streamed across events, is flagged too. The matched text is never in the audit store,
//! the logs or any file the processes wrote.

use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, TestCluster, eventually};

const CARD: &str = "4111 1111 1111 1111";
const CARD_DIGITS: &str = "4111111111111111";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// The `request` audit row of the request `request_id` (its detail).
async fn request_row(c: &TestCluster, request_id: &str) -> String {
    eventually(
        Duration::from_secs(10),
        "the request's audit row",
        || async {
            let rows: Value = serde_json::from_str(
                &c.ctl_ok(
                    &[
                        "audit", "list", "--action", "request", "--limit", "200", "-o", "json",
                    ],
                    None,
                )
                .ok()?,
            )
            .ok()?;
            rows.as_array()?
                .iter()
                .filter_map(|r| r["detail"].as_str())
                .find(|d| d.contains(&format!("request_id={request_id}")))
                .map(str::to_owned)
        },
    )
    .await
    .unwrap()
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlp_blocks_redacts_and_flags_and_never_records_the_match() {
    let c = TestCluster::start(1).await.unwrap();
    c.ctl_ok(
        &[
            "dlp",
            "add",
            "--name",
            "card",
            "--builtin",
            "card",
            "--action",
            "redact",
        ],
        None,
    )
    .unwrap();
    c.ctl_ok(
        &[
            "dlp",
            "add",
            "--name",
            "aws",
            "--builtin",
            "aws_access_key",
            "--action",
            "block",
        ],
        None,
    )
    .unwrap();
    let token = c.issue_token("svc", "*").unwrap();

    // redact: the provider receives the placeholder, never the number.
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, &format!("my card is {CARD} ok"), false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let answer = r.text().await.unwrap();
    assert!(!answer.contains(CARD), "{answer}");
    let seen = c.mock.requests();
    let last = seen.last().unwrap();
    assert_eq!(
        last.body["messages"][0]["content"], "my card is [REDACTED:card] ok",
        "{}",
        last.body
    );
    let row = request_row(&c, &id).await;
    assert!(row.contains("dlp=card:redact:1"), "{row}");

    // block, OpenAI shape: 400 naming the rule; the provider is not called.
    let before = c.mock.requests().len();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, &format!("key {AWS_KEY}"), false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "dlp_blocked", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`aws`"), "{message}");
    assert!(!body.to_string().contains(AWS_KEY));
    assert_eq!(
        c.mock.requests().len(),
        before,
        "a blocked request reached the provider"
    );
    let row = request_row(&c, &id).await;
    assert!(row.contains("error=dlp_blocked"), "{row}");
    assert!(row.contains("dlp=aws:block:1"), "{row}");

    // block, Anthropic shape: the key in `system`.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .bearer_auth(&token)
        .json(&json!({
            "model": CLAUDE_MODEL, "max_tokens": 16,
            "system": [{"type": "text", "text": format!("use {AWS_KEY}")}],
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`aws`"));
    assert_eq!(c.mock.requests().len(), before);

    // flag, for one subject only: the request passes as sent, the streamed answer (which
    // echoes it, one word per event) is flagged, and the audit row names the rule.
    c.ctl_ok(&["dlp", "remove", "card"], None).unwrap();
    c.ctl_ok(
        &[
            "dlp",
            "add",
            "--name",
            "card-watch",
            "--builtin",
            "card",
            "--action",
            "flag",
            "--subject",
            "watched",
        ],
        None,
    )
    .unwrap();
    let watched = c.issue_token("watched", "*").unwrap();
    let r = c
        .chat(
            0,
            &watched,
            &TestCluster::chat_body(MODEL, &format!("card {CARD} end"), true),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let streamed = r.text().await.unwrap();
    assert!(streamed.contains("data: "), "{streamed}");
    assert_eq!(
        c.mock.requests().last().unwrap().body["messages"][0]["content"],
        format!("card {CARD} end")
    );
    let row = request_row(&c, &id).await;
    assert!(row.contains("dlp=card-watch:flag:1"), "{row}");
    assert!(row.contains("dlp_response=card-watch:1"), "{row}");
    // Another subject: the rule does not apply.
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, &format!("card {CARD}"), false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let row = request_row(&c, &request_id(&r)).await;
    assert!(!row.contains("dlp"), "{row}");

    // The rules' changes are audited; the matched text is nowhere.
    let audit = c
        .ctl_ok(&["audit", "list", "--limit", "1000", "-o", "json"], None)
        .unwrap();
    assert!(audit.contains("dlp.rule_add") && audit.contains("dlp.rule_remove"));
    for needle in [CARD, CARD_DIGITS, AWS_KEY] {
        assert!(!audit.contains(needle), "{needle} in the audit log");
        let hits = c.find_everywhere(needle);
        assert!(hits.is_empty(), "{needle} found in {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_regex_rules_are_checked_scoped_and_listed() {
    let c = TestCluster::start(1).await.unwrap();
    // A bad regular expression is refused at once, naming the rule.
    let out = c
        .ctl(
            &[
                "dlp", "add", "--name", "broken", "--regex", "PRJ-(", "--action", "block",
            ],
            None,
        )
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule broken: invalid regular expression"),
        "{err}"
    );
    // A custom rule for one model redacts there, in embeddings input arrays too.
    c.ctl_ok(
        &[
            "dlp",
            "add",
            "--name",
            "project",
            "--regex",
            "PRJ-[0-9]{4}",
            "--action",
            "redact",
            "--model",
            MODEL,
        ],
        None,
    )
    .unwrap();
    let list: Value =
        serde_json::from_str(&c.ctl_ok(&["dlp", "list", "-o", "json"], None).unwrap()).unwrap();
    assert_eq!(list["rules"][0]["name"], "project");
    assert_eq!(list["rules"][0]["scope"], format!("model:{MODEL}"));
    let token = c.issue_token("svc", "*").unwrap();
    let r = c
        .http
        .post(c.nodes[0].url("/v1/embeddings"))
        .bearer_auth(&token)
        .json(&json!({"model": MODEL, "input": ["about PRJ-1234", "plain"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.mock.requests().last().unwrap().body["input"],
        json!(["about [REDACTED:project]", "plain"])
    );
    // Another model: untouched.
    let other = warden_tests::cluster::OTHER_MODEL;
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(other, "about PRJ-1234", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.mock.requests().last().unwrap().body["messages"][0]["content"],
        "about PRJ-1234"
    );
    // The built-ins in one command.
    c.ctl_ok(&["dlp", "enable-builtin", "--action", "redact"], None)
        .unwrap();
    let list: Value =
        serde_json::from_str(&c.ctl_ok(&["dlp", "list", "-o", "json"], None).unwrap()).unwrap();
    assert_eq!(list["rules"].as_array().unwrap().len(), 7, "{list}");
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(other, "ssn 123-45-6789", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.mock.requests().last().unwrap().body["messages"][0]["content"],
        "ssn [REDACTED:ssn]"
    );
}

/// The official Python SDKs get their own error classes for a blocked request: a 400
/// `BadRequestError` naming the rule, never the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdks_see_a_blocked_request_as_a_bad_request() {
    let c = TestCluster::start(1).await.unwrap();
    c.ctl_ok(&["dlp", "enable-builtin", "--action", "block"], None)
        .unwrap();
    let token = c.issue_token("sdk", "*").unwrap();
    let secret = "sk-proj-abcdefghijklmnopqrstuvwxyz012345";
    let mut env = c.env_for_model(0, &token, MODEL, "");
    env.insert("WARDEN_CLAUDE_MODEL".into(), CLAUDE_MODEL.into());
    env.insert("WARDEN_SECRET".into(), secret.into());
    let r = warden_tests::cluster::run_python_script("sdk_dlp.py", env)
        .await
        .unwrap();
    assert_eq!(r["openai_error"], "BadRequestError", "{r}");
    assert_eq!(r["openai_status"], 400);
    assert_eq!(r["openai_code"], "dlp_blocked");
    assert!(
        r["openai_message"]
            .as_str()
            .unwrap()
            .contains("`openai_key`"),
        "{r}"
    );
    assert_eq!(r["anthropic_error"], "BadRequestError", "{r}");
    assert_eq!(r["anthropic_status"], 400);
    assert_eq!(r["anthropic_type"], "invalid_request_error");
    assert!(!r.to_string().contains(secret), "{r}");
    assert!(
        c.mock
            .requests()
            .iter()
            .all(|q| !q.body.to_string().contains(secret))
    );
}
