//! A mock LLM provider speaking the OpenAI and the Anthropic wire formats, started
//! in-process by tests, over HTTP or ([`MockUpstream::start_tls`]) HTTPS.
//!
//! [`MockUpstream::start`] binds an axum server on `127.0.0.1:0` in the test's runtime and
//! stops it when dropped. It answers:
//!
//! - OpenAI (`Authorization: Bearer <key>` required): `POST /v1/chat/completions` (JSON, or
//!   SSE when `"stream": true`), `POST /v1/embeddings`, `POST /v1/responses` (JSON only),
//!   `GET /v1/models`;
//! - Anthropic (`x-api-key` and `anthropic-version` required): `POST /v1/messages` (JSON,
//!   or the real event sequence when `"stream": true`) and `POST /v1/messages/count_tokens`.
//!
//! It records every request it receives ([`MockUpstream::requests`]) so tests can check
//! which key the gateway injected, and can be told to misbehave with [`Behavior`]: a fixed
//! error answer, latency, error answers for some upstream keys, or a stream that stalls
//! after its first event until [`MockUpstream::release_stream`] or for a set time.
//! Behaviors apply to every `POST` endpoint.
//!
//! Answers are predictable. A chat or message answer echoes the last user message as
//! `"mock: <text>"`; but when the request defines tools and its last message is the user's
//! and mentions "weather", the answer is a call of the first tool with `{"city":"Paris"}`
//! (`call_mock_1` / `toolu_mock_1`, finish reason `tool_calls` / stop reason `tool_use`).
//! Token counts are whitespace word counts (at least 1): prompt tokens over every message
//! (and the system prompt), completion tokens over the answer, [`TOOL_CALL_TOKENS`] for a
//! tool call. Embeddings are 8 numbers derived from the input text (FNV-1a), as floats or,
//! with `encoding_format: "base64"` (the `openai` SDK's default), as little-endian `f32`s.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// The one model listed by `GET /v1/models`.
pub const MOCK_MODEL: &str = "mock-model";
/// Completion tokens reported for a tool call.
pub const TOOL_CALL_TOKENS: usize = 5;
/// The arguments of every mock tool call.
pub const TOOL_CALL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// Length of a mock embedding.
pub const EMBEDDING_DIMENSIONS: usize = 8;
/// Pause between streamed chunks, so that clients can observe the chunking.
const CHUNK_DELAY: Duration = Duration::from_millis(5);
/// How long a [`Behavior::GatedStream`] waits for [`MockUpstream::release_stream`].
const GATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running mock provider; the server stops when this is dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    /// `http`, or `https` for [`MockUpstream::start_tls`].
    scheme: &'static str,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub x_api_key: Option<String>,
    pub anthropic_version: Option<String>,
    /// The JSON body, or `Null` when there was none or it was not JSON.
    pub body: Value,
    /// Every header as received (the trace-context tests look for `traceparent`).
    pub headers: HeaderMap,
}

/// How the mock answers the requests that follow [`MockUpstream::set_behavior`].
#[derive(Debug, Clone, Default)]
pub enum Behavior {
    #[default]
    Normal,
    /// Answer every request with this status and JSON body.
    Error { status: u16, body: Value },
    /// Wait this long before answering.
    Latency(Duration),
    /// Streaming requests send their first event at once, then wait for
    /// [`MockUpstream::release_stream`] (or 10 s) before the rest; others answer normally.
    GatedStream,
    /// Requests carrying this upstream key (in `Authorization: Bearer` or `x-api-key`) get
    /// `status` (with `Retry-After: retry_after` seconds when given); others answer
    /// normally. Models a provider rejecting (401, with OpenAI's `invalid_api_key` code) or
    /// rate limiting (429) one key.
    KeyError {
        key: String,
        status: u16,
        retry_after: Option<u64>,
    },
    /// Requests whose raw body contains `marker` get `status` with this JSON `body`; others
    /// answer normally. Models a provider refusing one request (a model the project is not
    /// entitled to, a region) or a key, as it words it.
    MarkedError {
        marker: String,
        status: u16,
        body: Value,
    },
    /// Several keys answering errors at once, each as [`Behavior::KeyError`] would; requests
    /// with any other key answer normally.
    KeyErrors(Vec<KeyFault>),
    /// Streaming requests send their first event at once, then send nothing for this long
    /// before the rest (a provider whose stream hangs mid-answer; a client that gives up
    /// first ends it); others answer normally.
    StalledStream(Duration),
}

