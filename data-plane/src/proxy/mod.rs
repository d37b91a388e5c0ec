//! The request path of every model endpoint: authenticate, authorize the model, route the
//! alias (or `provider:model`), apply the limits, then answer from the built-in echo
//! provider or forward to the provider — translating between the OpenAI and Anthropic wire
//! formats when the client's API and the provider's differ — and stream the answer back
//! event by event ([`pump`]). Errors answer in the shape of the API the request came
//! through.
//!
//! | endpoint | client API | providers |
//! |---|---|---|
//! | `POST /v1/chat/completions` | OpenAI | OpenAI (as is), Anthropic (translated) |
//! | `POST /v1/messages` | Anthropic | Anthropic (as is), OpenAI (translated) |
//! | `POST /v1/messages/count_tokens` | Anthropic | local estimate |
//! | `POST /v1/embeddings`, `POST /v1/responses` | OpenAI | OpenAI only (passed through) |

pub mod echo;
pub mod pump;

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use warden_core::audit_detail::{self, Detail};
use warden_core::jwt::Scope;

use crate::auth::Principal;
use crate::compiled::{Format, Route, Snapshot};
use crate::error::ApiError;
use crate::limits::{Denied, LimitKind, RateHeaders, Scope as LimitScope};
use crate::state::AppState;
use crate::upstream::UpstreamRequest;
use pump::Wire;

/// The model endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Messages,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// The API shape of the endpoint (requests, answers and errors).
    pub fn api(self) -> Wire {
        match self {
            Self::Messages => Wire::Anthropic,
            _ => Wire::OpenAi,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Messages => "/v1/messages",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
        }
    }
}

/// The fields of a request the gateway reads; the rest is forwarded untouched.
#[derive(Debug)]
pub struct ModelRequest {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

/// Parses and checks a request body for `endpoint`.
pub fn parse_request(endpoint: Endpoint, bytes: &[u8]) -> Result<ModelRequest, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request: {}",
            e.to_string().chars().take(200).collect::<String>()
        ))
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(ApiError::bad_request("`model` must be a non-empty string.")),
        None => return Err(ApiError::bad_request("you must provide a model parameter")),
    };
    match endpoint {
        Endpoint::Chat | Endpoint::Messages => match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {}
            _ => {
                return Err(ApiError::bad_request(
                    "`messages` must be a non-empty array of messages.",
                ));
            }
        },
        Endpoint::Embeddings | Endpoint::Responses => {
            if body.get("input").is_none_or(Value::is_null) {
                return Err(ApiError::bad_request("you must provide an input parameter"));
            }
        }
    }
    if endpoint == Endpoint::Messages && body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(ApiError::bad_request("max_tokens: Field required"));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`stream` must be a boolean.")),
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(ApiError::bad_request("embeddings do not stream"));
    }
    Ok(ModelRequest {
        body,
        model,
        stream,
    })
}

/// Renders an error in the shape of `api`.
pub fn render_error(e: ApiError, api: Wire) -> Response {
    match api {
        Wire::OpenAi => e.into_response(),
        Wire::Anthropic => {
            let body = crate::translate::error::anthropic_body_from_openai(e.status, &e.body());
            let mut r = (e.status, axum::Json(body)).into_response();
            if let Some(ra) = e
                .retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                r.headers_mut().insert("retry-after", ra);
            }
            for (name, value) in &e.extra_headers {
                if let (Ok(n), Ok(v)) = (
                    axum::http::HeaderName::try_from(name.as_str()),
                    HeaderValue::from_str(value),
                ) {
                    r.headers_mut().insert(n, v);
                }
            }
            r
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    serve(&state, peer, &headers, body, Endpoint::Chat).await
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    serve(&state, peer, &headers, body, Endpoint::Messages).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    serve(&state, peer, &headers, body, Endpoint::Embeddings).await
}

/// `POST /v1/responses`.
pub async fn responses(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    serve(&state, peer, &headers, body, Endpoint::Responses).await
}

/// `POST /v1/messages/count_tokens`: a local estimate (about four characters per token),
/// for the models the caller may use.
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = async {
        let snapshot = state.snapshot().ok_or_else(ApiError::not_ready)?;
        let principal = authenticate(&state, &snapshot, &headers, "/v1/messages/count_tokens")?;
        principal.require(Scope::Read)?;
        let body = body.map_err(|r| body_error(&r))?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| {
            ApiError::bad_request("We could not parse the JSON body of your request.")
        })?;
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("model: Field required"))?;
        resolve_route(&snapshot, &principal, model)?;
        if !value.get("messages").is_some_and(Value::is_array) {
            return Err(ApiError::bad_request("messages: Field required"));
        }
        Ok(axum::Json(crate::translate::count_tokens::count_tokens(&value)).into_response())
    }
    .await;
    result.unwrap_or_else(|e| render_error(e, Wire::Anthropic))
}

