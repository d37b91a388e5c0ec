//! Metering — and, when the client's API differs from the provider's, translating — a
//! provider's answer while it flows to the client.
//!
//! A task pumps the upstream body into the client's body. SSE answers are parsed event by
//! event ([`SseParser`]) and each event is forwarded (or translated) as soon as it is
//! complete, never the whole stream — an event passed unchanged as the provider's own
//! bytes (a slice of the chunk it arrived in; only an event split across chunks is
//! formatted again); JSON answers pass through chunk by chunk, or — when they must be
//! translated — are read whole, translated and sent. On the way the task counts
//! usage: the provider's reported `usage` when present, else an estimate from the text
//! seen. For streams it charges tokens to the limits in steps; when a tokens-per-minute or
//! budget ceiling is crossed mid-stream it ends the stream with a well-formed error event in
//! the client's API shape and drops the upstream request; so it does when
//! `--upstream-deadline` passes (a JSON answer still arriving then is cut off). When the client goes away the
//! upstream request is dropped at once. Either way the request is settled with what was
//! used: the reported usage, or deterministically the prompt estimate plus the completion
//! text forwarded so far.

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;

use super::parse::estimate_tokens;
use crate::compiled::Price;
use crate::error::ApiError;
use crate::limits::{Admission, LimitKind, Metered, cost_micros};
use crate::translate::{
    AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseEvent, SseParser, Wire,
};

/// Tokens charged per mid-stream step.
const STEP: u64 = 64;
/// Largest JSON answer kept aside to read its `usage` or to translate it.
const MAX_JSON: usize = 32 * 1024 * 1024;

/// What a response used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// Whether the provider reported these figures (else they are estimates).
    pub reported: bool,
}

/// Reads a `usage` object in any of the providers' shapes (chat/embeddings:
/// `prompt_tokens`/`completion_tokens`; Anthropic and Responses:
/// `input_tokens`/`output_tokens`).
fn usage_object(u: &Value) -> Option<(Option<u64>, Option<u64>)> {
    let input = u
        .get("prompt_tokens")
        .or_else(|| u.get("input_tokens"))
        .and_then(Value::as_u64);
    let output = u
        .get("completion_tokens")
        .or_else(|| u.get("output_tokens"))
        .and_then(Value::as_u64);
    (input.is_some() || output.is_some()).then_some((input, output))
}

/// Tracks one response.
#[derive(Debug)]
pub struct Meter {
    prompt_estimate: u64,
    completion_chars: usize,
    reported_input: Option<u64>,
    reported_output: Option<u64>,
}

impl Meter {
    pub fn new(prompt_estimate: u64) -> Self {
        Self {
            prompt_estimate,
            completion_chars: 0,
            reported_input: None,
            reported_output: None,
        }
    }

    fn report(&mut self, u: &Value) {
        if let Some((input, output)) = usage_object(u) {
            if input.is_some() {
                self.reported_input = input;
            }
            if output.is_some() {
                self.reported_output = output;
            }
        }
    }

    /// Observes one upstream SSE event.
    pub fn observe_event(&mut self, wire: Wire, data: &Value) {
        match wire {
            Wire::OpenAi => {
                if let Some(choices) = data.get("choices").and_then(Value::as_array) {
                    for c in choices {
                        let delta = c.get("delta");
                        if let Some(t) =
                            delta.and_then(|d| d.get("content")).and_then(Value::as_str)
                        {
                            self.completion_chars += t.len();
                        }
                        if let Some(calls) = delta
                            .and_then(|d| d.get("tool_calls"))
                            .and_then(Value::as_array)
                        {
                            for call in calls {
                                if let Some(a) =
                                    call.pointer("/function/arguments").and_then(Value::as_str)
                                {
                                    self.completion_chars += a.len();
                                }
                            }
                        }
                    }
                }
                // Responses API streams: text deltas and a final `response.usage`.
                if let Some(d) = data.get("delta").and_then(Value::as_str) {
                    self.completion_chars += d.len();
                }
                if let Some(u) = data.pointer("/response/usage") {
                    self.report(u);
                }
                if let Some(u) = data.get("usage") {
                    self.report(u);
                }
            }
            Wire::Anthropic => {
                if let Some(u) = data.pointer("/message/usage") {
                    self.report(u);
                }
                if let Some(u) = data.get("usage") {
                    self.report(u);
                }
                if let Some(delta) = data.get("delta") {
                    for field in ["text", "partial_json", "thinking"] {
                        if let Some(t) = delta.get(field).and_then(Value::as_str) {
                            self.completion_chars += t.len();
                        }
                    }
                }
            }
        }
    }