/// One upstream key's error answer, for [`Behavior::KeyErrors`].
#[derive(Debug, Clone)]
pub struct KeyFault {
    pub key: String,
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<u64>,
}

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    behavior: Mutex<Behavior>,
    /// Bumped by `release_stream`; a gated stream waits for a bump after its request began.
    releases: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl MockUpstream {
    pub async fn start() -> anyhow::Result<MockUpstream> {
        Self::start_on(None).await
    }

    /// The same mock over HTTPS (HTTP/1.1), serving `cert` (e.g. from
    /// [`crate::pki::TestCa::server_cert`]: valid for `127.0.0.1` and `localhost`). A
    /// client that refuses the certificate ends its handshake; the mock records nothing and
    /// serves the next connection.
    pub async fn start_tls(cert: &crate::pki::ServerCert) -> anyhow::Result<MockUpstream> {
        let chain = warden_core::pem::certificates(cert.cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("mock certificate: {e}"))?;
        let key = warden_core::pem::private_key(cert.key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("mock key: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Self::start_on(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_on(tls: Option<tokio_rustls::TlsAcceptor>) -> anyhow::Result<MockUpstream> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            behavior: Mutex::new(Behavior::Normal),
            releases: watch::channel(0).0,
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/responses", post(responses))
            .route("/v1/models", get(models))
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(async move {
            if let Some(acceptor) = tls {
                let _ = axum::serve(TlsListener { listener, acceptor }, app).await;
                return;
            }
            // Serves until the task is aborted on drop; an accept error only ends the mock.
            let listener =
                axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                    let _ = tcp.set_nodelay(true);
                });
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockUpstream {
            addr,
            scheme,
            shared,
            server,
        })
    }

    /// The base URL with the API version, `http://127.0.0.1:PORT/v1` (what OpenAI clients
    /// and providers configure).
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.addr)
    }

    /// The bare origin, `http://127.0.0.1:PORT` (what the `anthropic` SDK takes as its base
    /// URL: it appends `/v1/messages` itself).
    pub fn root_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.shared.behavior) = behavior;
    }

    /// Lets every gated stream that has already started go on to its end.
    pub fn release_stream(&self) {
        self.shared.releases.send_modify(|n| *n += 1);
    }
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The mock's listener over TLS: a connection is handed to axum once its handshake is done;
/// one that fails its handshake (or takes over 5 s) is dropped.
struct TlsListener {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which API an endpoint belongs to: its credential check and its error shape.
#[derive(Clone, Copy)]
enum Api {
    OpenAi,
    Anthropic,
}

/// A request that passed the checks every endpoint makes.
struct Accepted {
    body: Value,
    behavior: Behavior,
    gate: watch::Receiver<u64>,
    n: u64,
}

impl Shared {
    /// Records the request and returns the behavior in force when it arrived.
    fn record(&self, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Behavior {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        lock(&self.requests).push(RecordedRequest {
            path: uri.path().to_owned(),
            authorization: header("authorization"),
            x_api_key: header("x-api-key"),
            anthropic_version: header("anthropic-version"),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            headers: headers.clone(),
        });
        lock(&self.behavior).clone()
    }

    /// Records the request, then checks its credential, applies the behavior and parses
    /// the JSON body; any failure is the answer.
    async fn accept(
        &self,
        api: Api,
        uri: &Uri,
        headers: &HeaderMap,
        raw: &Bytes,
    ) -> Result<Accepted, Response> {
        let behavior = self.record(uri, headers, raw);
        let gate = self.releases.subscribe();
        let denied = match api {
            Api::OpenAi => check_auth(headers),
            Api::Anthropic => check_anthropic_headers(headers),
        };
        if let Some(denied) = denied {
            return Err(denied);
        }
        match &behavior {
            Behavior::Error { status, body } => return Err(error_answer(*status, body.clone())),
            Behavior::Latency(delay) => tokio::time::sleep(*delay).await,
            Behavior::KeyError {
                key,
                status,
                retry_after,
            } => {
                if let Some(answer) = key_error(headers, key, *status, *retry_after) {
                    return Err(answer);
                }
            }
            Behavior::KeyErrors(faults) => {
                for f in faults {
                    if let Some(answer) = key_error(headers, &f.key, f.status, f.retry_after) {
                        return Err(answer);
                    }
                }
            }
            Behavior::MarkedError {
                marker,
                status,
                body,
            } => {
                if raw
                    .windows(marker.len().max(1))
                    .any(|w| w == marker.as_bytes())
                {
                    return Err(error_answer(*status, body.clone()));
                }
            }
            Behavior::Normal | Behavior::GatedStream | Behavior::StalledStream(_) => {}
        }
        let Ok(body) = serde_json::from_slice::<Value>(raw) else {
            return Err(match api {
                Api::OpenAi => openai_error(
                    StatusCode::BAD_REQUEST,
                    "We could not parse the JSON body of your request.",
                ),
                Api::Anthropic => anthropic_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "The request body is not valid JSON.",
                ),
            });
        };
        Ok(Accepted {
            body,
            behavior,
            gate,
            n: self.next_id.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// The error answer of `key` when the request presents it (in `Authorization: Bearer` or
/// `x-api-key`): `status` (OpenAI's `invalid_api_key` code for a 401), with `Retry-After`
/// when given.
fn key_error(
    headers: &HeaderMap,
    key: &str,
    status: u16,
    retry_after: Option<u64>,
) -> Option<Response> {
    let presented = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start_matches("Bearer ") == key)
    };
    if !presented("authorization") && !presented("x-api-key") {
        return None;
    }
    let code = if status == 401 {
        json!("invalid_api_key")
    } else {
        Value::Null
    };
    let body = json!({"error": {"message": format!("key error {status} for this key"), "type": "invalid_request_error", "param": null, "code": code}});
    let mut answer = error_answer(status, body);
    if let Some(secs) = retry_after
        && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
    {
        answer.headers_mut().insert("retry-after", v);
    }
    Some(answer)
}

/// What a stream does after its first event.
enum Pause {
    None,
    /// Waits for [`MockUpstream::release_stream`] (or [`GATE_TIMEOUT`]).
    Gate(watch::Receiver<u64>),
    /// Sends nothing for this long.
    For(Duration),
}

impl Accepted {
    fn pause(self) -> Pause {
        match self.behavior {
            Behavior::GatedStream => Pause::Gate(self.gate),
            Behavior::StalledStream(d) => Pause::For(d),
            _ => Pause::None,
        }
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let accepted = match shared.accept(Api::OpenAi, &uri, &headers, &raw).await {
        Ok(accepted) => accepted,
        Err(answer) => return answer,
    };
    let request = &accepted.body;
    let answer = Answer::for_chat(request, accepted.n);
    if request["stream"] != json!(true) {
        return Json(answer.completion()).into_response();
    }
    let include_usage = request["stream_options"]["include_usage"] == json!(true);
    let frames = answer.chat_stream(include_usage);
    sse(frames, accepted.pause())
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let accepted = match shared.accept(Api::Anthropic, &uri, &headers, &raw).await {
        Ok(accepted) => accepted,
        Err(answer) => return answer,
    };
    let request = &accepted.body;
    if !request["messages"].is_array() {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "messages: Field required",
        );
    }
    let answer = Answer::for_messages(request, accepted.n);
    if request["stream"] != json!(true) {
        return Json(answer.message()).into_response();
    }
    let frames = answer.message_stream();
    sse(frames, accepted.pause())
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    match shared.accept(Api::Anthropic, &uri, &headers, &raw).await {
        Ok(accepted) => {
            Json(json!({"input_tokens": anthropic_prompt_tokens(&accepted.body)})).into_response()
        }
        Err(answer) => answer,
    }
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let accepted = match shared.accept(Api::OpenAi, &uri, &headers, &raw).await {
        Ok(accepted) => accepted,
        Err(answer) => return answer,
    };
    let request = &accepted.body;
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        // A list of strings is several inputs; a list of token ids is one.
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_array) => {
            items.iter().map(Value::to_string).collect()
        }
        Value::Array(items) if !items.is_empty() => vec![request["input"].to_string()],
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'input' must be a non-empty string or array.",
            );
        }
    };
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let vector = embedding_of(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| word_count(t).max(1)).sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": request["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

