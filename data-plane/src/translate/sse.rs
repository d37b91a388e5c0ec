//! Server-sent events: an incremental parser for a provider's body, and the frame
//! builders for what Warden sends.
//!
//! [`SseParser`] takes the body in whatever pieces the network delivers (a line, an event
//! or a multi-byte character may be split anywhere) and yields each complete event. It
//! follows the WHATWG event-stream rules that matter here: lines end with `\n`, `\r\n` or
//! `\r`; `field: value` with one optional space after the colon; several `data` lines are
//! joined with `\n`; lines starting with `:` are comments; an empty line dispatches the
//! event, and an event without `data` is not dispatched; `id` and `retry` are ignored. One
//! event is capped in size ([`SseParser::with_limit`]) so a provider cannot make a node
//! buffer without bound.

use bytes::Bytes;
use serde_json::Value;

use super::TranslateError;

/// The default cap on one event (its `data` plus the line being read).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The frame that ends an OpenAI stream.
pub const OPENAI_DONE: &str = "data: [DONE]\n\n";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, if the event had one (Anthropic names every event; OpenAI none).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    pub fn new(event: Option<&str>, data: impl Into<String>) -> Self {
        Self {
            event: event.map(str::to_owned),
            data: data.into(),
        }
    }
}

/// Incremental event-stream parser; see the module docs.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous byte was `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    at_start: bool,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that fails with [`TranslateError::EventTooLarge`] once one event exceeds
    /// `max_event_bytes`.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            after_cr: false,
            at_start: true,
            max_event_bytes,
        }
    }

    /// Consumes the next piece of the body and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, TranslateError> {
        Ok(self
            .feed_spans(chunk)?
            .into_iter()
            .map(|(event, _)| event)
            .collect())
    }

    /// Whether no part of an event is buffered: the next byte fed starts a new event's
    /// text, so an event completed by the next [`SseParser::feed_spans`] lies wholly in
    /// that chunk.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && !self.has_data && self.event.is_none()
    }

    /// [`SseParser::feed`], with the offset in `chunk` just past each event's dispatching
    /// blank line: the text of an event completed by this chunk ends there and begins
    /// where the previous one ended (or at 0, for the first, when the parser was
    /// [idle](SseParser::is_idle) before the chunk).
    pub fn feed_spans(&mut self, chunk: &[u8]) -> Result<Vec<(SseEvent, usize)>, TranslateError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.push_line_bytes(&rest[..end])?;
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    if let Some(event) = self.end_line() {
                        events.push((event, chunk.len() - rest.len()));
                    }
                }
                None => {
                    self.push_line_bytes(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(events)
    }

    /// The body ended: dispatches a last event that lacked its closing blank line (lenient:
    /// the standard would drop it, but a provider that ends its body early has still said it).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut last = None;
        if !self.line.is_empty() {
            last = self.end_line();
        }
        last.or_else(|| self.dispatch())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), TranslateError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event_bytes {
            self.line.clear();
            self.data.clear();
            self.has_data = false;
            self.event = None;
            return Err(TranslateError::EventTooLarge(self.max_event_bytes));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Interprets the buffered line; an empty line dispatches.
    fn end_line(&mut self) -> Option<SseEvent> {
        let raw = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&raw);
        if self.at_start {
            self.at_start = false;
            if let Some(stripped) = line.strip_prefix('\u{feff}') {
                line = stripped.to_owned().into();
            }
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

/// One Anthropic event frame: `event: NAME\ndata: JSON\n\n`.
pub fn anthropic_frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// One OpenAI chunk frame: `data: JSON\n\n`.
pub fn openai_frame(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSCRIPT: &str = "event: message_start\ndata: {\"a\":1}\n\n: comment\r\n\
        event: ping\r\ndata: {}\r\n\r\ndata:no-space\ndata:  two spaces\n\n\
        event: only-a-name\n\nid: 7\nretry: 10\ndata: [DONE]\n\nevent: é\rdata: ü\r\r";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent::new(Some("message_start"), "{\"a\":1}"),
            SseEvent::new(Some("ping"), "{}"),
            SseEvent::new(None, "no-space\n two spaces"),
            SseEvent::new(None, "[DONE]"),
            SseEvent::new(Some("é"), "ü"),
        ]
    }

    fn parse_in_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(parser.feed(piece).unwrap());
        }
        out.extend(parser.finish());
        out
    }

    #[test]
    fn parses_a_whole_body() {
        assert_eq!(parse_in_pieces(&[TRANSCRIPT.as_bytes()]), expected());
    }

    #[test]
    fn any_single_split_gives_the_same_events() {
        let bytes = TRANSCRIPT.as_bytes();
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(parse_in_pieces(&[a, b]), expected(), "split at {at}");
        }
    }

    #[test]
    fn every_two_splits_give_the_same_events() {
        let bytes = TRANSCRIPT.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let pieces = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_eq!(parse_in_pieces(&pieces), expected(), "splits at {i}, {j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let pieces: Vec<&[u8]> = TRANSCRIPT.as_bytes().chunks(1).collect();
        assert_eq!(parse_in_pieces(&pieces), expected());
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let events = parse_in_pieces(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(
            events,
            vec![SseEvent::new(None, "a"), SseEvent::new(None, "b")]
        );
    }

    #[test]
    fn unterminated_last_event_is_dispatched_on_finish() {
        assert_eq!(
            parse_in_pieces(&[b"data: x\n\ndata: tail"]),
            vec![SseEvent::new(None, "x"), SseEvent::new(None, "tail")]
        );
        assert_eq!(
            parse_in_pieces(&[b"data: x\n"]),
            vec![SseEvent::new(None, "x")]
        );
        assert!(parse_in_pieces(&[b"event: x\n"]).is_empty());
    }

    #[test]
    fn spans_end_where_each_event_is_dispatched() {
        let body = b": hi\n\ndata: {\"a\":1}\n\nevent: e\ndata: x\r\n\r\ndata: tail";
        let mut parser = SseParser::new();
        assert!(parser.is_idle());
        let got = parser.feed_spans(body).unwrap();
        assert_eq!(got.len(), 2);
        let (first, second) = (got[0].1, got[1].1);
        assert_eq!(&body[..first], b": hi\n\ndata: {\"a\":1}\n\n");
        assert_eq!(&body[first..second], b"event: e\ndata: x\r\n\r");
        assert_eq!(got[1].0, SseEvent::new(Some("e"), "x"));
        assert!(!parser.is_idle(), "`data: tail` is buffered");
        let mut parser = SseParser::new();
        parser.feed_spans(b"data: a\n").unwrap();
        assert!(!parser.is_idle());
        assert_eq!(parser.feed_spans(b"\n").unwrap()[0].1, 1);
        assert!(parser.is_idle());
    }

    #[test]
    fn a_leading_bom_is_ignored() {
        assert_eq!(
            parse_in_pieces(&["\u{feff}data: x\n\n".as_bytes()]),
            vec![SseEvent::new(None, "x")]
        );
    }

    #[test]
    fn oversized_events_fail() {
        let mut parser = SseParser::with_limit(16);
        assert_eq!(parser.feed(b"data: 0123456789\n").unwrap(), vec![]);
        assert_eq!(
            parser.feed(b"data: 0123456789\n"),
            Err(TranslateError::EventTooLarge(16))
        );
        let mut parser = SseParser::with_limit(16);
        assert!(parser.feed(&[b'x'; 17]).is_err());
    }

    #[test]
    fn frames_are_single_events() {
        let frame = anthropic_frame("ping", &serde_json::json!({"type": "ping"}));
        assert_eq!(&frame[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let frame = openai_frame(&serde_json::json!({"text": "a\nb"}));
        assert_eq!(&frame[..], b"data: {\"text\":\"a\\nb\"}\n\n");
    }
}
