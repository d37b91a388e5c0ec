//! The node's listeners under abuse and under long work, against real `warden-dp`
//! processes: a slowloris head is cut at the header-read timeout, a connection beyond the
//! cap is closed at accept, a request beyond the concurrency cap gets 503 `overloaded` in
//! the endpoint's shape, an idle keep-alive connection is closed while a stream that runs
//! longer than every connection timer completes intact, `--upstream-deadline` answers 504
//! (OpenAI and Anthropic shapes) and ends a running stream with an error event, and
//! `/metrics` and `/readyz` are served on the ops listener only.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, Options, TestCluster, eventually};
use warden_tests::mock::Behavior;

/// A cluster with one node started with `args`.
async fn node_with(args: &[&str]) -> TestCluster {
    TestCluster::start_with(
        1,
        Options {
            node_args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

async fn connect(c: &TestCluster) -> TcpStream {
    TcpStream::connect(("127.0.0.1", c.nodes[0].port))
        .await
        .unwrap()
}

/// Reads from `stream` until the peer closes it (EOF or reset) and returns how long that
/// took and what arrived; `None` if it is still open after `give_up`. With `trickle`, a
/// header line is written every second meanwhile (write errors ignored: the read decides).
async fn wait_closed(
    stream: TcpStream,
    trickle: bool,
    give_up: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let read = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return (started.elapsed(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let write = async move {
        let mut n = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if trickle {
                n += 1;
                let _ = writer
                    .write_all(format!("X-Slow-{n}: still here\r\n").as_bytes())
                    .await;
            }
        }
    };
    tokio::time::timeout(give_up, async {
        tokio::select! {
            closed = read => closed,
            () = write => unreachable!(),
        }
    })
    .await
    .ok()
}

/// Sends `GET path` on a kept-alive connection and reads one response; returns its status
/// line and body.
async fn get(stream: &mut TcpStream, path: &str) -> (String, String) {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: warden.invalid\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
            .await
            .expect("no complete response within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                let status = head.lines().next().unwrap_or_default().to_owned();
                return (status, body.to_owned());
            }
        }
    }
}

async fn metrics(c: &TestCluster) -> String {
    c.http
        .get(c.nodes[0].ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_at_the_header_read_timeout() {
    let c = node_with(&["--http-header-read-timeout", "2s"]).await;
    let mut stream = connect(&c).await;
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: warden.invalid\r\n")
        .await
        .unwrap();
    // One header line a second: each arrives well within any per-read timer, the head
    // never completes.
    let (after, got) = wait_closed(stream, true, Duration::from_secs(10))
        .await
        .expect("a slowloris connection was still open after 10 s");
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(4),
        "closed after {after:?}, not at the 2 s header-read timeout"
    );
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // A connection that sends nothing at all is closed as well.
    let (after, _) = wait_closed(connect(&c).await, false, Duration::from_secs(10))
        .await
        .expect("a silent connection was still open after 10 s");
    assert!(after <= Duration::from_secs(4), "closed after {after:?}");
    let m = metrics(&c).await;
    assert!(
        m.lines().any(|l| l.starts_with(
            "warden_http_connections_timed_out_total{listener=\"api\",timeout=\"header_read\"}"
        )),
        "{m}"
    );
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_closed_at_accept() {
    let c = node_with(&["--http-max-connections", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&c).await;
        // Answered: the node has accepted and counts it.
        let (status, _) = get(&mut s, "/healthz").await;
        assert!(status.contains(" 200 "), "{status}");
        held.push(s);
    }
    let mut extra = connect(&c).await;
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: warden.invalid\r\n\r\n")
        .await;
    let (_, got) = wait_closed(extra, false, Duration::from_secs(5))
        .await
        .expect("the connection beyond the cap was still open after 5 s");
    assert!(
        got.is_empty(),
        "the connection beyond the cap was served: {:?}",
        String::from_utf8_lossy(&got)
    );
    // The held ones still work; once one goes, a new connection is served again.
    let (status, _) = get(&mut held[0], "/healthz").await;
    assert!(status.contains(" 200 "), "{status}");
    drop(held.pop());
    eventually(Duration::from_secs(5), "a free connection slot", || async {
        let mut s = connect(&c).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: warden.invalid\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        String::from_utf8_lossy(&buf[..n])
            .starts_with("HTTP/1.1 200")
            .then_some(())
    })
    .await
    .unwrap();
    let m = metrics(&c).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("warden_http_connections_refused_total{listener=\"api\"}")),
        "{m}"
    );
}

#[tokio::test]
async fn a_request_beyond_the_concurrency_cap_gets_503_overloaded_in_the_endpoints_shape() {
    let c = node_with(&["--http-max-concurrent-requests", "2"]).await;
    let token = c.issue_token("svc-busy", "*").unwrap();
    c.mock.set_behavior(Behavior::GatedStream);
    let mut streams = Vec::new();
    for _ in 0..2 {
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "hold on", true))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "one more", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({
            "model": CLAUDE_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "one more"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    // Liveness is never refused.
    let r = c.http.get(c.nodes[0].url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The streams finish, and their slots are free again.
    c.mock.release_stream();
    for s in streams {
        let text = String::from_utf8(s.bytes().await.unwrap().to_vec()).unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "now", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics(&c).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("warden_http_requests_overloaded_total{listener=\"api\"} 2")),
        "{m}"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_a_stream_longer_than_every_timer_completes() {
    let c = node_with(&[
        "--http-header-read-timeout",
        "2s",
        "--http-idle-timeout",
        "2s",
    ])
    .await;
    // Idle after one request: closed at the idle timeout.
    let mut stream = connect(&c).await;
    let (status, _) = get(&mut stream, "/healthz").await;
    assert!(status.contains(" 200 "), "{status}");
    let (after, got) = wait_closed(stream, false, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was still open after 10 s");
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(4),
        "closed after {after:?}, not at the 2 s idle timeout"
    );
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // A stream that sends its first event, then nothing for 6 s, then the rest.
    let token = c.issue_token("svc-long", "*").unwrap();
    c.mock.set_behavior(Behavior::GatedStream);
    let started = Instant::now();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(MODEL, "a long answer", true),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    c.mock.release_stream();
    let mut text = String::from_utf8_lossy(&first).to_string();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let answer: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(answer, "mock: a long answer");
}

#[tokio::test]
async fn the_upstream_deadline_answers_504_and_ends_a_running_stream() {
    let c = node_with(&["--upstream-deadline", "2s"]).await;
    let token = c.issue_token("svc-deadline", "*").unwrap();
    c.mock
        .set_behavior(Behavior::Latency(Duration::from_secs(6)));
    let started = Instant::now();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "too slow", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_deadline", "{body}");
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({
            "model": CLAUDE_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "too slow"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "timeout_error", "{body}");

    // A stream that has begun is ended with an error event in the client's shape.
    c.mock.set_behavior(Behavior::GatedStream);
    let started = Instant::now();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "stalls", true))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stream ran {:?}",
        started.elapsed()
    );
    assert!(text.contains("\"code\":\"upstream_deadline\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    c.mock.release_stream();
    let attrs = eventually(Duration::from_secs(10), "the stream's audit event", || {
        let id = request_id.clone();
        let c = &c;
        async move {
            let out = c
                .ctl_ok(
                    &["audit", "query", "--action", "request", "--format", "json"],
                    None,
                )
                .ok()?;
            out.lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                let attrs = warden_core::audit_detail::parse(v["detail"].as_str()?);
                (attrs.get("request_id") == Some(&id)).then_some((v, attrs))
            })
        }
    })
    .await
    .unwrap();
    assert_eq!(attrs.1["outcome"], "upstream_deadline", "{attrs:?}");
    assert_eq!(attrs.0["result"], "incomplete", "{attrs:?}");
}

#[tokio::test]
async fn metrics_and_readiness_are_served_on_the_ops_listener_only() {
    let c = TestCluster::start(1).await.unwrap();
    let node = &c.nodes[0];
    let r = c.http.get(node.ops_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("warden_http_connections"), "{text}");
    let r = c.http.get(node.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    for url in [node.ops_url("/healthz"), node.url("/healthz")] {
        let r = c.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
    }
    for path in ["/metrics", "/readyz"] {
        let r = c.http.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the API port");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let logs = c.logs();
    assert!(
        logs.contains(&format!("127.0.0.1:{}", node.ops_port)) && logs.contains("ops listener"),
        "the node does not log its ops address"
    );
}

/// A plain-text connection's HTTP version is told by its first bytes: a client with
/// HTTP/2 prior knowledge (h2c) is served HTTP/2, and an HTTP/1.1 request whose first byte
/// arrives alone (`P`, as the HTTP/2 preface starts) is still read as HTTP/1.1 once the
/// rest comes.
#[tokio::test]
async fn plain_connections_serve_h2c_and_a_head_that_starts_with_a_lone_byte() {
    let c = node_with(&[]).await;
    let token = c.issue_token("svc-h2c", "*").unwrap();
    let body = TestCluster::chat_body(MODEL, "over h2c", false);
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let payload = serde_json::to_vec(&body).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: warden.invalid\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let mut stream = connect(&c).await;
    stream.write_all(&head.as_bytes()[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&head.as_bytes()[1..]).await.unwrap();
    stream.write_all(&payload).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("chat.completion"), "{text}");
}
