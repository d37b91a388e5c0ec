//! The request path of every model endpoint, in named steps (`handle`): authenticate from
//! the headers, past the failed-login check of the caller's address ([`intake`],
//! [`failed_logins`]), authorize the scope, read the body within its size and time limits,
//! parse only what is needed ([`parse`]), route the alias or
//! `provider:model` ([`route`]), cap the output tokens and apply the limits
//! ([`admission`]), then answer from the built-in echo provider ([`echo`]) or forward to
//! the provider ([`forward`]) — translating between the OpenAI and Anthropic wire formats
//! when the client's API and the provider's differ — and stream the answer back event by
//! event ([`pump`]). Each request's audit event is opened on arrival and written once with
//! its outcome ([`request_audit`]). Errors answer in the shape of the API the request came
//! through ([`ApiError::render`]). The gateway's IP allow-list is checked before the
//! credential, the credential's own IP and origin lists right after it ([`intake`]); CORS
//! preflights and headers are [`cors`]'s.
//!
//! | endpoint | client API | providers |
//! |---|---|---|
//! | `POST /v1/chat/completions` | OpenAI | OpenAI (as is), Anthropic (translated) |
//! | `POST /v1/messages` | Anthropic | Anthropic (as is), OpenAI (translated) |
//! | `POST /v1/messages/count_tokens` | Anthropic | local estimate |
//! | `POST /v1/embeddings`, `POST /v1/responses` | OpenAI | OpenAI only (passed through) |

pub mod admission;
pub mod cors;
pub mod dlp;
pub mod echo;
pub mod failed_logins;
pub mod forward;
pub mod intake;
pub mod parse;
pub mod pump;
pub mod request_audit;
pub mod route;
pub mod splice;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tracing::Instrument as _;
use warden_core::jwt::Scope;

use crate::compiled::Format;
pub use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::metrics as metric;
use crate::state::AppState;
use crate::translate::Wire;
use admission::with_rate_headers;
use parse::{cap_output_tokens, parse_request, requested_output};
use pump::Settled;
use request_audit::{Answer, BodyEnd, RequestAudit};
use route::resolve_route;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, Endpoint::Chat).await
}

/// `POST /v1/messages`.
pub async fn messages(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, Endpoint::Messages).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, Endpoint::Embeddings).await
}

/// `POST /v1/responses`.
pub async fn responses(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, request, Endpoint::Responses).await
}

/// `POST /v1/messages/count_tokens`: a local estimate (about four characters per token),
/// for the models the caller may use.
pub async fn count_tokens(State(state): State<Arc<AppState>>, request: Request) -> Response {
    const PATH: &str = "/v1/messages/count_tokens";
    let request_id = uuid::Uuid::now_v7().to_string();
    let unread = intake::unread_body(&request);
    let (headers, peer, request) = intake::split(&state, request);
    let caller = async {
        let snapshot = state.snapshot().ok_or_else(ApiError::not_ready)?;
        intake::refuse_if_locked_down(&snapshot)?;
        intake::admit_address(&snapshot, peer)?;
        let principal = intake::authenticate(&state, &snapshot, peer, &headers, PATH, &request_id)?;
        intake::refuse_if_suspended(&principal)?;
        intake::refuse_if_stale(&state)?;
        intake::admit_principal(&principal, peer, &headers)?;
        principal.require(Scope::Read)?;
        let body = intake::read_body(&state, request).await?;
        Ok::<_, ApiError>((snapshot, principal, body))
    }
    .await;
    let mut response = match caller {
        Ok((snapshot, principal, body)) => estimate_tokens(&snapshot, &principal, &body)
            .unwrap_or_else(|e| e.render(Wire::Anthropic)),
        Err(e) => {
            let mut r = e.render(Wire::Anthropic);
            intake::close_if(&mut r, unread);
            r
        }
    };
    set_request_id(&mut response, &request_id);
    response
}

/// The token estimate of a `count_tokens` body.
fn estimate_tokens(
    snapshot: &crate::compiled::Snapshot,
    principal: &crate::auth::Principal,
    body: &[u8],
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("We could not parse the JSON body of your request."))?;
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("model: Field required"))?;
    parse::check_model_length(model)?;
    resolve_route(snapshot, principal, model)?;
    if !value.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::bad_request("messages: Field required"));
    }
    Ok(axum::Json(crate::translate::count_tokens::count_tokens(&value)).into_response())
}

