//! Forwarding an admitted request to its provider: the provider request for each route the
//! upstream call may try (`upstream_request`: the client's body with the model rewritten —
//! spliced into the received bytes when the body is otherwise unchanged ([`super::splice`])
//! — or translated when the formats differ), the call itself — key rotation and failover
//! are [`crate::upstream`]'s — the head of the client's response, and the pump that streams
//! the body back ([`super::pump`]). A non-streamed answer of up to a megabyte goes out as
//! one body with its `content-length`, so that its head and body leave in one write.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument as _;

use super::Endpoint;
use super::parse::ModelRequest;
use super::pump::{self, PumpPlan, Settled};
use super::splice::Spliceable;
use crate::compiled::{Format, Route, Snapshot};
use crate::error::ApiError;
use crate::limits::Admission;
use crate::state::AppState;
use crate::translate::Wire;
use crate::upstream::{CLIENT_KEY_HEADER, UpstreamRequest};

/// A provider's answer on its way to the client.
#[derive(Debug)]
pub struct Forwarded {
    /// The head, and the body the pump fills.
    pub response: Response,
    /// The provider that answered.
    pub provider: String,
    /// Fingerprint of the upstream key used (never the key).
    pub key_fingerprint: String,
    /// Resolves when the pumped body has ended, with its usage.
    pub settled: oneshot::Receiver<Settled>,
    /// How long the provider took to answer (keys and fallbacks tried included).
    pub upstream_time: std::time::Duration,
}

