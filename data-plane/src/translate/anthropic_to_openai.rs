//! Anthropic JSON → OpenAI JSON: a client's Messages request for an OpenAI-format provider
//! ([`request`]), and an Anthropic provider's message for an OpenAI client ([`response`]).
//!
//! ## Request fields
//!
//! | Anthropic | OpenAI |
//! |---|---|
//! | `model` | `model` (unchanged: the caller rewrites aliases) |
//! | `system` (string or text blocks) | a first `system` message (blocks joined with a blank line) |
//! | `messages[].content` `text` / `image` (`base64` → data URL, `url` → URL) | `text` / `image_url` parts; one text part alone becomes a string |
//! | `document` (`base64` PDF; `text` or `content` source) | a `file` part with a data URL; text parts |
//! | assistant `tool_use` blocks | `tool_calls` (`arguments` = the input as a JSON string) |
//! | user `tool_result` blocks | one `role: tool` message each, before the user's other content; text joined with a newline; images in a result follow in a user message (tool messages carry no images) |
//! | `tools[{name, description, input_schema}]` | `tools[{type: function, function: {name, description, parameters}}]` |
//! | `tool_choice` `auto` / `any` / `tool` / `none`; `disable_parallel_tool_use` | `auto` / `required` / `{type: function, function: {name}}` / `none`; `parallel_tool_calls: false` (only sent with tools) |
//! | `max_tokens` | `max_completion_tokens` (OpenAI's current name; reasoning models refuse `max_tokens`) |
//! | `temperature`, `top_p` | same |
//! | `stop_sequences` | `stop` |
//! | `stream` | `stream`, plus `stream_options.include_usage = true` so usage can be reported |
//! | `metadata.user_id` | `user` |
//! | `output_config.format` / `output_format` (`json_schema`) | `response_format` `json_schema` (non-strict) |
//!
//! Dropped, because the answer stays meaningful without them: `top_k` (no OpenAI
//! equivalent), `thinking` and `output_config.effort` (reasoning settings do not carry over
//! between model families), `cache_control` anywhere (prompt-caching hints), `is_error` on
//! tool results (the result's text still says what failed), `service_tier`, `speed`,
//! `context_management`, `inference_geo`, other `metadata` fields, assistant `thinking` /
//! `redacted_thinking` blocks (they belong to the model that wrote them), `citations`
//! settings, image `detail`-like hints, and any field this module does not know.
//!
//! Refused with [`TranslateError::Unsupported`]: server tools (`tools[].type` other than
//! `custom`, such as web search, code execution, bash, text editor, computer use),
//! `mcp_servers`, `container`, images or documents from the Files API or, for documents, a
//! URL, and content blocks of other types (`search_result`, `server_tool_use`, …).

use serde_json::{Map, Value, json};

use super::stream::{StreamUsage, openai_usage};
use super::{TranslateError, array, copy_field, openai_finish_reason, unix_now};

