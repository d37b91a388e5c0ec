//! Pins how the data plane answers failures, so that a refactoring of [`ApiError`] or of
//! the failover loop cannot change a status, a body or a retry path unnoticed.
//!
//! - [`every_error_renders_as_pinned`]: for every way an `ApiError` is made, its status,
//!   OpenAI `type` and `code`, message, origin, `retryable`, and the full response in both
//!   API shapes (body and headers).
//! - [`failover_moves_on_as_pinned`]: against a mock provider, which upstream answers and
//!   transport failures move `Upstream::send` to the next key or the fallback model, which
//!   stop it, which keys are reported as rejected, and the error the client gets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use secrecy::{SecretBox, SecretString};
use serde_json::{Value, json};
use warden_data_plane::compiled::{Format, Price, Provider, Route, Snapshot, UpstreamKey};
use warden_data_plane::error::{ApiError, Origin};
use warden_data_plane::limits::{Denied, LimitKind, Policy};
use warden_data_plane::translate::{TranslateError, Wire};
use warden_data_plane::upstream::keys::KeyPicker;
use warden_data_plane::upstream::{KeyRejection, Upstream, UpstreamRequest};

/// What a client sees of an error, and what the gateway knows of it.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    openai_type: String,
    openai_code: Option<String>,
    message: String,
    origin: Origin,
    retryable: bool,
    /// Headers of the OpenAI-shaped response, but `content-type` (always JSON).
    openai_headers: Vec<(String, String)>,
    /// `error.type` of the Anthropic-shaped response.
    anthropic_type: String,
    /// Headers of the Anthropic-shaped response, but `content-type`.
    anthropic_headers: Vec<(String, String)>,
}