    /// Observes a complete JSON answer.
    pub fn observe_json(&mut self, body: &Value) {
        if let Some(u) = body.get("usage") {
            self.report(u);
        }
        if self.reported_output.is_none() {
            if let Some(t) = body
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
            {
                self.completion_chars += t.len();
            }
            if let Some(blocks) = body.get("content").and_then(Value::as_array) {
                for b in blocks {
                    if let Some(t) = b.get("text").and_then(Value::as_str) {
                        self.completion_chars += t.len();
                    }
                }
            }
        }
    }

    /// Usage so far: reported figures where seen, estimates for the rest.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt: self.reported_input.unwrap_or(self.prompt_estimate),
            completion: self
                .reported_output
                .unwrap_or_else(|| estimate_tokens(self.completion_chars)),
            reported: self.reported_input.is_some() || self.reported_output.is_some(),
        }
    }
}

/// What an answer came to, once its body has been pumped: for the request's audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Micro-USD at the route's price.
    pub cost_micros: u64,
    /// `completed`, `client_disconnected`, `upstream_error`, `limit_exceeded`, `cut_at_shutdown` or
    /// `upstream_deadline`.
    pub outcome: &'static str,
    /// What the DLP rules flagged in the answer (`None`: no rule applied).
    pub dlp: Option<warden_core::dlp::Findings>,
}

/// How to pump one answer.
#[derive(Debug)]
pub struct PumpPlan {
    pub sse: bool,
    /// The provider's wire format.
    pub upstream: Wire,
    /// The client's wire format.
    pub client: Wire,
    /// The client asked for the final usage chunk (OpenAI `stream_options.include_usage`);
    /// if not, the one the gateway asked for is not forwarded.
    pub client_wants_usage: bool,
    pub prompt_estimate: u64,
    pub price: Price,
    /// The model name the client used, for translated answers.
    pub requested_model: String,
    /// The DLP rules that flag the answer's text, if any apply.
    pub dlp: Option<super::dlp::ResponseScan>,
    /// `--upstream-deadline`: when the whole exchange must have ended, and the error that
    /// ends a stream still running then.
    pub deadline: Option<(tokio::time::Instant, ApiError)>,
    /// Cancelled when the node's drain deadline passes: the stream ends with an error
    /// event (outcome `cut_at_shutdown`).
    pub cut: tokio_util::sync::CancellationToken,
}

enum Frames {
    Pass(Wire),
    OpenAiToAnthropic(Box<OpenAiToAnthropicStream>),
    AnthropicToOpenAi(Box<AnthropicToOpenAiStream>),
}

impl Frames {
    fn new(plan: &PumpPlan) -> Self {
        match (plan.upstream, plan.client) {
            (Wire::OpenAi, Wire::Anthropic) => Self::OpenAiToAnthropic(Box::new(
                OpenAiToAnthropicStream::new(&plan.requested_model),
            )),
            (Wire::Anthropic, Wire::OpenAi) => Self::AnthropicToOpenAi(Box::new(
                AnthropicToOpenAiStream::new(&plan.requested_model, plan.client_wants_usage),
            )),
            (w, _) => Self::Pass(w),
        }
    }

    /// The client's frames for `event`; `raw`, when given, is the event's text as the
    /// provider sent it, forwarded as it is when the event passes unchanged.
    fn push(
        &mut self,
        event: &SseEvent,
        raw: Option<Bytes>,
        value: Option<&Value>,
        strip_usage: bool,
    ) -> Vec<Bytes> {
        match self {
            Self::Pass(Wire::OpenAi) => {
                let usage_only = value.is_some_and(|v| {
                    v.get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
                        && v.get("usage").is_some()
                });
                if usage_only && strip_usage {
                    return Vec::new();
                }
                vec![raw.unwrap_or_else(|| match &event.event {
                    Some(name) => Bytes::from(format!("event: {name}\ndata: {}\n\n", event.data)),
                    None => Bytes::from(format!("data: {}\n\n", event.data)),
                })]
            }
            Self::Pass(Wire::Anthropic) => vec![raw.unwrap_or_else(|| {
                Bytes::from(format!(
                    "event: {}\ndata: {}\n\n",
                    event.event.as_deref().unwrap_or("message"),
                    event.data
                ))
            })],
            Self::OpenAiToAnthropic(c) => c.push(event),
            Self::AnthropicToOpenAi(c) => c.push(event),
        }
    }

