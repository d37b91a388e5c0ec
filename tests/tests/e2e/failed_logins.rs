//! What an unauthenticated or abusive client may cost a node (issue #12, items 1 and 2):
//! the 401 goes out from the headers alone, before a (slow, large) body is read, and the
//! connection is closed; an authenticated body that does not arrive within the body-read
//! timeout gets 408; failed logins from one address are audited as their first at once and
//! then one counted event per window, and past the limit the address gets 429 before any
//! credential lookup — another address is unaffected; two credentials in one request are
//! refused; and the counts of an open window survive a graceful stop of the node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, Options, TestCluster, eventually};

/// A connection to node `node` of `c` from the loopback address `from`.
async fn connect_from(c: &TestCluster, node: usize, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{}", c.nodes[node].port).parse().unwrap();
    socket.connect(to).await.unwrap()
}

/// The head of a POST to `path` announcing a body of `length` bytes.
fn head(path: &str, credential: Option<&str>, length: usize) -> String {
    let auth = credential.map_or_else(String::new, |c| format!("authorization: Bearer {c}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: warden.invalid\r\n{auth}content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// What a connection answered, and when.
struct Answer {
    /// Everything read until the node closed the connection (or `limit` passed).
    bytes: String,
    /// From the request head to the answer's first byte.
    first_byte: Option<Duration>,
    /// From the request head to the end of the connection, if it ended within `limit`.
    closed: Option<Duration>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.bytes
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        let head = self.bytes.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        let body = self.bytes.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

/// Sends `head` and `first` on `stream`, then one more body byte every `every` while reading
/// what the node answers, for at most `limit`.
async fn trickle(
    stream: TcpStream,
    head: &str,
    first: &[u8],
    every: Duration,
    limit: Duration,
) -> Answer {
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    write.write_all(first).await.unwrap();
    let sent = Instant::now();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut bytes = Vec::new();
    let mut first_byte = None;
    let mut closed = None;
    let mut buf = [0u8; 4096];
    while let Some(left) = limit.checked_sub(sent.elapsed()) {
        match tokio::time::timeout(left, read.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = Some(sent.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                first_byte.get_or_insert_with(|| sent.elapsed());
                bytes.extend_from_slice(&buf[..n]);
            }
            Err(_) => break,
        }
    }
    writer.abort();
    Answer {
        bytes: String::from_utf8_lossy(&bytes).into_owned(),
        first_byte,
        closed,
    }
}

/// The `auth.client` rows of the control plane's store, with their details parsed.
fn auth_rows(c: &TestCluster) -> Vec<(Value, BTreeMap<String, String>)> {
    rows(c, "auth.client")
}

fn rows(c: &TestCluster, action: &str) -> Vec<(Value, BTreeMap<String, String>)> {
    let out = c
        .ctl_ok(
            &["audit", "query", "--action", action, "--format", "json"],
            None,
        )
        .unwrap();
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let detail = warden_core::audit_detail::parse(v["detail"].as_str().unwrap_or(""));
            (v, detail)
        })
        .collect()
}

fn from_ip<'a>(
    rows: &'a [(Value, BTreeMap<String, String>)],
    ip: &str,
) -> Vec<&'a (Value, BTreeMap<String, String>)> {
    rows.iter()
        .filter(|(_, d)| d.get("client_ip").map(String::as_str) == Some(ip))
        .collect()
}

