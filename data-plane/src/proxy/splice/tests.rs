use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde_json::json;

use super::*;
use crate::compiled::{Format, Price, Provider, Route};
use crate::limits::Policy;
use crate::proxy::Endpoint;
use crate::proxy::forward::upstream_request;
use crate::proxy::parse::parse_request;

fn route(format: Format, upstream_model: &str, drop_params: &[&str]) -> Route {
    Route {
        alias: "gpt-mock".into(),
        provider: Arc::new(Provider {
            name: "p".into(),
            format,
            base_url: "http://127.0.0.1:1".into(),
            keys: Vec::new(),
            passthrough: false,
            drop_params: drop_params.iter().map(|p| (*p).to_owned()).collect(),
            client: None,
            cursor: AtomicUsize::new(0),
        }),
        upstream_model: upstream_model.into(),
        fallbacks: Vec::new(),
        policy: Policy::default(),
        price: Price::default(),
        priced: false,
        limits_alias: "gpt-mock".into(),
        deployments: Vec::new(),
        alias_header: None,
    }
}

/// The provider's body from the received bytes, and from the parsed body encoded again
/// (the path every request took before); and whether the first was spliced.
fn both(endpoint: Endpoint, body: &str, route: &Route) -> (Value, Value, bool) {
    let bytes = Bytes::copy_from_slice(body.as_bytes());
    let kept = parse_request(endpoint, &bytes)
        .unwrap()
        .with_raw(bytes.clone());
    let encoded = parse_request(endpoint, &bytes).unwrap();
    assert!(encoded.raw.is_none());
    let ask_usage = kept.stream && endpoint == Endpoint::Chat;
    let spliced = Spliceable::new(&kept)
        .and_then(|s| {
            s.body(
                &route.upstream_model,
                &route.provider.drop_params,
                ask_usage,
            )
        })
        .is_some();
    let a = upstream_request(endpoint, &kept, route).unwrap();
    let b = upstream_request(endpoint, &encoded, route).unwrap();
    assert_eq!(a.path, b.path);
    (
        serde_json::from_slice(&a.body).unwrap(),
        serde_json::from_slice(&b.body).unwrap(),
        spliced,
    )
}

const MSG: &str = r#"[{"role":"user","content":"hi"}]"#;

