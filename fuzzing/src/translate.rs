//! Translation between the OpenAI and Anthropic formats, both ways: requests (a client's),
//! answers and error bodies (a provider's). A translation may refuse; it may not panic,
//! and what it produces must be a JSON object the other side can read back.

use warden_data_plane::translate::{
    anthropic_to_openai, count_tokens, error as translate_error, openai_to_anthropic,
};

/// A client's request, read as OpenAI and as Anthropic, each translated and back.
pub fn request_target(data: &[u8]) {
    let Some(v) = super::json::from_input(data) else {
        return;
    };
    let _ = count_tokens::estimate_input_tokens(&v);
    let _ = count_tokens::count_tokens(&v);
    if let Ok(anthropic) = openai_to_anthropic::request(&v) {
        assert!(anthropic.is_object(), "not an object: {anthropic}");
        assert!(
            anthropic["max_tokens"].is_u64(),
            "no max_tokens: {anthropic}"
        );
        let _ = anthropic_to_openai::request(&anthropic);
    }
    if let Ok(openai) = anthropic_to_openai::request(&v) {
        assert!(openai.is_object(), "not an object: {openai}");
        assert!(openai["messages"].is_array(), "no messages: {openai}");
        let _ = openai_to_anthropic::request(&openai);
    }
}

/// A provider's answer and error body, read as OpenAI and as Anthropic.
pub fn response_target(data: &[u8]) {
    let Some(v) = super::json::from_input(data) else {
        return;
    };
    let model = "requested-model";
    if let Ok(anthropic) = openai_to_anthropic::response(&v, model) {
        assert_eq!(anthropic["model"], model);
        assert!(anthropic["content"].is_array(), "no content: {anthropic}");
    }
    if let Ok(openai) = anthropic_to_openai::response(&v, model) {
        assert_eq!(openai["model"], model);
        assert!(openai["choices"].is_array(), "no choices: {openai}");
    }
    let status = data
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) % 500 + 100)
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::BAD_REQUEST);
    let a = translate_error::anthropic_body_from_openai(status, &v);
    assert_eq!(a["type"], "error", "{a}");
    let o = translate_error::openai_body_from_anthropic(status, &v);
    assert!(o["error"].is_object(), "{o}");
    let _ = translate_error::openai_status(status);
    if let Some(kind) = v["error"]["type"].as_str() {
        let _ = translate_error::openai_error_from_anthropic(kind);
        let _ = translate_error::AnthropicErrorType::parse(kind);
    }
}