#[tokio::test]
async fn a_slow_unauthenticated_upload_gets_its_401_at_once_and_its_connection_closed() {
    let c = TestCluster::start(1).await.unwrap();
    let ten_mib = 10 * 1024 * 1024;
    // A bad credential on the OpenAI endpoint, none on the Anthropic one; both announce a
    // 10 MiB body and trickle it.
    for (path, credential) in [
        ("/v1/chat/completions", Some("wk_not-a-real-key")),
        ("/v1/messages", None),
    ] {
        let stream = connect_from(&c, 0, [127, 0, 0, 1]).await;
        let a = trickle(
            stream,
            &head(path, credential, ten_mib),
            b"{\"model\":",
            Duration::from_millis(100),
            Duration::from_secs(8),
        )
        .await;
        assert_eq!(a.status(), 401, "{path}: {}", a.bytes);
        let first = a.first_byte.unwrap();
        assert!(
            first < Duration::from_secs(2),
            "{path}: 401 after {first:?}"
        );
        let closed = a.closed.expect("the connection stayed open");
        assert!(
            closed < Duration::from_secs(4),
            "{path}: closed after {closed:?}"
        );
        assert_eq!(a.header("connection").as_deref(), Some("close"), "{path}");
        let body = a.json();
        if path == "/v1/messages" {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "authentication_error", "{body}");
        } else {
            assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
        }
    }
    // The node is fine, and a client with a credential still uploads its body.
    let token = c.issue_token("uploader", "*").unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_authenticated_body_slower_than_the_body_timeout_gets_408() {
    let c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--http-body-read-timeout".into(), "2s".into()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("slow-uploader", "*").unwrap();
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let stream = connect_from(&c, 0, [127, 0, 0, 1]).await;
        let a = trickle(
            stream,
            &head(path, Some(&token), 100_000),
            b"{\"model\":",
            Duration::from_millis(300),
            Duration::from_secs(8),
        )
        .await;
        assert_eq!(a.status(), 408, "{path}: {}", a.bytes);
        let first = a.first_byte.unwrap();
        assert!(
            first >= Duration::from_millis(1800) && first < Duration::from_secs(5),
            "{path}: 408 after {first:?}"
        );
        assert!(a.closed.is_some(), "{path}: the connection stayed open");
        let body = a.json();
        if path == "/v1/messages" {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        } else {
            assert_eq!(body["error"]["code"], "request_timeout", "{body}");
        }
    }
    // A body that arrives in time is served.
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "in time", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Audited like any refused request: by whom, with the status.
    let timed_out = eventually(
        Duration::from_secs(10),
        "the 408s in the audit log",
        || async {
            let rows = rows(&c, "request");
            let hits: Vec<_> = rows
                .into_iter()
                .filter(|(_, d)| d.get("status").map(String::as_str) == Some("408"))
                .collect();
            (hits.len() == 2).then_some(hits)
        },
    )
    .await
    .unwrap();
    for (row, detail) in timed_out {
        assert_eq!(row["actor"], "jwt:slow-uploader", "{row}");
        assert_eq!(detail["error"], "request_timeout", "{row}");
    }
}

/// The failed-login window of the counting test: long enough for its 102 requests on a
/// loaded machine.
const WINDOW: Duration = Duration::from_secs(8);