async fn serve(
    state: &Arc<AppState>,
    peer: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::now_v7().to_string();
    // Fail closed: a request whose audit event could not be recorded is not served (and,
    // since the audit log is what is unavailable, not audited; counted instead).
    if let Some(reason) = state.audit.unavailable() {
        metrics::counter!(crate::metrics::REQUESTS, "status" => "5xx").increment(1);
        metrics::counter!(crate::metrics::AUDIT_REFUSED).increment(1);
        tracing::debug!(request_id = %request_id, reason, "request refused: audit log unavailable");
        let mut r = render_error(ApiError::audit_unavailable(reason), endpoint.api());
        set_request_id(&mut r, &request_id);
        return r;
    }
    // The request's audit event: who, from where, what; completed below with the outcome.
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(200).collect::<String>());
    let detail = Detail::new()
        .with("request_id", &request_id)
        .with("endpoint", endpoint.path())
        .with_opt(
            "client_ip",
            peer.map(|p| audit_detail::client_ip(p.ip(), state.audit_mask_client_ip)),
        )
        .with_opt("user_agent", user_agent);
    // A client that goes away before the answer starts cancels this future: the guard
    // still audits the request then.
    let mut guard = CancelledRequest {
        state: Arc::clone(state),
        detail: Some(detail),
        started,
    };
    let outcome = match body {
        Ok(body) => handle(state, headers, &body, endpoint).await,
        Err(rejection) => Err((body_error(&rejection), String::new(), String::new())),
    };
    // Handled: the event is written below (the guard, disarmed, writes nothing).
    let detail = guard.detail.take().unwrap_or_default();
    let done = match outcome {
        Ok(done) => done,
        Err((e, principal, model)) => {
            let label = e.metric_label();
            tracing::info!(
                request_id = %request_id,
                endpoint = endpoint.path(),
                principal = %principal,
                model = %model,
                status = e.status.as_u16(),
                error = label,
                origin = ?e.origin,
                latency_ms = started.elapsed().as_millis() as u64,
                "request rejected"
            );
            metrics::counter!(crate::metrics::REQUESTS, "status" => status_class(e.status))
                .increment(1);
            state.audit.emit(
                "request",
                if principal.is_empty() {
                    "-".to_owned()
                } else {
                    principal.clone()
                },
                model.clone(),
                "failure".to_owned(),
                detail
                    .with("status", e.status.as_u16())
                    .with("error", label)
                    .with("latency_ms", started.elapsed().as_millis())
                    .build(),
            );
            let mut r = render_error(e, endpoint.api());
            set_request_id(&mut r, &request_id);
            return r;
        }
    };
    let Done {
        mut response,
        principal,
        credential,
        model,
        provider,
        key_fingerprint,
        settled,
    } = done;
    let status = response.status();
    metrics::counter!(crate::metrics::REQUESTS, "status" => status_class(status)).increment(1);
    let model_served = response
        .headers()
        .get("x-warden-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&model)
        .to_owned();
    let detail = detail
        .with("credential", &credential)
        .with("provider", &provider)
        .with("model_served", &model_served)
        .with(
            "fallback",
            response.headers().contains_key("x-warden-fallback"),
        )
        .with_opt(
            "upstream_key_fp",
            (!key_fingerprint.is_empty()).then_some(&key_fingerprint),
        )
        .with("status", status.as_u16());
    tracing::info!(
        request_id = %request_id,
        endpoint = endpoint.path(),
        principal = %principal,
        model = %model,
        provider = %provider,
        status = status.as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
        "request forwarded"
    );
    let ok = status.is_success();
    match settled {
        // A pumped answer is audited when its body ends, with the usage as billed.
        Some(settled) => {
            let state = Arc::clone(state);
            tokio::spawn(async move {
                let (detail, completed) = match settled.await {
                    Ok(s) => (
                        detail
                            .with("tokens_in", s.prompt_tokens)
                            .with("tokens_out", s.completion_tokens)
                            .with("cost_usd", format_usd(s.cost_micros))
                            .with("outcome", s.outcome),
                        s.outcome == "completed",
                    ),
                    Err(_) => (detail.with("outcome", "unknown"), false),
                };
                let result = match (ok, completed) {
                    (true, true) => "ok",
                    (true, false) => "incomplete",
                    (false, _) => "failure",
                };
                state.audit.emit(
                    "request",
                    principal,
                    model,
                    result.to_owned(),
                    detail
                        .with("latency_ms", started.elapsed().as_millis())
                        .build(),
                );
            });
        }
        None => state.audit.emit(
            "request",
            principal,
            model,
            if ok { "ok" } else { "failure" }.to_owned(),
            detail
                .with("latency_ms", started.elapsed().as_millis())
                .build(),
        ),
    }
    set_request_id(&mut response, &request_id);
    response
}

