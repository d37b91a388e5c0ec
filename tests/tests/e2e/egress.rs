//! The node's egress policy (`data-plane/src/egress.rs`), against real processes: an
//! upstream whose name resolves to a cloud-metadata address (directly, or among loopback
//! ones: DNS rebinding), or to loopback without the allow-list naming it, is answered 502
//! `egress_denied`, audited, and nothing connects (a listener counts connections); a host
//! the allow-list names is served; `provider add` refuses link-local and metadata literals;
//! and an egress proxy sees every upstream request. No packet leaves loopback: names are
//! `.invalid` ones mapped by the node's test-only `--egress-test-resolve`, and the proxy
//! relays only to loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use warden_tests::cluster::{
    CANARY_ANTHROPIC_KEY, CANARY_UPSTREAM_KEY, CLAUDE_MODEL, MODEL, Options, TestCluster,
    eventually,
};
use warden_tests::egress_proxy::TestProxy;

/// A listener on 127.0.0.1 that counts the connections it accepts (and closes them).
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// Adds provider `name` at `base_url` with one key and a model `<name>-model`.
fn add_provider(c: &TestCluster, name: &str, base_url: &str, key: &str) {
    c.ctl_ok(
        &[
            "provider",
            "add",
            name,
            "--format",
            "openai",
            "--base-url",
            base_url,
        ],
        None,
    )
    .unwrap();
    c.ctl_ok(&["provider", "key", "add", name], Some(key))
        .unwrap();
    let model = format!("{name}-model");
    c.ctl_ok(&["model", "add", &model, "--provider", name], None)
        .unwrap();
}

/// A chat completion for `model` on `node`, once the node knows the model: its status and
/// JSON body.
async fn chat(c: &TestCluster, node: usize, token: &str, model: &str) -> (u16, Value) {
    eventually(
        Duration::from_secs(15),
        "the node to know the model",
        || async {
            let r = c
                .chat(node, token, &TestCluster::chat_body(model, "hello", false))
                .await
                .ok()?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            (body["error"]["code"] != "model_not_found").then_some((status, body))
        },
    )
    .await
    .unwrap()
}

fn resolve_args(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(name, ip)| ["--egress-test-resolve".to_owned(), format!("{name}={ip}")])
        .collect()
}

#[tokio::test]
async fn metadata_rebinding_and_unlisted_loopback_upstreams_are_refused_before_connecting() {
    let (port, connections) = counting_listener().await;
    let mut c = TestCluster::start_with(
        0,
        Options {
            strict_egress: true,
            node_args: resolve_args(&[
                ("metadata.test.invalid", "169.254.169.254"),
                ("rebind.test.invalid", "127.0.0.1"),
                ("rebind.test.invalid", "169.254.169.254"),
                ("loop.test.invalid", "127.0.0.1"),
            ]),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let keys = [
        (
            "meta",
            "https://metadata.test.invalid/v1",
            "sk-canary-EGRESS-meta-91c2",
        ),
        (
            "rebind",
            &*format!("https://rebind.test.invalid:{port}/v1"),
            "sk-canary-EGRESS-rebind-77d0",
        ),
        (
            "loop",
            &*format!("https://loop.test.invalid:{port}/v1"),
            "sk-canary-EGRESS-loop-3a5e",
        ),
        (
            "local",
            &*c.mock.base_url().replace("127.0.0.1", "localhost"),
            "sk-canary-EGRESS-local-5b18",
        ),
    ];
    for (name, base_url, key) in &keys {
        add_provider(&c, name, base_url, key);
    }
    // Node 0: no allow-list, no loopback. Node 1: the allow-list names localhost.
    c.add_node().await.unwrap();
    c.options
        .node_args
        .extend(["--egress-allow".to_owned(), "localhost".to_owned()]);
    c.add_node().await.unwrap();
    let token = c.issue_token("egress", "*").unwrap();

    for model in [
        "meta-model",
        "rebind-model",
        "loop-model",
        "local-model",
        MODEL,
    ] {
        let (status, body) = chat(&c, 0, &token, model).await;
        assert_eq!(status, 502, "{model}: {body}");
        assert_eq!(body["error"]["code"], "egress_denied", "{model}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("169.254") && !message.contains("127.0.0.1"),
            "{message}"
        );
    }
    // The Anthropic endpoint answers in its own shape.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"model": CLAUDE_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("egress policy"),
        "{v}"
    );

    // Named on node 1's allow-list, localhost is served; 127.0.0.1 is not named there.
    let (status, body) = chat(&c, 1, &token, "local-model").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = chat(&c, 1, &token, MODEL).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "egress_denied", "{body}");

    // Nothing connected to the rebinding name's loopback address; the mock saw only node
    // 1's allowed request.
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    let seen = c.mock.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer sk-canary-EGRESS-local-5b18")
    );

    // Audited as refused requests with the reason.
    let refused = eventually(
        Duration::from_secs(15),
        "egress_denied audit rows",
        || async {
            let out = c
                .ctl_ok(
                    &["audit", "query", "--action", "request", "--format", "json"],
                    None,
                )
                .ok()?;
            let n = out
                .lines()
                .filter(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    warden_core::audit_detail::parse(v["detail"].as_str().unwrap())
                        .get("error")
                        .is_some_and(|e| e == "egress_denied")
                })
                .count();
            (n >= 7).then_some(n)
        },
    )
    .await
    .unwrap();
    assert_eq!(refused, 7);
    for key in [CANARY_UPSTREAM_KEY, CANARY_ANTHROPIC_KEY]
        .into_iter()
        .chain(keys.iter().map(|k| k.2))
    {
        let hits = c.find_everywhere(key);
        assert!(hits.is_empty(), "{key}: {hits:?}");
    }
    let metrics = c
        .http
        .get(c.nodes[0].ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["link_local_or_metadata", "loopback"] {
        assert!(
            metrics.contains(&format!(
                "warden_egress_denied_total{{reason=\"{reason}\"}}"
            )),
            "{metrics}"
        );
    }
    let logs = c.logs();
    assert!(
        logs.contains("resolves to 169.254.169.254, a link-local or cloud-metadata address"),
        "the node's log names the refused address"
    );
}