async fn responses(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let accepted = match shared.accept(Api::OpenAi, &uri, &headers, &raw).await {
        Ok(accepted) => accepted,
        Err(answer) => return answer,
    };
    let request = &accepted.body;
    if request["stream"] == json!(true) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "The mock does not stream /v1/responses.",
        );
    }
    let (last_user, mut prompt_words) = match &request["input"] {
        Value::String(s) => (s.clone(), word_count(s)),
        Value::Array(items) => (
            items
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default(),
            items
                .iter()
                .map(|m| word_count(&text_of(&m["content"])))
                .sum(),
        ),
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'input' must be a string or an array.",
            );
        }
    };
    prompt_words += word_count(request["instructions"].as_str().unwrap_or_default());
    let text = format!("mock: {last_user}");
    let (input_tokens, output_tokens) = (prompt_words.max(1), word_count(&text).max(1));
    let n = accepted.n;
    Json(json!({
        "id": format!("resp_mock_{n}"),
        "object": "response",
        "created_at": now(),
        "status": "completed",
        "error": null,
        "incomplete_details": null,
        "instructions": request["instructions"],
        "model": request["model"],
        "output": [{
            "type": "message",
            "id": format!("msg_mock_{n}"),
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }],
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }))
    .into_response()
}

async fn models(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    shared.record(&uri, &headers, &Bytes::new());
    if let Some(denied) = check_auth(&headers) {
        return denied;
    }
    let model = json!({"id": MOCK_MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "warden-mock"});
    Json(json!({"object": "list", "data": [model]})).into_response()
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    shared.record(&uri, &headers, &raw);
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {})", uri.path()),
    )
}

/// OpenAI answers 401 when the `authorization` header is not `Bearer <key>`.
fn check_auth(headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(key) if !key.trim().is_empty() => None,
        _ => Some(openai_error(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key.",
        )),
    }
}

/// Anthropic answers 401 without `x-api-key` and 400 without `anthropic-version`.
fn check_anthropic_headers(headers: &HeaderMap) -> Option<Response> {
    let present = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
    };
    if !present("x-api-key") {
        return Some(anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        ));
    }
    if !present("anthropic-version") {
        return Some(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    None
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    (status, Json(body)).into_response()
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, Json(body)).into_response()
}