/// Sends `request` to `route`'s provider (or a fallback) and starts pumping the answer to
/// the client; the pump settles `admission`. When no provider answers, the reservation is
/// refunded.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts, each already parsed"
)]
pub async fn forward(
    state: &AppState,
    snapshot: &Snapshot,
    route: &Route,
    endpoint: Endpoint,
    request: &ModelRequest,
    headers: &HeaderMap,
    admission: Admission,
    prompt_estimate: u64,
    principal: &str,
    dlp: Option<super::dlp::ResponseScan>,
) -> Result<Forwarded, ApiError> {
    // A passthrough provider's key comes from the client, in its own header; it is never
    // logged or stored (its fingerprint goes to the audit event).
    let client_key = headers
        .get(CLIENT_KEY_HEADER)
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
    // `--upstream-deadline` bounds the whole exchange: every key and fallback tried, and
    // the body pumped to the client.
    let deadline = state
        .upstream_deadline
        .map(|d| (tokio::time::Instant::now() + d, d));
    // The received body's layout, found once for every provider tried.
    let splice = Spliceable::new(request);
    let span = crate::trace::upstream_span(&route.provider.name);
    let upstream_started = std::time::Instant::now();
    let sent = state
        .upstream
        .send(
            principal,
            snapshot,
            route,
            request.stream,
            client_key.as_ref(),
            |r| upstream_request_with(endpoint, request, splice.as_ref(), r),
        )
        .instrument(span.clone());
    let sent = match deadline {
        Some((at, after)) => tokio::time::timeout_at(at, sent).await.unwrap_or_else(|_| {
            tracing::info!(provider = %route.provider.name, deadline_secs = after.as_secs_f64(), "upstream deadline passed before an answer");
            Err(ApiError::upstream_deadline(&route.provider.name, after))
        }),
        None => sent.await,
    };
    let upstream_time = upstream_started.elapsed();
    crate::trace::record_upstream(
        &span,
        sent.as_ref()
            .map(|s| s.route.provider.name.as_str())
            .map_err(ApiError::metric_label),
    );
    let served = match sent {
        Ok(s) => s,
        Err(e) => {
            // Nothing was used: refund the reservation and free the slots.
            admission.finish(0, 0).await;
            return Err(e);
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
    if let Some(v) = &served.route.alias_header {
        builder = builder.header("x-warden-model", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&served.route.provider.name) {
        builder = builder.header("x-warden-provider", v);
    }
    if served.fallback {
        builder = builder.header("x-warden-fallback", "true");
    }
    let plan = PumpPlan {
        sse: is_sse,
        upstream: upstream_wire,
        client: client_wire,
        client_wants_usage: client_wants_usage || client_wire == Wire::Anthropic,
        prompt_estimate,
        price: served.route.price,
        requested_model: request.model.clone(),
        dlp,
        deadline: deadline.map(|(at, after)| {
            (
                at,
                ApiError::upstream_deadline(&served.route.provider.name, after),
            )
        }),
        cut: state.drain_cut.clone(),
    };
    let provider = served.route.provider.name.clone();
    let key_fingerprint = served.key_fingerprint.clone();
    tracing::debug!(model = %served.route.alias, key = %served.key_fingerprint, fallback = served.fallback, "upstream answered");
    let (settled_tx, settled) = oneshot::channel();
    let rx = pump::pump(served.response, Some(admission), plan, Some(settled_tx));
    let body = if is_sse {
        Body::from_stream(ReceiverStream::new(rx))
    } else {
        whole_or_streamed(rx).await
    };
    let response = builder
        .body(body)
        .map_err(|_| ApiError::internal("could not build the response"))?;
    Ok(Forwarded {
        response,
        provider,
        key_fingerprint,
        settled,
        upstream_time,
    })
}

/// Largest non-streamed answer held to go out as one body with a `content-length` (its
/// head and body in one write); a larger one streams on as it arrives.
const MAX_WHOLE_ANSWER: usize = 1024 * 1024;

/// A non-streamed answer as one body once the pump has passed all of it, when it is at
/// most [`MAX_WHOLE_ANSWER`] bytes and arrived without error; else what arrived so far
/// followed by the rest (or the error) as a stream, as before.
async fn whole_or_streamed(mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    let mut held: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    let error = loop {
        match rx.recv().await {
            None => {
                return match held.len() {
                    0 => Body::empty(),
                    1 => Body::from(held.swap_remove(0)),
                    _ => Body::from(held.concat()),
                };
            }
            Some(Ok(chunk)) => {
                size += chunk.len();
                held.push(chunk);
                if size > MAX_WHOLE_ANSWER {
                    break None;
                }
            }
            Some(Err(e)) => break Some(e),
        }
    };
    let head = futures::stream::iter(held.into_iter().map(Ok).chain(error.map(Err)));
    Body::from_stream(head.chain(ReceiverStream::new(rx)))
}

/// The wire format a provider of `format` speaks.
fn format_wire(format: Format) -> Wire {
    match format {
        Format::Anthropic => Wire::Anthropic,
        Format::OpenAi | Format::Echo => Wire::OpenAi,
    }
}

/// Builds the provider request for `route`: the client's body with the model rewritten, or
/// its translation when the formats differ.
pub fn upstream_request(
    endpoint: Endpoint,
    request: &ModelRequest,
    route: &Route,
) -> Result<UpstreamRequest, ApiError> {
    upstream_request_with(endpoint, request, Spliceable::new(request).as_ref(), route)
}

/// [`upstream_request`] with the received body's layout, when it can be spliced: then a
/// provider of the client's format gets the received bytes with `model` replaced.
fn upstream_request_with(
    endpoint: Endpoint,
    request: &ModelRequest,
    splice: Option<&Spliceable>,
    route: &Route,
) -> Result<UpstreamRequest, ApiError> {
    let target = format_wire(route.provider.format);
    let same_wire = matches!(
        (endpoint, target),
        (
            Endpoint::Chat | Endpoint::Embeddings | Endpoint::Responses,
            Wire::OpenAi
        ) | (Endpoint::Messages, Wire::Anthropic)
    );
    let ask_usage = request.stream && endpoint == Endpoint::Chat;
    if same_wire
        && let Some(body) = splice.and_then(|s| {
            s.body(
                &route.upstream_model,
                &route.provider.drop_params,
                ask_usage,
            )
        })
    {
        return Ok(UpstreamRequest {
            path: endpoint_path(endpoint),
            body,
            format: route.provider.format,
        });
    }
    let mut body = request.body.clone();
    body.insert("model".into(), Value::String(route.upstream_model.clone()));
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
            crate::translate::openai_to_anthropic::request(&Value::Object(body))?,
        ),
        (Endpoint::Messages, Wire::Anthropic) => ("/messages", Value::Object(body)),
        (Endpoint::Messages, Wire::OpenAi) => (
            "/chat/completions",
            crate::translate::anthropic_to_openai::request(&Value::Object(body))?,
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

/// The provider path of a request the provider takes in the client's own format.
fn endpoint_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat => "/chat/completions",
        Endpoint::Messages => "/messages",
        Endpoint::Embeddings => "/embeddings",
        Endpoint::Responses => "/responses",
    }
}
