//! A mock LLM provider speaking the OpenAI wire format, started in-process by tests.
//!
//! [`MockUpstream::start`] binds an axum server on `127.0.0.1:0` in the test's runtime and
//! stops it when dropped. It answers `POST /v1/chat/completions` (JSON, or SSE when
//! `"stream": true`) and `GET /v1/models`, records every request it receives
//! ([`MockUpstream::requests`]) so tests can check which key the gateway injected, and can be
//! told to misbehave with [`Behavior`]: a fixed error answer, latency, or a stream that stalls
//! after its first chunk until [`MockUpstream::release_stream`].
//!
//! The answer echoes the last user message as `"mock: <text>"`; token counts are whitespace
//! word counts (at least 1), so tests can predict the usage numbers.

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
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// The one model listed by `GET /v1/models`.
pub const MOCK_MODEL: &str = "mock-model";
/// Pause between streamed chunks, so that clients can observe the chunking.
const CHUNK_DELAY: Duration = Duration::from_millis(5);
/// How long a [`Behavior::GatedStream`] waits for [`MockUpstream::release_stream`].
const GATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running mock provider; the server stops when this is dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub x_api_key: Option<String>,
    /// The JSON body, or `Null` when there was none or it was not JSON.
    pub body: Value,
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
    /// Streaming requests send their first chunk at once, then wait for
    /// [`MockUpstream::release_stream`] (or 10 s) before the rest; others answer normally.
    GatedStream,
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
            .route("/v1/models", get(models))
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // Serves until the task is aborted on drop; an accept error only ends the mock.
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockUpstream {
            addr,
            shared,
            server,
        })
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
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

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        });
        lock(&self.behavior).clone()
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let behavior = shared.record(&uri, &headers, &raw);
    let gate = shared.releases.subscribe();
    if let Some(denied) = check_auth(&headers) {
        return denied;
    }
    match behavior {
        Behavior::Error { status, body } => return error_answer(status, body),
        Behavior::Latency(delay) => tokio::time::sleep(delay).await,
        Behavior::Normal | Behavior::GatedStream => {}
    }
    let Ok(request) = serde_json::from_slice::<Value>(&raw) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
        );
    };
    let answer = Answer::for_request(&request, shared.next_id.fetch_add(1, Ordering::Relaxed));
    if request["stream"] != json!(true) {
        return Json(answer.completion()).into_response();
    }
    let include_usage = request["stream_options"]["include_usage"] == json!(true);
    let gate = matches!(behavior, Behavior::GatedStream).then_some(gate);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        // An error means the client went away; the stream simply ends.
        let _ = answer.stream(&tx, include_usage, gate).await;
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
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

fn openai_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    (status, Json(body)).into_response()
}

fn error_answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// The mock's answer to one chat request, rendered as JSON or as SSE chunks.
struct Answer {
    id: String,
    created: u64,
    model: Value,
    content: String,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Answer {
    fn for_request(request: &Value, n: u64) -> Answer {
        let messages = request["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let last_user = messages.iter().rev().find(|m| m["role"] == "user");
        let content = format!(
            "mock: {}",
            last_user
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default()
        );
        let prompt_words: usize = messages
            .iter()
            .map(|m| word_count(&text_of(&m["content"])))
            .sum();
        Answer {
            id: format!("chatcmpl-mock-{n}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: request["model"].clone(),
            prompt_tokens: prompt_words.max(1),
            completion_tokens: word_count(&content).max(1),
            content,
        }
    }

    fn usage(&self) -> Value {
        let (p, c) = (self.prompt_tokens, self.completion_tokens);
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    fn completion(&self) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.content},
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": self.usage(),
        })
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices})
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
        )
    }

    /// Sends the SSE events one body frame each, `CHUNK_DELAY` apart.
    async fn stream(
        self,
        tx: &mpsc::Sender<Result<Bytes, Infallible>>,
        include_usage: bool,
        gate: Option<watch::Receiver<u64>>,
    ) -> Result<(), mpsc::error::SendError<Result<Bytes, Infallible>>> {
        let event = |data: String| Ok(Bytes::from(format!("data: {data}\n\n")));
        tx.send(event(
            self.delta(json!({"role": "assistant", "content": ""}), None)
                .to_string(),
        ))
        .await?;
        if let Some(mut gate) = gate {
            let _ = tokio::time::timeout(GATE_TIMEOUT, gate.changed()).await;
        }
        let mut events: Vec<Value> = word_pieces(&self.content)
            .into_iter()
            .map(|piece| self.delta(json!({"content": piece}), None))
            .collect();
        events.push(self.delta(json!({}), Some("stop")));
        if include_usage {
            let mut usage = self.chunk(json!([]));
            usage["usage"] = self.usage();
            events.push(usage);
        }
        for data in events
            .iter()
            .map(Value::to_string)
            .chain(["[DONE]".to_owned()])
        {
            tokio::time::sleep(CHUNK_DELAY).await;
            tx.send(event(data)).await?;
        }
        Ok(())
    }
}

/// The text of a message's `content`: a string, or the `text` parts of a content array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
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
        reqwest::Client::new()
            .post(format!("{}/chat/completions", mock.base_url()))
            .bearer_auth("sk-test")
            .json(&chat_request(stream))
            .send()
            .await
            .unwrap()
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
        let response = post_chat(&mock, true).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let frames: Vec<String> = response
            .bytes_stream()
            .map(|frame| String::from_utf8(frame.unwrap().to_vec()).unwrap())
            .collect()
            .await;

        for frame in &frames {
            assert!(
                frame.starts_with("data: ") && frame.ends_with("\n\n"),
                "not one event: {frame:?}"
            );
            assert_eq!(
                frame.matches("\n\n").count(),
                1,
                "several events in one frame: {frame:?}"
            );
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
}
