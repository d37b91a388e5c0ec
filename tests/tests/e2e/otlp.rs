//! Traces over OTLP against a receiver the test starts ([`OtlpReceiver`], a real tonic
//! `TraceService`): a node's request span with its `auth`, `limiter` and `upstream`
//! children and the control plane's gRPC spans arrive with the expected names and
//! attributes, and no credential, key, prompt or client trace header in any of them; the
//! provider sees a `traceparent` only from the node that opted in, naming that node's own
//! upstream span, never the client's; with tracing off nothing is exported, even with the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at the receiver; and SIGTERM exports the
//! spans still queued before the node exits.

use std::time::Duration;

use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster, eventually};
use warden_tests::otlp::{OtlpReceiver, ReceivedSpan};

/// What a client sends as its own trace context: never used, never forwarded.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Prompt text: must never reach a span.
const PROMPT: &str = "CANARY-PROMPT-5b2e the quarterly secret plans";
/// The collector's API key, given to the control plane in WARDEN_OTLP_HEADERS.
const COLLECTOR_KEY: &str = "collector-key-CANARY-91f3";

/// Sends one chat completion with the client's own trace headers; returns the request id.
async fn chat_with_client_trace(
    c: &TestCluster,
    node: usize,
    token: &str,
    model: &str,
) -> (u16, String) {
    let r = c
        .http
        .post(c.nodes[node].url("/v1/chat/completions"))
        .bearer_auth(token)
        .header("traceparent", CLIENT_PARENT)
        .header("tracestate", "vendor=CANARY-STATE")
        .header("baggage", "user=CANARY-BAGGAGE")
        .json(&TestCluster::chat_body(model, PROMPT, false))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    (r.status().as_u16(), id)
}

/// The request span with `request_id`, once exported.
async fn request_span(receiver: &OtlpReceiver, request_id: &str) -> ReceivedSpan {
    eventually(Duration::from_secs(20), "the request span", || async {
        receiver.spans().into_iter().find(|s| {
            s.name == "request"
                && s.attributes.get("warden.request_id").map(String::as_str) == Some(request_id)
        })
    })
    .await
    .unwrap()
}

/// The spans of `trace_id` named `name`.
fn named(receiver: &OtlpReceiver, trace_id: &str, name: &str) -> Vec<ReceivedSpan> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id && s.name == name)
        .collect()
}