/// Translates an Anthropic Messages request into an OpenAI chat.completions request.
pub fn request(anthropic: &Value) -> Result<Value, TranslateError> {
    let Some(top) = anthropic.as_object() else {
        return Err(TranslateError::InvalidRequest(
            "the body must be a JSON object".into(),
        ));
    };
    for field in ["mcp_servers", "container"] {
        if top.get(field).is_some_and(is_present) {
            return Err(TranslateError::Unsupported(field.into()));
        }
    }
    let mut out = Map::new();
    copy_field(anthropic, &mut out, "model", "model");

    let mut messages = Vec::new();
    if let Some(system) = system_text(&anthropic["system"])? {
        messages.push(json!({"role": "system", "content": system}));
    }
    let Some(input) = anthropic["messages"].as_array() else {
        return Err(TranslateError::InvalidRequest(
            "`messages` must be an array".into(),
        ));
    };
    for (i, message) in input.iter().enumerate() {
        match message["role"].as_str() {
            Some("user") => user_message(message, i, &mut messages)?,
            Some("assistant") => messages.push(assistant_message(message, i)?),
            _ => {
                return Err(TranslateError::InvalidRequest(format!(
                    "messages[{i}].role must be `user` or `assistant`"
                )));
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    copy_field(anthropic, &mut out, "max_tokens", "max_completion_tokens");
    copy_field(anthropic, &mut out, "temperature", "temperature");
    copy_field(anthropic, &mut out, "top_p", "top_p");
    if let Some(stop) = anthropic["stop_sequences"]
        .as_array()
        .filter(|s| !s.is_empty())
    {
        out.insert("stop".into(), Value::Array(stop.clone()));
    }
    if anthropic["stream"] == json!(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = anthropic["metadata"]["user_id"].as_str() {
        out.insert("user".into(), json!(user));
    }
    tools(anthropic, &mut out)?;
    let format = match &anthropic["output_config"]["format"] {
        Value::Null => &anthropic["output_format"],
        format => format,
    };
    if let Some(schema) = format
        .get("schema")
        .filter(|_| format["type"] == "json_schema")
    {
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
        );
    }
    Ok(Value::Object(out))
}

/// Translates an Anthropic message (a provider's answer) into an OpenAI chat.completion;
/// `requested_model` is the model name the client asked for.
pub fn response(anthropic: &Value, requested_model: &str) -> Result<Value, TranslateError> {
    let Some(content) = anthropic["content"].as_array() else {
        return Err(TranslateError::InvalidUpstream(
            "message has no `content` array".into(),
        ));
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": tool_arguments(&block["input"])},
            })),
            // Thinking and server-tool blocks have no place in a chat completion.
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let id = anthropic["id"].as_str().unwrap_or("anthropic");
    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": requested_model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": openai_finish_reason(anthropic["stop_reason"].as_str()),
        }],
        "usage": openai_usage(usage(&anthropic["usage"])),
    }))
}

/// Anthropic usage as totals: OpenAI's `prompt_tokens` includes cached input.
fn usage(usage: &Value) -> StreamUsage {
    let n = |key: &str| usage[key].as_u64().unwrap_or(0);
    StreamUsage {
        input_tokens: n("input_tokens")
            + n("cache_creation_input_tokens")
            + n("cache_read_input_tokens"),
        output_tokens: n("output_tokens"),
        cached_input_tokens: n("cache_read_input_tokens"),
    }
}

fn tool_arguments(input: &Value) -> String {
    if input.is_null() {
        "{}".to_owned()
    } else {
        input.to_string()
    }
}

/// Present and meaningful: not null, not an empty array or object, not `false`.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Names echoed back in errors are clipped.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn system_text(system: &Value) -> Result<Option<String>, TranslateError> {
    match system {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                match (block["type"].as_str(), block["text"].as_str()) {
                    (Some("text"), Some(text)) => texts.push(text),
                    _ => {
                        return Err(TranslateError::InvalidRequest(format!(
                            "system[{j}] must be a text block"
                        )));
                    }
                }
            }
            Ok((!texts.is_empty()).then(|| texts.join("\n\n")))
        }
        _ => Err(TranslateError::InvalidRequest(
            "`system` must be a string or an array of text blocks".into(),
        )),
    }
}