/// A pinned row; `OA` and `AN` are the header lists of the two shapes.
#[expect(clippy::too_many_arguments, reason = "one row of the table")]
fn pin(
    status: u16,
    openai_type: &str,
    openai_code: Option<&str>,
    message: &str,
    origin: Origin,
    retryable: bool,
    openai_headers: &[(&str, &str)],
    anthropic_type: &str,
    anthropic_headers: &[(&str, &str)],
) -> Seen {
    let owned = |h: &[(&str, &str)]| {
        h.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    Seen {
        status,
        openai_type: openai_type.to_owned(),
        openai_code: openai_code.map(str::to_owned),
        message: message.to_owned(),
        origin,
        retryable,
        openai_headers: owned(openai_headers),
        anthropic_type: anthropic_type.to_owned(),
        anthropic_headers: owned(anthropic_headers),
    }
}

fn headers_of(h: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| *n != "content-type")
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

/// Renders `e` in both shapes and checks that the bodies are exactly the fields' shapes.
async fn observe(e: &ApiError) -> Seen {
    let openai = e.clone().render(Wire::OpenAi);
    let anthropic = e.clone().render(Wire::Anthropic);
    assert_eq!(openai.status(), e.status());
    assert_eq!(anthropic.status(), e.status());
    for r in [&openai, &anthropic] {
        assert_eq!(r.headers()["content-type"], "application/json");
    }
    let openai_headers = headers_of(openai.headers());
    let anthropic_headers = headers_of(anthropic.headers());
    let openai_body: Value = serde_json::from_slice(
        &axum::body::to_bytes(openai.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    let anthropic_body: Value = serde_json::from_slice(
        &axum::body::to_bytes(anthropic.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        openai_body,
        json!({"error": {"message": e.message(), "type": e.openai_type(), "param": null,
            "code": e.openai_code()}})
    );
    let anthropic_type = anthropic_body["error"]["type"].as_str().unwrap().to_owned();
    assert_eq!(
        anthropic_body,
        json!({"type": "error", "error": {"type": anthropic_type, "message": e.message()}})
    );
    Seen {
        status: e.status().as_u16(),
        openai_type: e.openai_type().to_owned(),
        openai_code: e.openai_code().map(str::to_owned),
        message: e.message().to_owned(),
        origin: e.origin(),
        retryable: e.retryable(),
        openai_headers,
        anthropic_type,
        anthropic_headers,
    }
}

fn limit(kind: LimitKind, limit: u64, retry_after: Duration) -> ApiError {
    ApiError::from(&Denied::Limit {
        kind,
        scope: "vkey:vk_0123456789abcdef".to_owned(),
        limit,
        retry_after,
    })
}

#[tokio::test]
async fn every_error_renders_as_pinned() {
    use Origin::{Downstream, Internal};
    let www = ("www-authenticate", "Bearer realm=\"warden\"");
    let cases: Vec<(&str, ApiError, Seen)> = vec![
        (
            "unauthenticated",
            ApiError::unauthenticated(),
            pin(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Invalid or missing credential. Pass a Warden token or virtual key as `Authorization: Bearer …`.",
                Downstream,
                false,
                &[www],
                "authentication_error",
                &[],
            ),
        ),
        (
            "missing scope",
            ApiError::missing_scope("write"),
            pin(
                403,
                "permission_error",
                Some("insufficient_scope"),
                "This credential lacks the `write` scope.",
                Downstream,
                false,
                &[],
                "permission_error",
                &[],
            ),
        ),
        (
            "model not allowed",
            ApiError::model_not_allowed("gpt-4o"),
            pin(
                403,
                "permission_error",
                Some("model_not_allowed"),
                "This credential is not allowed to use the model `gpt-4o`.",
                Downstream,
                false,
                &[],
                "permission_error",
                &[],
            ),
        ),
        (
            "model not found",
            ApiError::model_not_found("gpt-5"),
            pin(
                404,
                "invalid_request_error",
                Some("model_not_found"),
                "The model `gpt-5` does not exist.",
                Downstream,
                false,
                &[],
                "not_found_error",
                &[],
            ),
        ),
        (
            "model name clipped and redacted",
            ApiError::model_not_found(&format!("sk-{}", "a".repeat(100))),
            pin(
                404,
                "invalid_request_error",
                Some("model_not_found"),
                "The model `[REDACTED:f6b5c0193f6f]…` does not exist.",
                Downstream,
                false,
                &[],
                "not_found_error",
                &[],
            ),
        ),
        (
            "bad request",
            ApiError::bad_request("`stream` must be a boolean."),
            pin(
                400,
                "invalid_request_error",
                None,
                "`stream` must be a boolean.",
                Downstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            ),
        ),
        (
            "not ready",
            ApiError::not_ready(),
            pin(
                503,
                "api_error",
                Some("not_ready"),
                "The gateway has not received its configuration yet; retry shortly.",
                Internal,
                true,
                &[],
                "overloaded_error",
                &[],
            ),
        ),
        (
            "audit unavailable",
            ApiError::audit_unavailable("audit spool full"),
            pin(
                503,
                "api_error",
                Some("audit_unavailable"),
                "Audit log unavailable (audit spool full): this gateway refuses requests until it can record them again. Retry shortly.",
                Internal,
                true,
                &[("retry-after", "1")],
                "overloaded_error",
                &[("retry-after", "1")],
            ),
        ),
        (
            "internal",
            ApiError::internal("could not build the response"),
            pin(
                500,
                "api_error",
                None,
                "could not build the response",
                Internal,
                false,
                &[],
                "api_error",
                &[],
            ),
        ),
        (
            "body too large",
            ApiError::unreadable_body(StatusCode::PAYLOAD_TOO_LARGE),
            pin(
                413,
                "invalid_request_error",
                None,
                "The request body is larger than this gateway accepts.",
                Downstream,
                false,
                &[],
                "request_too_large",
                &[],
            ),
        ),
        (
            "body unreadable",
            ApiError::unreadable_body(StatusCode::BAD_REQUEST),
            pin(
                400,
                "invalid_request_error",
                None,
                "The request body could not be read.",
                Downstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            ),
        ),
        (
            "unknown endpoint",
            ApiError::unknown_endpoint(),
            pin(
                404,
                "invalid_request_error",
                None,
                "Unknown endpoint. Warden serves /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/embeddings, /v1/responses and /v1/models.",
                Downstream,
                false,
                &[],
                "not_found_error",
                &[],
            ),
        ),
        (
            "method not allowed",
            ApiError::method_not_allowed(),
            pin(
                405,
                "invalid_request_error",
                None,
                "This endpoint does not accept this HTTP method.",
                Downstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            ),
        ),
        (
            "limits unavailable",
            ApiError::from(&Denied::Unavailable),
            pin(
                503,
                "api_error",
                Some("limits_unavailable"),
                "The gateway cannot check this credential's limits right now; retry shortly.",
                Internal,
                true,
                &[("retry-after", "1")],
                "overloaded_error",
                &[("retry-after", "1")],
            ),
        ),
        (
            "shutting down (a stream cut at the drain deadline)",
            ApiError::shutting_down(),
            pin(
                503,
                "api_error",
                Some("shutting_down"),
                "This gateway node is shutting down and ended the answer at its drain deadline; retry the request.",
                Internal,
                true,
                &[("retry-after", "1")],
                "overloaded_error",
                &[("retry-after", "1")],
            ),
        ),
        (
            "budget spent",
            limit(LimitKind::Budget, 5_000_000, Duration::from_secs(90)),
            pin(
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
                "You exceeded your current quota: the budget of vkey:vk_0123****cdef ($5.00) is spent for this period.",
                Downstream,
                true,
                &[("retry-after", "90")],
                "billing_error",
                &[("retry-after", "90")],
            ),
        ),
        (
            "rpm reached",
            limit(LimitKind::Requests, 60, Duration::from_millis(1500)),
            pin(
                429,
                "requests",
                Some("rate_limit_exceeded"),
                "Rate limit reached for vkey:vk_0123****cdef on requests per min (RPM): Limit 60. Please try again in 1.5s.",
                Downstream,
                true,
                &[
                    ("retry-after", "2"),
                    ("x-ratelimit-limit-requests", "60"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1.5s"),
                ],
                "rate_limit_error",
                &[
                    ("retry-after", "2"),
                    ("x-ratelimit-limit-requests", "60"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1.5s"),
                ],
            ),
        ),
        (
            "tpm reached",
            limit(LimitKind::Tokens, 1000, Duration::from_millis(500)),
            pin(
                429,
                "tokens",
                Some("rate_limit_exceeded"),
                "Rate limit reached for vkey:vk_0123****cdef on tokens per min (TPM): Limit 1000. Please try again in 500ms.",
                Downstream,
                true,
                &[
                    ("retry-after", "1"),
                    ("x-ratelimit-limit-tokens", "1000"),
                    ("x-ratelimit-remaining-tokens", "0"),
                    ("x-ratelimit-reset-tokens", "500ms"),
                ],
                "rate_limit_error",
                &[
                    ("retry-after", "1"),
                    ("x-ratelimit-limit-tokens", "1000"),
                    ("x-ratelimit-remaining-tokens", "0"),
                    ("x-ratelimit-reset-tokens", "500ms"),
                ],
            ),
        ),
        (
            "parallel cap reached",
            limit(LimitKind::Parallel, 4, Duration::from_secs(61)),
            pin(
                429,
                "requests",
                Some("rate_limit_exceeded"),
                "Too many requests in flight for vkey:vk_0123****cdef: Limit 4. Please try again in 1m1s.",
                Downstream,
                true,
                &[("retry-after", "61")],
                "rate_limit_error",
                &[("retry-after", "61")],
            ),
        ),
        (
            "translation unsupported",
            ApiError::from(TranslateError::Unsupported("tools[0].type".into())),
            pin(
                400,
                "invalid_request_error",
                None,
                "`tools[0].type` is not supported when the model is served by a provider of the other API format",
                Downstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            ),
        ),
        (
            "translation invalid request",
            ApiError::from(TranslateError::InvalidRequest(
                "`messages` is missing".into(),
            )),
            pin(
                400,
                "invalid_request_error",
                None,
                "invalid request: `messages` is missing",
                Downstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            ),
        ),
        (
            "translation invalid upstream",
            ApiError::from(TranslateError::InvalidUpstream("no choices".into())),
            pin(
                500,
                "api_error",
                None,
                "invalid upstream answer: no choices",
                Internal,
                false,
                &[],
                "api_error",
                &[],
            ),
        ),
    ];
    for (case, error, expected) in cases {
        assert_eq!(observe(&error).await, expected, "{case}");
    }
}

// ---- failover ----------------------------------------------------------------------

/// A mock provider. Each upstream key says how the mock answers it:
/// `<name>:<status>[:<option>]`, option `ra7` (a `Retry-After: 7` header), `empty` (no
/// body), `slow` (answers after the client's read timeout), `key` (OpenAI's error code for
/// an invalid key, `invalid_api_key`) or `perm` (Anthropic's `permission_error`). Error
/// bodies carry a message that quotes the key, which the gateway must redact.
struct Mock {
    base_url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn mock() -> Mock {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let log = Arc::clone(&log);
        async move {
            let key = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
                .unwrap()
                .to_owned();
            let mut parts = key.split(':');
            let name = parts.next().unwrap().to_owned();
            let status: u16 = parts.next().unwrap().parse().unwrap();
            let option = parts.next().unwrap_or("");
            log.lock().unwrap().push(name.clone());
            if option == "slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let mut response = axum::http::Response::builder().status(status);
            if option == "ra7" {
                response = response.header("retry-after", "7");
            }
            let body = if status == 200 {
                json!({"ok": true}).to_string()
            } else if option == "empty" {
                String::new()
            } else if option == "key" {
                json!({"error": {"message": format!("{name} says no (key {key})"),
                    "type": "invalid_request_error", "code": "invalid_api_key"}})
                .to_string()
            } else if option == "perm" {
                json!({"type": "error", "error": {"type": "permission_error",
                    "message": format!("{name} says no (key {key})")}})
                .to_string()
            } else {
                json!({"error": {"message": format!("{name} says no (key {key})")}}).to_string()
            };
            response.body(axum::body::Body::from(body)).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Mock {
        base_url: format!("http://{addr}"),
        seen,
    }
}

/// An address nothing listens on.
async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn provider(
    name: &str,
    format: Format,
    base_url: &str,
    keys: &[&str],
    passthrough: bool,
) -> Arc<Provider> {
    Arc::new(Provider {
        name: name.to_owned(),
        format,
        base_url: base_url.to_owned(),
        keys: keys
            .iter()
            .enumerate()
            .map(|(i, k)| UpstreamKey {
                id: format!("{name}_key_{i}"),
                fingerprint: format!("{name}_fp_{i}"),
                secret: SecretString::from((*k).to_owned()),
                disabled: false,
                health_epoch: 0,
            })
            .collect(),
        passthrough,
        drop_params: Vec::new(),
        client: None,
        cursor: AtomicUsize::new(0),
    })
}

fn route(alias: &str, provider: Arc<Provider>, fallbacks: &[&str]) -> Route {
    Route {
        alias: alias.to_owned(),
        provider,
        upstream_model: format!("{alias}-upstream"),
        fallbacks: fallbacks.iter().map(|f| (*f).to_owned()).collect(),
        policy: Policy::default(),
        price: Price::default(),
        priced: false,
        limits_alias: alias.to_owned(),
        deployments: Vec::new(),
        alias_header: axum::http::HeaderValue::from_str(alias).ok(),
    }
}

fn snapshot(routes: Vec<Route>) -> Snapshot {
    Snapshot {
        version: 1,
        content_hash: String::new(),
        aliases: routes.iter().map(|r| r.alias.clone()).collect(),
        providers: routes
            .iter()
            .map(|r| (r.provider.name.clone(), Arc::clone(&r.provider)))
            .collect(),
        direct_terms: HashMap::new(),
        routes: routes.into_iter().map(|r| (r.alias.clone(), r)).collect(),
        verifier: warden_core::jwt::Verifier::new("i".into(), "a".into(), 0, Vec::new()),
        revoked_jtis: Default::default(),
        virtual_keys: HashMap::new(),
        pepper: SecretBox::new(Box::new(vec![1; 32])),
        vkey_hmac: warden_core::credential::hash_key(&[1; 32]),
        verified_jwts: Default::default(),
        global_policy: Policy::default(),
        subject_policies: HashMap::new(),
        incident: warden_data_plane::incident::Incident::default(),
        ip_blocks: Vec::new(),
        dlp: Arc::default(),
        subject_access: HashMap::new(),
        client_policy: warden_data_plane::access::ClientPolicy::default(),
        metric_labels: warden_data_plane::metrics::RouteLabels::default(),
    }
}

/// One failover scenario.
struct Scenario {
    case: &'static str,
    /// Keys of the model's provider (`p`).
    keys: &'static [&'static str],
    format: Format,
    passthrough: bool,
    client_key: Option<&'static str>,
    /// The provider `p` is unreachable.
    unreachable: bool,
    /// Keys of the fallback model's provider (`f`), if the model has a fallback.
    fallback: Option<&'static [&'static str]>,
}

const fn scenario(case: &'static str, keys: &'static [&'static str]) -> Scenario {
    Scenario {
        case,
        keys,
        format: Format::OpenAi,
        passthrough: false,
        client_key: None,
        unreachable: false,
        fallback: None,
    }
}

/// What `Upstream::send` did.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Key names the mock saw, in order.
    tried: Vec<String>,
    /// `(key id, status, reason)` of each key reported as rejected.
    rejected: Vec<(String, u16, String)>,
    /// The serving model alias, key fingerprint and whether it was a fallback; or the error.
    result: Result<(String, String, bool), Seen>,
}

async fn run(s: &Scenario) -> Outcome {
    let mock = mock().await;
    let base = if s.unreachable {
        closed_url().await
    } else {
        mock.base_url.clone()
    };
    let p = provider("p", s.format, &base, s.keys, s.passthrough);
    let mut routes = vec![route(
        "m",
        p,
        if s.fallback.is_some() { &["fb"] } else { &[] },
    )];
    if let Some(keys) = s.fallback {
        routes.push(route(
            "fb",
            provider("f", Format::OpenAi, &mock.base_url, keys, false),
            &[],
        ));
    }
    let snapshot = snapshot(routes);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<KeyRejection>(16);
    let upstream = Upstream::new(
        Duration::from_secs(2),
        Duration::from_millis(500),
        // The mock provider is on loopback.
        &warden_data_plane::egress::EgressSettings {
            policy: warden_data_plane::egress::EgressPolicy {
                allow_loopback: true,
                ..Default::default()
            },
            proxy: None,
        },
        KeyPicker::new(None),
        tx,
    )
    .unwrap();
    let client_key = s.client_key.map(|k| SecretString::from(k.to_owned()));
    let result = upstream
        .send(
            "vkey:test",
            &snapshot,
            &snapshot.routes["m"],
            false,
            client_key.as_ref(),
            |r| {
                Ok(UpstreamRequest {
                    path: "/chat/completions",
                    body: Bytes::from_static(b"{}"),
                    format: r.provider.format,
                })
            },
        )
        .await;
    let result = match result {
        Ok(served) => Ok((served.route.alias, served.key_fingerprint, served.fallback)),
        Err(e) => Err(observe(&e).await),
    };
    drop(upstream);
    let mut rejected = Vec::new();
    while let Some(r) = rx.recv().await {
        rejected.push((r.key_id, r.status, r.reason));
    }
    let tried = mock.seen.lock().unwrap().clone();
    Outcome {
        tried,
        rejected,
        result,
    }
}

#[tokio::test]
async fn failover_moves_on_as_pinned() {
    use Origin::{Downstream, Internal, Upstream};
    let www = ("www-authenticate", "Bearer realm=\"warden\"");
    type Row = (
        Scenario,
        Vec<&'static str>,
        Vec<(&'static str, u16, &'static str)>,
        Result<(&'static str, &'static str, bool), Seen>,
    );
    let rows: Vec<Row> = vec![
        (
            scenario("500 then 200", &["a:500", "b:200"]),
            vec!["a", "b"],
            vec![],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("503 then 200", &["a:503", "b:200"]),
            vec!["a", "b"],
            vec![],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("401 invalid_api_key then 200", &["a:401:key", "b:200"]),
            vec!["a", "b"],
            vec![(
                "p_key_0",
                401,
                "invalid_api_key: a says no (key [REDACTED])",
            )],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("403 invalid_api_key then 200", &["a:403:key", "b:200"]),
            vec!["a", "b"],
            vec![(
                "p_key_0",
                403,
                "invalid_api_key: a says no (key [REDACTED])",
            )],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("403 without a marker stops", &["a:403", "b:200"]),
            vec!["a"],
            vec![],
            Err(pin(
                403,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "permission_error",
                &[],
            )),
        ),
        (
            scenario(
                "401 without a marker stops, relayed as 403",
                &["a:401", "b:200"],
            ),
            vec!["a"],
            vec![],
            Err(pin(
                403,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "permission_error",
                &[],
            )),
        ),
        (
            scenario("403 permission_error stops", &["a:403:perm", "b:200"]),
            vec!["a"],
            vec![],
            Err(pin(
                403,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "permission_error",
                &[],
            )),
        ),
        (
            scenario("429 then 200", &["a:429:ra7", "b:200"]),
            vec!["a", "b"],
            vec![],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("400 stops", &["a:400", "b:200"]),
            vec!["a"],
            vec![],
            Err(pin(
                400,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            )),
        ),
        (
            scenario("404 stops", &["a:404", "b:200"]),
            vec!["a"],
            vec![],
            Err(pin(
                404,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "not_found_error",
                &[],
            )),
        ),
        (
            scenario("422 stops, Retry-After relayed", &["a:422:ra7", "b:200"]),
            vec!["a"],
            vec![],
            Err(pin(
                422,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[("retry-after", "7")],
                "invalid_request_error",
                &[("retry-after", "7")],
            )),
        ),
        (
            scenario("400 without a message stops", &["a:400:empty", "b:200"]),
            vec!["a"],
            vec![],
            Err(pin(
                400,
                "invalid_request_error",
                None,
                "Provider `p` rejected the request.",
                Upstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            )),
        ),
        (
            scenario("every key 5xx", &["a:500", "b:502"]),
            vec!["a", "b"],
            vec![],
            Err(pin(
                502,
                "api_error",
                Some("upstream_error"),
                "Provider `p` failed with status 502.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            scenario(
                "every key 401/403 invalid_api_key",
                &["a:401:key", "b:403:key"],
            ),
            vec!["a", "b"],
            vec![
                (
                    "p_key_0",
                    401,
                    "invalid_api_key: a says no (key [REDACTED])",
                ),
                (
                    "p_key_1",
                    403,
                    "invalid_api_key: b says no (key [REDACTED])",
                ),
            ],
            Err(pin(
                502,
                "api_error",
                Some("upstream_auth_failed"),
                "Provider `p` rejected the gateway's upstream key.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            scenario("every key 429", &["a:429:ra7", "b:429"]),
            vec!["a", "b"],
            vec![],
            Err(pin(
                429,
                "requests",
                Some("upstream_keys_exhausted"),
                "All upstream keys exhausted: every key of this model and its fallbacks is rate limited or disabled.",
                Upstream,
                true,
                &[("retry-after", "30")],
                "rate_limit_error",
                &[("retry-after", "30")],
            )),
        ),
        (
            scenario("429 then 500", &["a:429", "b:500"]),
            vec!["a", "b"],
            vec![],
            Err(pin(
                502,
                "api_error",
                Some("upstream_error"),
                "Provider `p` failed with status 500.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            scenario("500 then 429", &["a:500", "b:429"]),
            vec!["a", "b"],
            vec![],
            Err(pin(
                429,
                "requests",
                Some("upstream_keys_exhausted"),
                "All upstream keys exhausted: every key of this model and its fallbacks is rate limited or disabled.",
                Upstream,
                true,
                &[("retry-after", "30")],
                "rate_limit_error",
                &[("retry-after", "30")],
            )),
        ),
        (
            scenario("timeout then 200", &["a:200:slow", "b:200"]),
            vec!["a", "b"],
            vec![],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("every key times out", &["a:200:slow"]),
            vec!["a"],
            vec![],
            Err(pin(
                504,
                "api_error",
                Some("upstream_timeout"),
                "The request to provider `p` timed out.",
                Upstream,
                true,
                &[],
                "timeout_error",
                &[],
            )),
        ),
        (
            Scenario {
                unreachable: true,
                ..scenario("provider unreachable", &["a:200", "b:200"])
            },
            vec![],
            vec![],
            Err(pin(
                502,
                "api_error",
                Some("upstream_unreachable"),
                "The request to provider `p` could not be reached.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            Scenario {
                unreachable: true,
                fallback: Some(&["f:200"]),
                ..scenario("fallback after unreachable", &["a:200", "b:200"])
            },
            vec!["f"],
            vec![],
            Ok(("fb", "f_fp_0", true)),
        ),
        (
            scenario("unsendable key then 200", &["x\n:200", "b:200"]),
            vec!["b"],
            vec![],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            scenario("every key unsendable", &["x\n:200"]),
            vec![],
            vec![],
            Err(pin(
                500,
                "api_error",
                None,
                "an upstream key is not a valid header value",
                Internal,
                false,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            Scenario {
                fallback: Some(&["f:200"]),
                ..scenario("fallback after 5xx", &["a:500"])
            },
            vec!["a", "f"],
            vec![],
            Ok(("fb", "f_fp_0", true)),
        ),
        (
            Scenario {
                fallback: Some(&["f:200"]),
                ..scenario("fallback after 429", &["a:429"])
            },
            vec!["a", "f"],
            vec![],
            Ok(("fb", "f_fp_0", true)),
        ),
        (
            Scenario {
                fallback: Some(&["f:200"]),
                ..scenario("no fallback after 400", &["a:400"])
            },
            vec!["a"],
            vec![],
            Err(pin(
                400,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            )),
        ),
        (
            Scenario {
                fallback: Some(&["f:200"]),
                ..scenario("fallback when no key is configured", &[])
            },
            vec!["f"],
            vec![],
            Ok(("fb", "f_fp_0", true)),
        ),
        (
            scenario("no key configured", &[]),
            vec![],
            vec![],
            Err(pin(
                503,
                "api_error",
                Some("no_upstream_key"),
                "No upstream key is configured for provider `p`.",
                Upstream,
                false,
                &[],
                "overloaded_error",
                &[],
            )),
        ),
        (
            Scenario {
                fallback: Some(&["f:503"]),
                ..scenario("fallback fails too", &["a:500"])
            },
            vec!["a", "f"],
            vec![],
            Err(pin(
                502,
                "api_error",
                Some("upstream_error"),
                "Provider `f` failed with status 503.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            Scenario {
                fallback: Some(&["f:429:ra7"]),
                ..scenario("fallback rate limited too", &["a:429"])
            },
            vec!["a", "f"],
            vec![],
            Err(pin(
                429,
                "requests",
                Some("upstream_keys_exhausted"),
                "All upstream keys exhausted: every key of this model and its fallbacks is rate limited or disabled.",
                Upstream,
                true,
                &[("retry-after", "30")],
                "rate_limit_error",
                &[("retry-after", "30")],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                ..scenario("passthrough without a client key", &[])
            },
            vec![],
            vec![],
            Err(pin(
                401,
                "invalid_request_error",
                Some("missing_upstream_key"),
                "The provider of model `m` needs your own provider key: send it in the `x-warden-upstream-key` header (your Warden credential stays in `Authorization`).",
                Downstream,
                false,
                &[www],
                "authentication_error",
                &[],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:200"),
                ..scenario("passthrough 200", &[])
            },
            vec!["c"],
            vec![],
            Ok(("m", "a5dd7e7d600d", false)),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:401"),
                ..scenario("passthrough 401", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                401,
                "invalid_request_error",
                Some("upstream_key_rejected"),
                "Provider `p` rejected the upstream key you sent.",
                Upstream,
                false,
                &[www],
                "authentication_error",
                &[],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:403"),
                ..scenario("passthrough 403", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                403,
                "invalid_request_error",
                Some("upstream_key_rejected"),
                "Provider `p` rejected the upstream key you sent.",
                Upstream,
                false,
                &[],
                "permission_error",
                &[],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:429:ra7"),
                ..scenario("passthrough 429", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                429,
                "api_error",
                Some("rate_limit_exceeded"),
                "Provider `p` is rate limiting your key: c says no (key [REDACTED])",
                Upstream,
                true,
                &[("retry-after", "7")],
                "rate_limit_error",
                &[("retry-after", "7")],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:400"),
                ..scenario("passthrough 400", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                400,
                "invalid_request_error",
                None,
                "c says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:404:ra7"),
                ..scenario("passthrough 404", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                404,
                "invalid_request_error",
                None,
                "c says no (key [REDACTED])",
                Upstream,
                false,
                &[("retry-after", "7")],
                "not_found_error",
                &[("retry-after", "7")],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:500"),
                fallback: Some(&["f:200"]),
                ..scenario("passthrough 500 does not fall back", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                502,
                "api_error",
                Some("upstream_error"),
                "Provider `p` failed with status 500.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:200:slow"),
                ..scenario("passthrough timeout", &[])
            },
            vec!["c"],
            vec![],
            Err(pin(
                504,
                "api_error",
                Some("upstream_timeout"),
                "The request to provider `p` timed out.",
                Upstream,
                true,
                &[],
                "timeout_error",
                &[],
            )),
        ),
        (
            Scenario {
                passthrough: true,
                client_key: Some("c:200"),
                unreachable: true,
                ..scenario("passthrough unreachable", &[])
            },
            vec![],
            vec![],
            Err(pin(
                502,
                "api_error",
                Some("upstream_unreachable"),
                "The request to provider `p` could not be reached.",
                Upstream,
                true,
                &[],
                "api_error",
                &[],
            )),
        ),
        (
            Scenario {
                format: Format::Anthropic,
                ..scenario("anthropic format: 429 then 200", &["a:429", "b:200"])
            },
            vec!["a", "b"],
            vec![],
            Ok(("m", "p_fp_1", false)),
        ),
        (
            Scenario {
                format: Format::Anthropic,
                ..scenario("anthropic format: 400 stops", &["a:400", "b:200"])
            },
            vec!["a"],
            vec![],
            Err(pin(
                400,
                "invalid_request_error",
                None,
                "a says no (key [REDACTED])",
                Upstream,
                false,
                &[],
                "invalid_request_error",
                &[],
            )),
        ),
    ];
    for (s, tried, rejected, result) in rows {
        let expected = Outcome {
            tried: tried.into_iter().map(str::to_owned).collect(),
            rejected: rejected
                .into_iter()
                .map(|(id, status, reason)| (id.to_owned(), status, reason.to_owned()))
                .collect(),
            result: result.map(|(alias, fp, fallback)| (alias.to_owned(), fp.to_owned(), fallback)),
        };
        assert_eq!(run(&s).await, expected, "{}", s.case);
    }
}