/// Audits a request whose handling was cancelled (the client disconnected before the
/// answer began), unless disarmed.
struct CancelledRequest {
    state: Arc<AppState>,
    detail: Option<Detail>,
    started: Instant,
}

impl Drop for CancelledRequest {
    fn drop(&mut self) {
        if let Some(detail) = self.detail.take() {
            self.state.audit.emit(
                "request",
                "-".to_owned(),
                String::new(),
                "incomplete".to_owned(),
                detail
                    .with("outcome", "client_disconnected")
                    .with("latency_ms", self.started.elapsed().as_millis())
                    .build(),
            );
        }
    }
}

/// Micro-USD as a decimal USD amount (`0.000123`).
fn format_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A body that could not be read (too large, broken connection).
fn body_error(rejection: &axum::extract::rejection::BytesRejection) -> ApiError {
    let status = rejection.status();
    let mut e = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::bad_request("The request body is larger than this gateway accepts.")
    } else {
        ApiError::bad_request("The request body could not be read.")
    };
    e.status = status;
    e
}

fn set_request_id(response: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
    }
}

struct Done {
    response: Response,
    principal: String,
    /// The credential used, obfuscated.
    credential: String,
    model: String,
    provider: String,
    /// Fingerprint of the upstream key used (never the key).
    key_fingerprint: String,
    /// Resolves when a pumped body has ended, with its usage.
    settled: Option<tokio::sync::oneshot::Receiver<pump::Settled>>,
}

type Rejection = (ApiError, String, String);

