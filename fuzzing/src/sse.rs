//! Server-sent events from a provider: the parser must yield the same events whatever the
//! chunking of the body (a line, a `\r\n` or a character may be split anywhere), and the
//! stream translators must take any event sequence without panicking.

use arbitrary::Unstructured;
use warden_data_plane::translate::{
    AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseEvent, SseParser,
};

/// A small per-event cap so that the limit is reached too.
const LIMIT: usize = 4096;

/// The input's first bytes choose where the body is cut; the rest is the body.
pub fn target(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let cuts: Vec<u8> = (0..u.int_in_range(0..=8).unwrap_or(0))
        .map_while(|_| u.arbitrary::<u8>().ok())
        .collect();
    let body = u.take_rest();
    let whole = parse(body, &[]);
    let chunked = parse(body, &cuts);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the events"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunking changed whether the stream fits: {whole:?} / {chunked:?}"),
    }
    let events = whole.unwrap_or_default();
    let mut to_anthropic = OpenAiToAnthropicStream::new("m");
    let mut to_openai = AnthropicToOpenAiStream::new("m", cuts.len().is_multiple_of(2));
    for event in &events {
        let _ = to_anthropic.push(event);
        let _ = to_openai.push(event);
    }
    let _ = to_anthropic.finish();
    let _ = to_openai.finish();
    assert!(to_anthropic.is_done() && to_openai.is_done());
    let _ = (to_anthropic.usage(), to_openai.usage());
}

/// Feeds `body` in pieces of the lengths in `cuts` (then the rest); `Err` if an event was
/// too large.
fn parse(body: &[u8], cuts: &[u8]) -> Result<Vec<SseEvent>, String> {
    let mut parser = SseParser::with_limit(LIMIT);
    let mut events = Vec::new();
    let mut rest = body;
    for &cut in cuts {
        let (piece, tail) = rest.split_at(usize::from(cut).min(rest.len()));
        events.extend(parser.feed(piece).map_err(|e| e.to_string())?);
        rest = tail;
    }
    events.extend(parser.feed(rest).map_err(|e| e.to_string())?);
    events.extend(parser.finish());
    Ok(events)
}
