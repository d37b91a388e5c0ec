//! Translation between the OpenAI Chat Completions and the Anthropic Messages wire formats:
//! pure functions over `serde_json::Value`, no I/O, no async. The proxy calls them when a
//! client's API and the provider's format differ:
//!
//! | client calls | provider speaks | request | answer | stream |
//! |---|---|---|---|---|
//! | `POST /v1/messages` | OpenAI | [`anthropic_to_openai::request`] | [`openai_to_anthropic::response`] | [`OpenAiToAnthropicStream`] |
//! | `POST /v1/chat/completions` | Anthropic | [`openai_to_anthropic::request`] | [`anthropic_to_openai::response`] | [`AnthropicToOpenAiStream`] |
//!
//! Module names say which way the data flows: `anthropic_to_openai` turns Anthropic JSON
//! into OpenAI JSON, whether it is a client's request or a provider's answer.
//!
//! Streams: feed the provider's body to an [`SseParser`], give each [`SseEvent`] to the
//! stream converter and send the frames it returns (already serialised SSE) to the client;
//! call `finish` when the provider's body ends. [`error`] maps errors between the two
//! shapes; [`count_tokens`] answers `/v1/messages/count_tokens` with a local estimate.
//!
//! What cannot be expressed on the other side is either dropped (sampling hints, caching
//! hints, reasoning settings: the answer stays meaningful) or refused with
//! [`TranslateError::Unsupported`] naming the field (server-side tools, several choices,
//! audio: the answer would silently not be what was asked for). Each direction's module
//! lists its choices.

pub mod anthropic_to_openai;
pub mod count_tokens;
pub mod error;
pub mod openai_to_anthropic;
pub mod sse;
pub mod stream;

pub use sse::{SseEvent, SseParser};
pub use stream::{AnthropicToOpenAiStream, OpenAiToAnthropicStream, StreamUsage};

use serde_json::Value;

/// The two API shapes: of a client's requests, answers and errors, and of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// `max_tokens` sent to an Anthropic provider when the OpenAI request names none
/// (Anthropic requires the field).
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

/// Why a request or an answer could not be translated. Messages are safe to show to the
/// client: they name fields, never echo content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The request uses a feature the target format cannot honour; the field path is given
    /// (`tools[0].type`).
    #[error(
        "`{0}` is not supported when the model is served by a provider of the other API format"
    )]
    Unsupported(String),
    /// The request is not a valid request of its own format.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The provider's answer is not what its format promises.
    #[error("invalid upstream answer: {0}")]
    InvalidUpstream(String),
    /// One SSE event grew beyond the parser's limit.
    #[error("upstream event larger than {0} bytes")]
    EventTooLarge(usize),
}

impl TranslateError {
    /// Low-cardinality label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TranslateError::Unsupported(_) => "translate_unsupported",
            TranslateError::InvalidRequest(_) => "translate_invalid_request",
            TranslateError::InvalidUpstream(_) => "translate_invalid_upstream",
            TranslateError::EventTooLarge(_) => "translate_event_too_large",
        }
    }

    /// Whether the client caused it (a 400) rather than the provider (a 502).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            TranslateError::Unsupported(_) | TranslateError::InvalidRequest(_)
        )
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
///
/// `stop` → `end_turn` (OpenAI does not say whether a stop sequence matched, so
/// `stop_sequence` is never reported); `length` → `max_tokens`; `tool_calls` (and the
/// legacy `function_call`) → `tool_use`; `content_filter` → `refusal`, Anthropic's reason
/// for output withheld by a safety policy. Anything else, or none, → `end_turn`.
pub fn anthropic_stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
///
/// `end_turn`, `stop_sequence`, `pause_turn` → `stop`; `max_tokens` and
/// `model_context_window_exceeded` → `length`; `tool_use` → `tool_calls`; `refusal` →
/// `content_filter`. Anything else, or none, → `stop`.
pub fn openai_finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `value` as an array slice, or empty.
fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Copies `from[key]` into `to[key]` when present and not null.
fn copy_field(from: &Value, to: &mut serde_json::Map<String, Value>, key: &str, as_key: &str) {
    if let Some(v) = from.get(key).filter(|v| !v.is_null()) {
        to.insert(as_key.to_owned(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_both_ways() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(anthropic_stop_reason(Some(finish)), stop);
            assert_eq!(openai_finish_reason(Some(stop)), finish);
        }
        assert_eq!(anthropic_stop_reason(None), "end_turn");
        assert_eq!(openai_finish_reason(Some("stop_sequence")), "stop");
        assert_eq!(openai_finish_reason(Some("pause_turn")), "stop");
        assert_eq!(
            openai_finish_reason(Some("model_context_window_exceeded")),
            "length"
        );
    }

    #[test]
    fn errors_are_labelled() {
        let e = TranslateError::Unsupported("tools[0].type".into());
        assert!(e.is_client_error());
        assert!(e.to_string().contains("tools[0].type"));
        assert_eq!(e.metric_label(), "translate_unsupported");
        assert!(!TranslateError::InvalidUpstream("x".into()).is_client_error());
    }
}