async fn serve(state: &Arc<AppState>, request: Request, endpoint: Endpoint) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::now_v7().to_string();
    // Answered before its body is read to its end, the connection is not kept (hyper would
    // not read the rest either): the client is told so.
    let unread = intake::unread_body(&request);
    // Fail closed: a request whose audit event could not be recorded is not served (and,
    // since the audit log is what is unavailable, not audited; counted instead).
    if let Some(reason) = state.audit.unavailable() {
        let e = ApiError::audit_unavailable(reason);
        let m = &state.request_metrics;
        m.request(endpoint, metric::NONE, metric::NONE, e.status());
        m.added_latency(endpoint, started.elapsed());
        metrics::counter!(crate::metrics::AUDIT_REFUSED).increment(1);
        tracing::debug!(request_id = %request_id, reason, "request refused: audit log unavailable");
        let mut r = time_first_byte(e.render(endpoint.api()), m.ttfb(endpoint), started);
        set_request_id(&mut r, &request_id);
        intake::close_if(&mut r, unread);
        return r;
    }
    let (headers, peer, request) = intake::split(state, request);
    // The request's audit event: who, from where, what; written once with the outcome. A
    // client that goes away before the answer starts cancels this future: dropping the
    // event audits the request then.
    let audit = RequestAudit::open(state, &request_id, endpoint, peer, &headers, started);
    let call = Call {
        headers: &headers,
        peer,
        request_id: &request_id,
        endpoint,
    };
    let span = crate::trace::request_span(endpoint, &request_id);
    // Time spent waiting for providers, added up by the upstream calls.
    let (handled, upstream_wait) = crate::upstream::UPSTREAM_WAIT
        .scope(std::cell::Cell::new(Duration::ZERO), async {
            let handled = handle(state, &call, request).instrument(span.clone()).await;
            let wait = crate::upstream::UPSTREAM_WAIT.with(std::cell::Cell::get);
            (handled, wait)
        })
        .await;
    let m = &state.request_metrics;
    m.added_latency(endpoint, started.elapsed().saturating_sub(upstream_wait));
    let labels = state.snapshot();
    let labels = labels.as_deref().map(|s| &s.metric_labels);
    let done = match handled {
        Ok(done) => done,
        Err(Rejection {
            error: e,
            principal,
            model,
            stage,
            dlp,
        }) => {
            let label = e.metric_label();
            tracing::info!(
                request_id = %request_id,
                endpoint = endpoint.path(),
                principal = %principal,
                model = %model,
                status = e.status().as_u16(),
                error = label,
                origin = ?e.origin(),
                latency_ms = started.elapsed().as_millis() as u64,
                "request rejected"
            );
            let alias = labels.map_or(metric::NONE, |l| l.alias(&model));
            m.request(endpoint, alias, metric::NONE, e.status());
            crate::trace::record_outcome(
                &span,
                state,
                &model,
                None,
                e.status().as_u16(),
                Some(label),
                started.elapsed(),
                None,
            );
            if stage == Stage::Login {
                audit.to_failed_logins();
            } else {
                let mut audit = audit;
                if let Some(found) = dlp.filter(|f| !f.is_empty()) {
                    metric::dlp_matches(&found, "request");
                    audit.note("dlp", found.summary());
                }
                audit.rejected(principal, model, &e);
            }
            let mut r = time_first_byte(e.render(endpoint.api()), m.ttfb(endpoint), started);
            set_request_id(&mut r, &request_id);
            intake::close_if(&mut r, unread && stage != Stage::Parsed);
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
        dlp,
        upstream_time,
    } = done;
    let mut audit = audit;
    if let Some(found) = dlp.filter(|f| !f.is_empty()) {
        metric::dlp_matches(&found, "request");
        audit.note("dlp", found.summary());
    }
    let status = response.status();
    m.request(
        endpoint,
        labels.map_or(metric::NONE, |l| l.alias(&model)),
        labels.map_or(metric::NONE, |l| l.provider(&provider)),
        status,
    );
    response = time_first_byte(response, m.ttfb(endpoint), started);
    let model_served = response
        .headers()
        .get("x-warden-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&model)
        .to_owned();
    crate::trace::record_outcome(
        &span,
        state,
        &model_served,
        Some(&provider),
        status.as_u16(),
        None,
        started.elapsed(),
        upstream_time,
    );
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
    let answered = audit.answered(
        principal,
        model,
        Answer {
            credential: &credential,
            provider: &provider,
            model_served: &model_served,
            fallback: response.headers().contains_key("x-warden-fallback"),
            key_fingerprint: &key_fingerprint,
            status,
        },
    );
    match settled {
        // A pumped answer is audited when its body ends, with the usage as billed.
        Some(settled) => {
            tokio::spawn(async move {
                answered.finish(match settled.await {
                    Ok(s) => {
                        if let Some(found) = s.dlp.as_ref().filter(|f| !f.is_empty()) {
                            metric::dlp_matches(found, "response");
                        }
                        BodyEnd::Pumped(s)
                    }
                    Err(_) => BodyEnd::Unreported,
                });
            });
        }
        None => answered.finish(BodyEnd::Whole),
    }
    set_request_id(&mut response, &request_id);
    response
}

/// Records the time to the answer's first body byte in `ttfb` when that byte is handed on.
/// The body keeps its size hint, so an answer of known length still goes out with
/// `content-length` rather than chunked.
fn time_first_byte(response: Response, ttfb: metrics::Histogram, started: Instant) -> Response {
    let (parts, inner) = response.into_parts();
    let body = TimedBody {
        inner,
        pending: Some(ttfb),
        started,
    };
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// A body that records its first data frame's time ([`time_first_byte`]).
struct TimedBody {
    inner: axum::body::Body,
    pending: Option<metrics::Histogram>,
    started: Instant,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(f))) = &frame
            && f.is_data()
            && let Some(ttfb) = self.pending.take()
        {
            ttfb.record(self.started.elapsed().as_secs_f64());
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn set_request_id(response: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", v);
    }
}

/// A handled request's answer, and what its audit event records.
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
    settled: Option<tokio::sync::oneshot::Receiver<Settled>>,
    /// What the DLP rules found in the request (`None`: no rule applied).
    dlp: Option<warden_core::dlp::Findings>,
    /// How long the provider took to answer its head (`None`: no provider, e.g. echo).
    upstream_time: Option<std::time::Duration>,
}

