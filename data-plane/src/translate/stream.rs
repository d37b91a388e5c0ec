//! Streaming translation: small state machines that take the provider's parsed SSE events
//! one at a time ([`super::SseEvent`]) and return the client's frames, already serialised.
//!
//! - [`OpenAiToAnthropicStream`]: chat-completion chunks → `message_start`, then per content
//!   block `content_block_start` / `content_block_delta` (`text_delta`, or
//!   `input_json_delta` carrying tool-call argument fragments) / `content_block_stop`, then
//!   `message_delta` (stop reason, usage) and `message_stop`.
//! - [`AnthropicToOpenAiStream`]: Anthropic events → a role chunk, content and `tool_calls`
//!   delta chunks, a finish chunk, a usage chunk when the client asked for one, `[DONE]`.
//!
//! Both end cleanly: after the closing frames, or after an error frame in the client's
//! format (the provider sent an error event, malformed data, or ended its body before the
//! answer was complete — see `finish`). Nothing is emitted after that. Error messages are
//! redacted and clipped, like every upstream message Warden passes on.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::error::{AnthropicErrorType, anthropic_error_body, openai_error_from_anthropic};
use super::sse::{OPENAI_DONE, anthropic_frame, openai_frame};
use super::{SseEvent, TranslateError, anthropic_stop_reason, openai_finish_reason, unix_now};

/// Token counts seen in a stream, for logs and budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamUsage {
    /// All input tokens, cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `input_tokens`).
    pub cached_input_tokens: u64,
}

/// Clips and redacts an upstream message before it reaches a client.
fn safe_message(message: &str) -> String {
    warden_core::redact::redact(message)
        .chars()
        .take(500)
        .collect()
}

fn u64_at(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

// ------------------------------------------------------------------------------------------
// OpenAI chunks → Anthropic events

/// The Anthropic content block currently open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(usize),
    Tool(usize),
}

/// One tool call of an OpenAI stream and the Anthropic block it became.
#[derive(Debug)]
struct ToolCall {
    index: Option<u64>,
    id: String,
    block: usize,
}

/// Turns an OpenAI chat-completion chunk stream into Anthropic Messages events.
///
/// OpenAI sends usage only in its last chunk (when the request set
/// `stream_options.include_usage`, which `anthropic_to_openai::request` does), so
/// `message_start` reports `input_tokens: 0` unless the first chunk already carried usage,
/// and `message_delta` reports both counts. Tool calls are expected one after another, as
/// OpenAI streams them; an argument fragment for a tool call whose block was already closed
/// cannot be placed and ends the stream with an error event.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    model: String,
    started: bool,
    done: bool,
    next_block: usize,
    open: Option<OpenBlock>,
    /// Tool calls seen so far, in order.
    tools: Vec<ToolCall>,
    finish_reason: Option<String>,
    refused: bool,
    usage: Option<StreamUsage>,
    error: Option<TranslateError>,
}

impl OpenAiToAnthropicStream {
    /// `requested_model` is the model name the client asked for, reported back as `model`.
    pub fn new(requested_model: &str) -> Self {
        Self {
            model: requested_model.to_owned(),
            started: false,
            done: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            finish_reason: None,
            refused: false,
            usage: None,
            error: None,
        }
    }

    /// Whether the closing (or an error) frame has been emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Usage from the provider's usage chunk, once seen.
    pub fn usage(&self) -> Option<StreamUsage> {
        self.usage
    }

    /// Why the stream was ended with an error event, if it was.
    pub fn error(&self) -> Option<&TranslateError> {
        self.error.as_ref()
    }

