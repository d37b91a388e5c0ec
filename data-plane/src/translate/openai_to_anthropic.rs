//! OpenAI JSON → Anthropic JSON: a client's chat.completions request for an
//! Anthropic-format provider ([`request`]), and an OpenAI provider's chat.completion for an
//! Anthropic client ([`response`]).
//!
//! ## Request fields
//!
//! | OpenAI | Anthropic |
//! |---|---|
//! | `model` | `model` (unchanged: the caller rewrites aliases) |
//! | `system` and `developer` messages, wherever they are | `system`: a string for one message, text blocks for several |
//! | `user` content: string, or `text` / `image_url` / `file` parts | string, or `text` / `image` (data URL → `base64` source, `http(s)` URL → `url` source) / `document` (PDF data URL) blocks |
//! | assistant `content` (string, `text` or `refusal` parts) and `tool_calls` | `text` blocks, then `tool_use` blocks (`input` = the parsed `arguments`) |
//! | `tool` messages | `tool_result` blocks; consecutive ones, and a user message right after them, merged into one user message (Anthropic wants the results of one turn together, results first) |
//! | consecutive messages of one role | merged into one message, as Anthropic does itself |
//! | `tools[{type: function, function: {name, description, parameters}}]` | `tools[{name, description, input_schema}]` |
//! | `tool_choice` `auto` / `required` / `none` / `{type: function, function: {name}}`; `parallel_tool_calls: false` | `{type: auto}` / `{type: any}` / `{type: none}` / `{type: tool, name}`; `disable_parallel_tool_use: true` (only sent with tools) |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens`, default [`DEFAULT_ANTHROPIC_MAX_TOKENS`] (Anthropic requires it) |
//! | `stop` (string or array) | `stop_sequences` |
//! | `temperature` | `temperature`, clamped to Anthropic's range 0–1 (OpenAI's is 0–2) |
//! | `top_p`, `stream` | same (Anthropic always streams usage; `stream_options` is not needed) |
//! | `user` (else `safety_identifier`) | `metadata.user_id` |
//! | `response_format` `json_schema` | `output_config.format` (`json_schema`) |
//!
//! Dropped, because the answer stays meaningful without them: `frequency_penalty`,
//! `presence_penalty`, `seed`, `logit_bias` (sampling hints without an Anthropic
//! equivalent), `reasoning_effort`, `verbosity`, `store`, `metadata`, `service_tier`,
//! `prediction`, `prompt_cache_key`, `stream_options`, `n: 1`, `logprobs: false`,
//! `response_format: text`, message `name`s, image `detail`, a tool's `strict`, and any field
//! this module does not know.
//!
//! Refused with [`TranslateError::Unsupported`]: `n` > 1, `logprobs`, audio (`modalities`
//! with `audio`, `audio`, `input_audio` parts), `web_search_options`, the legacy `functions`
//! / `function_call` and `function` role, `response_format: json_object` (Anthropic has no
//! schema-less JSON mode), files by `file_id`, and tool types other than `function`.

use serde_json::{Map, Value, json};

use super::{
    DEFAULT_ANTHROPIC_MAX_TOKENS, TranslateError, anthropic_stop_reason, array, copy_field,
};