    fn finish(&mut self) -> Vec<Bytes> {
        match self {
            Self::Pass(_) => Vec::new(),
            Self::OpenAiToAnthropic(c) => c.finish(),
            Self::AnthropicToOpenAi(c) => c.finish(),
        }
    }
}

/// The event that ends a stream cut by a limit, in the client's shape.
fn cut_event(client: Wire, kind: LimitKind) -> Bytes {
    error_event(client, &ApiError::limit_crossed_mid_stream(kind))
}

/// An error event that ends a stream, in the client's shape.
fn error_event(client: Wire, error: &ApiError) -> Bytes {
    let body = error.body(client);
    Bytes::from(match client {
        Wire::OpenAi => format!("data: {body}\n\ndata: [DONE]\n\n"),
        Wire::Anthropic => format!("event: error\ndata: {body}\n\n"),
    })
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn send_all(tx: &Sender, frames: Vec<Bytes>) -> bool {
    for f in frames {
        if tx.send(Ok(f)).await.is_err() {
            return false;
        }
    }
    true
}

/// Resolves at `at`, or never.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Translates a whole JSON answer for a client of the other API.
pub fn translate_json(plan: &PumpPlan, body: &[u8]) -> Option<Bytes> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let out = match (plan.upstream, plan.client) {
        (Wire::OpenAi, Wire::Anthropic) => {
            crate::translate::openai_to_anthropic::response(&value, &plan.requested_model)
        }
        (Wire::Anthropic, Wire::OpenAi) => {
            crate::translate::anthropic_to_openai::response(&value, &plan.requested_model)
        }
        _ => return None,
    };
    match out {
        Ok(v) => serde_json::to_vec(&v).ok().map(Bytes::from),
        Err(e) => {
            tracing::warn!(error = %e, "could not translate the provider's answer");
            None
        }
    }
}