#[tokio::test]
async fn provider_add_refuses_link_local_and_metadata_literals_at_once() {
    let c = TestCluster::start(0).await.unwrap();
    for base_url in [
        "http://169.254.169.254/v1",
        "https://169.254.169.254/v1",
        "https://[fd00:ec2::254]/v1",
        "https://[fe80::1]/v1",
        "https://100.100.100.200/v1",
        "https://2852039166/v1",
    ] {
        let out = c
            .ctl(
                &[
                    "provider",
                    "add",
                    "imds",
                    "--format",
                    "openai",
                    "--base-url",
                    base_url,
                ],
                None,
            )
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{base_url} was accepted");
        assert!(stderr.contains("base_url"), "{base_url}: {stderr}");
        assert!(
            stderr.contains("link-local, cloud-metadata") || stderr.contains("four decimal"),
            "{base_url}: {stderr}"
        );
    }
    // A private literal is the node's to judge.
    c.ctl_ok(
        &[
            "provider",
            "add",
            "lan",
            "--format",
            "openai",
            "--base-url",
            "https://10.0.0.7/v1",
        ],
        None,
    )
    .unwrap();
    let listed = c.ctl_ok(&["provider", "list"], None).unwrap();
    assert!(
        listed.contains("lan") && !listed.contains("imds"),
        "{listed}"
    );
}

#[tokio::test]
async fn upstream_requests_go_through_the_egress_proxy_with_its_credential() {
    let proxy = TestProxy::start().await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let credentials = secrets.path().join("proxy-credentials");
    std::fs::write(&credentials, "warden:proxy-pass-canary-6f0e\n").unwrap();
    let mut node_args = vec![
        "--egress-proxy".to_owned(),
        proxy.url(),
        "--egress-proxy-credentials-file".to_owned(),
        credentials.display().to_string(),
    ];
    node_args.extend(resolve_args(&[
        ("metadata.test.invalid", "169.254.169.254"),
        ("tunnel.test.invalid", "127.0.0.1"),
    ]));
    let mut c = TestCluster::start_with(
        0,
        Options {
            node_args,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mock_port = c
        .mock
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1")
        .to_owned();
    add_provider(
        &c,
        "tunnel",
        &format!("https://tunnel.test.invalid:{mock_port}/v1"),
        "sk-canary-EGRESS-tunnel-0c4d",
    );
    add_provider(
        &c,
        "meta",
        "https://metadata.test.invalid/v1",
        "sk-canary-EGRESS-meta-1e2f",
    );
    c.add_node().await.unwrap();
    let token = c.issue_token("egress-proxy", "*").unwrap();

    // Plain http: an absolute-URI request to the proxy, with the proxy credential.
    let (status, body) = chat(&c, 0, &token, MODEL).await;
    assert_eq!(status, 200, "{body}");
    let expected_auth = format!(
        "proxy-authorization: basic {}",
        base64::engine::general_purpose::STANDARD.encode("warden:proxy-pass-canary-6f0e")
    )
    .to_lowercase();
    let heads = proxy.heads();
    let plain = heads
        .iter()
        .find(|h| {
            h.starts_with(&format!(
                "POST http://127.0.0.1:{mock_port}/v1/chat/completions "
            ))
        })
        .unwrap_or_else(|| panic!("the proxy saw no absolute-URI request: {heads:?}"));
    assert!(plain.to_lowercase().contains(&expected_auth), "{plain}");
    assert_eq!(c.mock.requests().len(), 1);

    // https: a CONNECT for the name (which the node leaves to the proxy to resolve); this
    // proxy relays only to loopback, so the request fails — but it went to the proxy.
    let (status, body) = chat(&c, 0, &token, "tunnel-model").await;
    assert_eq!(status, 502, "{body}");
    let heads = proxy.heads();
    let connect = heads
        .iter()
        .find(|h| h.starts_with(&format!("CONNECT tunnel.test.invalid:{mock_port} ")))
        .unwrap_or_else(|| panic!("the proxy saw no CONNECT: {heads:?}"));
    assert!(connect.to_lowercase().contains(&expected_auth), "{connect}");

    // A name that resolves to a metadata address here is refused before the proxy hears of it.
    let (status, body) = chat(&c, 0, &token, "meta-model").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "egress_denied", "{body}");
    assert!(
        !proxy
            .heads()
            .iter()
            .any(|h| h.contains("metadata.test.invalid")),
        "{:?}",
        proxy.heads()
    );
    let hits = c.find_everywhere("proxy-pass-canary-6f0e");
    assert!(hits.is_empty(), "{hits:?}");
}