/// Authenticates a request and audits a failure.
fn authenticate(
    state: &AppState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Principal, ApiError> {
    crate::auth::authenticate(snapshot, headers).map_err(|failure| {
        state.audit.emit(
            "auth.client",
            failure.presented,
            endpoint.to_owned(),
            "denied".to_owned(),
            format!("reason={}", failure.reason),
        );
        ApiError::unauthenticated()
    })
}

/// Finds where `model` goes for this caller: an alias, or `provider:model` when the caller
/// may use it (`*`, the exact `provider:model`, or `provider:*`). Authorization is checked
/// before existence, so a limited caller cannot probe which models exist.
pub fn resolve_route(
    snapshot: &Snapshot,
    principal: &Principal,
    model: &str,
) -> Result<Route, ApiError> {
    if let Some(route) = snapshot.routes.get(model) {
        if !principal.may_use(model) {
            return Err(ApiError::model_not_allowed(model));
        }
        return Ok(route.clone());
    }
    if let Some((provider_name, upstream_model)) = model.split_once(':') {
        let wildcard = format!("{provider_name}:*");
        if !(principal.may_use(model) || principal.may_use(&wildcard)) {
            return Err(ApiError::model_not_allowed(model));
        }
        let provider = snapshot
            .routes
            .values()
            .map(|r| &r.provider)
            .chain(snapshot.providers.values())
            .find(|p| p.name == provider_name)
            .cloned();
        if let Some(provider) = provider
            && !upstream_model.is_empty()
        {
            return Ok(Route {
                alias: model.to_owned(),
                provider,
                upstream_model: upstream_model.to_owned(),
                fallbacks: Vec::new(),
                policy: crate::limits::Policy::default(),
                price: crate::compiled::Price::default(),
                deployments: Vec::new(),
            });
        }
        return Err(ApiError::model_not_found(model));
    }
    if !principal.may_use(model) {
        return Err(ApiError::model_not_allowed(model));
    }
    Err(ApiError::model_not_found(model))
}

fn format_wire(format: Format) -> Wire {
    match format {
        Format::Anthropic => Wire::Anthropic,
        Format::OpenAi | Format::Echo => Wire::OpenAi,
    }
}

/// Builds the provider request for `route`: the client's body with the model rewritten, or
/// its translation when the formats differ.
fn upstream_request(
    endpoint: Endpoint,
    request: &ModelRequest,
    route: &Route,
) -> Result<UpstreamRequest, ApiError> {
    let target = format_wire(route.provider.format);
    let mut body = request.body.clone();
    body.insert("model".into(), Value::String(route.upstream_model.clone()));
    let translate_err = |e: crate::translate::TranslateError| {
        if e.is_client_error() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    };
    for param in &route.provider.drop_params {
        body.remove(param);
    }
    let (path, value) = match (endpoint, target) {
        (Endpoint::Chat, Wire::OpenAi) => {
            if request.stream {
                // Ask for usage so that the stream can be settled exactly.
                let opts = body
                    .entry("stream_options")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(o) = opts {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
            }
            ("/chat/completions", Value::Object(body))
        }
        (Endpoint::Chat, Wire::Anthropic) => (
            "/messages",
            crate::translate::openai_to_anthropic::request(&Value::Object(body))
                .map_err(translate_err)?,
        ),
        (Endpoint::Messages, Wire::Anthropic) => ("/messages", Value::Object(body)),
        (Endpoint::Messages, Wire::OpenAi) => (
            "/chat/completions",
            crate::translate::anthropic_to_openai::request(&Value::Object(body))
                .map_err(translate_err)?,
        ),
        (Endpoint::Embeddings, Wire::OpenAi) => ("/embeddings", Value::Object(body)),
        (Endpoint::Responses, Wire::OpenAi) => ("/responses", Value::Object(body)),
        (Endpoint::Embeddings | Endpoint::Responses, Wire::Anthropic) => {
            return Err(ApiError::bad_request(format!(
                "The model `{}` is served by an Anthropic-format provider; {} needs an OpenAI-format provider.",
                request.model,
                endpoint.path()
            )));
        }
    };
    let bytes = serde_json::to_vec(&value)
        .map_err(|_| ApiError::internal("could not encode the request"))?;
    Ok(UpstreamRequest {
        path,
        body: Bytes::from(bytes),
        format: route.provider.format,
    })
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: Endpoint,
) -> Result<Done, Rejection> {
    let snapshot = state
        .snapshot()
        .ok_or_else(|| (ApiError::not_ready(), String::new(), String::new()))?;
    let principal = authenticate(state, &snapshot, headers, endpoint.path())
        .map_err(|e| (e, "-".to_owned(), String::new()))?;
    let pid = principal.id.clone();
    principal
        .require(Scope::Write)
        .map_err(|e| (e, pid.clone(), String::new()))?;
    let mut request = parse_request(endpoint, body).map_err(|e| (e, pid.clone(), String::new()))?;
    let model = request.model.clone();
    let reject = |e: ApiError| (e, pid.clone(), model.clone());
    let route = resolve_route(&snapshot, &principal, &model).map_err(reject)?;

    // The tightest max_tokens ceiling of the caller, the model and the gateway.
    let cap = [
        principal.limits.as_ref().map_or(0, |s| s.policy.max_tokens),
        route.policy.max_tokens,
        snapshot.global_policy.max_tokens,
    ]
    .into_iter()
    .filter(|c| *c > 0)
    .min();
    if let Some(cap) = cap {
        cap_output_tokens(endpoint, &mut request.body, cap);
    }

    // Limits: the caller's, the model's and the global ones, in one decision.
    let mut scopes = Vec::with_capacity(3);
    if let Some(scope) = principal.limits.clone() {
        scopes.push(scope);
    }
    scopes.push(LimitScope {
        id: warden_core::shared_keys::scope::model(&route.alias),
        policy: route.policy,
    });
    scopes.push(LimitScope {
        id: warden_core::shared_keys::scope::GLOBAL.to_owned(),
        policy: snapshot.global_policy,
    });
    let prompt_estimate = match endpoint {
        Endpoint::Messages => crate::translate::count_tokens::estimate_input_tokens(
            &Value::Object(request.body.clone()),
        ),
        Endpoint::Chat => estimate_prompt(&request.body),
        Endpoint::Embeddings | Endpoint::Responses => {
            pump::estimate_tokens(request.body.get("input").map_or(0, |i| i.to_string().len()))
        }
    };
    let reserve = prompt_estimate + requested_output(endpoint, &request.body);
    let admission = state
        .limiter
        .admit(scopes, reserve)
        .await
        .map_err(|d| reject(denied_error(&d)))?;
    let rate_headers = admission.headers;

    if route.provider.format == Format::Echo {
        if !matches!(endpoint, Endpoint::Chat | Endpoint::Messages) {
            admission.finish(0, 0).await;
            return Err(reject(ApiError::bad_request(format!(
                "The built-in echo model serves chat completions and messages, not {}.",
                endpoint.path()
            ))));
        }
        let response = echo::answer(&request.body, &model, request.stream, endpoint.api());
        admission.finish(prompt_estimate, 0).await;
        return Ok(Done {
            response: with_rate_headers(response, &rate_headers),
            principal: pid,
            credential: principal.credential.clone(),
            model,
            provider: route.provider.name.clone(),
            key_fingerprint: String::new(),
            settled: None,
        });
    }

    // A passthrough provider's key comes from the client, in its own header; it is never
    // logged or stored (its fingerprint goes to the audit event).
    let client_key = headers
        .get(crate::upstream::CLIENT_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| secrecy::SecretString::from(v.to_owned()));
    let client_wants_usage = request
        .body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let served = match state
        .upstream
        .send(
            &snapshot,
            &route,
            request.stream,
            client_key.as_ref(),
            |r| upstream_request(endpoint, &request, r),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            // Nothing was used: refund the reservation and free the slots.
            admission.finish(0, 0).await;
            return Err(reject(e));
        }
    };
    let upstream_wire = format_wire(served.route.provider.format);
    let client_wire = endpoint.api();
    let is_sse = served
        .response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let status = served.response.status();
    let mut builder = Response::builder().status(status.as_u16());
    if upstream_wire == client_wire {
        for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
            if let Some(v) = served.response.headers().get(&name) {
                builder = builder.header(name, v.clone());
            }
        }
    } else if is_sse {
        builder = builder
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache");
    } else {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    if let Ok(v) = HeaderValue::from_str(&served.route.alias) {
        builder = builder.header("x-warden-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(&served.route.provider.name) {
        builder = builder.header("x-warden-provider", v);
    }
    if served.fallback {
        builder = builder.header("x-warden-fallback", "true");
    }
    let plan = pump::PumpPlan {
        sse: is_sse,
        upstream: upstream_wire,
        client: client_wire,
        client_wants_usage: client_wants_usage || client_wire == Wire::Anthropic,
        prompt_estimate,
        price: served.route.price,
        requested_model: model.clone(),
    };
    let provider = served.route.provider.name.clone();
    let key_fingerprint = served.key_fingerprint.clone();
    tracing::debug!(model = %served.route.alias, key = %served.key_fingerprint, fallback = served.fallback, "upstream answered");
    let (settled_tx, settled) = tokio::sync::oneshot::channel();
    let rx = pump::pump(served.response, Some(admission), plan, Some(settled_tx));
    let response = builder
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .map_err(|_| reject(ApiError::internal("could not build the response")))?;
    Ok(Done {
        response: with_rate_headers(response, &rate_headers),
        principal: pid,
        credential: principal.credential.clone(),
        model,
        provider,
        key_fingerprint,
        settled: Some(settled),
    })
}

/// Lowers the request's completion-token limit to `cap`, or sets it when absent.
fn cap_output_tokens(endpoint: Endpoint, body: &mut Map<String, Value>, cap: u64) {
    let fields: &[&str] = match endpoint {
        Endpoint::Embeddings => return,
        Endpoint::Chat => &["max_completion_tokens", "max_tokens"],
        Endpoint::Messages => &["max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
    };
    let mut present = false;
    for f in fields {
        if let Some(v) = body.get_mut(*f) {
            present = true;
            if v.as_u64().is_none_or(|n| n > cap) {
                *v = Value::from(cap);
            }
        }
    }
    if !present && let Some(f) = fields.last() {
        body.insert((*f).to_owned(), Value::from(cap));
    }
}

/// Default completion reservation when the request sets no limit; streams are metered
/// beyond it as they flow.
const DEFAULT_OUTPUT_RESERVE: u64 = 256;

/// The completion tokens a request asks for at most.
fn requested_output(endpoint: Endpoint, body: &Map<String, Value>) -> u64 {
    if endpoint == Endpoint::Embeddings {
        return 0;
    }
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_OUTPUT_RESERVE)
}

/// Estimated prompt tokens of a chat request: the text of every message (and tool
/// definitions) at about four characters per token, plus a small per-message overhead.
pub fn estimate_prompt(body: &Map<String, Value>) -> u64 {
    fn text_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(text_len).sum(),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| k.as_str() != "image_url")
                .map(|(_, v)| text_len(v))
                .sum(),
            _ => 0,
        }
    }
    let messages = body.get("messages").and_then(Value::as_array);
    let chars: usize = messages.map_or(0, |m| {
        m.iter()
            .map(|m| text_len(m.get("content").unwrap_or(&Value::Null)))
            .sum()
    });
    let tools = body.get("tools").map_or(0, |t| t.to_string().len());
    let overhead = 4 * messages.map_or(0, Vec::len) as u64;
    pump::estimate_tokens(chars + tools) + overhead
}

