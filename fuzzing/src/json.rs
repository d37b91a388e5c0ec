//! JSON for the targets that read it: either the input's bytes as they are (what a client
//! or provider could send), or a value built from the input with the field names and
//! values the translators look at, so that random inputs reach past the first `match`.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};

/// Field names and string values the gateway's parsers and translators branch on.
pub const WORDS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tools",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "stream",
    "stream_options",
    "include_usage",
    "n",
    "system",
    "input",
    "image_url",
    "url",
    "source",
    "data",
    "media_type",
    "base64",
    "image",
    "tool_use",
    "tool_result",
    "tool_use_id",
    "id",
    "input_schema",
    "parameters",
    "stop",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "choices",
    "message",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "delta",
    "index",
    "content_block",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_start",
    "message_delta",
    "message_stop",
    "text_delta",
    "input_json_delta",
    "partial_json",
    "thinking",
    "thinking_delta",
    "signature",
    "redacted_thinking",
    "stop_reason",
    "end_turn",
    "max_tokens",
    "tool_calls",
    "length",
    "content_filter",
    "error",
    "object",
    "user",
    "assistant",
    "tool",
    "developer",
    "auto",
    "any",
    "none",
    "required",
    "cache_control",
    "metadata",
    "user_id",
    "response_format",
    "json_schema",
    "json_object",
    "logprobs",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "refusal",
    "seed",
    "parallel_tool_calls",
    "disable_parallel_tool_use",
    "audio",
    "modalities",
    "chat.completion",
    "chat.completion.chunk",
    "[DONE]",
    "ping",
    "gpt-4o",
    "claude-3",
];

/// A JSON value built from `u`: objects keyed mostly by [`WORDS`], at most `depth` deep.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0..=3)? {
            0 => Value::from(u.arbitrary::<u64>()?),
            1 => Value::from(u.arbitrary::<i64>()?),
            2 => Value::from(u.int_in_range(0..=300u64)?),
            _ => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        },
        3 | 4 => Value::String(string(u)?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(value(u, depth - 1)?);
            }
            Value::Array(items)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// An object of up to eight fields keyed mostly by [`WORDS`].
pub fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0..=8)?;
    let mut map = Map::new();
    for _ in 0..len {
        let key = if u.ratio(7, 8)? {
            (*u.choose(WORDS)?).to_owned()
        } else {
            u.arbitrary()?
        };
        map.insert(key, value(u, depth)?);
    }
    Ok(map)
}

/// A string: mostly one of [`WORDS`], sometimes arbitrary text.
pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(2, 3)? {
        Ok((*u.choose(WORDS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

/// The JSON value a target works on: the input itself when it is JSON (what a client or a
/// provider could send; the corpus holds real examples), otherwise a value built from its
/// bytes.
pub fn from_input(data: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice(data) {
        return Some(v);
    }
    let mut u = Unstructured::new(data);
    if u.ratio(1, 2).ok()? {
        object(&mut u, 4).ok().map(Value::Object)
    } else {
        value(&mut u, 5).ok()
    }
}