/// Translates an OpenAI chat.completions request into an Anthropic Messages request.
pub fn request(openai: &Value) -> Result<Value, TranslateError> {
    let Some(top) = openai.as_object() else {
        return Err(TranslateError::InvalidRequest(
            "the body must be a JSON object".into(),
        ));
    };
    refuse_unsupported(top)?;
    let mut out = Map::new();
    copy_field(openai, &mut out, "model", "model");

    let Some(input) = openai["messages"].as_array() else {
        return Err(TranslateError::InvalidRequest(
            "`messages` must be an array".into(),
        ));
    };
    let mut system = Vec::new();
    let mut messages = Conversation::default();
    for (i, message) in input.iter().enumerate() {
        let content = &message["content"];
        match message["role"].as_str() {
            Some("system" | "developer") => system.extend(text_blocks(content, i)?),
            Some("user") => messages.push("user", user_blocks(content, i)?),
            Some("assistant") => messages.push("assistant", assistant_blocks(message, i)?),
            Some("tool") => {
                let content = match content {
                    Value::Null => json!(""),
                    Value::String(s) => json!(s),
                    _ => Value::Array(text_blocks(content, i)?),
                };
                messages.push(
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": message["tool_call_id"],
                        "content": content,
                    })],
                );
            }
            Some("function") => {
                return Err(TranslateError::Unsupported(format!(
                    "messages[{i}].role = function"
                )));
            }
            _ => {
                return Err(TranslateError::InvalidRequest(format!(
                    "messages[{i}].role must be system, developer, user, assistant or tool"
                )));
            }
        }
    }
    match system.len() {
        0 => {}
        1 => {
            out.insert("system".into(), system.swap_remove(0)["text"].take());
        }
        _ => {
            out.insert("system".into(), Value::Array(system));
        }
    }
    out.insert("messages".into(), messages.into_json());

    let max_tokens = [&openai["max_completion_tokens"], &openai["max_tokens"]]
        .into_iter()
        .find_map(Value::as_u64)
        .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    match &openai["stop"] {
        Value::String(s) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Value::Array(a) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(t) = openai["temperature"].as_f64() {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    copy_field(openai, &mut out, "top_p", "top_p");
    if openai["stream"] == json!(true) {
        out.insert("stream".into(), json!(true));
    }
    if let Some(user) = openai["user"]
        .as_str()
        .or(openai["safety_identifier"].as_str())
    {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    tools(openai, &mut out)?;
    if openai["response_format"]["type"] == "json_schema" {
        let schema = &openai["response_format"]["json_schema"]["schema"];
        out.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema}}),
        );
    }
    Ok(Value::Object(out))
}

/// Translates an OpenAI chat.completion (a provider's answer) into an Anthropic message;
/// `requested_model` is the model name the client asked for.
pub fn response(openai: &Value, requested_model: &str) -> Result<Value, TranslateError> {
    let Some(choice) = openai["choices"].as_array().and_then(|c| c.first()) else {
        return Err(TranslateError::InvalidUpstream(
            "chat completion has no choices".into(),
        ));
    };
    let message = &choice["message"];
    let mut content = Vec::new();
    match &message["content"] {
        Value::String(text) if !text.is_empty() => {
            content.push(json!({"type": "text", "text": text}));
        }
        Value::Array(parts) => content.extend(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str().filter(|t| !t.is_empty()))
                .map(|text| json!({"type": "text", "text": text})),
        ),
        _ => {}
    }
    let refusal = message["refusal"].as_str().filter(|r| !r.is_empty());
    if let Some(refusal) = refusal {
        content.push(json!({"type": "text", "text": refusal}));
    }
    for (i, call) in array(&message["tool_calls"]).iter().enumerate() {
        let input = parse_arguments(&call["function"]["arguments"]).ok_or_else(|| {
            TranslateError::InvalidUpstream(format!(
                "tool_calls[{i}].function.arguments is not a JSON object"
            ))
        })?;
        content.push(json!({
            "type": "tool_use",
            "id": call["id"].as_str().map_or_else(|| format!("toolu_{i}"), str::to_owned),
            "name": call["function"]["name"],
            "input": input,
        }));
    }
    let mut stop_reason = anthropic_stop_reason(choice["finish_reason"].as_str());
    if refusal.is_some() && stop_reason == "end_turn" {
        stop_reason = "refusal";
    }
    let usage = &openai["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = usage
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut anthropic_usage = json!({
        "input_tokens": prompt.saturating_sub(cached),
        "output_tokens": usage["completion_tokens"].as_u64().unwrap_or(0),
    });
    if cached > 0 {
        anthropic_usage["cache_read_input_tokens"] = json!(cached);
    }
    let id = openai["id"].as_str().unwrap_or("openai");
    Ok(json!({
        "id": if id.starts_with("msg_") { id.to_owned() } else { format!("msg_{id}") },
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": anthropic_usage,
    }))
}