fn denied_error(d: &Denied) -> ApiError {
    match d {
        Denied::Unavailable => {
            let mut e = ApiError::internal(
                "The gateway cannot check this credential's limits right now; retry shortly.",
            );
            e.status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            e.code = Some("limits_unavailable");
            e.retryable = true;
            e.retry_after = Some("1".into());
            e
        }
        Denied::Limit {
            kind,
            scope,
            limit,
            retry_after,
        } => {
            metrics::counter!(crate::metrics::LIMITED, "limit" => kind.label()).increment(1);
            let wait = crate::limits::format_reset(*retry_after);
            let mut e = match kind {
                LimitKind::Budget => {
                    let mut e = ApiError::bad_request(format!(
                        "You exceeded your current quota: the budget of {scope} (${:.2}) is spent for this period.",
                        *limit as f64 / 1e6
                    ));
                    e.kind = "insufficient_quota";
                    e.code = Some("insufficient_quota");
                    e
                }
                LimitKind::Requests => {
                    let mut e = ApiError::bad_request(format!(
                        "Rate limit reached for {scope} on requests per min (RPM): Limit {limit}. Please try again in {wait}."
                    ));
                    e.kind = "requests";
                    e.code = Some("rate_limit_exceeded");
                    e
                }
                LimitKind::Tokens => {
                    let mut e = ApiError::bad_request(format!(
                        "Rate limit reached for {scope} on tokens per min (TPM): Limit {limit}. Please try again in {wait}."
                    ));
                    e.kind = "tokens";
                    e.code = Some("rate_limit_exceeded");
                    e
                }
                LimitKind::Parallel => {
                    let mut e = ApiError::bad_request(format!(
                        "Too many requests in flight for {scope}: Limit {limit}. Please try again in {wait}."
                    ));
                    e.kind = "requests";
                    e.code = Some("rate_limit_exceeded");
                    e
                }
            };
            e.status = axum::http::StatusCode::TOO_MANY_REQUESTS;
            e.retryable = true;
            e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0).to_string());
            if let LimitKind::Requests | LimitKind::Tokens = kind {
                let which = if *kind == LimitKind::Requests {
                    "requests"
                } else {
                    "tokens"
                };
                e.extra_headers
                    .push((format!("x-ratelimit-limit-{which}"), limit.to_string()));
                e.extra_headers
                    .push((format!("x-ratelimit-remaining-{which}"), "0".into()));
                e.extra_headers
                    .push((format!("x-ratelimit-reset-{which}"), wait));
            }
            e
        }
    }
}