    /// Translates one upstream event.
    pub fn push(&mut self, event: &SseEvent) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        let data = event.data.trim();
        if data == "[DONE]" {
            self.close_message(&mut out);
            return out;
        }
        let chunk: Value = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(_) => {
                self.fail(
                    &mut out,
                    TranslateError::InvalidUpstream("stream chunk is not JSON".into()),
                );
                return out;
            }
        };
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            let message = error["message"].as_str().unwrap_or("upstream error");
            let kind = error_type_of_openai_stream_error(error);
            self.error = Some(TranslateError::InvalidUpstream(
                "provider sent an error event".into(),
            ));
            out.push(anthropic_frame(
                "error",
                &anthropic_error_body(kind, &safe_message(message)),
            ));
            self.done = true;
            return out;
        }
        self.start(&mut out, &chunk);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let cached = u64_at(usage, "/prompt_tokens_details/cached_tokens").unwrap_or(0);
            self.usage = Some(StreamUsage {
                input_tokens: u64_at(usage, "/prompt_tokens").unwrap_or(0),
                output_tokens: u64_at(usage, "/completion_tokens").unwrap_or(0),
                cached_input_tokens: cached,
            });
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            return out;
        };
        let delta = &choice["delta"];
        for key in ["content", "refusal"] {
            if let Some(text) = delta[key].as_str().filter(|t| !t.is_empty()) {
                self.refused |= key == "refusal";
                self.text(&mut out, text);
            }
        }
        for call in super::array(&delta["tool_calls"]) {
            if let Err(error) = self.tool_call(&mut out, call) {
                self.fail(&mut out, error);
                return out;
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
            self.close_block(&mut out);
        }
        out
    }

    /// The provider's body ended. Closes the message if the provider had finished it (some
    /// omit `[DONE]`); otherwise the answer is incomplete and the client gets an error event.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.finish_reason.is_some() {
            self.close_message(&mut out);
        } else {
            self.fail(
                &mut out,
                TranslateError::InvalidUpstream(
                    "stream ended before the answer was complete".into(),
                ),
            );
        }
        out
    }

    fn start(&mut self, out: &mut Vec<Bytes>, chunk: &Value) {
        if self.started {
            return;
        }
        self.started = true;
        let id = chunk["id"].as_str().unwrap_or("openai");
        let id = if id.starts_with("msg_") {
            id.to_owned()
        } else {
            format!("msg_{id}")
        };
        let input_tokens = u64_at(chunk, "/usage/prompt_tokens").unwrap_or(0);
        out.push(anthropic_frame(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 0},
                },
            }),
        ));
    }

    fn text(&mut self, out: &mut Vec<Bytes>, text: &str) {
        let index = match self.open {
            Some(OpenBlock::Text(index)) => index,
            _ => {
                self.close_block(out);
                let index = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Some(OpenBlock::Text(index));
                index
            }
        };
        out.push(anthropic_frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    /// The block of the tool call a fragment continues: the one with its `index`, unless it
    /// names another `id` (then it is a new call); without an `index` (some
    /// OpenAI-compatible servers), the one with its `id`, else the open one.
    fn known_tool(&self, index: Option<u64>, id: Option<&str>) -> Option<usize> {
        let found = match index {
            Some(index) => self.tools.iter().rev().find(|t| t.index == Some(index)),
            None => match id {
                Some(id) => self.tools.iter().rev().find(|t| t.id == id),
                None => self
                    .tools
                    .last()
                    .filter(|t| self.open == Some(OpenBlock::Tool(t.block))),
            },
        };
        found
            .filter(|t| id.is_none_or(|id| id == t.id))
            .map(|t| t.block)
    }

    fn tool_call(&mut self, out: &mut Vec<Bytes>, call: &Value) -> Result<(), TranslateError> {
        let index = call["index"].as_u64();
        let id = call["id"].as_str().filter(|id| !id.is_empty());
        let block = match self.known_tool(index, id) {
            Some(block) => block,
            None => {
                self.close_block(out);
                let id = id.map_or_else(|| format!("toolu_{}", self.next_block), str::to_owned);
                let name = call["function"]["name"].as_str().unwrap_or_default();
                let block = self.open_block(
                    out,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.open = Some(OpenBlock::Tool(block));
                self.tools.push(ToolCall { index, id, block });
                block
            }
        };
        let Some(fragment) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        else {
            return Ok(());
        };
        if self.open != Some(OpenBlock::Tool(block)) {
            return Err(TranslateError::InvalidUpstream(
                "tool call arguments interleaved across tool calls".into(),
            ));
        }
        out.push(anthropic_frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": block,
                    "delta": {"type": "input_json_delta", "partial_json": fragment}}),
        ));
        Ok(())
    }

    fn open_block(&mut self, out: &mut Vec<Bytes>, content_block: Value) -> usize {
        let index = self.next_block;
        self.next_block += 1;
        out.push(anthropic_frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
        index
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some(OpenBlock::Text(index) | OpenBlock::Tool(index)) = self.open.take() {
            out.push(anthropic_frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn close_message(&mut self, out: &mut Vec<Bytes>) {
        self.start(out, &Value::Null);
        self.close_block(out);
        let mut stop_reason = anthropic_stop_reason(self.finish_reason.as_deref());
        if self.refused && stop_reason == "end_turn" {
            stop_reason = "refusal";
        }
        let mut usage = Map::new();
        if let Some(u) = self.usage {
            usage.insert(
                "input_tokens".into(),
                json!(u.input_tokens.saturating_sub(u.cached_input_tokens)),
            );
            if u.cached_input_tokens > 0 {
                usage.insert(
                    "cache_read_input_tokens".into(),
                    json!(u.cached_input_tokens),
                );
            }
        }
        usage.insert(
            "output_tokens".into(),
            json!(self.usage.map_or(0, |u| u.output_tokens)),
        );
        out.push(anthropic_frame(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": usage}),
        ));
        out.push(anthropic_frame(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
        self.done = true;
    }

    fn fail(&mut self, out: &mut Vec<Bytes>, error: TranslateError) {
        out.push(anthropic_frame(
            "error",
            &anthropic_error_body(AnthropicErrorType::Api, &error.to_string()),
        ));
        self.error = Some(error);
        self.done = true;
    }
}

/// The Anthropic error type for an error object inside an OpenAI stream.
fn error_type_of_openai_stream_error(error: &Value) -> AnthropicErrorType {
    let kind = error["type"].as_str().unwrap_or_default();
    let code = error["code"].as_str().unwrap_or_default();
    if kind.contains("rate_limit") || code.contains("rate_limit") {
        AnthropicErrorType::RateLimit
    } else if kind.contains("overloaded") || code.contains("overloaded") {
        AnthropicErrorType::Overloaded
    } else if kind == "invalid_request_error" {
        AnthropicErrorType::InvalidRequest
    } else {
        AnthropicErrorType::Api
    }
}

// ------------------------------------------------------------------------------------------
// Anthropic events → OpenAI chunks

/// What an Anthropic content block becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    /// A tool call, with its OpenAI `tool_calls[].index`.
    Tool(u64),
    /// Thinking, server tools and anything else without an OpenAI counterpart.
    Ignored,
}

/// Turns Anthropic Messages events into OpenAI chat-completion chunks.
///
/// Emits a role chunk on `message_start`, a chunk per text or tool-argument delta, and on
/// `message_stop` the finish chunk (`finish_reason` mapped by
/// [`super::openai_finish_reason`]), a usage chunk (`choices: []`) when `include_usage`,
/// then `[DONE]`. Thinking blocks are dropped. `prompt_tokens` counts all input, including
/// cache reads and writes (`prompt_tokens_details.cached_tokens` = cache reads).
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    model: String,
    include_usage: bool,
    id: String,
    created: u64,
    started: bool,
    done: bool,
    blocks: HashMap<u64, BlockKind>,
    next_tool: u64,
    stop_reason: Option<String>,
    usage: StreamUsage,
    error: Option<TranslateError>,
}

impl AnthropicToOpenAiStream {
    /// `requested_model` is reported back as `model`; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(requested_model: &str, include_usage: bool) -> Self {
        Self {
            model: requested_model.to_owned(),
            include_usage,
            id: "chatcmpl-warden".to_owned(),
            created: unix_now(),
            started: false,
            done: false,
            blocks: HashMap::new(),
            next_tool: 0,
            stop_reason: None,
            usage: StreamUsage::default(),
            error: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Usage as reported so far (`message_start`, then each `message_delta`).
    pub fn usage(&self) -> StreamUsage {
        self.usage
    }

    pub fn error(&self) -> Option<&TranslateError> {
        self.error.as_ref()
    }

    /// Translates one upstream event.
    pub fn push(&mut self, event: &SseEvent) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        let data: Value = match serde_json::from_str(&event.data) {
            Ok(data) => data,
            Err(_) => {
                self.fail(
                    &mut out,
                    TranslateError::InvalidUpstream("stream event is not JSON".into()),
                );
                return out;
            }
        };
        let kind = data["type"]
            .as_str()
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => self.message_start(&mut out, &data["message"]),
            "content_block_start" => self.block_start(&mut out, &data),
            "content_block_delta" => self.block_delta(&mut out, &data),
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_owned());
                }
                self.read_usage(&data["usage"]);
            }
            "message_stop" => self.close(&mut out),
            "error" => {
                let (status_kind, code) = openai_error_from_anthropic(
                    data["error"]["type"].as_str().unwrap_or("api_error"),
                );
                let message = data["error"]["message"]
                    .as_str()
                    .unwrap_or("upstream error");
                out.push(openai_frame(&json!({"error": {
                    "message": safe_message(message), "type": status_kind, "param": null, "code": code,
                }})));
                self.error = Some(TranslateError::InvalidUpstream(
                    "provider sent an error event".into(),
                ));
                self.done = true;
            }
            // `ping`, `content_block_stop` and event types added later carry nothing for
            // an OpenAI client.
            _ => {}
        }
        out
    }

    /// The provider's body ended: nothing to add after `message_stop`; before it, the
    /// answer is incomplete and the client gets an error chunk.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.done {
            self.fail(
                &mut out,
                TranslateError::InvalidUpstream(
                    "stream ended before the answer was complete".into(),
                ),
            );
        }
        out
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "choices": choices})
    }

    fn delta(&self, delta: Value) -> Bytes {
        openai_frame(
            &self.chunk(
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            ),
        )
    }

    fn read_usage(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        let input = u64_at(usage, "/input_tokens");
        let cache_write = u64_at(usage, "/cache_creation_input_tokens");
        let cache_read = u64_at(usage, "/cache_read_input_tokens");
        if input.is_some() || cache_write.is_some() || cache_read.is_some() {
            self.usage.input_tokens =
                input.unwrap_or(0) + cache_write.unwrap_or(0) + cache_read.unwrap_or(0);
            self.usage.cached_input_tokens = cache_read.unwrap_or(0);
        }
        if let Some(output) = u64_at(usage, "/output_tokens") {
            self.usage.output_tokens = output;
        }
    }

    fn message_start(&mut self, out: &mut Vec<Bytes>, message: &Value) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(id) = message["id"].as_str() {
            self.id = format!("chatcmpl-{id}");
        }
        self.read_usage(&message["usage"]);
        out.push(self.delta(json!({"role": "assistant", "content": ""})));
    }

    fn ensure_started(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            self.message_start(out, &Value::Null);
        }
    }

    fn block_start(&mut self, out: &mut Vec<Bytes>, data: &Value) {
        self.ensure_started(out);
        let index = data["index"].as_u64().unwrap_or(0);
        let block = &data["content_block"];
        let kind = match block["type"].as_str() {
            Some("text") => {
                if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.delta(json!({"content": text})));
                }
                BlockKind::Text
            }
            Some("tool_use") => {
                let tool = self.next_tool;
                self.next_tool += 1;
                let arguments = match &block["input"] {
                    Value::Object(map) if map.is_empty() => String::new(),
                    Value::Null => String::new(),
                    input => input.to_string(),
                };
                out.push(self.delta(json!({"tool_calls": [{
                    "index": tool, "id": block["id"], "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }]})));
                BlockKind::Tool(tool)
            }
            _ => BlockKind::Ignored,
        };
        self.blocks.insert(index, kind);
    }

    fn block_delta(&mut self, out: &mut Vec<Bytes>, data: &Value) {
        self.ensure_started(out);
        let index = data["index"].as_u64().unwrap_or(0);
        let delta = &data["delta"];
        match (self.blocks.get(&index), delta["type"].as_str()) {
            (Some(BlockKind::Text), Some("text_delta")) => {
                if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.delta(json!({"content": text})));
                }
            }
            (Some(&BlockKind::Tool(tool)), Some("input_json_delta")) => {
                if let Some(json) = delta["partial_json"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.delta(json!({"tool_calls": [{
                        "index": tool, "function": {"arguments": json},
                    }]})));
                }
            }
            _ => {}
        }
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        self.ensure_started(out);
        let finish = openai_finish_reason(self.stop_reason.as_deref());
        out.push(openai_frame(&self.chunk(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        )));
        if self.include_usage {
            let mut chunk = self.chunk(json!([]));
            chunk["usage"] = openai_usage(self.usage);
            out.push(openai_frame(&chunk));
        }
        out.push(Bytes::from_static(OPENAI_DONE.as_bytes()));
        self.done = true;
    }

    fn fail(&mut self, out: &mut Vec<Bytes>, error: TranslateError) {
        out.push(openai_frame(&json!({"error": {
            "message": error.to_string(), "type": "api_error", "param": null,
            "code": error.metric_label(),
        }})));
        self.error = Some(error);
        self.done = true;
    }
}