#[test]
fn a_spliced_body_is_the_same_json_as_the_encoded_one() {
    let openai = route(Format::OpenAi, "gpt-4o-mini", &[]);
    let cases: Vec<(String, bool)> = vec![
        (format!(r#"{{"model":"gpt-mock","messages":{MSG}}}"#), true),
        // Member order, whitespace everywhere, a nested `model` that must stay.
        (
            "\n { \"messages\" : [ {\"role\":\"user\",\"content\":\"hi\",\"model\":\"nested\"} ] ,\r\n\t\"model\" :\"gpt-mock\" , \"temperature\" : 0.5 } \n".to_owned(),
            true,
        ),
        // Unicode escapes in values, and brackets and quotes inside strings.
        (
            r#"{"model":"gpt-\u006dock","messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00 \"} ] { [\" \\"}],"user":"\u00fc"}"#.to_owned(),
            true,
        ),
        // An escaped key is still `model`.
        (format!(r#"{{"mod\u0065l":"gpt-mock","messages":{MSG}}}"#), true),
        // Scalars of every kind, empty containers.
        (
            format!(
                r#"{{"n":1,"top_p":1e-3,"stop":null,"logprobs":false,"logit_bias":{{}},"tools":[],"model":"gpt-mock","messages":{MSG},"seed":-7}}"#
            ),
            true,
        ),
        // A repeated key: serde_json keeps the last; the splice does not guess.
        (format!(r#"{{"model":"x","model":"gpt-mock","messages":{MSG}}}"#), false),
        (format!(r#"{{"model":"gpt-mock","messages":{MSG},"messages":{MSG}}}"#), false),
        // Streams: usage asked for by splicing, unless `stream_options` needs a merge.
        (format!(r#"{{"model":"gpt-mock","stream":true,"messages":{MSG}}}"#), true),
        (
            format!(r#"{{"model":"gpt-mock","stream":true,"stream_options":{{"include_usage":true}},"messages":{MSG}}}"#),
            true,
        ),
        (
            format!(r#"{{"model":"gpt-mock","stream":true,"stream_options":{{"include_usage":false}},"messages":{MSG}}}"#),
            false,
        ),
        (
            format!(r#"{{"model":"gpt-mock","stream":true,"stream_options":{{}},"messages":{MSG}}}"#),
            false,
        ),
    ];
    for (body, splices) in &cases {
        let (a, b, spliced) = both(Endpoint::Chat, body, &openai);
        assert_eq!(a, b, "{body}");
        assert_eq!(spliced, *splices, "{body}");
        assert_eq!(a["model"], "gpt-4o-mini", "{body}");
    }
    let (a, _, _) = both(Endpoint::Chat, &cases[1].0, &openai);
    assert_eq!(a["messages"][0]["model"], "nested");
    let (a, _, _) = both(Endpoint::Chat, &cases[7].0, &openai);
    assert_eq!(a["stream_options"], json!({"include_usage": true}));
}

#[test]
fn other_endpoints_and_models_that_need_escaping() {
    let quoted = route(Format::OpenAi, "we\"ird\\model/é", &[]);
    let (a, b, spliced) = both(
        Endpoint::Embeddings,
        r#"{"input":["a","b"],"model":"gpt-mock"}"#,
        &quoted,
    );
    assert!(spliced);
    assert_eq!(a, b);
    assert_eq!(a["model"], "we\"ird\\model/é");
    let (a, b, spliced) = both(
        Endpoint::Responses,
        r#"{"model":"gpt-mock","input":"x","store":false}"#,
        &quoted,
    );
    assert!(spliced);
    assert_eq!(a, b);
    let anthropic = route(Format::Anthropic, "claude", &[]);
    let messages =
        format!(r#"{{"model":"gpt-mock","max_tokens":5,"stream":true,"messages":{MSG}}}"#);
    let (a, b, spliced) = both(Endpoint::Messages, &messages, &anthropic);
    assert!(spliced);
    assert_eq!(a, b);
    assert!(a.get("stream_options").is_none());
    // Translated: never spliced, and the bytes say so.
    let (a, b, _) = both(
        Endpoint::Chat,
        &format!(r#"{{"model":"m","messages":{MSG}}}"#),
        &anthropic,
    );
    assert_eq!(a, b);
    assert_eq!(a["model"], "claude");
}

#[test]
fn the_received_bytes_go_out_untouched_when_the_model_is_the_same() {
    let body = Bytes::from_static(b"{ \"model\" : \"gpt-4o-mini\", \"input\":\"x\" }");
    let request = parse_request(Endpoint::Embeddings, &body)
        .unwrap()
        .with_raw(body.clone());
    let out = upstream_request(
        Endpoint::Embeddings,
        &request,
        &route(Format::OpenAi, "gpt-4o-mini", &[]),
    )
    .unwrap();
    assert_eq!(out.body, body);
    assert_eq!(out.body.as_ptr(), body.as_ptr(), "not copied");
}

#[test]
fn dropped_params_and_modified_bodies_are_encoded_again() {
    let body = format!(r#"{{"model":"gpt-mock","user":"u","messages":{MSG}}}"#);
    let dropping = route(Format::OpenAi, "gpt-4o-mini", &["user"]);
    let (a, b, spliced) = both(Endpoint::Chat, &body, &dropping);
    assert!(!spliced);
    assert_eq!(a, b);
    assert!(a.get("user").is_none());
    let (_, _, spliced) = both(
        Endpoint::Chat,
        &body,
        &route(Format::OpenAi, "x", &["seed"]),
    );
    assert!(spliced, "a drop param that is absent changes nothing");

    let bytes = Bytes::from(body);
    let mut request = parse_request(Endpoint::Chat, &bytes)
        .unwrap()
        .with_raw(bytes.clone());
    assert!(Spliceable::new(&request).is_some());
    request.modified = crate::proxy::parse::cap_output_tokens(Endpoint::Chat, &mut request.body, 9);
    assert!(request.modified);
    assert!(Spliceable::new(&request).is_none());
    let out = upstream_request(Endpoint::Chat, &request, &route(Format::OpenAi, "x", &[])).unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["max_tokens"], 9);
}

#[test]
fn the_scanner_refuses_what_is_not_one_object() {
    for bad in [
        "",
        "[]",
        "{",
        "{\"a\":1",
        "{\"a\" 1}",
        "{\"a\":1}x",
        "{\"a\":}",
    ] {
        assert!(members(bad.as_bytes()).is_none(), "{bad:?}");
    }
    let m = members(br#" {"a" : [1,{"b":"]"}] , "c":"d"} "#).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].key, "a");
    assert_eq!(
        &br#" {"a" : [1,{"b":"]"}] , "c":"d"} "#[m[0].value.clone()],
        br#"[1,{"b":"]"}]"#
    );
}