/// Pumps `response` into a channel the client body reads, metering (and translating) as it
/// goes; settles `admission` when done. Returns the receiving end.
pub fn pump(
    response: reqwest::Response,
    admission: Option<Admission>,
    plan: PumpPlan,
    settled: Option<tokio::sync::oneshot::Sender<Settled>>,
) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut admission = admission;
        let mut plan = plan;
        let mut dlp = plan.dlp.take();
        let mut meter = Meter::new(plan.prompt_estimate);
        let mut upstream = response.bytes_stream();
        let mut parser = SseParser::new();
        let mut frames = Frames::new(&plan);
        let translate_whole = !plan.sse && plan.upstream != plan.client;
        let strip_usage = !plan.client_wants_usage;
        let mut json: Vec<u8> = Vec::new();
        let mut ended_ok = false;
        let mut outcome = "upstream_error";
        let (deadline, deadline_error) = match plan.deadline.clone() {
            Some((at, error)) => (Some(at), Some(error)),
            None => (None, None),
        };
        'pump: loop {
            let chunk = tokio::select! {
                c = upstream.next() => c,
                () = tx.closed() => {
                    tracing::info!("client went away; upstream request cancelled");
                    outcome = "client_disconnected";
                    break 'pump;
                }
                () = until(deadline) => {
                    tracing::info!(sse = plan.sse, "upstream deadline passed; ending the answer");
                    if let Some(error) = &deadline_error && plan.sse {
                        let _ = tx.send(Ok(error_event(plan.client, error))).await;
                    } else {
                        let _ = tx
                            .send(Err(std::io::Error::other("upstream deadline passed")))
                            .await;
                    }
                    outcome = "upstream_deadline";
                    break 'pump;
                }
                () = plan.cut.cancelled() => {
                    tracing::info!(sse = plan.sse, "drain deadline passed at shutdown; ending the answer");
                    if plan.sse {
                        let _ = tx.send(Ok(error_event(plan.client, &ApiError::shutting_down()))).await;
                    } else {
                        let _ = tx.send(Err(std::io::Error::other("node shutting down"))).await;
                    }
                    outcome = "cut_at_shutdown";
                    break 'pump;
                }
            };
            let bytes = match chunk {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "upstream stream broke");
                    if plan.sse {
                        // End the client's stream in its own shape.
                        let _ = send_all(&tx, frames.finish()).await;
                    } else {
                        let _ = tx
                            .send(Err(std::io::Error::other("upstream stream broke")))
                            .await;
                    }
                    break;
                }
                None => {
                    ended_ok = true;
                    outcome = "completed";
                    break;
                }
            };
            if !plan.sse {
                if json.len() + bytes.len() <= MAX_JSON {
                    json.extend_from_slice(&bytes);
                } else if translate_whole {
                    let _ = tx
                        .send(Err(std::io::Error::other(
                            "provider answer too large to translate",
                        )))
                        .await;
                    break;
                }
                if !translate_whole && tx.send(Ok(bytes)).await.is_err() {
                    outcome = "client_disconnected";
                    break;
                }
                continue;
            }
            // An event wholly inside this chunk can be forwarded as its slice of it.
            let mut start = parser.is_idle().then_some(0);
            let events = match parser.feed_spans(&bytes) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed upstream stream");
                    let _ = send_all(&tx, frames.finish()).await;
                    break;
                }
            };
            for (event, end) in events {
                let raw = start.map(|start| bytes.slice(start..end));
                start = Some(end);
                let value = if event.data == "[DONE]" {
                    None
                } else {
                    serde_json::from_str::<Value>(&event.data).ok()
                };
                if let Some(v) = &value {
                    meter.observe_event(plan.upstream, v);
                    if let Some(d) = dlp.as_mut() {
                        d.observe(v);
                    }
                }
                if !send_all(&tx, frames.push(&event, raw, value.as_ref(), strip_usage)).await {
                    outcome = "client_disconnected";
                    break 'pump;
                }
                if let Some(adm) = admission.as_mut() {
                    let used = meter.usage();
                    let total = used.prompt.saturating_add(used.completion);
                    while total > adm.charged() {
                        let cost = cost_micros(
                            0,
                            STEP,
                            plan.price.input_per_mtok,
                            plan.price.output_per_mtok,
                        );
                        if let Metered::Exceeded(kind) = adm.charge(STEP, cost).await {
                            tracing::info!(
                                limit = kind.label(),
                                "limit crossed mid-stream; ending the stream"
                            );
                            metrics::counter!(crate::metrics::LIMITED, "limit" => kind.label())
                                .increment(1);
                            crate::metrics::limiter_refused(kind.label(), "cut");
                            let _ = tx.send(Ok(cut_event(plan.client, kind))).await;
                            outcome = "limit_exceeded";
                            break 'pump;
                        }
                    }
                }
            }
        }
        if ended_ok {
            if plan.sse {
                if let Some(last) = parser.finish() {
                    let value = serde_json::from_str::<Value>(&last.data).ok();
                    if let Some(v) = &value {
                        meter.observe_event(plan.upstream, v);
                        if let Some(d) = dlp.as_mut() {
                            d.observe(v);
                        }
                    }
                    let _ =
                        send_all(&tx, frames.push(&last, None, value.as_ref(), strip_usage)).await;
                }
                let _ = send_all(&tx, frames.finish()).await;
            } else if translate_whole {
                match translate_json(&plan, &json) {
                    Some(b) => {
                        let _ = tx.send(Ok(b)).await;
                    }
                    None => {
                        let _ = tx
                            .send(Err(std::io::Error::other(
                                "provider answer could not be translated",
                            )))
                            .await;
                    }
                }
            }
        }
        drop(upstream);
        if !plan.sse
            && let Ok(v) = serde_json::from_slice::<Value>(&json)
        {
            meter.observe_json(&v);
            if let Some(d) = dlp.as_mut() {
                d.observe(&v);
            }
        }
        let used = meter.usage();
        let full = cost_micros(
            used.prompt,
            used.completion,
            plan.price.input_per_mtok,
            plan.price.output_per_mtok,
        );
        if let Some(done) = settled {
            let _ = done.send(Settled {
                prompt_tokens: used.prompt,
                completion_tokens: used.completion,
                cost_micros: full,
                outcome,
                dlp: dlp.map(|d| d.findings().clone()),
            });
        }
        if let Some(adm) = admission {
            let total = used.prompt.saturating_add(used.completion);
            // Steps charged mid-stream were billed at output prices; settle the rest.
            let charged_steps = adm.charged().saturating_sub(adm.reserved());
            let already = cost_micros(
                0,
                charged_steps,
                plan.price.input_per_mtok,
                plan.price.output_per_mtok,
            );
            adm.finish(total, full.saturating_sub(already)).await;
        }
        tracing::debug!(
            prompt = used.prompt,
            completion = used.completion,
            reported = used.reported,
            "response settled"
        );
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_prefers_reported_usage_in_either_shape() {
        let mut m = Meter::new(10);
        m.observe_event(
            Wire::OpenAi,
            &serde_json::json!({"choices":[{"delta":{"content":"abcdefgh"}}]}),
        );
        assert_eq!(
            m.usage(),
            Usage {
                prompt: 10,
                completion: 2,
                reported: false
            }
        );
        m.observe_event(
            Wire::OpenAi,
            &serde_json::json!({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}),
        );
        assert_eq!(
            m.usage(),
            Usage {
                prompt: 7,
                completion: 3,
                reported: true
            }
        );

        let mut a = Meter::new(5);
        a.observe_event(Wire::Anthropic, &serde_json::json!({"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}));
        a.observe_event(Wire::Anthropic, &serde_json::json!({"type":"content_block_delta","delta":{"type":"text_delta","text":"hello world"}}));
        a.observe_event(
            Wire::Anthropic,
            &serde_json::json!({"type":"message_delta","usage":{"output_tokens":4}}),
        );
        assert_eq!(
            a.usage(),
            Usage {
                prompt: 12,
                completion: 4,
                reported: true
            }
        );
    }

    /// The exact bytes of every mid-stream cut, so that a change of how errors are
    /// rendered cannot change them unnoticed.
    #[test]
    fn cut_events_are_pinned() {
        let budget = "You exceeded your current quota: the budget of this credential is spent. The stream was ended by the gateway.";
        let tokens = "Rate limit reached on tokens per minute while streaming. The stream was ended by the gateway.";
        for (client, kind, expected) in [
            (
                Wire::OpenAi,
                LimitKind::Budget,
                format!(
                    "data: {{\"error\":{{\"code\":\"insufficient_quota\",\"message\":\"{budget}\",\"param\":null,\"type\":\"insufficient_quota\"}}}}\n\ndata: [DONE]\n\n"
                ),
            ),
            (
                Wire::OpenAi,
                LimitKind::Tokens,
                format!(
                    "data: {{\"error\":{{\"code\":\"rate_limit_exceeded\",\"message\":\"{tokens}\",\"param\":null,\"type\":\"tokens\"}}}}\n\ndata: [DONE]\n\n"
                ),
            ),
            (
                Wire::Anthropic,
                LimitKind::Budget,
                format!(
                    "event: error\ndata: {{\"error\":{{\"message\":\"{budget}\",\"type\":\"billing_error\"}},\"type\":\"error\"}}\n\n"
                ),
            ),
            (
                Wire::Anthropic,
                LimitKind::Tokens,
                format!(
                    "event: error\ndata: {{\"error\":{{\"message\":\"{tokens}\",\"type\":\"rate_limit_error\"}},\"type\":\"error\"}}\n\n"
                ),
            ),
        ] {
            let got = String::from_utf8(cut_event(client, kind).to_vec()).unwrap();
            assert_eq!(got, expected, "{client:?} {kind:?}");
        }
    }

    #[test]
    fn cut_events_are_well_formed_in_both_shapes() {
        let text = String::from_utf8(cut_event(Wire::OpenAi, LimitKind::Budget).to_vec()).unwrap();
        let first = text
            .split("\n\n")
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        let v: Value = serde_json::from_str(first).unwrap();
        assert_eq!(v["error"]["code"], "insufficient_quota");
        assert!(text.ends_with("data: [DONE]\n\n"));
        let text =
            String::from_utf8(cut_event(Wire::Anthropic, LimitKind::Tokens).to_vec()).unwrap();
        assert!(text.starts_with("event: error\ndata: "));
        let v: Value =
            serde_json::from_str(text.trim_end().split("data: ").nth(1).unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