#[tokio::test]
async fn failed_logins_are_audited_first_then_counted_and_throttled_past_the_limit() {
    let c = TestCluster::start_with(
        1,
        Options {
            node_args: vec![
                "--failed-login-window".into(),
                format!("{}s", WINDOW.as_secs()),
                // The 100 failures from one address stay below the address block (50 by
                // default, tested in `ip_blocks`): this test is about the 429 throttle.
                "--ip-block-threshold".into(),
                "1000".into(),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("neighbour", "*").unwrap();
    let body = TestCluster::chat_body(MODEL, "x", false);
    let started = Instant::now();
    let mut first_request_id = String::new();
    let mut statuses = Vec::new();
    for i in 0..100 {
        // A different wrong credential each time: the count is per address, not per
        // credential.
        let r = c.chat(0, &format!("not-a-token-{i}"), &body).await.unwrap();
        let status = r.status().as_u16();
        if i == 0 {
            first_request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        }
        if i >= 20 {
            assert_eq!(status, 429, "request {i}");
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=WINDOW.as_secs()).contains(&wait), "retry-after {wait}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "too_many_failed_logins", "{v}");
        }
        statuses.push(status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    // A valid credential from the same address is refused too, before it is looked up.
    let r = c.chat(0, &token, &body).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(c.mock.requests().is_empty(), "nothing reached the provider");
    // Another address is unaffected: its failure is a 401, its credential works.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = c.nodes[0].url("/v1/chat/completions");
    let r = other
        .post(&url)
        .bearer_auth("not-a-token-either")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = other
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < WINDOW - Duration::from_secs(1),
        "the test must stay within one window; took {:?}",
        started.elapsed()
    );

    // The first failure is in the store at once (before the window closes), with its
    // request id and address.
    let first = eventually(WINDOW, "the first failure's row", || async {
        let rows = auth_rows(&c);
        let first = rows.into_iter().find(|(_, d)| {
            d.get("request_id").map(String::as_str) == Some(first_request_id.as_str())
        })?;
        Some(first)
    })
    .await
    .unwrap();
    assert!(started.elapsed() < WINDOW, "not at once");
    assert_eq!(first.1["client_ip"], "127.0.0.1", "{:?}", first.0);
    assert_eq!(first.1["reason"], "jwt_malformed", "{:?}", first.0);
    assert!(!first.1.contains_key("count"), "{:?}", first.0);
    assert!(
        first.0["actor"].as_str().unwrap().starts_with("fp:"),
        "{}",
        first.0
    );
    // When the window closes, one more row carries the count: 99 failures after the first
    // and the refused valid credential, 81 of them refused unchecked.
    let counted = eventually(
        WINDOW + Duration::from_secs(10),
        "the counted row",
        || async {
            let rows = auth_rows(&c);
            let mine = from_ip(&rows, "127.0.0.1");
            (mine.len() >= 2).then(|| rows.clone())
        },
    )
    .await
    .unwrap();
    // Past another window nothing more comes: exactly two rows for the address.
    tokio::time::sleep(WINDOW + Duration::from_secs(1)).await;
    let rows = auth_rows(&c);
    let mine = from_ip(&rows, "127.0.0.1");
    assert_eq!(mine.len(), 2, "{counted:?}");
    let count = mine
        .iter()
        .find(|(_, d)| d.contains_key("count"))
        .expect("a row with the count");
    assert_eq!(count.1["count"], "100", "{:?}", count.0);
    assert_eq!(count.1["throttled"], "81", "{:?}", count.0);
    assert_eq!(count.1["reason"], "jwt_malformed", "{:?}", count.0);
    assert_eq!(count.0["actor"], "-");
    assert_eq!(from_ip(&rows, "127.0.0.2").len(), 1, "{rows:?}");
    // The failures are not request events as well.
    let requests = rows_for_requests(&c);
    assert!(
        from_ip(&requests, "127.0.0.1").is_empty(),
        "failed logins were audited as requests: {requests:?}"
    );
    assert_eq!(from_ip(&requests, "127.0.0.2").len(), 1, "{requests:?}");
}

fn rows_for_requests(c: &TestCluster) -> Vec<(Value, BTreeMap<String, String>)> {
    rows(c, "request")
}

#[tokio::test]
async fn two_credentials_in_one_request_are_refused() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("twice", "*").unwrap();
    let other = c.issue_token("someone-else", "*").unwrap();
    let url = c.nodes[0].url("/v1/chat/completions");
    let body = TestCluster::chat_body(MODEL, "x", false);
    let bearer = |t: &str| format!("Bearer {t}");
    let cases: [(&str, Vec<(&str, String)>); 4] = [
        (
            "two Authorization headers, the valid one first",
            vec![
                ("authorization", bearer(&token)),
                ("authorization", bearer("not-a-token")),
            ],
        ),
        (
            "two Authorization headers, both valid",
            vec![
                ("authorization", bearer(&token)),
                ("authorization", bearer(&other)),
            ],
        ),
        (
            "two x-api-key headers",
            vec![("x-api-key", token.clone()), ("x-api-key", other.clone())],
        ),
        (
            "Authorization and x-api-key that differ",
            vec![
                ("authorization", bearer(&token)),
                ("x-api-key", other.clone()),
            ],
        ),
    ];
    for (name, headers) in &cases {
        let mut request = c.http.post(&url).json(&body);
        for (n, v) in headers {
            request = request.header(*n, v);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key", "{name}: {v}");
    }
    // The Anthropic endpoint answers in its shape.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .header("x-api-key", &token)
        .header("x-api-key", &token)
        .json(&serde_json::json!({"model": CLAUDE_MODEL, "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    // The same credential in both headers is one credential.
    let r = c
        .http
        .post(&url)
        .header("authorization", bearer(&token))
        .header("x-api-key", &token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.mock.requests().len(),
        1,
        "only the last request was served"
    );
    let logs = eventually(Duration::from_secs(5), "the reason in the log", || async {
        let l = c.logs();
        l.contains("ambiguous_credential").then_some(l)
    })
    .await
    .unwrap();
    assert!(!logs.contains(&token), "a credential reached the logs");
}

#[tokio::test]
async fn the_counts_of_an_open_window_survive_a_graceful_stop() {
    // The default window (a minute): the node stops long before it closes.
    let mut c = TestCluster::start(1).await.unwrap();
    let body = TestCluster::chat_body(MODEL, "x", false);
    for i in 0..5 {
        let r = c.chat(0, &format!("not-a-token-{i}"), &body).await.unwrap();
        assert_eq!(r.status(), 401);
    }
    eventually(
        Duration::from_secs(5),
        "the first failure's row",
        || async { (from_ip(&auth_rows(&c), "127.0.0.1").len() == 1).then_some(()) },
    )
    .await
    .unwrap();
    // SIGTERM: the node drains, writing the open window's count to its spool...
    let pid = c.nodes[0].child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    loop {
        if c.nodes[0].child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the node did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and delivers it once it is back.
    c.restart_node(0).unwrap();
    c.wait_node_ready(0).await.unwrap();
    let rows = eventually(Duration::from_secs(10), "the counted row", || async {
        let rows = auth_rows(&c);
        (from_ip(&rows, "127.0.0.1").len() == 2).then_some(rows)
    })
    .await
    .unwrap();
    let mine = from_ip(&rows, "127.0.0.1");
    let count = mine
        .iter()
        .find(|(_, d)| d.contains_key("count"))
        .expect("a row with the count");
    assert_eq!(count.1["count"], "4", "{:?}", count.0);
    assert_eq!(count.1["throttled"], "0", "{:?}", count.0);
}
