//! A local, deterministic estimate for `POST /v1/messages/count_tokens` when the model is
//! served by a provider that has no such endpoint.
//!
//! It is an estimate, not the provider's tokenizer: one token per 4 characters (Unicode
//! scalar values, rounded up) of all the text the model would read — the system prompt,
//! every text block, tool-use names and inputs, tool results, and each tool's name,
//! description and input schema (as compact JSON) — plus [`IMAGE_TOKENS`] per image or
//! document and [`MESSAGE_OVERHEAD_TOKENS`] per message for the role markers. Real counts
//! differ by tokenizer and language (code and non-Latin scripts take more tokens per
//! character); use it for budgeting, not billing.

use serde_json::{Value, json};

use super::array;

/// Charged per image or document block: about what a 1-megapixel image costs.
pub const IMAGE_TOKENS: u64 = 1_600;
/// Charged per message for its role and separators.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 3;
/// Characters per token.
pub const CHARS_PER_TOKEN: u64 = 4;

/// The estimated input tokens of an Anthropic Messages request.
pub fn estimate_input_tokens(request: &Value) -> u64 {
    let mut counter = Counter::default();
    counter.content(&request["system"]);
    for message in array(&request["messages"]) {
        counter.fixed += MESSAGE_OVERHEAD_TOKENS;
        counter.content(&message["content"]);
    }
    for tool in array(&request["tools"]) {
        counter.text(tool["name"].as_str());
        counter.text(tool["description"].as_str());
        if !tool["input_schema"].is_null() {
            counter.json(&tool["input_schema"]);
        }
    }
    counter.fixed + counter.chars.div_ceil(CHARS_PER_TOKEN)
}

/// The answer body for `/v1/messages/count_tokens`: `{"input_tokens": N}`.
pub fn count_tokens(request: &Value) -> Value {
    json!({"input_tokens": estimate_input_tokens(request)})
}

#[derive(Default)]
struct Counter {
    chars: u64,
    fixed: u64,
}

impl Counter {
    fn text(&mut self, text: Option<&str>) {
        self.chars += text.map_or(0, |t| t.chars().count() as u64);
    }

    fn json(&mut self, value: &Value) {
        self.chars += value.to_string().chars().count() as u64;
    }

    /// A string, or an array of content blocks.
    fn content(&mut self, content: &Value) {
        match content {
            Value::String(text) => self.text(Some(text)),
            Value::Array(blocks) => blocks.iter().for_each(|b| self.block(b)),
            _ => {}
        }
    }

    fn block(&mut self, block: &Value) {
        match block["type"].as_str() {
            Some("text") => self.text(block["text"].as_str()),
            Some("image" | "document") => self.fixed += IMAGE_TOKENS,
            Some("tool_use") => {
                self.text(block["name"].as_str());
                self.json(&block["input"]);
            }
            Some("tool_result") => self.content(&block["content"]),
            Some("thinking") => self.text(block["thinking"].as_str()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_text_source() {
        let request = json!({
            "model": "m",
            "system": [{"type": "text", "text": "abcd"}],
            "messages": [
                {"role": "user", "content": "12345678"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "abc"}]},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ]},
            ],
            "tools": [{"name": "f", "description": "dd", "input_schema": {}}],
        });
        // chars: 4 + 8 + (1 + 2) + 3 + (1 + 2 + 2) = 23 → 6 tokens; 3 messages × 3; one image.
        assert_eq!(estimate_input_tokens(&request), 6 + 9 + IMAGE_TOKENS);
        assert_eq!(
            count_tokens(&request),
            json!({"input_tokens": 6 + 9 + IMAGE_TOKENS})
        );
    }

    #[test]
    fn is_deterministic_and_grows_with_input() {
        let small = json!({"messages": [{"role": "user", "content": "hi"}]});
        let large = json!({"messages": [{"role": "user", "content": "hi ".repeat(100)}]});
        assert_eq!(estimate_input_tokens(&small), estimate_input_tokens(&small));
        assert!(estimate_input_tokens(&large) > estimate_input_tokens(&small));
        assert_eq!(estimate_input_tokens(&json!({})), 0);
    }
}