/// Tool-call arguments as an object: a JSON string (empty means `{}`), or already an object
/// (some OpenAI-compatible servers send one).
fn parse_arguments(arguments: &Value) -> Option<Value> {
    match arguments {
        Value::Null => Some(json!({})),
        Value::Object(_) => Some(arguments.clone()),
        Value::String(s) if s.trim().is_empty() => Some(json!({})),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        _ => None,
    }
}

fn refuse_unsupported(top: &Map<String, Value>) -> Result<(), TranslateError> {
    let field = |name: &str| top.get(name).unwrap_or(&Value::Null);
    if field("n").as_u64().is_some_and(|n| n > 1) {
        return Err(TranslateError::Unsupported("n".into()));
    }
    if field("logprobs") == &json!(true) {
        return Err(TranslateError::Unsupported("logprobs".into()));
    }
    if array(field("modalities")).iter().any(|m| m == "audio") || !field("audio").is_null() {
        return Err(TranslateError::Unsupported("audio".into()));
    }
    for name in ["web_search_options", "functions", "function_call"] {
        if !field(name).is_null() {
            return Err(TranslateError::Unsupported(name.into()));
        }
    }
    if field("response_format")["type"] == "json_object" {
        return Err(TranslateError::Unsupported(
            "response_format.type = json_object".into(),
        ));
    }
    Ok(())
}

/// Messages being built, merging consecutive messages of one role.
#[derive(Default)]
struct Conversation {
    messages: Vec<(&'static str, Vec<Value>)>,
}

impl Conversation {
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => self.messages.push((role, blocks)),
        }
    }

    /// One lone text block becomes a plain string.
    fn into_json(self) -> Value {
        self.messages
            .into_iter()
            .map(|(role, mut blocks)| {
                let content = if blocks.len() == 1 && blocks[0]["type"] == "text" {
                    blocks.swap_remove(0)["text"].take()
                } else {
                    Value::Array(blocks)
                };
                json!({"role": role, "content": content})
            })
            .collect()
    }
}

/// Non-empty text blocks of a string or an array of `text` (or `refusal`) parts.
fn text_blocks(content: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Ok(text_block(text).into_iter().collect()),
        Value::Array(parts) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let text = match part["type"].as_str() {
                    Some("text") => part["text"].as_str(),
                    Some("refusal") => part["refusal"].as_str(),
                    _ => {
                        return Err(TranslateError::InvalidRequest(format!(
                            "messages[{i}].content[{j}] must be a text part"
                        )));
                    }
                };
                blocks.extend(text.and_then(text_block));
            }
            Ok(blocks)
        }
        _ => Err(TranslateError::InvalidRequest(format!(
            "messages[{i}].content must be a string or an array"
        ))),
    }
}

/// Anthropic refuses empty text blocks, so empty text is left out.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn user_blocks(content: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let Value::Array(parts) = content else {
        return text_blocks(content, i);
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match part["type"].as_str() {
            Some("text") => blocks.extend(part["text"].as_str().and_then(text_block)),
            Some("image_url") => {
                let url = part["image_url"]["url"]
                    .as_str()
                    .or(part["image_url"].as_str());
                let Some(url) = url else {
                    return Err(TranslateError::InvalidRequest(format!(
                        "{path}.image_url.url must be a string"
                    )));
                };
                blocks.push(json!({"type": "image", "source": image_source(url, &path)?}));
            }
            Some("file") => {
                let Some(data_url) = part["file"]["file_data"].as_str() else {
                    return Err(TranslateError::Unsupported(format!("{path}.file.file_id")));
                };
                let Some((media_type, data)) = parse_data_url(data_url) else {
                    return Err(TranslateError::InvalidRequest(format!(
                        "{path}.file.file_data must be a base64 data URL"
                    )));
                };
                let mut document = json!({"type": "document", "source": {
                    "type": "base64", "media_type": media_type, "data": data,
                }});
                if let Some(name) = part["file"]["filename"].as_str() {
                    document["title"] = json!(name);
                }
                blocks.push(document);
            }
            Some("input_audio") => {
                return Err(TranslateError::Unsupported(format!(
                    "{path}.type = input_audio"
                )));
            }
            _ => {
                return Err(TranslateError::InvalidRequest(format!(
                    "{path}.type must be text, image_url or file"
                )));
            }
        }
    }
    Ok(blocks)
}