fn error_answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// Streams `frames` as an SSE body, one body frame each: the first at once, then (after
/// the gate opens, if any) the rest `CHUNK_DELAY` apart.
fn sse(frames: Vec<String>, pause: Pause) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let mut frames = frames.into_iter();
        // An error means the client went away; the stream simply ends.
        if let Some(first) = frames.next()
            && tx.send(Ok(Bytes::from(first))).await.is_err()
        {
            return;
        }
        match pause {
            Pause::None => {}
            Pause::Gate(mut gate) => {
                let _ = tokio::time::timeout(GATE_TIMEOUT, gate.changed()).await;
            }
            Pause::For(d) => {
                // A client that went away ends the stall early.
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = tx.closed() => return,
                }
            }
        }
        for frame in frames {
            tokio::time::sleep(CHUNK_DELAY).await;
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                return;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the mock says.
enum Reply {
    Text(String),
    /// A call of the named tool with [`TOOL_CALL_ARGUMENTS`].
    ToolCall(String),
}

/// The mock's answer to one chat or messages request, rendered in either format.
struct Answer {
    n: u64,
    created: u64,
    model: Value,
    reply: Reply,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Answer {
    fn new(
        n: u64,
        model: &Value,
        prompt_words: usize,
        last_user: String,
        tool: Option<&str>,
    ) -> Answer {
        let reply = match tool {
            Some(name) if last_user.to_lowercase().contains("weather") => {
                Reply::ToolCall(name.to_owned())
            }
            _ => Reply::Text(format!("mock: {last_user}")),
        };
        let completion_tokens = match &reply {
            Reply::Text(text) => word_count(text).max(1),
            Reply::ToolCall(_) => TOOL_CALL_TOKENS,
        };
        Answer {
            n,
            created: now(),
            model: model.clone(),
            reply,
            prompt_tokens: prompt_words.max(1),
            completion_tokens,
        }
    }

    /// An OpenAI chat request; a tool call only when the last message is the user's.
    fn for_chat(request: &Value, n: u64) -> Answer {
        let messages = request["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| text_of(&m["content"]))
            .unwrap_or_default();
        let prompt_words = messages
            .iter()
            .map(|m| word_count(&text_of(&m["content"])))
            .sum();
        let tool = request["tools"][0]["function"]["name"]
            .as_str()
            .filter(|_| messages.last().is_some_and(|m| m["role"] == "user"));
        Answer::new(n, &request["model"], prompt_words, last_user, tool)
    }

    /// An Anthropic messages request; a tool call only when the last message is the user's
    /// and carries no tool results.
    fn for_messages(request: &Value, n: u64) -> Answer {
        let messages = request["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| text_of(&m["content"]))
            .unwrap_or_default();
        let asks = messages.last().is_some_and(|m| {
            m["role"] == "user"
                && !m["content"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"))
        });
        let tool = request["tools"][0]["name"].as_str().filter(|_| asks);
        Answer::new(
            n,
            &request["model"],
            anthropic_prompt_tokens(request),
            last_user,
            tool,
        )
    }

    // ---- OpenAI

    fn usage(&self) -> Value {
        let (p, c) = (self.prompt_tokens, self.completion_tokens);
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    fn chat_id(&self) -> String {
        format!("chatcmpl-mock-{}", self.n)
    }

    fn completion(&self) -> Value {
        let (message, finish_reason) = match &self.reply {
            Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
            Reply::ToolCall(name) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_mock_1", "type": "function",
                    "function": {"name": name, "arguments": TOOL_CALL_ARGUMENTS},
                }]}),
                "tool_calls",
            ),
        };
        json!({
            "id": self.chat_id(), "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
            "usage": self.usage(),
        })
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({"id": self.chat_id(), "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices})
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
        )
    }

    /// The SSE frames of a streamed chat completion, `[DONE]` last.
    fn chat_stream(&self, include_usage: bool) -> Vec<String> {
        let mut events = vec![self.delta(json!({"role": "assistant", "content": ""}), None)];
        match &self.reply {
            Reply::Text(text) => {
                events.extend(
                    word_pieces(text)
                        .into_iter()
                        .map(|piece| self.delta(json!({"content": piece}), None)),
                );
                events.push(self.delta(json!({}), Some("stop")));
            }
            Reply::ToolCall(name) => {
                events.push(self.delta(
                    json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    None,
                ));
                events.extend(argument_pieces().into_iter().map(|piece| {
                    self.delta(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        None,
                    )
                }));
                events.push(self.delta(json!({}), Some("tool_calls")));
            }
        }
        if include_usage {
            let mut usage = self.chunk(json!([]));
            usage["usage"] = self.usage();
            events.push(usage);
        }
        events
            .iter()
            .map(Value::to_string)
            .chain(["[DONE]".to_owned()])
            .map(|data| format!("data: {data}\n\n"))
            .collect()
    }

    // ---- Anthropic

    fn message_id(&self) -> String {
        format!("msg_mock_{}", self.n)
    }

    fn stop_reason(&self) -> &'static str {
        match self.reply {
            Reply::Text(_) => "end_turn",
            Reply::ToolCall(_) => "tool_use",
        }
    }

    fn message(&self) -> Value {
        let content = match &self.reply {
            Reply::Text(text) => json!([{"type": "text", "text": text}]),
            Reply::ToolCall(name) => json!([{
                "type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {"city": "Paris"},
            }]),
        };
        json!({
            "id": self.message_id(), "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": self.stop_reason(), "stop_sequence": null,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens},
        })
    }

    /// The SSE frames of a streamed message, in the order Anthropic sends them.
    fn message_stream(&self) -> Vec<String> {
        let mut events = vec![json!({"type": "message_start", "message": {
            "id": self.message_id(), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1},
        }})];
        let (block, deltas) = match &self.reply {
            Reply::Text(text) => (
                json!({"type": "text", "text": ""}),
                word_pieces(text)
                    .into_iter()
                    .map(|piece| json!({"type": "text_delta", "text": piece}))
                    .collect::<Vec<_>>(),
            ),
            Reply::ToolCall(name) => (
                json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}),
                argument_pieces()
                    .into_iter()
                    .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                    .collect(),
            ),
        };
        events.push(json!({"type": "content_block_start", "index": 0, "content_block": block}));
        events.push(json!({"type": "ping"}));
        events.extend(
            deltas
                .into_iter()
                .map(|delta| json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        );
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.push(json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
            "usage": {"output_tokens": self.completion_tokens}}));
        events.push(json!({"type": "message_stop"}));
        events
            .iter()
            .map(|e| {
                let name = e["type"].as_str().unwrap_or_default();
                format!("event: {name}\ndata: {e}\n\n")
            })
            .collect()
    }
}

