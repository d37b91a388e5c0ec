//! Translation on recorded request/answer pairs (`tests/fixtures/translate/`, see its
//! README): each direction's request, answer and stream against the expected file, round
//! trips back to the original, and the event-order rules of both streaming formats.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod translate {
    use std::path::PathBuf;

    use bytes::Bytes;
    use serde_json::{Value, json};
    use warden_data_plane::translate::{
        AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseEvent, SseParser, anthropic_to_openai,
        openai_to_anthropic,
    };

    fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/translate")
            .join(name)
    }

    fn text(name: &str) -> String {
        std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn json(name: &str) -> Value {
        serde_json::from_str(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Parses an SSE body fed in pieces of `piece` bytes.
    fn parse_sse(body: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            events.extend(parser.feed(chunk).unwrap());
        }
        events.extend(parser.finish());
        events
    }

    /// Frames as (event name, JSON data), `[DONE]` as a JSON string, OpenAI's `created`
    /// zeroed. Checks that every frame holds exactly one event.
    fn decode_frames(frames: &[Bytes]) -> Vec<(Option<String>, Value)> {
        frames
            .iter()
            .map(|frame| {
                let events = parse_sse(frame, frame.len());
                assert_eq!(events.len(), 1, "one event per frame: {frame:?}");
                decode(&events[0])
            })
            .collect()
    }

    fn decode(event: &SseEvent) -> (Option<String>, Value) {
        let mut data = serde_json::from_str(&event.data).unwrap_or(json!(event.data));
        if data.get("created").is_some() {
            data["created"] = json!(0);
        }
        (event.event.clone(), data)
    }

    fn zero_created(mut v: Value) -> Value {
        v["created"] = json!(0);
        v
    }

    // --------------------------------------------------------------------------------
    // Event-order rules

    /// Anthropic: `message_start` first; blocks strictly sequential, numbered from 0,
    /// start → deltas of that index → stop; `message_delta` then `message_stop` last;
    /// each event's `type` equals its name. Returns the final `message_delta`.
    fn check_anthropic_order(events: &[(Option<String>, Value)]) -> Value {
        let names: Vec<&str> = events
            .iter()
            .map(|(n, _)| n.as_deref().expect("anthropic events are named"))
            .collect();
        for (name, data) in events {
            assert_eq!(data["type"].as_str(), name.as_deref(), "type matches name");
        }
        assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
        assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
        assert_eq!(names[names.len() - 2], "message_delta", "{names:?}");
        assert_eq!(names.iter().filter(|n| **n == "message_start").count(), 1);
        let mut open: Option<u64> = None;
        let mut next = 0;
        for (name, data) in &events[1..events.len() - 2] {
            let index = data["index"].as_u64();
            match name.as_deref().unwrap() {
                "content_block_start" => {
                    assert_eq!(open, None, "block opened inside another");
                    assert_eq!(index, Some(next), "blocks numbered in order");
                    open = index;
                    next += 1;
                }
                "content_block_delta" => assert_eq!(index, open, "delta outside its block"),
                "content_block_stop" => {
                    assert_eq!(index, open, "stop of a block that is not open");
                    open = None;
                }
                "ping" => {}
                other => panic!("unexpected {other} between message_start and message_delta"),
            }
        }
        assert_eq!(open, None, "a block was left open");
        events[events.len() - 2].1.clone()
    }

    /// OpenAI: a role chunk first, one finish chunk, a usage chunk (`choices: []`) after it
    /// when usage is included, `[DONE]` last; one id throughout.
    fn check_openai_order(events: &[(Option<String>, Value)], include_usage: bool) {
        assert!(
            events.iter().all(|(n, _)| n.is_none()),
            "OpenAI events are unnamed"
        );
        assert_eq!(events.last().unwrap().1, json!("[DONE]"));
        let chunks: Vec<&Value> = events[..events.len() - 1].iter().map(|(_, d)| d).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let id = &chunks[0]["id"];
        assert!(
            chunks
                .iter()
                .all(|c| &c["id"] == id && c["object"] == "chat.completion.chunk")
        );
        let finishes: Vec<usize> = (0..chunks.len())
            .filter(|&i| !chunks[i]["choices"][0]["finish_reason"].is_null())
            .collect();
        assert_eq!(finishes.len(), 1, "exactly one finish chunk");
        let after = chunks.len() - finishes[0] - 1;
        if include_usage {
            assert_eq!(after, 1, "the usage chunk follows the finish chunk");
            assert_eq!(chunks[chunks.len() - 1]["choices"], json!([]));
            assert!(chunks[chunks.len() - 1]["usage"].is_object());
        } else {
            assert_eq!(after, 0);
        }
    }

    // --------------------------------------------------------------------------------
    // What a client ends up with, to compare streams with each other

    /// (text, [(id, name, arguments)], stop_reason, input, output) of Anthropic events.
    #[derive(Debug, PartialEq)]
    struct Final {
        text: String,
        tools: Vec<(String, String, Value)>,
        stop: String,
        input_tokens: u64,
        output_tokens: u64,
    }

    fn accumulate_anthropic(events: &[(Option<String>, Value)]) -> Final {
        let mut f = Final {
            text: String::new(),
            tools: Vec::new(),
            stop: String::new(),
            input_tokens: 0,
            output_tokens: 0,
        };
        let mut args: Vec<String> = Vec::new();
        for (_, data) in events {
            match data["type"].as_str().unwrap() {
                "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                    let b = &data["content_block"];
                    f.tools.push((
                        b["id"].as_str().unwrap().into(),
                        b["name"].as_str().unwrap().into(),
                        Value::Null,
                    ));
                    args.push(String::new());
                }
                "content_block_delta" => match data["delta"]["type"].as_str().unwrap() {
                    "text_delta" => f.text.push_str(data["delta"]["text"].as_str().unwrap()),
                    "input_json_delta" => args
                        .last_mut()
                        .unwrap()
                        .push_str(data["delta"]["partial_json"].as_str().unwrap()),
                    _ => {}
                },
                "message_delta" => {
                    f.stop = data["delta"]["stop_reason"].as_str().unwrap().into();
                    f.output_tokens = data["usage"]["output_tokens"].as_u64().unwrap();
                    let u = &data["usage"];
                    if u["input_tokens"].is_u64() {
                        f.input_tokens = u["input_tokens"].as_u64().unwrap()
                            + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
                            + u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                    }
                }
                "message_start" => {
                    let u = &data["message"]["usage"];
                    f.input_tokens = u["input_tokens"].as_u64().unwrap()
                        + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
                        + u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                }
                _ => {}
            }
        }
        for (tool, args) in f.tools.iter_mut().zip(args) {
            tool.2 = serde_json::from_str(&args).unwrap();
        }
        f
    }

    fn accumulate_openai(events: &[(Option<String>, Value)]) -> Final {
        let mut f = Final {
            text: String::new(),
            tools: Vec::new(),
            stop: String::new(),
            input_tokens: 0,
            output_tokens: 0,
        };
        let mut args: Vec<String> = Vec::new();
        for (_, data) in events {
            if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
                f.input_tokens = usage["prompt_tokens"].as_u64().unwrap();
                f.output_tokens = usage["completion_tokens"].as_u64().unwrap();
            }
            let Some(choice) = data["choices"].get(0) else {
                continue;
            };
            if let Some(t) = choice["delta"]["content"].as_str() {
                f.text.push_str(t);
            }
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let i = call["index"].as_u64().unwrap() as usize;
                if i == f.tools.len() {
                    f.tools.push((
                        call["id"].as_str().unwrap().into(),
                        call["function"]["name"].as_str().unwrap().into(),
                        Value::Null,
                    ));
                    args.push(String::new());
                }
                args[i].push_str(call["function"]["arguments"].as_str().unwrap_or_default());
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                f.stop = reason.into();
            }
        }
        for (tool, args) in f.tools.iter_mut().zip(args) {
            tool.2 = serde_json::from_str(&args).unwrap();
        }
        f
    }

    fn run_to_anthropic(body: &[u8], piece: usize, model: &str) -> Vec<Bytes> {
        let mut s = OpenAiToAnthropicStream::new(model);
        let mut frames: Vec<Bytes> = parse_sse(body, piece)
            .iter()
            .flat_map(|e| s.push(e))
            .collect();
        frames.extend(s.finish());
        assert!(s.is_done() && s.error().is_none(), "{:?}", s.error());
        frames
    }

    fn run_to_openai(body: &[u8], piece: usize, model: &str, include_usage: bool) -> Vec<Bytes> {
        let mut s = AnthropicToOpenAiStream::new(model, include_usage);
        let mut frames: Vec<Bytes> = parse_sse(body, piece)
            .iter()
            .flat_map(|e| s.push(e))
            .collect();
        frames.extend(s.finish());
        assert!(s.is_done() && s.error().is_none(), "{:?}", s.error());
        frames
    }

    fn concat(frames: &[Bytes]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.iter().copied()).collect()
    }

    // --------------------------------------------------------------------------------
    // Anthropic client, OpenAI provider

    #[test]
    fn messages_to_chat_request() {
        let client = json("messages_to_chat/request.anthropic.json");
        let upstream = anthropic_to_openai::request(&client).unwrap();
        assert_eq!(upstream, json("messages_to_chat/request.openai.json"));
        // Everything survives the way back: system prompt, images, tools, tool calls and
        // results, sampling and stop settings, metadata.
        assert_eq!(openai_to_anthropic::request(&upstream).unwrap(), client);
    }

    #[test]
    fn messages_to_chat_response() {
        let upstream = json("messages_to_chat/response.openai.json");
        let answer = openai_to_anthropic::response(&upstream, "claude-sonnet-4-5").unwrap();
        assert_eq!(answer, json("messages_to_chat/response.anthropic.json"));

        let back = anthropic_to_openai::response(&answer, "gpt-4o-2024-08-06").unwrap();
        let (orig, back) = (&upstream["choices"][0], &back["choices"][0]);
        assert_eq!(back["message"]["content"], orig["message"]["content"]);
        assert_eq!(back["message"]["tool_calls"], orig["message"]["tool_calls"]);
        assert_eq!(back["finish_reason"], orig["finish_reason"]);
        let back_usage = &anthropic_to_openai::response(&answer, "m").unwrap()["usage"];
        for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(back_usage[key], upstream["usage"][key], "{key}");
        }
        assert_eq!(
            back_usage["prompt_tokens_details"]["cached_tokens"],
            upstream["usage"]["prompt_tokens_details"]["cached_tokens"]
        );
    }

    #[test]
    fn messages_to_chat_stream() {
        let body = text("messages_to_chat/stream.openai.sse");
        let expected: Vec<_> = parse_sse(
            text("messages_to_chat/stream.anthropic.sse").as_bytes(),
            4096,
        )
        .iter()
        .map(decode)
        .collect();
        for piece in [1, 2, 7, 64, 1000, body.len()] {
            let frames = run_to_anthropic(body.as_bytes(), piece, "claude-sonnet-4-5");
            let events = decode_frames(&frames);
            assert_eq!(events, expected, "pieces of {piece} bytes");
            let delta = check_anthropic_order(&events);
            assert_eq!(delta["delta"]["stop_reason"], "tool_use");
            assert_eq!(delta["usage"]["output_tokens"], 52);
        }
        // The streamed answer says what the provider's stream said.
        let upstream: Vec<_> = parse_sse(body.as_bytes(), 4096)
            .iter()
            .map(decode)
            .collect();
        let (theirs, ours) = (
            accumulate_openai(&upstream),
            accumulate_anthropic(&expected),
        );
        assert_eq!(ours.text, theirs.text);
        assert_eq!(ours.tools, theirs.tools);
        assert_eq!(ours.stop, "tool_use");
        assert_eq!(
            (ours.input_tokens, ours.output_tokens),
            (theirs.input_tokens, theirs.output_tokens)
        );
    }

    // --------------------------------------------------------------------------------
    // OpenAI client, Anthropic provider

    #[test]
    fn chat_to_messages_request() {
        let client = json("chat_to_messages/request.openai.json");
        let upstream = openai_to_anthropic::request(&client).unwrap();
        assert_eq!(upstream, json("chat_to_messages/request.anthropic.json"));
        assert_eq!(anthropic_to_openai::request(&upstream).unwrap(), client);
    }

    #[test]
    fn chat_to_messages_response() {
        let upstream = json("chat_to_messages/response.anthropic.json");
        let answer = anthropic_to_openai::response(&upstream, "gpt-4o").unwrap();
        assert_eq!(
            zero_created(answer.clone()),
            json("chat_to_messages/response.openai.json")
        );

        let back = openai_to_anthropic::response(&answer, "claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(back["content"], upstream["content"]);
        assert_eq!(back["stop_reason"], upstream["stop_reason"]);
        for key in ["input_tokens", "output_tokens", "cache_read_input_tokens"] {
            assert_eq!(back["usage"][key], upstream["usage"][key], "{key}");
        }
    }

    #[test]
    fn chat_to_messages_stream() {
        let request = json("chat_to_messages/request.openai.json");
        let include_usage = request["stream_options"]["include_usage"] == json!(true);
        let body = text("chat_to_messages/stream.anthropic.sse");
        let expected: Vec<_> =
            parse_sse(text("chat_to_messages/stream.openai.sse").as_bytes(), 4096)
                .iter()
                .map(decode)
                .collect();
        for piece in [1, 3, 50, body.len()] {
            let frames = run_to_openai(body.as_bytes(), piece, "gpt-4o", include_usage);
            let events = decode_frames(&frames);
            assert_eq!(events, expected, "pieces of {piece} bytes");
            check_openai_order(&events, true);
        }
        let frames = run_to_openai(body.as_bytes(), 4096, "gpt-4o", false);
        check_openai_order(&decode_frames(&frames), false);

        let upstream: Vec<_> = parse_sse(body.as_bytes(), 4096)
            .iter()
            .map(decode)
            .collect();
        check_anthropic_order(&upstream);
        let (theirs, ours) = (
            accumulate_anthropic(&upstream),
            accumulate_openai(&expected),
        );
        assert_eq!(ours.text, theirs.text);
        assert_eq!(ours.tools, theirs.tools);
        assert_eq!(ours.stop, "tool_calls");
        assert_eq!(
            (ours.input_tokens, ours.output_tokens),
            (theirs.input_tokens, theirs.output_tokens)
        );
    }

    // --------------------------------------------------------------------------------
    // Streams through both converters

    #[test]
    fn streams_survive_both_converters() {
        // OpenAI → Anthropic → OpenAI.
        let openai = text("messages_to_chat/stream.openai.sse");
        let anthropic = concat(&run_to_anthropic(openai.as_bytes(), 4096, "m"));
        let back = decode_frames(&run_to_openai(&anthropic, 5, "m", true));
        check_openai_order(&back, true);
        let original: Vec<_> = parse_sse(openai.as_bytes(), 4096)
            .iter()
            .map(decode)
            .collect();
        assert_eq!(accumulate_openai(&back), accumulate_openai(&original));

        // Anthropic → OpenAI → Anthropic.
        let anthropic = text("chat_to_messages/stream.anthropic.sse");
        let openai = concat(&run_to_openai(anthropic.as_bytes(), 4096, "m", true));
        let back = decode_frames(&run_to_anthropic(&openai, 5, "m"));
        check_anthropic_order(&back);
        let original: Vec<_> = parse_sse(anthropic.as_bytes(), 4096)
            .iter()
            .map(decode)
            .collect();
        assert_eq!(accumulate_anthropic(&back), accumulate_anthropic(&original));
    }
}
