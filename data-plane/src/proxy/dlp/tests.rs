use serde_json::json;
use warden_core::dlp::{Action, Detector, RuleSpec, Scope};

use super::*;

const CARD: &str = "4111 1111 1111 1111";
const KEY: &str = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz";

fn rules(action: Action) -> RuleSet {
    RuleSet::compile(
        Detector::BUILTIN
            .iter()
            .map(|d| RuleSpec {
                name: d.as_str().into(),
                detector: *d,
                pattern: String::new(),
                action,
                scope: Scope::Gateway,
            })
            .collect(),
    )
    .unwrap()
}

fn redact(endpoint: Endpoint, body: Value) -> (Value, String) {
    let Value::Object(mut body) = body else {
        unreachable!()
    };
    let f = inspect_with(
        &rules(Action::Redact),
        "vkey:vk_1",
        "m",
        endpoint,
        &mut body,
    )
    .unwrap();
    (Value::Object(body), f.summary())
}

#[test]
fn chat_messages_are_redacted_in_strings_parts_and_tool_calls() {
    let (body, summary) = redact(
        Endpoint::Chat,
        json!({"model": "m", "messages": [
            {"role": "system", "content": format!("card {CARD}")},
            {"role": "user", "content": [
                {"type": "text", "text": format!("key {KEY}")},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,4111111111111111"}}
            ]},
            {"role": "assistant", "tool_calls": [{"id": "call_4111111111111111", "type": "function",
                "function": {"name": "f", "arguments": format!("{{\"c\":\"{CARD}\"}}")}}]},
            {"role": "tool", "tool_call_id": "t", "content": "ssn 123-45-6789"}
        ]}),
    );
    assert_eq!(body["messages"][0]["content"], "card [REDACTED:card]");
    assert_eq!(
        body["messages"][1]["content"][0]["text"],
        "key [REDACTED:anthropic_key]"
    );
    // Not text: left alone.
    assert_eq!(
        body["messages"][1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,4111111111111111"
    );
    assert_eq!(
        body["messages"][2]["tool_calls"][0]["id"],
        "call_4111111111111111"
    );
    assert_eq!(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"c\":\"[REDACTED:card]\"}"
    );
    assert_eq!(body["messages"][3]["content"], "ssn [REDACTED:ssn]");
    assert_eq!(summary, "card:redact:2,anthropic_key:redact:1,ssn:redact:1");
}

#[test]
fn anthropic_system_blocks_and_tool_results_are_redacted() {
    let (body, _) = redact(
        Endpoint::Messages,
        json!({"model": "m", "max_tokens": 5,
        "system": [{"type": "text", "text": format!("s {CARD}")}],
        "messages": [
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "x", "content": [{"type": "text", "text": CARD}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "4111111111111111"}}
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": CARD}}]}
        ]}),
    );
    assert_eq!(body["system"][0]["text"], "s [REDACTED:card]");
    assert_eq!(
        body["messages"][0]["content"][0]["content"][0]["text"],
        "[REDACTED:card]"
    );
    assert_eq!(
        body["messages"][0]["content"][1]["source"]["data"],
        "4111111111111111"
    );
    assert_eq!(
        body["messages"][1]["content"][0]["input"]["q"],
        "[REDACTED:card]"
    );
    let (body, _) = redact(
        Endpoint::Messages,
        json!({"model": "m", "max_tokens": 5, "system": CARD, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(body["system"], "[REDACTED:card]");
}

#[test]
fn responses_and_embeddings_inputs_are_redacted() {
    let (body, _) = redact(
        Endpoint::Responses,
        json!({"model": "m", "instructions": CARD, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": CARD}]}
        ]}),
    );
    assert_eq!(body["instructions"], "[REDACTED:card]");
    assert_eq!(body["input"][0]["content"][0]["text"], "[REDACTED:card]");
    let (body, _) = redact(Endpoint::Embeddings, json!({"model": "m", "input": CARD}));
    assert_eq!(body["input"], "[REDACTED:card]");
    let (body, summary) = redact(
        Endpoint::Embeddings,
        json!({"model": "m", "input": ["a", CARD, [1, 2, 3]]}),
    );
    assert_eq!(body["input"], json!(["a", "[REDACTED:card]", [1, 2, 3]]));
    assert_eq!(summary, "card:redact:1");
}

#[test]
fn block_and_flag_leave_the_body_alone() {
    for action in [Action::Block, Action::Flag] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": CARD}]})
            .as_object()
            .cloned()
            .unwrap();
        let before = body.clone();
        let f = inspect_with(&rules(action), "", "m", Endpoint::Chat, &mut body).unwrap();
        assert_eq!(body, before);
        assert_eq!(f.blocked_by().is_some(), action == Action::Block);
    }
    // No rule applies: nothing is scanned.
    let mut body = Map::new();
    assert!(inspect_with(&RuleSet::default(), "", "m", Endpoint::Chat, &mut body).is_none());
}

#[test]
fn answers_are_flagged_across_events() {
    let mut scan = ResponseScan {
        rules: Arc::new(rules(Action::Block)),
        scan: StreamScan::new((0..6).collect()),
    };
    for piece in ["your card: 4111 11", "11 1111 1111 — done"] {
        scan.observe(
            &json!({"id": "chatcmpl-4111111111111111", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]}),
        );
    }
    assert_eq!(scan.findings().counts(), "card:1");
}
