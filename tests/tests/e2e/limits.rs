//! Shared state across real node processes in Redis: limits that hold across nodes, budgets,
//! key rotation and health seen by every node, fallbacks, and losing Redis mid-load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::cluster::{
    CANARY_UPSTREAM_KEY, CLAUDE_MODEL, MODEL, Options, TestCluster, eventually,
};
use warden_tests::faults::PrivateRedis;
use warden_tests::mock::Behavior;

fn redis_url() -> String {
    std::env::var("WARDEN_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_REDIS_URL is not set: run scripts/test.sh (CI has Redis on 127.0.0.1:6379)"
        )
    })
}

async fn cluster(nodes: usize) -> TestCluster {
    TestCluster::start_with(
        nodes,
        Options {
            redis_url: Some(redis_url()),
            node_count: Some(u32::try_from(nodes).unwrap()),
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

fn vkey_id(c: &TestCluster, name: &str) -> String {
    let list: Value =
        serde_json::from_str(&c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_holds_across_three_nodes_driven_hard_for_ten_seconds() {
    let c = cluster(3).await;
    let key = c
        .ctl_ok(
            &["vkey", "create", "--name", "hammer", "--rpm", "600"],
            None,
        )
        .unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let run_for = Duration::from_secs(10);
    let start = Instant::now();
    let body = TestCluster::chat_body(MODEL, "x", false);
    let mut tasks = Vec::new();
    for node in 0..3 {
        for _ in 0..4 {
            let url = c.nodes[node].url("/v1/chat/completions");
            let (http, key, body) = (c.http.clone(), key.clone(), body.clone());
            let (ok, limited, other) = (Arc::clone(&ok), Arc::clone(&limited), Arc::clone(&other));
            tasks.push(tokio::spawn(async move {
                let mut checked_headers = false;
                while start.elapsed() < run_for {
                    let r = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let _ = r.bytes().await;
                        }
                        429 => {
                            limited.fetch_add(1, Ordering::Relaxed);
                            if !checked_headers {
                                checked_headers = true;
                                assert!(r.headers().contains_key("retry-after"));
                                assert_eq!(r.headers()["x-ratelimit-limit-requests"], "600");
                                assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
                                let v: Value = r.json().await.unwrap();
                                assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
                                assert_eq!(v["error"]["type"], "requests");
                            }
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = ok.load(Ordering::Relaxed) as f64;
    // Token bucket: one minute's worth (600) at once, then 10 per second.
    let allowance = 600.0 + 10.0 * elapsed;
    eprintln!(
        "admitted {admitted} of {} in {elapsed:.1}s (allowance {allowance:.0})",
        ok.load(Ordering::Relaxed) + limited.load(Ordering::Relaxed)
    );
    assert_eq!(other.load(Ordering::Relaxed), 0, "unexpected statuses");
    assert!(
        admitted <= allowance * 1.01,
        "admitted {admitted}, allowance {allowance:.0}"
    );
    assert!(admitted >= 600.0, "admitted only {admitted}");
    assert!(limited.load(Ordering::Relaxed) > 0);
    // Usage is visible to the admin.
    let id = vkey_id(&c, "hammer");
    let info: Value = serde_json::from_str(
        &c.ctl_ok(&["vkey", "info", &id, "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["usage"]["available"], true, "{info}");
    assert_eq!(info["policy"]["rpm"], 600, "{info}");
}

#[tokio::test]
async fn budgets_are_spent_from_reported_usage_and_streams_are_cut() {
    let c = cluster(2).await;
    // $10,000 per million tokens: each token costs a cent.
    c.ctl_ok(
        &[
            "model",
            "add",
            "pricey",
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
            "--input-price",
            "10000",
            "--output-price",
            "10000",
        ],
        None,
    )
    .unwrap();
    let key = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "spender",
                "--max-budget",
                "0.05",
                "--budget-period",
                "1h",
            ],
            None,
        )
        .unwrap();
    let r = c
        .chat(
            0,
            &key,
            &TestCluster::chat_body("pricey", "one two three", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    // The spend (prompt + completion tokens from the mock's usage, a cent each) exceeds
    // the $0.05 budget: the next request, on the other node, is refused.
    let refused = eventually(Duration::from_secs(2), "the budget to be spent", || async {
        let r = c
            .chat(1, &key, &TestCluster::chat_body("pricey", "again", false))
            .await
            .ok()?;
        (r.status() == 429).then_some(r)
    })
    .await
    .unwrap();
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
    let id = vkey_id(&c, "spender");
    let info: Value = serde_json::from_str(
        &c.ctl_ok(&["vkey", "info", &id, "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    assert!(
        info["usage"]["spent_usd"].as_f64().unwrap() >= 0.05,
        "{info}"
    );

    // A stream that outgrows its reservation is charged as it flows and cut with a
    // well-formed error event when the budget is crossed.
    let streamer = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "streamer",
                "--max-budget",
                "0.5",
                "--budget-period",
                "1h",
            ],
            None,
        )
        .unwrap();
    let mut body = TestCluster::chat_body(
        "pricey",
        "a b c d e f g h i j k l m n o p q r s t u v w x y z",
        true,
    );
    body["max_tokens"] = 1.into();
    let r = c.chat(0, &streamer, &body).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"insufficient_quota\""),
        "stream was not cut: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn a_rejected_or_rate_limited_key_is_skipped_by_every_node() {
    let c = cluster(2).await;
    let second_key = "sk-second-canary-key-77f1e2d3";
    c.ctl_ok(&["provider", "key", "add", "mock"], Some(second_key))
        .unwrap();
    let token = c.issue_token("rotation", "*").unwrap();
    // Round robin: both keys are used.
    for _ in 0..4 {
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let used: Vec<String> = c
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.authorization.clone())
        .collect();
    assert!(
        used.iter().any(|a| a.contains(CANARY_UPSTREAM_KEY))
            && used.iter().any(|a| a.contains(second_key))
    );

    // The provider starts rejecting the canary key: node 0 meets it, fails over, and every
    // node stops using it at once.
    c.mock.set_behavior(Behavior::KeyError {
        key: CANARY_UPSTREAM_KEY.into(),
        status: 401,
        retry_after: None,
    });
    for _ in 0..2 {
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "failover to the second key");
    }
    let before = c.mock.requests().len();
    for _ in 0..6 {
        let r = c
            .chat(1, &token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after: Vec<_> = c.mock.requests()[before..].to_vec();
    assert!(
        after
            .iter()
            .all(|r| r.authorization.as_deref() != Some(&format!("Bearer {CANARY_UPSTREAM_KEY}"))),
        "node 1 still used the rejected key"
    );
    // The control plane recorded it: provider list shows the key disabled with a reason.
    let listing = eventually(
        Duration::from_secs(3),
        "the rejection in provider list",
        || async {
            let l = c.ctl_ok(&["provider", "list", "-o", "json"], None).ok()?;
            l.contains("rejected by the provider").then_some(l)
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nproviders: {}\naudit: {}\nlogs: {}",
            c.ctl_ok(&["provider", "list", "-o", "json"], None)
                .unwrap_or_default(),
            c.ctl_ok(&["audit", "list", "--limit", "20", "-o", "json"], None)
                .unwrap_or_default(),
            c.logs()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(!listing.contains(CANARY_UPSTREAM_KEY));

    // Quarantine the second key: no key left → 429 all upstream keys exhausted.
    let providers: Value = serde_json::from_str(&listing).unwrap();
    let keys = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mock")
        .unwrap()["keys"]
        .as_array()
        .unwrap()
        .clone();
    let fp_second = warden_core::fingerprint::of(second_key.as_bytes());
    let second_id = keys.iter().find(|k| k["fingerprint"] == fp_second).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_id = keys.iter().find(|k| k["fingerprint"] != fp_second).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ctl_ok(
        &[
            "provider",
            "key",
            "quarantine",
            "mock",
            &second_id,
            "--reason",
            "suspected leak",
        ],
        None,
    )
    .unwrap();
    for node in 0..2 {
        let r = c
            .chat(node, &token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "node {node}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "upstream_keys_exhausted", "{v}");
        assert!(
            !v.to_string().contains(second_key) && !v.to_string().contains(CANARY_UPSTREAM_KEY)
        );
    }
    // An admin re-enables the first key (the provider accepts it again).
    c.mock.set_behavior(Behavior::Normal);
    c.ctl_ok(&["provider", "key", "enable", "mock", &first_id], None)
        .unwrap();
    let r = c
        .chat(1, &token, &TestCluster::chat_body(MODEL, "x", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.ctl_ok(&["provider", "key", "enable", "mock", &second_id], None)
        .unwrap();

    // A 429 with Retry-After cools the key down on every node for that long.
    c.mock.set_behavior(Behavior::KeyError {
        key: second_key.into(),
        status: 429,
        retry_after: Some(2),
    });
    let mut served = 0;
    for _ in 0..3 {
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        served += usize::from(r.status() == 200);
    }
    assert_eq!(served, 3);
    let before = c.mock.requests().len();
    for _ in 0..4 {
        assert_eq!(
            c.chat(1, &token, &TestCluster::chat_body(MODEL, "x", false))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert!(
        c.mock.requests()[before..]
            .iter()
            .all(|r| r.authorization.as_deref() != Some(&format!("Bearer {second_key}"))),
        "node 1 used a key cooling down"
    );
    let audit = c
        .ctl_ok(
            &[
                "audit",
                "list",
                "--action",
                "provider.key.quarantine",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap();
    assert!(audit.contains("mock/"), "{audit}");
}

#[tokio::test]
async fn a_model_falls_back_to_another_provider() {
    let c = cluster(1).await;
    c.ctl_ok(
        &[
            "model",
            "add",
            "with-fallback",
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
            "--fallback",
            CLAUDE_MODEL,
        ],
        None,
    )
    .unwrap();
    let token = c.issue_token("fallback", "*").unwrap();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body("with-fallback", "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-warden-fallback").is_none());
    // Every key of the OpenAI-format provider is rate limited: the Anthropic one serves.
    c.mock.set_behavior(Behavior::KeyError {
        key: CANARY_UPSTREAM_KEY.into(),
        status: 429,
        retry_after: Some(30),
    });
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body("with-fallback", "fallback please", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-warden-fallback"], "true");
    assert_eq!(r.headers()["x-warden-model"], CLAUDE_MODEL);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["object"], "chat.completion",
        "answer translated back to the client's API: {v}"
    );
    assert_eq!(c.mock.requests().last().unwrap().path, "/v1/messages");
}

#[tokio::test]
async fn parallel_slots_are_released_when_the_client_disconnects() {
    let c = cluster(1).await;
    let key = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "one-at-a-time",
                "--max-parallel",
                "1",
            ],
            None,
        )
        .unwrap();
    c.mock.set_behavior(Behavior::GatedStream);
    let r = c
        .chat(0, &key, &TestCluster::chat_body(MODEL, "a b c", true))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    use futures::StreamExt as _;
    let _first = stream.next().await.unwrap().unwrap();
    let blocked = c
        .chat(0, &key, &TestCluster::chat_body(MODEL, "x", false))
        .await
        .unwrap();
    assert_eq!(blocked.status(), 429, "the slot is taken");
    // The refusal names the key as the logs and audit rows do, never its full id.
    let id = vkey_id(&c, "one-at-a-time");
    let body: Value = blocked.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains(&id), "full vkey id in the 429: {message}");
    assert!(
        message.contains(&format!(
            "vkey:{}",
            warden_core::fingerprint::obfuscate(&id)
        )),
        "{message}"
    );
    drop(stream); // the client goes away mid-stream
    c.mock.set_behavior(Behavior::Normal);
    eventually(
        Duration::from_secs(3),
        "the slot to be released",
        || async {
            let r = c
                .chat(0, &key, &TestCluster::chat_body(MODEL, "x", false))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    c.mock.release_stream();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_causes_no_5xx_and_shared_limits_resume() {
    let logs = tempfile::tempdir().unwrap();
    let mut redis = PrivateRedis::start(logs.path()).await.unwrap();
    let c = TestCluster::start_with(
        2,
        Options {
            redis_url: Some(redis.url()),
            node_count: Some(2),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let key = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "through-outage",
                "--rpm",
                "100000",
            ],
            None,
        )
        .unwrap();
    let ready = |node: usize| {
        let url = c.nodes[node].ops_url("/readyz");
        let http = c.http.clone();
        async move {
            let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            v["limits"].as_str().map(str::to_owned)
        }
    };
    eventually(Duration::from_secs(5), "shared limits", || async {
        (ready(0).await? == "shared").then_some(())
    })
    .await
    .unwrap();
    let statuses = Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for node in 0..2 {
        let url = c.nodes[node].url("/v1/chat/completions");
        let (http, key, statuses, stop) = (
            c.http.clone(),
            key.clone(),
            Arc::clone(&statuses),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&TestCluster::chat_body(MODEL, "load", false))
                    .send()
                    .await
                    .unwrap();
                statuses.lock().unwrap().push(r.status().as_u16());
                let _ = r.bytes().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill().unwrap(); // mid-load
    eventually(Duration::from_secs(5), "per-node limits", || async {
        ready(0).await?.starts_with("per-node").then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart().await.unwrap(); // back, on the same port
    eventually(Duration::from_secs(10), "shared limits again", || async {
        (ready(0).await? == "shared" && ready(1).await? == "shared").then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    assert!(statuses.len() > 50, "too little load: {}", statuses.len());
    let server_errors: Vec<_> = statuses.iter().filter(|s| **s >= 500).collect();
    assert!(
        server_errors.is_empty(),
        "{} of {} requests failed with 5xx",
        server_errors.len(),
        statuses.len()
    );
    // Shared decisions again: the response carries the shared limiter's headers.
    let r = c
        .chat(1, &key, &TestCluster::chat_body(MODEL, "after", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-ratelimit-remaining-requests"));
}

#[tokio::test]
async fn subject_limits_are_shared_by_all_tokens_of_the_subject_and_changeable() {
    let c = cluster(2).await;
    let first = c
        .ctl_ok(
            &["token", "issue", "--subject", "capped", "--rpm", "2"],
            None,
        )
        .unwrap();
    let second = c.issue_token("capped", "*").unwrap();
    assert_eq!(
        c.chat(0, &first, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.chat(1, &second, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .chat(0, &second, &TestCluster::chat_body(MODEL, "x", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the subject's two tokens share one limit");
    // Changed later with wardenctl: lifting the limit takes effect on every node.
    c.ctl_ok(&["policy", "set", "--subject", "capped", "--clear"], None)
        .unwrap();
    assert_eq!(
        c.chat(1, &first, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap()
            .status(),
        200
    );
    // A model limit applies to everyone using the model.
    c.ctl_ok(&["policy", "set", "--model", MODEL, "--rpm", "1"], None)
        .unwrap();
    let other = c.issue_token("someone-else", "*").unwrap();
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for t in [&other, &first] {
            v.push(
                c.chat(0, t, &TestCluster::chat_body(MODEL, "x", false))
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(codes, [200, 429], "{codes:?}");
    let info: Value = serde_json::from_str(
        &c.ctl_ok(&["policy", "get", "--model", MODEL, "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["policy"]["rpm"], 1, "{info}");
    let audit = c
        .ctl_ok(
            &["audit", "list", "--action", "policy.set", "-o", "json"],
            None,
        )
        .unwrap();
    assert!(
        audit.contains("subject:capped") && audit.contains(&format!("model:{MODEL}")),
        "{audit}"
    );
}

/// Requests clients sent to a private Redis so far: its read events
/// (`total_reads_processed`), one per round trip of a client that waits for each answer, as
/// a node does per call. Commands scripts run inside the server are not counted (as they
/// are by `INFO commandstats`). Each reading adds its own.
fn redis_reads(port: u16) -> u64 {
    let out = redis_cli(port, &["INFO", "stats"]);
    out.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("no total_reads_processed in INFO stats")
}

/// Script calls (`EVALSHA`) a private Redis ran so far: every call a node makes on the
/// request path is one (concurrent calls share read events, so reads undercount them).
fn redis_script_calls(port: u16) -> u64 {
    let out = redis_cli(port, &["INFO", "commandstats"]);
    out.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli is not on the PATH");
    assert!(out.status.success(), "redis-cli failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_limited_request_makes_one_redis_round_trip_and_spend_stays_exact() {
    let logs = tempfile::tempdir().unwrap();
    let redis = PrivateRedis::start(logs.path()).await.unwrap();
    let port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let c = TestCluster::start_with(
        1,
        Options {
            redis_url: Some(format!("redis://127.0.0.1:{port}")),
            node_count: Some(1),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    // $1 per million tokens: a token costs one micro-USD.
    c.ctl_ok(
        &[
            "model",
            "add",
            "priced",
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
            "--input-price",
            "1",
            "--output-price",
            "1",
        ],
        None,
    )
    .unwrap();
    // rpm, tpm and a budget: every limit but parallel slots (whose release is the one call
    // after the answer).
    let key = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "counted",
                "--rpm",
                "100000",
                "--tpm",
                "10000000",
                "--max-budget",
                "1000",
                "--budget-period",
                "1h",
            ],
            None,
        )
        .unwrap();
    let id = vkey_id(&c, "counted");
    let spent = || {
        let keys = redis_cli(
            port,
            &["KEYS", &format!("{{{}}}:spend:vkey:{id}:*", c.redis_prefix)],
        );
        keys.lines()
            .next()
            .map_or(0, |k| redis_cli(port, &["GET", k]).trim().parse().unwrap())
    };
    let own = {
        let a = redis_reads(port);
        redis_reads(port) - a
    };

    // Before the first byte: streams held by the provider after their first event. Each
    // request starts after the previous one's settlement was written (the batch interval
    // is 50 ms), so what is counted is this request's alone.
    c.mock.set_behavior(Behavior::GatedStream);
    let mut before_first_byte = Vec::new();
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r0 = redis_reads(port);
        let r = c
            .chat(
                0,
                &key,
                &TestCluster::chat_body("priced", "first byte", true),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        use futures::StreamExt as _;
        let _first = stream.next().await.unwrap().unwrap();
        before_first_byte.push(redis_reads(port) - r0 - own);
        c.mock.release_stream();
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
        // The first request loads the scripts (NOSCRIPT, then SCRIPT LOAD): not counted.
        if i == 0 {
            before_first_byte.clear();
        }
    }
    assert!(
        before_first_byte.iter().all(|n| *n == 1),
        "redis round trips before the first byte: {before_first_byte:?}"
    );
    c.mock.set_behavior(Behavior::Normal);

    // A burst of 8 clients: one admission per request, which carries the settlements
    // waiting; the batch timer writes what waits longer than 50 ms. Before: three round
    // trips per request (pick a key, admit, settle). Spend stays exact.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent_before = spent();
    let before = redis_script_calls(port);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (http, url, key) = (
            c.http.clone(),
            c.nodes[0].url("/v1/chat/completions"),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tokens = 0;
            for i in 0..10 {
                let body =
                    TestCluster::chat_body("priced", &"burst ".repeat(1 + (t * 10 + i) % 7), false);
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                tokens += v["usage"]["prompt_tokens"].as_u64().unwrap()
                    + v["usage"]["completion_tokens"].as_u64().unwrap();
            }
            tokens
        }));
    }
    let mut tokens = 0;
    for t in tasks {
        tokens += t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let used = redis_script_calls(port) - before;
    let n = 80;
    assert!(
        (n..2 * n).contains(&used),
        "{used} redis script calls for {n} limited requests"
    );
    assert_eq!(
        spent() - spent_before,
        tokens,
        "spend in micro-USD = tokens used at $1/Mtok"
    );
}
