//! What the gateway reads from a request body, and nothing more: `model`, `stream` and the
//! required fields of each endpoint ([`parse_request`]); the output-token cap written into
//! the body ([`cap_output_tokens`]); and the token estimates the limits reserve before the
//! provider reports usage ([`prompt_estimate`], [`requested_output`]). The rest of the body
//! is forwarded untouched.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::Endpoint;
use crate::error::ApiError;

/// The fields of a request the gateway reads; the rest is forwarded untouched.
#[derive(Debug)]
pub struct ModelRequest {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// How many choices the request asks for (`n` of a chat completion; 1 elsewhere).
    pub choices: u64,
    /// The body as received ([`ModelRequest::with_raw`]): forwarded with only its `model`
    /// spliced while `body` is unmodified ([`super::splice`]).
    pub raw: Option<Bytes>,
    /// Whether `body` was changed since it was parsed (output-token cap, DLP redaction,
    /// `store: false`): then `raw` no longer says the same and the body is encoded again.
    /// Every mutator of `body` sets it.
    pub modified: bool,
}

impl ModelRequest {
    /// Keeps the bytes `body` was parsed from (the same bytes given to [`parse_request`]).
    #[must_use]
    pub fn with_raw(mut self, raw: Bytes) -> Self {
        self.raw = Some(raw);
        self
    }
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
    check_model_length(&model)?;
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
    let choices = choices(endpoint, &body)?;
    Ok(ModelRequest {
        body,
        model,
        stream,
        choices,
        raw: None,
        modified: false,
    })
}

/// The longest `model` accepted, in bytes. Model names are short; a longer one would be
/// carried into the audit log and the logs as the request's subject.
pub const MAX_MODEL_LEN: usize = 256;

/// Refuses a `model` longer than [`MAX_MODEL_LEN`] bytes.
pub fn check_model_length(model: &str) -> Result<(), ApiError> {
    if model.len() > MAX_MODEL_LEN {
        return Err(ApiError::bad_request(format!(
            "`model` must be at most {MAX_MODEL_LEN} bytes long."
        )));
    }
    Ok(())
}

/// The most choices (`n`) one chat completion may ask for (OpenAI's own limit).
pub const MAX_CHOICES: u64 = 128;

/// The number of choices a chat completion asks for: `n`, a positive integer up to
/// [`MAX_CHOICES`] (1 when absent). Each choice is generated up to the output-token limit,
/// so the request may produce `n × max_tokens` tokens. Other endpoints: 1 (their `n`, if
/// any, is not a choice count).
fn choices(endpoint: Endpoint, body: &Map<String, Value>) -> Result<u64, ApiError> {
    if endpoint != Endpoint::Chat {
        return Ok(1);
    }
    match body.get("n") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_CHOICES).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`n` must be an integer from 1 to {MAX_CHOICES} (the number of choices to \
                     generate)."
                ))
            }),
    }
}

/// The output-token limit of each of `choices` choices under a total `cap`: `cap / choices`,
/// or a refusal when that leaves less than one token per choice.
pub fn per_choice_cap(cap: u64, choices: u64) -> Result<u64, ApiError> {
    let per_choice = cap / choices.max(1);
    if per_choice == 0 {
        return Err(ApiError::bad_request(format!(
            "`n` = {choices} choices exceed this request's output-token limit of {cap} \
             (`n` × `max_tokens` may not exceed it)."
        )));
    }
    Ok(per_choice)
}

/// Keeps a `/v1/responses` request from reaching state kept at the provider, unless the
/// credential holds the `responses_state` scope: every client shares Warden's provider key,
/// so a stored response (`store`, `background`) or a `previous_response_id` /
/// `conversation` is reachable by every other client. Without the scope those are refused
/// and `store: false` is set when the request leaves `store` out (the provider's default
/// is to store). Other endpoints: untouched. `Ok(true)` when it changed the body.
pub fn guard_provider_state(
    endpoint: Endpoint,
    may_keep_state: bool,
    body: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    if endpoint != Endpoint::Responses || may_keep_state {
        return Ok(false);
    }
    let set = |v: Option<&Value>| !matches!(v, None | Some(Value::Null | Value::Bool(false)));
    for field in [
        "store",
        "background",
        "previous_response_id",
        "conversation",
    ] {
        if set(body.get(field)) {
            // 403 `insufficient_scope`: "This credential lacks the `responses_state` scope."
            return Err(ApiError::missing_scope(
                warden_core::jwt::Scope::ResponsesState.as_str(),
            ));
        }
    }
    let changed = body.get("store") != Some(&Value::Bool(false));
    body.insert("store".to_owned(), Value::Bool(false));
    Ok(changed)
}

/// Lowers the request's completion-token limit to `cap`, or sets it when absent; `true`
/// when it changed the body.
pub fn cap_output_tokens(endpoint: Endpoint, body: &mut Map<String, Value>, cap: u64) -> bool {
    let fields = output_limit_fields(endpoint);
    let mut present = false;
    let mut changed = false;
    for f in fields {
        if let Some(v) = body.get_mut(*f) {
            present = true;
            if v.as_u64().is_none_or(|n| n > cap) {
                *v = Value::from(cap);
                changed = true;
            }
        }
    }
    if !present && let Some(f) = fields.last() {
        body.insert((*f).to_owned(), Value::from(cap));
        changed = true;
    }
    changed
}