/// The OpenAI `usage` object for these counts.
pub(super) fn openai_usage(usage: StreamUsage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits frames back into (event name, JSON data); `[DONE]` becomes `(None, "[DONE]")`.
    fn decode(frames: &[Bytes]) -> Vec<(Option<String>, Value)> {
        let mut parser = super::super::SseParser::new();
        let mut out = Vec::new();
        for frame in frames {
            let events = parser.feed(frame).unwrap();
            assert_eq!(events.len(), 1, "one event per frame: {frame:?}");
            for e in events {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
                out.push((e.event, data));
            }
        }
        out
    }

    fn openai_events(chunks: &[Value]) -> Vec<SseEvent> {
        chunks
            .iter()
            .map(|c| SseEvent::new(None, c.to_string()))
            .chain([SseEvent::new(None, "[DONE]")])
            .collect()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    #[test]
    fn openai_text_stream_becomes_anthropic_events() {
        let mut usage = chunk(json!({}), None);
        usage["choices"] = json!([]);
        usage["usage"] = json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15});
        let events = openai_events(&[
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hel"}), None),
            chunk(json!({"content": "lo"}), None),
            chunk(json!({}), Some("stop")),
            usage,
        ]);
        let mut s = OpenAiToAnthropicStream::new("claude-alias");
        let frames: Vec<Bytes> = events.iter().flat_map(|e| s.push(e)).collect();
        assert!(s.is_done());
        assert!(s.finish().is_empty());
        let decoded = decode(&frames);
        let names: Vec<&str> = decoded.iter().filter_map(|(n, _)| n.as_deref()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for (name, data) in &decoded {
            assert_eq!(
                data["type"].as_str(),
                name.as_deref(),
                "type matches event name"
            );
        }
        assert_eq!(decoded[0].1["message"]["model"], "claude-alias");
        assert_eq!(decoded[0].1["message"]["id"], "msg_chatcmpl-1");
        assert_eq!(decoded[3].1["delta"]["text"], "lo");
        assert_eq!(decoded[5].1["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            decoded[5].1["usage"],
            json!({"input_tokens": 12, "output_tokens": 3})
        );
        assert_eq!(
            s.usage(),
            Some(StreamUsage {
                input_tokens: 12,
                output_tokens: 3,
                cached_input_tokens: 0
            })
        );
    }

    #[test]
    fn interleaved_tool_arguments_end_with_an_error() {
        let call = |index: u64, id: Option<&str>, args: &str| {
            let mut c = json!({"index": index, "function": {"arguments": args}});
            if let Some(id) = id {
                c["id"] = json!(id);
                c["function"]["name"] = json!("f");
            }
            chunk(json!({"tool_calls": [c]}), None)
        };
        let mut s = OpenAiToAnthropicStream::new("m");
        let mut frames = Vec::new();
        for c in [
            call(0, Some("a"), "{"),
            call(1, Some("b"), "{"),
            call(0, None, "}"),
        ] {
            frames.extend(s.push(&SseEvent::new(None, c.to_string())));
        }
        let decoded = decode(&frames);
        let last = decoded.last().unwrap();
        assert_eq!(last.0.as_deref(), Some("error"));
        assert_eq!(last.1["error"]["type"], "api_error");
        assert!(s.is_done() && s.error().is_some());
        assert!(s.push(&SseEvent::new(None, "[DONE]")).is_empty());
    }

    #[test]
    fn tool_calls_without_index_are_told_apart_by_id() {
        // Some OpenAI-compatible servers send each whole call without an `index`.
        let whole = |id: &str, args: &str| {
            chunk(
                json!({"tool_calls": [{"id": id, "type": "function", "function": {"name": "f", "arguments": args}}]}),
                None,
            )
        };
        let mut s = OpenAiToAnthropicStream::new("m");
        let mut frames = Vec::new();
        for e in openai_events(&[
            whole("a", "{\"x\":1}"),
            whole("b", "{\"x\":2}"),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "g", "arguments": "{}"}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
        ]) {
            frames.extend(s.push(&e));
        }
        assert!(s.error().is_none(), "{:?}", s.error());
        let decoded = decode(&frames);
        let starts: Vec<&Value> = decoded
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("content_block_start"))
            .map(|(_, d)| d)
            .collect();
        let ids: Vec<&str> = starts
            .iter()
            .map(|d| d["content_block"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let args: Vec<&str> = decoded
            .iter()
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(args, ["{\"x\":1}", "{\"x\":2}", "{}"]);
    }

    #[test]
    fn openai_stream_cut_short_is_an_error_event() {
        let mut s = OpenAiToAnthropicStream::new("m");
        s.push(&SseEvent::new(
            None,
            chunk(json!({"content": "hi"}), None).to_string(),
        ));
        let decoded = decode(&s.finish());
        assert_eq!(decoded[0].0.as_deref(), Some("error"));

        // Finished but no [DONE]: closed normally.
        let mut s = OpenAiToAnthropicStream::new("m");
        s.push(&SseEvent::new(
            None,
            chunk(json!({"content": "hi"}), Some("length")).to_string(),
        ));
        let decoded = decode(&s.finish());
        assert_eq!(decoded[0].1["delta"]["stop_reason"], "max_tokens");
        assert_eq!(decoded[1].0.as_deref(), Some("message_stop"));
    }

    #[test]
    fn openai_error_chunk_and_garbage() {
        let mut s = OpenAiToAnthropicStream::new("m");
        let frames = s.push(&SseEvent::new(
            None,
            json!({"error": {"message": "slow down sk-abcdefghijklmnopqrstuvwx", "type": "rate_limit_exceeded"}}).to_string(),
        ));
        let decoded = decode(&frames);
        assert_eq!(decoded[0].1["type"], "error");
        assert_eq!(decoded[0].1["error"]["type"], "rate_limit_error");
        let message = decoded[0].1["error"]["message"].as_str().unwrap();
        assert!(!message.contains("abcdefghijkl"), "{message}");

        let mut s = OpenAiToAnthropicStream::new("m");
        let decoded = decode(&s.push(&SseEvent::new(None, "{not json")));
        assert_eq!(decoded[0].1["error"]["type"], "api_error");
    }

    #[test]
    fn refusal_deltas_become_text_with_refusal_stop() {
        let mut s = OpenAiToAnthropicStream::new("m");
        let mut frames = Vec::new();
        for e in openai_events(&[
            chunk(json!({"refusal": "I can't help with that."}), None),
            chunk(json!({}), Some("stop")),
        ]) {
            frames.extend(s.push(&e));
        }
        let decoded = decode(&frames);
        assert_eq!(decoded[2].1["delta"]["text"], "I can't help with that.");
        assert_eq!(decoded[4].1["delta"]["stop_reason"], "refusal");
    }

    fn anthropic(event: &str, data: Value) -> SseEvent {
        SseEvent::new(Some(event), data.to_string())
    }

    #[test]
    fn anthropic_stream_becomes_openai_chunks() {
        let events = [
            anthropic(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
            ),
            anthropic("ping", json!({"type": "ping"})),
            anthropic(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": ""}}),
            ),
            anthropic(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            ),
            anthropic(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            anthropic(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "text", "text": ""}}),
            ),
            anthropic(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            anthropic(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            anthropic(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 7}}),
            ),
            anthropic("message_stop", json!({"type": "message_stop"})),
        ];
        let mut s = AnthropicToOpenAiStream::new("gpt-alias", true);
        let frames: Vec<Bytes> = events.iter().flat_map(|e| s.push(e)).collect();
        let decoded = decode(&frames);
        assert_eq!(decoded.len(), 5, "{decoded:?}");
        assert_eq!(
            decoded[0].1["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(decoded[0].1["id"], "chatcmpl-msg_1");
        assert_eq!(decoded[0].1["model"], "gpt-alias");
        assert_eq!(decoded[1].1["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(decoded[2].1["choices"][0]["finish_reason"], "stop");
        assert_eq!(decoded[3].1["choices"], json!([]));
        assert_eq!(decoded[3].1["usage"]["prompt_tokens"], 15);
        assert_eq!(decoded[3].1["usage"]["completion_tokens"], 7);
        assert_eq!(decoded[3].1["usage"]["total_tokens"], 22);
        assert_eq!(
            decoded[3].1["usage"]["prompt_tokens_details"]["cached_tokens"],
            5
        );
        assert_eq!(decoded[4].1, json!("[DONE]"));
        assert!(s.finish().is_empty());

        let mut s = AnthropicToOpenAiStream::new("gpt-alias", false);
        let frames: Vec<Bytes> = events.iter().flat_map(|e| s.push(e)).collect();
        assert_eq!(decode(&frames).len(), 4, "no usage chunk");
    }

    #[test]
    fn anthropic_error_event_becomes_an_openai_error_chunk() {
        let mut s = AnthropicToOpenAiStream::new("m", true);
        let frames = s.push(&anthropic(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
        let decoded = decode(&frames);
        assert_eq!(decoded[0].1["error"]["message"], "Overloaded");
        assert_eq!(decoded[0].1["error"]["code"], "overloaded");
        assert!(s.is_done());
        assert!(s.finish().is_empty());

        let mut s = AnthropicToOpenAiStream::new("m", true);
        s.push(&anthropic(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_2"}}),
        ));
        let decoded = decode(&s.finish());
        assert_eq!(decoded[0].1["error"]["type"], "api_error");
    }
}