/// A user message: its tool results first (as `tool` messages), then the rest.
fn user_message(message: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match &message["content"] {
        Value::String(text) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(TranslateError::InvalidRequest(format!(
                "messages[{i}].content must be a string or an array"
            )));
        }
    };
    let mut tool_messages = Vec::new();
    let mut result_images = Vec::new();
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match block["type"].as_str() {
            Some("text") => parts.push(text_part(block, &path)?),
            Some("image") => parts.push(image_part(&block["source"], &path)?),
            Some("document") => parts.extend(document_parts(block, &path)?),
            Some("tool_result") => {
                let (text, images) = tool_result_content(&block["content"], &path)?;
                tool_messages.push(json!({
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": text,
                }));
                result_images.extend(images);
            }
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(TranslateError::Unsupported(format!(
                    "{path}.type = {}",
                    clip(other)
                )));
            }
            None => {
                return Err(TranslateError::InvalidRequest(format!(
                    "{path} has no `type`"
                )));
            }
        }
    }
    let had_tool_results = !tool_messages.is_empty();
    out.extend(tool_messages);
    result_images.extend(parts);
    let parts = result_images;
    if parts.is_empty() && had_tool_results {
        return Ok(());
    }
    out.push(json!({"role": "user", "content": user_content(parts)}));
    Ok(())
}

/// A single text part becomes a plain string, which every OpenAI-compatible server accepts.
fn user_content(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0]["type"] == "text" {
        return parts.swap_remove(0)["text"].take();
    }
    if parts.is_empty() {
        return json!("");
    }
    Value::Array(parts)
}

fn text_part(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let Some(text) = block["text"].as_str() else {
        return Err(TranslateError::InvalidRequest(format!(
            "{path}.text must be a string"
        )));
    };
    Ok(json!({"type": "text", "text": text}))
}

fn image_part(source: &Value, path: &str) -> Result<Value, TranslateError> {
    let url = match source["type"].as_str() {
        Some("base64") => {
            let (Some(media_type), Some(data)) =
                (source["media_type"].as_str(), source["data"].as_str())
            else {
                return Err(TranslateError::InvalidRequest(format!(
                    "{path}.source needs `media_type` and `data`"
                )));
            };
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => match source["url"].as_str() {
            Some(url) => url.to_owned(),
            None => {
                return Err(TranslateError::InvalidRequest(format!(
                    "{path}.source.url must be a string"
                )));
            }
        },
        _ => return Err(TranslateError::Unsupported(format!("{path}.source.type"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn document_parts(block: &Value, path: &str) -> Result<Vec<Value>, TranslateError> {
    let source = &block["source"];
    match source["type"].as_str() {
        Some("base64") => {
            let media_type = source["media_type"].as_str().unwrap_or("application/pdf");
            let data = source["data"].as_str().unwrap_or_default();
            let filename = block["title"].as_str().unwrap_or("document.pdf");
            Ok(vec![json!({"type": "file", "file": {
                "filename": filename,
                "file_data": format!("data:{media_type};base64,{data}"),
            }})])
        }
        Some("text") => Ok(vec![
            json!({"type": "text", "text": source["data"].as_str().unwrap_or_default()}),
        ]),
        Some("content") => match &source["content"] {
            Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
            Value::Array(blocks) => blocks
                .iter()
                .enumerate()
                .map(|(k, b)| match b["type"].as_str() {
                    Some("text") => text_part(b, &format!("{path}.source.content[{k}]")),
                    Some("image") => {
                        image_part(&b["source"], &format!("{path}.source.content[{k}]"))
                    }
                    _ => Err(TranslateError::Unsupported(format!(
                        "{path}.source.content[{k}].type"
                    ))),
                })
                .collect(),
            _ => Ok(Vec::new()),
        },
        _ => Err(TranslateError::Unsupported(format!("{path}.source.type"))),
    }
}

/// The text of a tool result, and its images (which a `tool` message cannot carry).
fn tool_result_content(
    content: &Value,
    path: &str,
) -> Result<(String, Vec<Value>), TranslateError> {
    match content {
        Value::Null => Ok((String::new(), Vec::new())),
        Value::String(text) => Ok((text.clone(), Vec::new())),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for (k, block) in blocks.iter().enumerate() {
                let path = format!("{path}.content[{k}]");
                match block["type"].as_str() {
                    Some("text") => texts.push(block["text"].as_str().unwrap_or_default()),
                    Some("image") => images.push(image_part(&block["source"], &path)?),
                    Some("document") => images.extend(document_parts(block, &path)?),
                    _ => return Err(TranslateError::Unsupported(format!("{path}.type"))),
                }
            }
            Ok((texts.join("\n"), images))
        }
        _ => Err(TranslateError::InvalidRequest(format!(
            "{path}.content must be a string or an array"
        ))),
    }
}

fn assistant_message(message: &Value, i: usize) -> Result<Value, TranslateError> {
    let blocks = match &message["content"] {
        Value::String(text) => return Ok(json!({"role": "assistant", "content": text})),
        Value::Array(blocks) => blocks,
        _ => {
            return Err(TranslateError::InvalidRequest(format!(
                "messages[{i}].content must be a string or an array"
            )));
        }
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": tool_arguments(&block["input"])},
            })),
            Some("thinking" | "redacted_thinking") => {}
            other => {
                return Err(TranslateError::Unsupported(format!(
                    "messages[{i}].content[{j}].type = {}",
                    clip(other.unwrap_or("(none)"))
                )));
            }
        }
    }
    let mut out = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        if text.is_empty() {
            out["content"] = Value::Null;
        }
        out["tool_calls"] = Value::Array(tool_calls);
    }
    Ok(out)
}