/// `data:image/png;base64,…` → a `base64` source; `http(s)://…` → a `url` source.
fn image_source(url: &str, path: &str) -> Result<Value, TranslateError> {
    if let Some((media_type, data)) = parse_data_url(url) {
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(TranslateError::InvalidRequest(format!(
        "{path}.image_url.url must be an http(s) URL or a base64 data URL"
    )))
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

fn assistant_blocks(message: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    if !message["function_call"].is_null() {
        return Err(TranslateError::Unsupported(format!(
            "messages[{i}].function_call"
        )));
    }
    let mut blocks = text_blocks(&message["content"], i)?;
    if let Some(refusal) = message["refusal"].as_str().and_then(text_block) {
        blocks.push(refusal);
    }
    for (j, call) in array(&message["tool_calls"]).iter().enumerate() {
        if call["type"].as_str().is_some_and(|t| t != "function") {
            return Err(TranslateError::Unsupported(format!(
                "messages[{i}].tool_calls[{j}].type"
            )));
        }
        let Some(input) = parse_arguments(&call["function"]["arguments"]) else {
            return Err(TranslateError::InvalidRequest(format!(
                "messages[{i}].tool_calls[{j}].function.arguments must be a JSON object"
            )));
        };
        blocks.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": input,
        }));
    }
    Ok(blocks)
}

