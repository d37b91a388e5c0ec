//! Client access (issue 14, items 1 and 2): CORS from the gateway policy (preflights
//! answered without a credential, allow headers on actual answers — errors included — only
//! for allowed origins, a wildcard only when set and then audited, never with
//! credentials), a credential's own origin list enforced on the actual request, IP
//! allow-lists (global before the credential, per credential after it; IPv4 and IPv6), and
//! `X-Forwarded-For` believed only from a trusted proxy, then recorded as the audit's
//! `client_ip`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, Options, TestCluster, eventually};

const APP: &str = "https://app.example";
const OTHER: &str = "https://other.example";
const EVIL: &str = "https://evil.example";

/// A client whose connections come from loopback address `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .reduce(|a, b| format!("{a}, {b}"))
}

/// A CORS preflight for `path` from `origin`.
async fn preflight(
    c: &TestCluster,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    c.http
        .request(Method::OPTIONS, c.nodes[0].url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap()
}

/// A chat completion from `client` with `credential` and, if any, `Origin: origin`.
async fn chat_from(
    c: &TestCluster,
    client: &reqwest::Client,
    credential: &str,
    origin: Option<&str>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = client
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(credential)
        .json(&TestCluster::chat_body(MODEL, "hello", false));
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    for (n, v) in extra {
        r = r.header(*n, *v);
    }
    r.send().await.unwrap()
}

/// The `request` audit rows whose detail has `error` = `error`, details parsed.
async fn request_rows(
    c: &TestCluster,
    error: &str,
    at_least: usize,
) -> Vec<BTreeMap<String, String>> {
    eventually(Duration::from_secs(15), "request audit rows", || async {
        let out = c
            .ctl_ok(
                &["audit", "query", "--action", "request", "--format", "json"],
                None,
            )
            .ok()?;
        let rows: Vec<BTreeMap<String, String>> = out
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                warden_core::audit_detail::parse(v["detail"].as_str().unwrap_or(""))
            })
            .filter(|d| d.get("error").map(String::as_str) == Some(error))
            .collect();
        (rows.len() >= at_least).then_some(rows)
    })
    .await
    .unwrap()
}

fn vkey(c: &TestCluster, args: &[&str]) -> String {
    let mut all = vec!["vkey", "create", "--name", "client-access", "--models", "*"];
    all.extend_from_slice(args);
    c.ctl_ok(&all, None).unwrap()
}