fn tools(anthropic: &Value, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let defined = array(&anthropic["tools"]);
    if defined.is_empty() {
        return Ok(());
    }
    let mut tools = Vec::with_capacity(defined.len());
    for (i, tool) in defined.iter().enumerate() {
        match tool["type"].as_str() {
            None | Some("custom") => {}
            Some(other) => {
                return Err(TranslateError::Unsupported(format!(
                    "tools[{i}].type = {}",
                    clip(other)
                )));
            }
        }
        let Some(name) = tool["name"].as_str() else {
            return Err(TranslateError::InvalidRequest(format!(
                "tools[{i}].name must be a string"
            )));
        };
        let mut function = json!({"name": name});
        if let Some(description) = tool["description"].as_str() {
            function["description"] = json!(description);
        }
        function["parameters"] = match &tool["input_schema"] {
            Value::Null => json!({"type": "object", "properties": {}}),
            schema => schema.clone(),
        };
        tools.push(json!({"type": "function", "function": function}));
    }
    out.insert("tools".into(), Value::Array(tools));

    let choice = &anthropic["tool_choice"];
    let mapped = match choice["type"].as_str() {
        None => None,
        Some("auto") => Some(json!("auto")),
        Some("any") => Some(json!("required")),
        Some("none") => Some(json!("none")),
        Some("tool") => Some(json!({"type": "function", "function": {"name": choice["name"]}})),
        Some(other) => {
            return Err(TranslateError::Unsupported(format!(
                "tool_choice.type = {}",
                clip(other)
            )));
        }
    };
    if let Some(mapped) = mapped {
        out.insert("tool_choice".into(), mapped);
    }
    if choice["disable_parallel_tool_use"] == json!(true) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_request_translates() {
        let anthropic = json!({
            "model": "claude-x",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Use metric.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "Thanks"},
                ]},
            ],
            "tools": [{"name": "get_weather", "description": "Weather by city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "user-42"},
            "thinking": {"type": "enabled", "budget_tokens": 2000},
        });
        let openai = request(&anthropic).unwrap();
        assert_eq!(
            openai,
            json!({
                "model": "claude-x",
                "messages": [
                    {"role": "system", "content": "You are terse.\n\nUse metric."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ]},
                    {"role": "assistant", "content": "Let me check.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C\nsunny"},
                    {"role": "user", "content": "Thanks"},
                ],
                "max_completion_tokens": 1024,
                "temperature": 0.5, "top_p": 0.9,
                "stop": ["END"],
                "stream": true, "stream_options": {"include_usage": true},
                "user": "user-42",
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
            })
        );
    }

    #[test]
    fn tool_choices() {
        let with = |choice: Value| {
            request(&json!({"messages": [], "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": choice}))
                .unwrap()
        };
        assert_eq!(with(json!({"type": "auto"}))["tool_choice"], "auto");
        assert_eq!(with(json!({"type": "none"}))["tool_choice"], "none");
        assert_eq!(
            with(json!({"type": "tool", "name": "f"}))["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert!(
            with(json!({"type": "auto"}))
                .get("parallel_tool_calls")
                .is_none()
        );
        let no_tools = request(&json!({"messages": [], "tool_choice": {"type": "auto"}})).unwrap();
        assert!(no_tools.get("tool_choice").is_none());
    }

    #[test]
    fn only_tool_results_make_only_tool_messages_and_images_follow() {
        let openai = request(&json!({"messages": [
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "a", "content": "one"},
                {"type": "tool_result", "tool_use_id": "b", "is_error": true, "content": [
                    {"type": "text", "text": "chart:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}},
                ]},
                {"type": "tool_result", "tool_use_id": "c"},
            ]},
        ]}))
        .unwrap();
        assert_eq!(
            openai["messages"],
            json!([
                {"role": "tool", "tool_call_id": "a", "content": "one"},
                {"role": "tool", "tool_call_id": "b", "content": "chart:"},
                {"role": "tool", "tool_call_id": "c", "content": ""},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA"}}]},
            ])
        );
    }

    #[test]
    fn documents_and_structured_output() {
        let openai = request(&json!({"messages": [{"role": "user", "content": [
            {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
        ]}], "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "high"}}))
        .unwrap();
        assert_eq!(
            openai["messages"][0]["content"],
            json!([
                {"type": "file", "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
                {"type": "text", "text": "plain"},
            ])
        );
        assert_eq!(
            openai["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}})
        );
    }

    #[test]
    fn unsupported_and_invalid_requests_are_named() {
        let err = |v: Value| request(&v).unwrap_err();
        assert_eq!(
            err(
                json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
            ),
            TranslateError::Unsupported("tools[0].type = web_search_20250305".into())
        );
        assert_eq!(
            err(json!({"messages": [], "mcp_servers": [{"type": "url", "url": "https://x"}]})),
            TranslateError::Unsupported("mcp_servers".into())
        );
        assert_eq!(
            err(
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]})
            ),
            TranslateError::Unsupported("messages[0].content[0].source.type".into())
        );
        assert_eq!(
            err(json!({"messages": [{"role": "user", "content": [{"type": "search_result"}]}]})),
            TranslateError::Unsupported("messages[0].content[0].type = search_result".into())
        );
        assert!(matches!(
            err(json!({"model": "m"})),
            TranslateError::InvalidRequest(_)
        ));
        assert!(matches!(err(json!([])), TranslateError::InvalidRequest(_)));
        assert!(matches!(
            err(json!({"messages": [{"role": "system", "content": "x"}]})),
            TranslateError::InvalidRequest(_)
        ));
        // Harmless fields are dropped, not refused.
        let ok = request(
            &json!({"messages": [], "top_k": 5, "service_tier": "auto", "mcp_servers": [], "container": null}),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn response_with_text_and_tool_use() {
        let anthropic = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-real",
            "content": [
                {"type": "thinking", "thinking": "…", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 8, "output_tokens": 11},
        });
        let openai = response(&anthropic, "gpt-alias").unwrap();
        assert_eq!(openai["id"], "chatcmpl-msg_01");
        assert_eq!(openai["object"], "chat.completion");
        assert_eq!(openai["model"], "gpt-alias");
        let choice = &openai["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(
            openai["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 11, "total_tokens": 41, "prompt_tokens_details": {"cached_tokens": 8}})
        );

        let only_tool = response(
            &json!({"id": "m", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use", "usage": {}}),
            "x",
        )
        .unwrap();
        assert!(only_tool["choices"][0]["message"]["content"].is_null());
        assert!(response(&json!({"type": "error"}), "x").is_err());
    }
}