fn tools(openai: &Value, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let defined = array(&openai["tools"]);
    if defined.is_empty() {
        return Ok(());
    }
    let mut tools = Vec::with_capacity(defined.len());
    for (i, tool) in defined.iter().enumerate() {
        if tool["type"] != "function" {
            return Err(TranslateError::Unsupported(format!("tools[{i}].type")));
        }
        let function = &tool["function"];
        let Some(name) = function["name"].as_str() else {
            return Err(TranslateError::InvalidRequest(format!(
                "tools[{i}].function.name must be a string"
            )));
        };
        let mut anthropic = json!({"name": name});
        if let Some(description) = function["description"].as_str() {
            anthropic["description"] = json!(description);
        }
        anthropic["input_schema"] = match &function["parameters"] {
            Value::Null => json!({"type": "object", "properties": {}}),
            schema => schema.clone(),
        };
        tools.push(anthropic);
    }
    out.insert("tools".into(), Value::Array(tools));

    let mut choice = match &openai["tool_choice"] {
        Value::Null => None,
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => {
                return Err(TranslateError::InvalidRequest(
                    "tool_choice must be auto, required, none or a function".into(),
                ));
            }
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Some(json!({"type": "tool", "name": openai["tool_choice"]["function"]["name"]}))
        }
        _ => return Err(TranslateError::Unsupported("tool_choice".into())),
    };
    if openai["parallel_tool_calls"] == json!(false) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_request_translates() {
        let openai = json!({
            "model": "claude-alias",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "and tomorrow?"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "max_tokens": 300,
            "stop": "END",
            "temperature": 1.7,
            "top_p": 0.5,
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1",
            "seed": 7,
            "presence_penalty": 0.1,
        });
        assert_eq!(
            request(&openai).unwrap(),
            json!({
                "model": "claude-alias",
                "system": "You are terse.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                        {"type": "text", "text": "and tomorrow?"},
                    ]},
                ],
                "max_tokens": 300,
                "stop_sequences": ["END"],
                "temperature": 1.0,
                "top_p": 0.5,
                "stream": true,
                "metadata": {"user_id": "u-1"},
                "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
                "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            })
        );
    }

    #[test]
    fn defaults_and_system_blocks() {
        let anthropic = request(&json!({"model": "m", "messages": [
            {"role": "system", "content": "a"},
            {"role": "developer", "content": [{"type": "text", "text": "b"}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ""},
        ], "max_completion_tokens": 99, "max_tokens": 5, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}))
        .unwrap();
        assert_eq!(
            anthropic["system"],
            json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
        );
        assert_eq!(
            anthropic["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
        assert_eq!(anthropic["max_tokens"], 99);
        assert_eq!(
            anthropic["output_config"],
            json!({"format": {"type": "json_schema", "schema": {"type": "object"}}})
        );
        let bare = request(&json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert_eq!(bare["max_tokens"], DEFAULT_ANTHROPIC_MAX_TOKENS);
        assert!(bare.get("system").is_none());
        assert!(bare.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choices() {
        let with = |choice: Value, parallel: Value| {
            request(
                &json!({"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": choice, "parallel_tool_calls": parallel}),
            )
            .unwrap()
        };
        assert_eq!(
            with(json!("auto"), Value::Null)["tool_choice"],
            json!({"type": "auto"})
        );
        assert_eq!(
            with(json!("required"), Value::Null)["tool_choice"],
            json!({"type": "any"})
        );
        assert_eq!(
            with(json!("none"), json!(false))["tool_choice"],
            json!({"type": "none"})
        );
        assert_eq!(
            with(Value::Null, json!(false))["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            with(Value::Null, Value::Null)["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn unsupported_and_invalid_requests_are_named() {
        let err = |v: Value| request(&v).unwrap_err();
        let user = json!([{"role": "user", "content": "x"}]);
        assert_eq!(
            err(json!({"messages": user, "n": 2})),
            TranslateError::Unsupported("n".into())
        );
        assert_eq!(
            err(json!({"messages": user, "logprobs": true})),
            TranslateError::Unsupported("logprobs".into())
        );
        assert_eq!(
            err(json!({"messages": user, "modalities": ["text", "audio"]})),
            TranslateError::Unsupported("audio".into())
        );
        assert_eq!(
            err(json!({"messages": user, "response_format": {"type": "json_object"}})),
            TranslateError::Unsupported("response_format.type = json_object".into())
        );
        assert_eq!(
            err(json!({"messages": user, "tools": [{"type": "custom", "custom": {"name": "x"}}]})),
            TranslateError::Unsupported("tools[0].type".into())
        );
        assert_eq!(
            err(
                json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]})
            ),
            TranslateError::Unsupported("messages[0].content[0].file.file_id".into())
        );
        assert!(matches!(
            err(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]})
            ),
            TranslateError::InvalidRequest(_)
        ));
        assert!(matches!(
            err(
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]})
            ),
            TranslateError::InvalidRequest(_)
        ));
        assert!(matches!(
            err(json!({"model": "m"})),
            TranslateError::InvalidRequest(_)
        ));
        assert!(request(&json!({"messages": user, "n": 1, "logprobs": false, "response_format": {"type": "text"}})).is_ok());
    }

    #[test]
    fn pdf_files_become_documents() {
        let anthropic = request(&json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
        ]}]}))
        .unwrap();
        assert_eq!(
            anthropic["messages"][0]["content"],
            json!([{"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}])
        );
    }

    #[test]
    fn response_with_text_tool_calls_and_usage() {
        let openai = json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt-real",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.", "refusal": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}],
            }}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39, "prompt_tokens_details": {"cached_tokens": 10}},
        });
        assert_eq!(
            response(&openai, "claude-alias").unwrap(),
            json!({
                "id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "claude-alias",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 10},
            })
        );
    }

    #[test]
    fn response_edge_cases() {
        let refusal = json!({"id": "x", "choices": [{"finish_reason": "stop", "message": {"content": null, "refusal": "No."}}]});
        let a = response(&refusal, "m").unwrap();
        assert_eq!(a["stop_reason"], "refusal");
        assert_eq!(a["content"], json!([{"type": "text", "text": "No."}]));
        assert_eq!(a["usage"], json!({"input_tokens": 0, "output_tokens": 0}));

        let length = json!({"id": "x", "choices": [{"finish_reason": "length", "message": {"content": ""}}]});
        let a = response(&length, "m").unwrap();
        assert_eq!(a["stop_reason"], "max_tokens");
        assert_eq!(a["content"], json!([]));

        let bad = json!({"id": "x", "choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}}]});
        assert!(matches!(
            response(&bad, "m"),
            Err(TranslateError::InvalidUpstream(_))
        ));
        assert!(response(&json!({"choices": []}), "m").is_err());
    }
}