fn with_rate_headers(mut response: Response, h: &RateHeaders) -> Response {
    for (which, limit) in [("requests", h.requests), ("tokens", h.tokens)] {
        let Some(l) = limit else { continue };
        for (name, value) in [
            (format!("x-ratelimit-limit-{which}"), l.limit.to_string()),
            (
                format!("x-ratelimit-remaining-{which}"),
                l.remaining.to_string(),
            ),
            (
                format!("x-ratelimit-reset-{which}"),
                crate::limits::format_reset(l.reset),
            ),
        ] {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::try_from(name),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(n, v);
            }
        }
    }
    response
}

/// `GET /v1/models`: the models this caller may use.
pub async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(snapshot) = state.snapshot() else {
        return ApiError::not_ready().into_response();
    };
    let principal = match authenticate(&state, &snapshot, &headers, "/v1/models") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = principal.require(Scope::Read) {
        return e.into_response();
    }
    let data: Vec<Value> = snapshot
        .aliases
        .iter()
        .filter(|a| principal.may_use(a))
        .filter_map(|a| snapshot.routes.get(a))
        .map(|r| {
            serde_json::json!({
                "id": r.alias,
                "object": "model",
                "created": 0,
                "owned_by": r.provider.name,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_it_needs() {
        let r = parse_request(
            Endpoint::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"x":1}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream);
        assert_eq!(r.body["x"], 1);
    }

    #[test]
    fn rejects_bad_bodies_with_clear_messages() {
        for (body, needle) in [
            (&b"not json"[..], "parse the JSON"),
            (b"[1]", "JSON object"),
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (
                br#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":[]}"#, "messages"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
        ] {
            let e = parse_request(Endpoint::Chat, body).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }
}