/// A refused request: the error, who asked for what as far as known (empty before
/// authentication and before parsing; `-` when authentication failed), and how far it got.
struct Rejection {
    error: ApiError,
    principal: String,
    model: String,
    stage: Stage,
    /// What the DLP rules found before the request was refused.
    dlp: Option<warden_core::dlp::Findings>,
}

/// How far a refused request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Refused by the failed-login accounting, or failed its authentication: the
    /// accounting audits it.
    Login,
    /// Refused before its body was read to its end.
    Headers,
    /// Refused once its body was read.
    Parsed,
}

impl Rejection {
    fn new(error: ApiError, principal: &str, model: &str) -> Self {
        Self {
            error,
            principal: principal.to_owned(),
            model: model.to_owned(),
            stage: Stage::Parsed,
            dlp: None,
        }
    }

    fn at(stage: Stage, error: ApiError, principal: &str) -> Self {
        Self {
            stage,
            ..Self::new(error, principal, "")
        }
    }
}

/// What a model request is, besides its body.
struct Call<'a> {
    headers: &'a HeaderMap,
    /// The client's address (see [`crate::client_addr`]).
    peer: Option<std::net::IpAddr>,
    request_id: &'a str,
    endpoint: Endpoint,
}

/// One model request, step by step.
async fn handle(state: &AppState, call: &Call<'_>, request: Request) -> Result<Done, Rejection> {
    let Call {
        headers, endpoint, ..
    } = *call;
    // The snapshot in force, and the caller: from the headers alone, before the body.
    let snapshot = state
        .snapshot()
        .ok_or_else(|| Rejection::at(Stage::Headers, ApiError::not_ready(), ""))?;
    // A lockdown refuses before any credential is looked up; a suspension once it is.
    intake::refuse_if_locked_down(&snapshot).map_err(|e| Rejection::at(Stage::Headers, e, ""))?;
    intake::admit_address(&snapshot, call.peer)
        .map_err(|e| Rejection::at(Stage::Headers, e, ""))?;
    let principal = crate::trace::auth_span()
        .in_scope(|| {
            intake::authenticate(
                state,
                &snapshot,
                call.peer,
                headers,
                endpoint.path(),
                call.request_id,
            )
        })
        .map_err(|e| Rejection::at(Stage::Login, e, "-"))?;
    let pid = principal.id.as_str();
    intake::refuse_if_suspended(&principal).map_err(|e| Rejection::at(Stage::Headers, e, pid))?;
    intake::refuse_if_stale(state).map_err(|e| Rejection::at(Stage::Headers, e, pid))?;
    intake::admit_principal(&principal, call.peer, headers)
        .map_err(|e| Rejection::at(Stage::Headers, e, pid))?;
    principal
        .require(Scope::Write)
        .map_err(|e| Rejection::at(Stage::Headers, e, pid))?;
    // The body, within the size cap and the body-read timeout.
    let body = intake::read_body(state, request)
        .await
        .map_err(|e| Rejection::at(Stage::Headers, e, pid))?;
    // Parse only what is needed; route the model.
    let mut request = parse_request(endpoint, &body)
        .map_err(|e| Rejection::new(e, pid, ""))?
        .with_raw(body);
    let model = request.model.clone();
    let reject = |e: ApiError| Rejection::new(e, pid, &model);
    let may_keep_state = principal.scopes.contains(&Scope::ResponsesState);
    request.modified |=
        parse::guard_provider_state(endpoint, may_keep_state, &mut request.body).map_err(reject)?;
    let route = resolve_route(&snapshot, &principal, &model).map_err(reject)?;

    // DLP: the rules that apply to this caller and model, over the request's text.
    let found = dlp::inspect(&snapshot, &principal, &model, endpoint, &mut request);
    if let Some(rule) = found.as_ref().and_then(|f| f.blocked_by()) {
        return Err(Rejection {
            dlp: found.clone(),
            ..reject(ApiError::dlp_blocked(rule))
        });
    }

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
        // The cap covers all `n` choices of a chat completion.
        let per_choice = parse::per_choice_cap(cap, request.choices).map_err(reject)?;
        request.modified |= cap_output_tokens(endpoint, &mut request.body, per_choice);
    }

    // Limits: the caller's, the model's and the global ones, in one decision.
    let prompt_estimate = parse::prompt_estimate(endpoint, &request.body);
    // Saturating: `max_tokens` is the client's, up to u64::MAX.
    let reserve =
        prompt_estimate.saturating_add(requested_output(endpoint, &request.body, request.choices));
    let admission = admission::admit(state, &snapshot, &principal, &route, reserve)
        .instrument(crate::trace::limiter_span())
        .await
        .map_err(reject)?;
    let rate_headers = admission.headers;

    // Answer: from the built-in echo provider, or from the provider.
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
            principal: principal.id.clone(),
            credential: principal.credential.clone(),
            model,
            provider: route.provider.name.clone(),
            key_fingerprint: String::new(),
            settled: None,
            dlp: found,
            upstream_time: None,
        });
    }
    let forwarded = forward::forward(
        state,
        &snapshot,
        &route,
        endpoint,
        &request,
        headers,
        admission,
        prompt_estimate,
        &principal.id,
        dlp::response_scan(&snapshot, &principal, &model),
    )
    .await
    .map_err(|e| Rejection {
        dlp: found.clone(),
        ..reject(e)
    })?;
    Ok(Done {
        response: with_rate_headers(forwarded.response, &rate_headers),
        principal: principal.id.clone(),
        credential: principal.credential.clone(),
        model,
        provider: forwarded.provider,
        key_fingerprint: forwarded.key_fingerprint,
        settled: Some(forwarded.settled),
        dlp: found,
        upstream_time: Some(forwarded.upstream_time),
    })
}

/// `GET /v1/models`: the models this caller may use.
pub async fn list_models(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let (headers, peer, _) = intake::split(&state, request);
    let Some(snapshot) = state.snapshot() else {
        return ApiError::not_ready().into_response();
    };
    let principal = intake::refuse_if_locked_down(&snapshot)
        .and_then(|()| intake::admit_address(&snapshot, peer))
        .and_then(|()| {
            let p =
                intake::authenticate(&state, &snapshot, peer, &headers, "/v1/models", &request_id)?;
            intake::refuse_if_suspended(&p)?;
            intake::refuse_if_stale(&state)?;
            intake::admit_principal(&p, peer, &headers)?;
            Ok(p)
        });
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            let mut r = e.into_response();
            set_request_id(&mut r, &request_id);
            return r;
        }
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