#[tokio::test]
async fn cors_is_off_by_default_and_then_follows_the_gateway_policy() {
    let c = TestCluster::start(1).await.unwrap();
    let key = vkey(&c, &[]);
    // Off: a preflight is an OPTIONS like any other (405), and answers carry no CORS.
    let r = preflight(&c, "/v1/chat/completions", APP, "POST", "authorization").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = chat_from(&c, &c.http, &key, Some(APP), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    c.ctl_ok(
        &[
            "policy",
            "set",
            "--global",
            "--cors-origin",
            APP,
            "--cors-max-age",
            "600",
            "--cors-expose-header",
            "x-request-id",
        ],
        None,
    )
    .unwrap();
    // The limits were left alone (access flags only).
    let shown = c.ctl_ok(&["policy", "get", "--global"], None).unwrap();
    assert!(
        shown.contains("allowed origins:") && shown.contains(APP),
        "{shown}"
    );

    // Allowed preflight: 204 with the allow headers, without a credential.
    let r = eventually(Duration::from_secs(10), "CORS to apply", || async {
        let r = preflight(
            &c,
            "/v1/chat/completions",
            APP,
            "POST",
            "authorization, content-type",
        )
        .await;
        (r.status() == StatusCode::NO_CONTENT).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(
        header(&r, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    assert_eq!(header(&r, "access-control-max-age").as_deref(), Some("600"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert!(header(&r, "vary").unwrap().contains("Origin"));
    // Every API route answers preflights, count_tokens and models included.
    for path in [
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
    ] {
        let r = preflight(&c, path, APP, "POST", "x-api-key, anthropic-version").await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
    }

    // Refused preflights: another origin, a method or a header not allowed; 403 in the
    // route's error shape, no allow headers.
    for (path, origin, method, headers) in [
        ("/v1/chat/completions", EVIL, "POST", "authorization"),
        ("/v1/chat/completions", APP, "DELETE", "authorization"),
        (
            "/v1/chat/completions",
            APP,
            "POST",
            "authorization, x-secret",
        ),
        ("/v1/messages", EVIL, "POST", "x-api-key"),
    ] {
        let r = preflight(&c, path, origin, method, headers).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{origin} {method} {headers}"
        );
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let body: Value = r.json().await.unwrap();
        if path == "/v1/messages" {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "permission_error", "{body}");
        } else {
            assert_eq!(body["error"]["code"], "origin_not_allowed", "{body}");
        }
    }

    // Actual requests: the allow headers for the allowed origin only, errors included.
    let r = chat_from(&c, &c.http, &key, Some(APP), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&r, "access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
    assert!(header(&r, "vary").unwrap().contains("Origin"));
    let r = chat_from(&c, &c.http, &key, Some(EVIL), &[]).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "CORS is the browser's to enforce"
    );
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = chat_from(&c, &c.http, "wk_not-a-real-key", Some(APP), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
}

#[tokio::test]
async fn a_wildcard_origin_must_be_explicit_is_audited_and_never_goes_with_credentials() {
    let c = TestCluster::start(1).await.unwrap();
    c.ctl_ok(&["policy", "set", "--global", "--cors-origin", APP], None)
        .unwrap();
    let r = eventually(Duration::from_secs(10), "CORS to apply", || async {
        let r = preflight(&c, "/v1/models", APP, "GET", "authorization").await;
        (r.status() == StatusCode::NO_CONTENT).then_some(())
    })
    .await;
    r.unwrap();
    // A listed origin is no wildcard.
    let r = preflight(&c, "/v1/models", EVIL, "GET", "authorization").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let out = c
        .ctl(
            &[
                "policy",
                "set",
                "--global",
                "--cors-origin",
                "*",
                "--cors-allow-credentials",
            ],
            None,
        )
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wildcard"), "{err}");

    c.ctl_ok(&["policy", "set", "--global", "--cors-origin", "*"], None)
        .unwrap();
    let r = eventually(Duration::from_secs(10), "the wildcard to apply", || async {
        let r = preflight(&c, "/v1/models", EVIL, "GET", "authorization").await;
        (r.status() == StatusCode::NO_CONTENT).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    let out = c
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "policy.cors_wildcard",
                "--format",
                "json",
            ],
            None,
        )
        .unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    let logs = c.logs();
    assert!(
        logs.contains("CORS allows every origin"),
        "the node warns on load"
    );
}

#[tokio::test]
async fn a_credentials_own_origin_list_is_enforced_on_the_actual_request() {
    let c = TestCluster::start(1).await.unwrap();
    c.ctl_ok(
        &[
            "policy",
            "set",
            "--global",
            "--cors-origin",
            &format!("{APP},{OTHER}"),
        ],
        None,
    )
    .unwrap();
    let key = vkey(&c, &["--allow-origin", APP]);
    let token = c.issue_token("alice", "*").unwrap();
    c.ctl_ok(
        &["policy", "set", "--subject", "alice", "--allow-origin", APP],
        None,
    )
    .unwrap();

    let r = eventually(Duration::from_secs(10), "the key's origin list", || async {
        let r = chat_from(&c, &c.http, &key, Some(OTHER), &[]).await;
        (r.status() == StatusCode::FORBIDDEN).then_some(r)
    })
    .await
    .unwrap();
    // Refused in the endpoint's shape, readable by the page (the gateway allows OTHER).
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(OTHER)
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_not_allowed", "{body}");
    assert_eq!(
        chat_from(&c, &c.http, &key, Some(APP), &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        chat_from(&c, &c.http, &key, None, &[]).await.status(),
        StatusCode::OK
    );

    // A JWT subject's list, on the Anthropic endpoint: the Anthropic error shape.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .bearer_auth(&token)
        .header("origin", OTHER)
        .json(&serde_json::json!({
            "model": CLAUDE_MODEL, "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");

    let rows = request_rows(&c, "origin_not_allowed", 2).await;
    assert!(
        rows.iter()
            .any(|d| d["endpoint"] == "/v1/messages" && d.get("client_ip").is_some())
    );
}

#[tokio::test]
async fn ip_allow_lists_global_before_the_credential_and_per_credential_after_it() {
    let c = TestCluster::start(1).await.unwrap();
    let key = vkey(&c, &[]);
    let (one, two, three) = (
        client_from("127.0.0.1"),
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
    );
    c.ctl_ok(
        &[
            "policy",
            "set",
            "--global",
            "--allow-ip",
            "127.0.0.2,127.0.0.3/32",
        ],
        None,
    )
    .unwrap();
    let r = eventually(Duration::from_secs(10), "the global allow-list", || async {
        let r = chat_from(&c, &one, &key, None, &[]).await;
        (r.status() == StatusCode::FORBIDDEN).then_some(r)
    })
    .await
    .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ip_not_allowed", "{body}");
    // Before any credential work: a bad credential gets the same 403, not a 401.
    let r = chat_from(&c, &one, "wk_not-a-real-key", None, &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        chat_from(&c, &two, &key, None, &[]).await.status(),
        StatusCode::OK
    );

    // Per credential, after authentication.
    let narrow = vkey(&c, &["--allow-ip", "127.0.0.3"]);
    let r = eventually(Duration::from_secs(10), "the key's allow-list", || async {
        let r = chat_from(&c, &two, &narrow, None, &[]).await;
        (r.status() == StatusCode::FORBIDDEN).then_some(r)
    })
    .await
    .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ip_not_allowed", "{body}");
    assert_eq!(
        chat_from(&c, &three, &narrow, None, &[]).await.status(),
        StatusCode::OK
    );

    let rows = request_rows(&c, "ip_not_allowed", 3).await;
    assert!(
        rows.iter()
            .any(|d| d.get("client_ip").map(String::as_str) == Some("127.0.0.1"))
    );
    // The per-credential refusal, from an address the global list allows.
    assert!(
        rows.iter()
            .any(|d| d.get("client_ip").map(String::as_str) == Some("127.0.0.2"))
    );

    // Cleared: everyone again.
    c.ctl_ok(&["policy", "set", "--global", "--clear-access"], None)
        .unwrap();
    eventually(Duration::from_secs(10), "the list to clear", || async {
        (chat_from(&c, &one, &key, None, &[]).await.status() == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ipv6_allow_lists() {
    let c = TestCluster::start_with(
        1,
        Options {
            node_http_host: Some("[::1]".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let key = vkey(&c, &[]);
    c.ctl_ok(
        &["policy", "set", "--global", "--allow-ip", "2001:db8::/32"],
        None,
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the IPv6 allow-list", || async {
        (chat_from(&c, &c.http, &key, None, &[]).await.status() == StatusCode::FORBIDDEN)
            .then_some(())
    })
    .await
    .unwrap();
    c.ctl_ok(
        &["policy", "set", "--global", "--allow-ip", "::1/128"],
        None,
    )
    .unwrap();
    eventually(Duration::from_secs(10), "::1 to be allowed", || async {
        (chat_from(&c, &c.http, &key, None, &[]).await.status() == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
    let rows = request_rows(&c, "ip_not_allowed", 1).await;
    assert!(
        rows.iter()
            .any(|d| d.get("client_ip").map(String::as_str) == Some("::1")),
        "{rows:?}"
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--trusted-proxies".into(), "127.0.0.5".into()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let key = vkey(&c, &[]);
    let (direct, proxy) = (client_from("127.0.0.1"), client_from("127.0.0.5"));
    c.ctl_ok(
        &["policy", "set", "--global", "--allow-ip", "203.0.113.0/24"],
        None,
    )
    .unwrap();
    // Spoofed by a client that is no trusted proxy: ignored.
    let xff = [("x-forwarded-for", "203.0.113.7")];
    eventually(Duration::from_secs(10), "the allow-list", || async {
        (chat_from(&c, &direct, &key, None, &xff).await.status() == StatusCode::FORBIDDEN)
            .then_some(())
    })
    .await
    .unwrap();
    // From the trusted proxy: the right-most address that is not a proxy.
    let chain = [("x-forwarded-for", "198.51.100.1, 203.0.113.7")];
    let r = chat_from(&c, &proxy, &key, None, &chain).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Garbage from the trusted proxy: the proxy's own address, which is not allowed.
    let garbage = [("x-forwarded-for", "203.0.113.7, not-an-address")];
    let r = chat_from(&c, &proxy, &key, None, &garbage).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The audit's client_ip is the forwarded address, not the proxy's nor a spoofed one.
    let served = eventually(
        Duration::from_secs(15),
        "the forwarded request's audit row",
        || async {
            let out = c
                .ctl_ok(
                    &["audit", "query", "--action", "request", "--format", "json"],
                    None,
                )
                .ok()?;
            let ips: Vec<String> = out
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    warden_core::audit_detail::parse(v["detail"].as_str().unwrap_or(""))
                })
                .filter(|d| d.get("status").map(String::as_str) == Some("200"))
                .filter_map(|d| d.get("client_ip").cloned())
                .collect();
            ips.contains(&"203.0.113.7".to_owned()).then_some(ips)
        },
    )
    .await
    .unwrap();
    assert!(!served.contains(&"127.0.0.5".to_owned()), "{served:?}");
    assert!(!served.contains(&"198.51.100.1".to_owned()), "{served:?}");
    let refused = request_rows(&c, "ip_not_allowed", 2).await;
    let ips: Vec<_> = refused
        .iter()
        .filter_map(|d| d.get("client_ip").cloned())
        .collect();
    assert!(ips.contains(&"127.0.0.1".to_owned()), "{ips:?}");
    assert!(ips.contains(&"127.0.0.5".to_owned()), "{ips:?}");
}