/// The fields that limit the output of a request for `endpoint` (none for embeddings), in
/// the order they are read. Only these: a `max_completion_tokens` in a Messages body is not
/// Anthropic's limit, so reading it would reserve for a limit the provider never applies.
fn output_limit_fields(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::Embeddings => &[],
        Endpoint::Chat => &["max_completion_tokens", "max_tokens"],
        Endpoint::Messages => &["max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
    }
}

/// Default completion reservation when the request sets no limit; streams are metered
/// beyond it as they flow.
const DEFAULT_OUTPUT_RESERVE: u64 = 256;

/// The completion tokens a request asks for at most, over all of its `choices`.
pub fn requested_output(endpoint: Endpoint, body: &Map<String, Value>, choices: u64) -> u64 {
    if endpoint == Endpoint::Embeddings {
        return 0;
    }
    output_limit_fields(endpoint)
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_OUTPUT_RESERVE)
        .saturating_mul(choices.max(1))
}

/// Rough token count of text: about four characters per token.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Estimated prompt tokens of a request for `endpoint`, before the provider reports them.
pub fn prompt_estimate(endpoint: Endpoint, body: &Map<String, Value>) -> u64 {
    match endpoint {
        Endpoint::Messages => {
            crate::translate::count_tokens::estimate_input_tokens(&Value::Object(body.clone()))
        }
        Endpoint::Chat => estimate_prompt(body),
        Endpoint::Embeddings | Endpoint::Responses => {
            estimate_tokens(body.get("input").map_or(0, |i| i.to_string().len()))
        }
    }
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
    estimate_tokens(chars + tools) + overhead
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
            assert_eq!(e.status().as_u16(), 400);
            assert!(
                e.message().contains(needle),
                "{} lacks {needle}",
                e.message()
            );
        }
    }

    #[test]
    fn refuses_a_model_name_longer_than_the_limit() {
        let body = |model: &str| {
            serde_json::to_vec(&serde_json::json!({
                "model": model, "messages": [{"role": "user", "content": "x"}]
            }))
            .unwrap()
        };
        let longest = "m".repeat(MAX_MODEL_LEN);
        assert!(parse_request(Endpoint::Chat, &body(&longest)).is_ok());
        let e = parse_request(Endpoint::Chat, &body(&format!("{longest}m"))).unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        assert!(e.message().contains("at most 256 bytes"), "{}", e.message());
    }

    #[test]
    fn n_is_a_bounded_positive_integer_and_shares_the_cap() {
        let chat = |n: &str| {
            parse_request(
                Endpoint::Chat,
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"n":{n}}}"#)
                    .as_bytes(),
            )
        };
        assert_eq!(chat("3").unwrap().choices, 3);
        assert_eq!(chat("null").unwrap().choices, 1);
        for bad in ["0", "-1", "2.5", "\"2\"", "129", "1000000"] {
            let e = chat(bad).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad}");
            assert!(e.message().contains("`n`"), "{}", e.message());
        }
        assert_eq!(per_choice_cap(100, 50).unwrap(), 2);
        assert_eq!(per_choice_cap(100, 1).unwrap(), 100);
        assert_eq!(per_choice_cap(100, 101).unwrap_err().status().as_u16(), 400);
        let body = chat("4").unwrap().body;
        assert_eq!(
            requested_output(Endpoint::Chat, &body, 4),
            4 * DEFAULT_OUTPUT_RESERVE
        );
    }

    /// Found by the `request` fuzz target: a Messages body with an OpenAI-only
    /// `max_completion_tokens` was reserved for that field, not for its `max_tokens` (the
    /// one the output cap lowers and the provider applies).
    #[test]
    fn the_reservation_reads_only_the_endpoints_own_output_limit() {
        let body = parse_request(
            Endpoint::Messages,
            br#"{"model":"m","max_tokens":10,"max_completion_tokens":1000000,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap()
        .body;
        assert_eq!(requested_output(Endpoint::Messages, &body, 1), 10);
        let mut responses = parse_request(
            Endpoint::Responses,
            br#"{"model":"m","input":"x","max_tokens":5000}"#,
        )
        .unwrap()
        .body;
        cap_output_tokens(Endpoint::Responses, &mut responses, 100);
        assert_eq!(requested_output(Endpoint::Responses, &responses, 1), 100);
    }

    #[test]
    fn provider_state_needs_the_scope_on_responses_only() {
        let parse = |b: &str| {
            parse_request(Endpoint::Responses, b.as_bytes())
                .unwrap()
                .body
        };
        for field in [
            r#""store":true"#,
            r#""background":true"#,
            r#""previous_response_id":"resp_1""#,
            r#""conversation":"conv_1""#,
        ] {
            let mut body = parse(&format!(r#"{{"model":"m","input":"x",{field}}}"#));
            let e = guard_provider_state(Endpoint::Responses, false, &mut body).unwrap_err();
            assert_eq!(e.status().as_u16(), 403, "{field}");
            assert!(guard_provider_state(Endpoint::Responses, true, &mut body).is_ok());
        }
        let mut body = parse(r#"{"model":"m","input":"x"}"#);
        guard_provider_state(Endpoint::Responses, false, &mut body).unwrap();
        assert_eq!(body["store"], false);
        let mut body = parse(r#"{"model":"m","input":"x","store":false,"background":null}"#);
        assert!(guard_provider_state(Endpoint::Responses, false, &mut body).is_ok());
        let mut chat: Map<String, Value> = serde_json::from_str(r#"{"store":true}"#).unwrap();
        assert!(guard_provider_state(Endpoint::Chat, false, &mut chat).is_ok());
    }
}