#[tokio::test]
async fn spans_reach_the_collector_without_secrets_and_providers_get_only_the_nodes_own_context() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let mut c = TestCluster::start_with(
        1,
        Options {
            node_args: vec![
                "--otlp-endpoint".to_owned(),
                endpoint.clone(),
                "--otlp-export-interval".to_owned(),
                "200ms".to_owned(),
            ],
            cp_env: vec![
                ("WARDEN_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
                ("WARDEN_OTLP_EXPORT_INTERVAL".to_owned(), "200ms".to_owned()),
                (
                    "WARDEN_OTLP_HEADERS".to_owned(),
                    format!("x-collector-key={COLLECTOR_KEY}"),
                ),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    // Node 1 sends its trace context to providers; node 0 does not.
    c.options
        .node_args
        .push("--upstream-trace-context".to_owned());
    c.add_node().await.unwrap();
    let token = c.issue_token("svc-traced", "*").unwrap();

    // Node 0: traced, but the provider gets no trace header at all.
    let (status, id0) = chat_with_client_trace(&c, 0, &token, MODEL).await;
    assert_eq!(status, 200);
    let seen = c.mock.requests().pop().unwrap();
    for name in ["traceparent", "tracestate", "baggage"] {
        assert!(
            !seen.headers.contains_key(name),
            "node 0 sent {name}: {:?}",
            seen.headers
        );
    }

    // Node 1: the provider gets the node's own context, not the client's.
    let (status, id1) = chat_with_client_trace(&c, 1, &token, MODEL).await;
    assert_eq!(status, 200);
    let seen = c.mock.requests().pop().unwrap();
    let sent = seen
        .headers
        .get("traceparent")
        .expect("node 1 opted in: a traceparent")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!sent.contains(CLIENT_TRACE_ID), "{sent}");
    assert!(
        !seen.headers.contains_key("tracestate"),
        "{:?}",
        seen.headers
    );
    assert!(!seen.headers.contains_key("baggage"), "{:?}", seen.headers);

    // Refused requests are traced too, the client's model string kept out.
    let (status, id_other) =
        chat_with_client_trace(&c, 0, &token, "evil-model-CANARY-MODEL-ab12").await;
    assert_eq!(status, 404);

    for (node, id) in [(0, &id0), (1, &id1)] {
        let request = request_span(&receiver, id).await;
        assert_eq!(request.service, "warden-dp", "{request:?}");
        assert_ne!(
            request.trace_id, CLIENT_TRACE_ID,
            "the client chose the trace"
        );
        assert!(
            request.parent_span_id.is_empty(),
            "the client's traceparent became the parent: {request:?}"
        );
        let a = &request.attributes;
        assert_eq!(a["http.request.method"], "POST", "{request:?}");
        assert_eq!(a["http.route"], "/v1/chat/completions", "{request:?}");
        assert_eq!(a["warden.model"], MODEL, "{request:?}");
        assert_eq!(a["warden.provider"], "mock", "{request:?}");
        assert_eq!(a["http.response.status_code"], "200", "{request:?}");
        let added: f64 = a["warden.added_latency_ms"].parse().unwrap();
        let total: f64 = a["warden.latency_ms"].parse().unwrap();
        assert!(added >= 0.0 && added <= total, "{request:?}");
        // The children, in the same trace under the request span.
        let children = eventually(Duration::from_secs(10), "the child spans", || async {
            let found: Vec<ReceivedSpan> = ["auth", "limiter", "upstream"]
                .iter()
                .filter_map(|n| named(&receiver, &request.trace_id, n).into_iter().next())
                .collect();
            (found.len() == 3).then_some(found)
        })
        .await
        .unwrap();
        for child in &children {
            assert_eq!(child.parent_span_id, request.span_id, "{child:?}");
        }
        let upstream = &children[2];
        assert_eq!(upstream.attributes["warden.provider"], "mock");
        assert_eq!(upstream.attributes["warden.served_by"], "mock");
        if node == 1 {
            // The W3C traceparent the provider got names this node's upstream span.
            assert_eq!(
                sent,
                format!("00-{}-{}-01", request.trace_id, upstream.span_id)
            );
        }
    }
    let other = request_span(&receiver, &id_other).await;
    assert_eq!(other.attributes["warden.model"], "other", "{other:?}");
    assert_eq!(other.attributes["http.response.status_code"], "404");
    assert!(other.attributes.contains_key("warden.error"), "{other:?}");

    // The control plane's gRPC spans, named by service and method.
    let issue = eventually(Duration::from_secs(20), "the IssueToken span", || async {
        receiver.spans().into_iter().find(|s| {
            s.service == "warden-cp"
                && s.attributes.get("rpc.method").map(String::as_str) == Some("IssueToken")
        })
    })
    .await
    .unwrap();
    assert_eq!(issue.name, "warden.admin.v1.Admin/IssueToken");
    assert_eq!(issue.attributes["rpc.service"], "warden.admin.v1.Admin");
    assert_eq!(issue.attributes["rpc.system"], "grpc");
    // The collector's header went with the control plane's exports, and nowhere else.
    assert!(
        receiver.metadata().iter().any(|m| m
            .iter()
            .any(|(k, v)| k == "x-collector-key" && v == COLLECTOR_KEY)),
        "the collector header was not sent"
    );
    assert!(c.find_everywhere(COLLECTOR_KEY).is_empty());

    // Nothing secret, nothing of the client's, in any span of any export.
    let dump = receiver.dump();
    for (what, needle) in [
        ("the client's token", token.as_str()),
        ("the upstream key", CANARY_UPSTREAM_KEY),
        ("the node credential", c.node_token.as_str()),
        ("the admin credential", c.admin_token.as_str()),
        ("the prompt", "CANARY-PROMPT"),
        ("the client's model string", "evil-model-CANARY"),
        ("the client's trace id", CLIENT_TRACE_ID),
        ("the client's tracestate", "CANARY-STATE"),
        ("the client's baggage", "CANARY-BAGGAGE"),
        ("the client's address", "127.0.0.1"),
        ("the collector key", COLLECTOR_KEY),
    ] {
        assert!(!dump.contains(needle), "{what} in an exported span");
    }
    println!(
        "{} spans in {} exports; traceparent sent to the provider: {sent}",
        receiver.spans().len(),
        receiver.exports()
    );
}

#[tokio::test]
async fn with_tracing_off_nothing_is_exported_and_providers_get_no_trace_header() {
    let receiver = OtlpReceiver::start().await.unwrap();
    // The standard variable alone must not turn tracing on.
    let standard = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.endpoint(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    let c = TestCluster::start_with(
        1,
        Options {
            cp_env: standard.clone(),
            node_env: standard,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-untraced", "*").unwrap();
    for _ in 0..3 {
        let (status, _) = chat_with_client_trace(&c, 0, &token, MODEL).await;
        assert_eq!(status, 200);
    }
    for seen in c.mock.requests() {
        for name in ["traceparent", "tracestate", "baggage"] {
            assert!(
                !seen.headers.contains_key(name),
                "{name}: {:?}",
                seen.headers
            );
        }
    }
    // Past several export intervals: still nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.exports(), 0, "{:?}", receiver.spans());
}

#[tokio::test]
async fn the_trace_context_setting_without_an_endpoint_is_refused_at_start() {
    let out = std::process::Command::new(warden_tests::cluster::bin("warden-dp").unwrap())
        .arg("--upstream-trace-context")
        .env_clear()
        .env("WARDEN_NODE_TOKEN", "wn_x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--upstream-trace-context needs --otlp-endpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_exports_the_spans_still_queued_before_the_node_exits() {
    let receiver = OtlpReceiver::start().await.unwrap();
    // An hour between exports: only the flush at shutdown can send the span in time.
    let mut c = TestCluster::start_with(
        1,
        Options {
            node_args: vec![
                "--otlp-endpoint".to_owned(),
                receiver.endpoint(),
                "--otlp-export-interval".to_owned(),
                "1h".to_owned(),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-flush", "*").unwrap();
    let (status, id) = chat_with_client_trace(&c, 0, &token, MODEL).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.exports(), 0, "exported before the interval");
    crate::graceful::signal(c.nodes[0].child.id(), "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exited = loop {
        if let Some(status) = c.nodes[0].child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exited.success(), "{exited}");
    let span = receiver
        .spans()
        .into_iter()
        .find(|s| s.attributes.get("warden.request_id") == Some(&id));
    assert!(
        span.is_some(),
        "the queued span was not exported at SIGTERM"
    );
}
