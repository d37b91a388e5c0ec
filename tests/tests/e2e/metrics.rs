//! Prometheus metrics of a node and the control plane (#16 item 6), against real
//! processes: requests of every kind (answered, streamed, refused by a limit, blocked by a
//! DLP rule, and a hundred attacker-chosen model names), then both `/metrics` pages are
//! scraped, parsed as the exposition format and checked label by label — the `alias`
//! label stays within the configured aliases plus `other` whatever model strings arrive,
//! the histograms count every request (and the added latency leaves out the provider's
//! wait), and no credential or provider key appears anywhere in the text.

use std::collections::BTreeMap;
use std::time::Duration;

use warden_tests::cluster::{
    CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster, eventually, free_port,
};
use warden_tests::mock::Behavior;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (comments skipped; label values unescaped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name.to_owned(), parse_labels(body, line))
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value quoted: {line}");
        let mut value = String::new();
        loop {
            match chars.next().expect("label value ends") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape: {line}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The samples named `name` whose labels include every pair of `with`.
fn select<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the samples `select` finds.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    select(samples, name, with).iter().map(|s| s.value).sum()
}

async fn scrape(c: &TestCluster, url: &str) -> String {
    let r = c.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

const CHAT: &str = "/v1/chat/completions";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const CARD: &str = "4111 1111 1111 1111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_control_plane_metrics_are_bounded_labelled_and_secret_free() {
    let cp_ops = free_port().unwrap();
    let c = TestCluster::start_with(
        1,
        Options {
            cp_config: Some(format!("[server]\nops_addr = \"127.0.0.1:{cp_ops}\"\n")),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let cp_metrics = format!("http://127.0.0.1:{cp_ops}/metrics");
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
    c.ctl_ok(
        &[
            "dlp",
            "add",
            "--name",
            "card",
            "--builtin",
            "card",
            "--action",
            "flag",
        ],
        None,
    )
    .unwrap();
    let vkey = c
        .ctl_ok(&["vkey", "create", "--name", "metered", "--rpm", "2"], None)
        .unwrap();
    let post = |body: serde_json::Value| {
        let (http, url, key) = (c.http.clone(), c.nodes[0].url(CHAT), vkey.clone());
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    // Two answers (one streamed) that wait 1.5 s for the provider: their time to first
    // byte is long, their added latency is not.
    c.mock
        .set_behavior(Behavior::Latency(Duration::from_millis(1500)));
    let r = post(TestCluster::chat_body(MODEL, "hello", false)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    // The streamed one carries a card number, flagged in the request and in the answer
    // (the mock echoes it).
    let r = post(TestCluster::chat_body(
        MODEL,
        &format!("card {CARD} end"),
        true,
    ))
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("data:"));
    c.mock.set_behavior(Behavior::Normal);
    // A DLP block (before the limiter), then the third admitted request within the
    // minute: refused by rpm = 2.
    let r = post(TestCluster::chat_body(
        MODEL,
        &format!("key {AWS_KEY}"),
        false,
    ))
    .await;
    assert_eq!(r.status(), 400);
    let r = post(TestCluster::chat_body(MODEL, "hello", false)).await;
    assert_eq!(r.status(), 429);
    // A hundred model names chosen by the client, some shaped to break a label.
    let mut chosen = Vec::new();
    for i in 0..100 {
        let name = match i % 4 {
            0 => format!("model-{}", uuid::Uuid::new_v4().simple()),
            1 => format!(
                "x\"}} evil{{le=\"{i}\"}}\\{}",
                uuid::Uuid::new_v4().simple()
            ),
            2 => format!("{MODEL}-{}", uuid::Uuid::new_v4().simple()),
            _ => format!("mock:{}", uuid::Uuid::new_v4().simple()),
        };
        let r = post(TestCluster::chat_body(&name, "hello", false)).await;
        assert!(
            [403, 404].contains(&r.status().as_u16()),
            "{name}: {}",
            r.status()
        );
        chosen.push(name);
    }
    let total = 104.0;

    let node_url = c.nodes[0].ops_url("/metrics");
    // The time to first byte is recorded as the body leaves: wait for the last one.
    let text = eventually(Duration::from_secs(10), "every request timed", || async {
        let text = scrape(&c, &node_url).await;
        let s = parse(&text);
        let answer_flagged = [("rule", "card"), ("direction", "response")];
        (sum(
            &s,
            "warden_request_ttfb_seconds_count",
            &[("endpoint", CHAT)],
        ) >= total
            && sum(&s, "warden_dlp_matches_total", &answer_flagged) >= 1.0)
            .then_some(text)
    })
    .await
    .unwrap();
    let s = parse(&text);

    // warden_requests_total: four labels on every series, aliases bounded.
    let requests = select(&s, "warden_requests_total", &[]);
    for r in &requests {
        let keys: Vec<&str> = r.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["alias", "endpoint", "provider", "status"], "{r:?}");
        assert!(
            [MODEL, "other", "none"].contains(&r.labels["alias"].as_str()),
            "{r:?}"
        );
        assert!(
            ["mock", "none"].contains(&r.labels["provider"].as_str()),
            "{r:?}"
        );
        assert_eq!(r.labels["endpoint"], CHAT, "{r:?}");
    }
    assert!(requests.len() <= 6, "series stay few: {requests:#?}");
    assert_eq!(
        sum(&s, "warden_requests_total", &[("alias", "other")]),
        100.0
    );
    assert!(select(&s, "warden_requests_total", &[("alias", "other")]).len() <= 2);
    let answered = [("alias", MODEL), ("provider", "mock"), ("status", "200")];
    assert_eq!(sum(&s, "warden_requests_total", &answered), 2.0);
    let limited = [("alias", MODEL), ("provider", "none"), ("status", "429")];
    assert_eq!(sum(&s, "warden_requests_total", &limited), 1.0);
    let blocked = [("alias", MODEL), ("provider", "none"), ("status", "400")];
    assert_eq!(sum(&s, "warden_requests_total", &blocked), 1.0);

    // Limiter decisions and DLP matches.
    let allowed = [("limit", "all"), ("decision", "allowed")];
    assert_eq!(sum(&s, "warden_limiter_decisions_total", &allowed), 2.0);
    let refused = [("limit", "rpm"), ("decision", "refused")];
    assert_eq!(sum(&s, "warden_limiter_decisions_total", &refused), 1.0);
    let dlp = [
        ("rule", "aws"),
        ("action", "block"),
        ("direction", "request"),
    ];
    assert_eq!(sum(&s, "warden_dlp_matches_total", &dlp), 1.0);
    let flagged = [
        ("rule", "card"),
        ("action", "flag"),
        ("direction", "request"),
    ];
    assert_eq!(sum(&s, "warden_dlp_matches_total", &flagged), 1.0);
    let answered_flag = [
        ("rule", "card"),
        ("action", "flag"),
        ("direction", "response"),
    ];
    assert_eq!(sum(&s, "warden_dlp_matches_total", &answered_flag), 1.0);
    assert_eq!(select(&s, "warden_dlp_matches_total", &[]).len(), 3);

    // Histograms: every request counted, in buckets. The two slow answers waited 1.5 s for
    // the provider, which their time to first byte shows and their added latency leaves out.
    let chat = [("endpoint", CHAT)];
    assert_eq!(
        sum(&s, "warden_request_added_latency_seconds_count", &chat),
        total
    );
    assert_eq!(sum(&s, "warden_request_ttfb_seconds_count", &chat), total);
    let under_1s = [("endpoint", CHAT), ("le", "1")];
    assert_eq!(
        sum(&s, "warden_request_added_latency_seconds_bucket", &under_1s),
        total,
        "no request spent a second in the gateway itself"
    );
    assert_eq!(
        sum(&s, "warden_request_ttfb_seconds_bucket", &under_1s),
        total - 2.0,
        "the two slow answers took over a second to their first byte"
    );

    // Snapshot, keys, spool.
    let version = sum(&s, "warden_snapshot_version", &[]);
    assert!(version >= 1.0, "{version}");
    assert_eq!(
        sum(&s, "warden_upstream_keys", &[("provider", "mock")]),
        1.0
    );
    let out = [("provider", "mock")];
    assert_eq!(sum(&s, "warden_upstream_keys_out_of_service", &out), 0.0);
    assert_eq!(
        select(&s, "warden_audit_delivery_lag_seconds", &[]).len(),
        1
    );
    assert_eq!(select(&s, "warden_ip_blocks_manual", &[]).len(), 1);

    // Nothing the client chose, and no secret, is in the text.
    for name in &chosen {
        assert!(!text.contains(name.as_str()), "{name} in the metrics");
    }
    let secrets = [
        vkey.as_str(),
        CANARY_UPSTREAM_KEY,
        c.admin_token.as_str(),
        c.node_token.as_str(),
        AWS_KEY,
        CARD,
    ];
    for secret in secrets {
        assert!(!text.contains(secret), "a secret in the node's metrics");
    }

    // A key the provider rate limits is counted as cooling down.
    c.mock.set_behavior(Behavior::KeyError {
        key: CANARY_UPSTREAM_KEY.to_owned(),
        status: 429,
        retry_after: Some(60),
    });
    let token = c.issue_token("metrics", "*").unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "hello", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let cooling = [("provider", "mock"), ("state", "cooling_down")];
    let s = parse(&scrape(&c, &node_url).await);
    assert_eq!(
        sum(&s, "warden_upstream_keys_out_of_service", &cooling),
        1.0
    );
    c.mock.set_behavior(Behavior::Normal);

    // The control plane: the node attached, its audit events appended with their lag.
    let cp_text = eventually(
        Duration::from_secs(15),
        "node audit events appended",
        || async {
            let text = scrape(&c, &cp_metrics).await;
            let s = parse(&text);
            (sum(&s, "warden_cp_audit_node_events_total", &[]) >= total).then_some(text)
        },
    )
    .await
    .unwrap();
    let s = parse(&cp_text);
    assert_eq!(sum(&s, "warden_cp_nodes_connected", &[]), 1.0);
    assert!(sum(&s, "warden_cp_audit_ingest_lag_seconds_count", &[]) >= 1.0);
    assert!(!select(&s, "warden_cp_audit_ingest_lag_seconds_bucket", &[]).is_empty());
    assert_eq!(sum(&s, "warden_cp_ip_blocks", &[]), 0.0);
    assert!(sum(&s, "warden_cp_snapshot_version", &[]) >= version);
    for secret in secrets.into_iter().chain([token.as_str()]) {
        assert!(
            !cp_text.contains(secret),
            "a secret in the control plane's metrics"
        );
    }
    for name in &chosen {
        assert!(!cp_text.contains(name.as_str()), "{name} in the metrics");
    }

    // With the control plane gone, the node's undelivered audit event ages.
    let mut c = c;
    c.kill_cp().unwrap();
    let r = c
        .http
        .post(c.nodes[0].url(CHAT))
        .bearer_auth(&token)
        .json(&TestCluster::chat_body(MODEL, "hello", false))
        .send()
        .await
        .unwrap();
    // Its key is still cooling down: refused, and audited like any request.
    assert_eq!(r.status(), 429);
    r.text().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the delivery lag growing",
        || async {
            let s = parse(&scrape(&c, &node_url).await);
            (sum(&s, "warden_audit_delivery_lag_seconds", &[]) >= 1.0
                && sum(&s, "warden_cp_connected", &[]) == 0.0)
                .then_some(())
        },
    )
    .await
    .unwrap();
}