/// Prompt words of an Anthropic request: the system prompt and every message.
fn anthropic_prompt_tokens(request: &Value) -> usize {
    let messages = request["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let words: usize = word_count(&text_of(&request["system"]))
        + messages
            .iter()
            .map(|m| word_count(&text_of(&m["content"])))
            .sum::<usize>();
    words.max(1)
}

/// The text of a message's `content`: a string, or the `text` parts of a content array
/// (and the text of Anthropic `tool_result` blocks).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p["type"].as_str() {
                Some("tool_result") => Some(text_of(&p["content"])),
                _ => p["text"].as_str().map(str::to_owned),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// One piece per word; all but the last keep a trailing space, so the pieces concatenate
/// to exactly the non-streaming content.
fn word_pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let last = words.len().saturating_sub(1);
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i < last {
                format!("{w} ")
            } else {
                (*w).to_owned()
            }
        })
        .collect()
}

/// [`TOOL_CALL_ARGUMENTS`] in two fragments, as providers stream arguments.
fn argument_pieces() -> Vec<String> {
    let (a, b) = TOOL_CALL_ARGUMENTS.split_at(TOOL_CALL_ARGUMENTS.len() / 2);
    vec![a.to_owned(), b.to_owned()]
}

/// A deterministic vector in [-1, 1) for `text`: FNV-1a of the dimension and the text.
fn embedding_of(text: &str) -> Vec<f32> {
    (0..EMBEDDING_DIMENSIONS)
        .map(|dimension| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in [dimension as u8].iter().chain(text.as_bytes()) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            // The top 24 bits, scaled: exact in an f32.
            ((hash >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chat_request(stream: bool) -> Value {
        json!({
            "model": "gpt-test",
            "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there world"},
            ],
        })
    }

    async fn post_chat(mock: &MockUpstream, stream: bool) -> reqwest::Response {
        post_openai(mock, "chat/completions", &chat_request(stream)).await
    }

    async fn post_openai(mock: &MockUpstream, path: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/{path}", mock.base_url()))
            .bearer_auth("sk-test")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_messages(mock: &MockUpstream, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/messages", mock.root_url()))
            .header("x-api-key", "sk-ant-test")
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Collects a streamed body, checking that each frame holds exactly one event.
    async fn frames(response: reqwest::Response) -> Vec<String> {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let frames: Vec<String> = response
            .bytes_stream()
            .map(|frame| String::from_utf8(frame.unwrap().to_vec()).unwrap())
            .collect()
            .await;
        for frame in &frames {
            assert!(frame.ends_with("\n\n"), "not one event: {frame:?}");
            assert_eq!(
                frame.matches("\n\n").count(),
                1,
                "several events in one frame: {frame:?}"
            );
        }
        frames
    }

    fn weather_tools_chat() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    }

    fn weather_tools_messages() -> Value {
        json!([{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}])
    }

    /// Runs a `tests/python` SDK script against the mock; `None` when WARDEN_TEST_PYTHON
    /// (set by scripts/test.sh) is not set.
    async fn run_sdk_script(script: &str, env: Vec<(&'static str, String)>) -> Option<Value> {
        let Ok(python) = std::env::var("WARDEN_TEST_PYTHON") else {
            eprintln!("WARDEN_TEST_PYTHON is not set: skipping {script} against the mock");
            return None;
        };
        let path = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(path)
                .envs(env)
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The official SDKs accept the mock's answers, streams and tool calls as real ones.
    #[tokio::test]
    async fn official_sdks_accept_the_mock() {
        let mock = MockUpstream::start().await.unwrap();
        let env = vec![
            ("WARDEN_URL", mock.root_url()),
            ("WARDEN_TOKEN", "sk-ant-mock".to_owned()),
            ("WARDEN_MODEL", "claude-mock".to_owned()),
            ("WARDEN_AUTH_HEADER", "x-api-key".to_owned()),
        ];
        let Some(r) = run_sdk_script("sdk_anthropic.py", env).await else {
            return;
        };
        assert_eq!(r["plain_content"], "mock: hello from the sdk", "{r}");
        assert_eq!(r["plain_stop_reason"], "end_turn");
        assert_eq!(r["stream_content"], "mock: stream these words please");
        assert_eq!(r["stream_event_types"][0], "message_start");
        assert_eq!(
            r["stream_event_types"].as_array().unwrap().last().unwrap(),
            "message_stop"
        );
        assert_eq!(r["stream_stop_reason"], "end_turn");
        assert_eq!(r["helper_stream_content"], "mock: helper stream please");
        assert_eq!(r["tool_name"], "get_weather");
        assert_eq!(r["tool_input"], json!({"city": "Paris"}));
        assert_eq!(r["tool_followup_content"], "mock: sunny, 18 C");
        assert_eq!(r["stream_tool_name"], "get_weather");
        assert_eq!(r["stream_tool_input"], json!({"city": "Paris"}));
        assert!(r["count_input_tokens"].as_u64().unwrap() > 0);
        let seen = mock.requests();
        assert!(
            seen.iter()
                .all(|q| q.x_api_key.is_some() && q.authorization.is_none())
        );
        assert!(seen.iter().all(|q| q.anthropic_version.is_some()));

        let env = vec![
            ("WARDEN_URL", mock.base_url()),
            ("WARDEN_TOKEN", "sk-mock".to_owned()),
            ("WARDEN_MODEL", MOCK_MODEL.to_owned()),
        ];
        let r = run_sdk_script("sdk_openai.py", env).await.unwrap();
        assert_eq!(r["plain_content"], "mock: hello from the sdk", "{r}");
        assert_eq!(r["stream_content"], "mock: stream these words please");
        assert_eq!(r["tool_finish_reason"], "tool_calls");
        assert_eq!(r["tool_name"], "get_weather");
        assert_eq!(r["tool_arguments"], json!({"city": "Paris"}));
    }

    #[tokio::test]
    async fn answers_json_and_records_the_key() {
        let mock = MockUpstream::start().await.unwrap();
        let response = post_chat(&mock, false).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "mock: hello there world"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
        );

        let requests = mock.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].path, "/v1/chat/completions");
        assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(requests[0].body["model"], "gpt-test");
    }

    #[tokio::test]
    async fn streams_each_event_as_its_own_frame() {
        let mock = MockUpstream::start().await.unwrap();
        let frames = frames(post_chat(&mock, true).await).await;
        for frame in &frames {
            assert!(frame.starts_with("data: "), "not one event: {frame:?}");
        }
        assert_eq!(frames.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(&f["data: ".len()..]).unwrap())
            .collect();
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "mock: hello there world");
        assert_eq!(chunks.len(), 1 + 4 + 1 + 1, "role, four words, stop, usage");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(chunks[6]["usage"]["total_tokens"], 9);
    }

    #[tokio::test]
    async fn gated_stream_waits_for_release() {
        let mock = MockUpstream::start().await.unwrap();
        mock.set_behavior(Behavior::GatedStream);
        let mut frames = post_chat(&mock, true).await.bytes_stream();
        let first = frames.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
        let stalled = tokio::time::timeout(Duration::from_millis(200), frames.next()).await;
        assert!(stalled.is_err(), "stream went on before release");

        mock.release_stream();
        let rest: Vec<_> = frames.map(|f| f.unwrap()).collect().await;
        assert_eq!(rest.last().map(|f| &f[..]), Some(&b"data: [DONE]\n\n"[..]));
    }

    #[tokio::test]
    async fn stalled_stream_sends_nothing_for_its_time_then_the_rest() {
        let mock = MockUpstream::start().await.unwrap();
        mock.set_behavior(Behavior::StalledStream(Duration::from_millis(600)));
        let began = std::time::Instant::now();
        let mut frames = post_chat(&mock, true).await.bytes_stream();
        let first = frames.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
        let stalled = tokio::time::timeout(Duration::from_millis(300), frames.next()).await;
        assert!(stalled.is_err(), "stream went on during the stall");
        let rest: Vec<_> = frames.map(|f| f.unwrap()).collect().await;
        assert!(began.elapsed() >= Duration::from_millis(600));
        assert_eq!(rest.last().map(|f| &f[..]), Some(&b"data: [DONE]\n\n"[..]));
        // Answers that are not streams are not held.
        let r = post_chat(&mock, false).await;
        assert_eq!(r.status(), 200);
    }

    #[tokio::test]
    async fn key_errors_answer_each_named_key_with_its_status() {
        let mock = MockUpstream::start().await.unwrap();
        mock.set_behavior(Behavior::KeyErrors(vec![
            KeyFault {
                key: "sk-dead".into(),
                status: 401,
                retry_after: None,
            },
            KeyFault {
                key: "sk-busy".into(),
                status: 429,
                retry_after: Some(2),
            },
        ]));
        let post = |key: &'static str| {
            reqwest::Client::new()
                .post(format!("{}/chat/completions", mock.base_url()))
                .bearer_auth(key)
                .json(&chat_request(false))
                .send()
        };
        let dead = post("sk-dead").await.unwrap();
        assert_eq!(dead.status(), 401);
        let body: Value = dead.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let busy = post("sk-busy").await.unwrap();
        assert_eq!(busy.status(), 429);
        assert_eq!(busy.headers()["retry-after"], "2");
        assert_eq!(post("sk-test").await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn error_behavior_and_missing_key() {
        let mock = MockUpstream::start().await.unwrap();
        let overloaded = json!({"error": {"message": "slow down", "type": "rate_limit_error"}});
        mock.set_behavior(Behavior::Error {
            status: 429,
            body: overloaded.clone(),
        });
        let response = post_chat(&mock, false).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.json::<Value>().await.unwrap(), overloaded);

        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/chat/completions", mock.base_url()))
            .json(&chat_request(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "You didn't provide an API key.");
        assert_eq!(mock.requests()[1].authorization, None);

        mock.set_behavior(Behavior::Normal);
        let models: Value = client
            .get(format!("{}/models", mock.base_url()))
            .bearer_auth("sk-test")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["data"][0]["id"], MOCK_MODEL);
    }

    #[tokio::test]
    async fn chat_tool_call_json_and_stream() {
        let mock = MockUpstream::start().await.unwrap();
        let mut request = json!({"model": "gpt-test", "tools": weather_tools_chat(),
            "messages": [{"role": "user", "content": "What's the weather in Paris?"}]});
        let body: Value = post_openai(&mock, "chat/completions", &request)
            .await
            .json()
            .await
            .unwrap();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert!(choice["message"]["content"].is_null());
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "call_mock_1", "type": "function",
                "function": {"name": "get_weather", "arguments": TOOL_CALL_ARGUMENTS}}])
        );
        assert_eq!(body["usage"]["completion_tokens"], TOOL_CALL_TOKENS);

        request["stream"] = json!(true);
        let frames = frames(post_openai(&mock, "chat/completions", &request).await).await;
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(&f["data: ".len()..]).unwrap())
            .collect();
        let arguments: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(arguments, TOOL_CALL_ARGUMENTS);
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_mock_1"
        );
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );

        // After the tool result the mock answers in text.
        request["stream"] = json!(false);
        request["messages"] = json!([
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": choice["message"]["tool_calls"]},
            {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny"},
        ]);
        let body: Value = post_openai(&mock, "chat/completions", &request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }

    #[tokio::test]
    async fn messages_answers_in_anthropic_format() {
        let mock = MockUpstream::start().await.unwrap();
        let request = json!({"model": "claude-test", "max_tokens": 100, "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there world"}]}]});
        let response = post_messages(&mock, &request).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"id": "msg_mock_1", "type": "message", "role": "assistant", "model": "claude-test",
                "content": [{"type": "text", "text": "mock: hello there world"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 5, "output_tokens": 4}})
        );
        let seen = &mock.requests()[0];
        assert_eq!(seen.path, "/v1/messages");
        assert_eq!(seen.x_api_key.as_deref(), Some("sk-ant-test"));
        assert_eq!(seen.anthropic_version.as_deref(), Some("2023-06-01"));

        let counted: Value = reqwest::Client::new()
            .post(format!("{}/v1/messages/count_tokens", mock.root_url()))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(counted, json!({"input_tokens": 5}));
    }

    #[tokio::test]
    async fn messages_tool_use() {
        let mock = MockUpstream::start().await.unwrap();
        let mut request = json!({"model": "claude-test", "max_tokens": 100, "tools": weather_tools_messages(),
            "messages": [{"role": "user", "content": "What is the Weather in Paris?"}]});
        let body: Value = post_messages(&mock, &request).await.json().await.unwrap();
        assert_eq!(body["stop_reason"], "tool_use");
        assert_eq!(
            body["content"],
            json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"city": "Paris"}}])
        );
        request["messages"] = json!([
            {"role": "user", "content": "What is the Weather in Paris?"},
            {"role": "assistant", "content": body["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny"}]},
        ]);
        let body: Value = post_messages(&mock, &request).await.json().await.unwrap();
        assert_eq!(body["stop_reason"], "end_turn");
        assert_eq!(body["content"][0]["text"], "mock: sunny");
    }

    fn anthropic_events(frames: &[String]) -> Vec<(String, Value)> {
        frames
            .iter()
            .map(|f| {
                let (head, data) = f.trim_end().split_once('\n').unwrap();
                let name = head.strip_prefix("event: ").unwrap().to_owned();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    #[tokio::test]
    async fn messages_stream_event_sequence() {
        let mock = MockUpstream::start().await.unwrap();
        let request = json!({"model": "claude-test", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "stream these words"}]});
        let events = anthropic_events(&frames(post_messages(&mock, &request).await).await);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 3);
        let text: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "mock: stream these words");
        assert_eq!(events[8].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[8].1["usage"]["output_tokens"], 4);

        let request = json!({"model": "claude-test", "max_tokens": 100, "stream": true, "tools": weather_tools_messages(),
            "messages": [{"role": "user", "content": "weather?"}]});
        let events = anthropic_events(&frames(post_messages(&mock, &request).await).await);
        assert_eq!(events[1].1["content_block"]["type"], "tool_use");
        let json: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(json, TOOL_CALL_ARGUMENTS);
        assert_eq!(
            events[events.len() - 2].1["delta"]["stop_reason"],
            "tool_use"
        );
    }

    #[tokio::test]
    async fn messages_gated_stream_waits_for_release() {
        let mock = MockUpstream::start().await.unwrap();
        mock.set_behavior(Behavior::GatedStream);
        let request = json!({"model": "m", "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let mut frames = post_messages(&mock, &request).await.bytes_stream();
        let first = frames.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).starts_with("event: message_start\n"));
        let stalled = tokio::time::timeout(Duration::from_millis(200), frames.next()).await;
        assert!(stalled.is_err(), "stream went on before release");
        mock.release_stream();
        let rest: Vec<_> = frames.map(|f| f.unwrap()).collect().await;
        assert!(String::from_utf8_lossy(rest.last().unwrap()).starts_with("event: message_stop\n"));
    }

    #[tokio::test]
    async fn messages_checks_headers_and_applies_error_behavior() {
        let mock = MockUpstream::start().await.unwrap();
        let request = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let client = reqwest::Client::new();
        let url = format!("{}/v1/messages", mock.root_url());

        let response = client
            .post(&url)
            .bearer_auth("sk-test")
            .header("anthropic-version", "2023-06-01")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}})
        );

        let response = client
            .post(&url)
            .header("x-api-key", "k")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        mock.set_behavior(Behavior::Error {
            status: 529,
            body: overloaded.clone(),
        });
        let response = post_messages(&mock, &request).await;
        assert_eq!(response.status().as_u16(), 529);
        assert_eq!(response.json::<Value>().await.unwrap(), overloaded);
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_in_both_encodings() {
        let mock = MockUpstream::start().await.unwrap();
        let request = json!({"model": "text-embedding-3-small", "input": ["hello world", "other", "hello world"], "encoding_format": "float"});
        let body: Value = post_openai(&mock, "embeddings", &request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], "text-embedding-3-small");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 5, "total_tokens": 5})
        );
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data[2]["index"], 2);
        assert_eq!(data[0]["object"], "embedding");
        let first = data[0]["embedding"].as_array().unwrap();
        assert_eq!(first.len(), EMBEDDING_DIMENSIONS);
        assert!(first.iter().all(|v| v.as_f64().unwrap().abs() <= 1.0));
        assert_eq!(data[0]["embedding"], data[2]["embedding"]);
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);

        let request = json!({"model": "e", "input": "hello world", "encoding_format": "base64"});
        let body: Value = post_openai(&mock, "embeddings", &request)
            .await
            .json()
            .await
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let expected: Vec<f32> = first.iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(floats, expected);

        let bad = post_openai(&mock, "embeddings", &json!({"model": "e"})).await;
        assert_eq!(bad.status(), 400);
    }

    #[tokio::test]
    async fn responses_answers_string_and_message_input() {
        let mock = MockUpstream::start().await.unwrap();
        let body: Value = post_openai(
            &mock,
            "responses",
            &json!({"model": "gpt-test", "input": "hello there"}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(body["object"], "response");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["model"], "gpt-test");
        assert!(body["id"].as_str().unwrap().starts_with("resp_mock_"));
        let message = &body["output"][0];
        assert_eq!(message["type"], "message");
        assert_eq!(message["role"], "assistant");
        assert_eq!(
            message["content"][0],
            json!({"type": "output_text", "text": "mock: hello there", "annotations": [], "logprobs": []})
        );
        assert_eq!(body["usage"]["input_tokens"], 2);
        assert_eq!(body["usage"]["output_tokens"], 3);
        assert_eq!(body["usage"]["total_tokens"], 5);

        let body: Value = post_openai(
            &mock,
            "responses",
            &json!({"model": "gpt-test", "instructions": "be brief", "input": [
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
            ]}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            body["output"][0]["content"][0]["text"],
            "mock: second question"
        );
        assert_eq!(body["usage"]["input_tokens"], 8);

        let unauthenticated = reqwest::Client::new()
            .post(format!("{}/responses", mock.base_url()))
            .json(&json!({"model": "m", "input": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(unauthenticated.status(), 401);
    }
}
