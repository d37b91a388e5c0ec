//! The built-in `echo` provider of `wardenctl dev`: answers deterministically from the last
//! user message, as JSON or as an SSE stream, in the OpenAI or (translated) Anthropic shape,
//! so that the gateway works offline.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::translate::{OpenAiToAnthropicStream, SseEvent, Wire};

/// The text of the last user message (string content or text parts/blocks).
pub fn last_user_text(body: &serde_json::Map<String, Value>) -> String {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return String::new();
    };
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn count_words(s: &str) -> u64 {
    (s.split_whitespace().count() as u64).max(1)
}

/// Answers a request, in the client's wire format.
pub fn answer(
    body: &serde_json::Map<String, Value>,
    model: &str,
    stream: bool,
    client: Wire,
) -> Response {
    let prompt = last_user_text(body);
    let text = format!("echo: {prompt}");
    let created = warden_core::unix_now();
    let id = format!("chatcmpl-echo-{}", uuid::Uuid::new_v4().simple());
    let usage = json!({
        "prompt_tokens": count_words(&prompt),
        "completion_tokens": count_words(&text),
        "total_tokens": count_words(&prompt) + count_words(&text),
    });
    if !stream {
        let completion = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": usage,
        });
        let body = match client {
            Wire::OpenAi => completion,
            Wire::Anthropic => {
                match crate::translate::openai_to_anthropic::response(&completion, model) {
                    Ok(v) => v,
                    Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        };
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    let include_usage = client == Wire::Anthropic
        || body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for w in text.split_inclusive(' ') {
        events.push(chunk(json!({"content": w}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": usage,
        }));
    }
    let frames: Vec<Bytes> = match client {
        Wire::OpenAi => events
            .into_iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .chain(std::iter::once(Bytes::from_static(b"data: [DONE]\n\n")))
            .collect(),
        Wire::Anthropic => {
            let mut conv = OpenAiToAnthropicStream::new(model);
            let mut out: Vec<Bytes> = events
                .iter()
                .flat_map(|e| conv.push(&SseEvent::new(None, e.to_string())))
                .collect();
            out.extend(conv.push(&SseEvent::new(None, "[DONE]")));
            out.extend(conv.finish());
            out
        }
    };
    let stream = futures::stream::unfold(frames.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, Infallible>(next), it))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
