//! The provider's body built from the client's bytes as received, when the request was not
//! modified and needs no translation: the top-level `model` value is replaced in place
//! (and `"stream_options":{"include_usage":true}` appended to a chat stream that did not
//! ask for usage), everything else copied as it came — one copy, no encoding. Anything
//! this path does not handle (a repeated top-level key, a parameter the provider drops,
//! a `stream_options` without `include_usage`) returns `None`, and the caller encodes the
//! parsed body again, as it did before.
//!
//! The scanner reads only the top level of a body `serde_json` has already accepted; a
//! nested `model` (inside `messages`, say) is never touched.

use std::ops::Range;

use bytes::Bytes;
use serde_json::Value;

use super::parse::ModelRequest;

/// Where the top-level members of a request body are, found once per request and used for
/// every provider the request may try.
#[derive(Debug)]
pub struct Spliceable {
    raw: Bytes,
    /// The span of the `model` member's value.
    model: Range<usize>,
    /// The offset of the object's closing `}`.
    close: usize,
    /// The top-level keys (each once; `model` among them, so an appended member always
    /// follows another and takes a comma).
    keys: Vec<String>,
    /// Whether `stream_options.include_usage` is already `true`.
    has_usage: bool,
    /// Whether a `stream_options` member is present.
    has_stream_options: bool,
}

impl Spliceable {
    /// The body's layout, or `None` when it must be encoded again: modified since it was
    /// parsed, received bytes not kept, or a layout this path does not handle.
    pub fn new(request: &ModelRequest) -> Option<Self> {
        if request.modified {
            return None;
        }
        let raw = request.raw.clone()?;
        let members = members(&raw)?;
        let mut keys = Vec::with_capacity(members.len());
        let mut model = None;
        for m in &members {
            let key = decode_key(&raw[m.key.clone()])?;
            if keys.contains(&key) {
                // serde_json keeps the last of a repeated key; do not guess which one.
                return None;
            }
            if key == "model" {
                model = Some(m.value.clone());
            }
            keys.push(key);
        }
        let close = raw.iter().rposition(|&b| b == b'}')?;
        let stream_options = request.body.get("stream_options");
        Some(Self {
            model: model?,
            close,
            keys,
            has_usage: stream_options
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            has_stream_options: stream_options.is_some(),
            raw,
        })
    }

    /// The body for a provider of the client's own format: `model` set to `upstream_model`,
    /// `drop_params` absent and, with `ask_usage`, `stream_options.include_usage` true.
    /// `None` when that needs more than a splice.
    pub fn body(
        &self,
        upstream_model: &str,
        drop_params: &[String],
        ask_usage: bool,
    ) -> Option<Bytes> {
        if drop_params.iter().any(|p| self.keys.contains(p)) {
            return None;
        }
        let add_usage = ask_usage && !self.has_usage;
        if add_usage && self.has_stream_options {
            return None;
        }
        let model = serde_json::to_string(upstream_model).ok()?;
        let current = &self.raw[self.model.clone()];
        if !add_usage && current == model.as_bytes() {
            return Some(self.raw.clone());
        }
        const USAGE: &[u8] = br#","stream_options":{"include_usage":true}"#;
        let mut out = Vec::with_capacity(self.raw.len() + model.len() + USAGE.len());
        out.extend_from_slice(&self.raw[..self.model.start]);
        out.extend_from_slice(model.as_bytes());
        out.extend_from_slice(&self.raw[self.model.end..self.close]);
        if add_usage {
            out.extend_from_slice(USAGE);
        }
        out.extend_from_slice(&self.raw[self.close..]);
        Some(Bytes::from(out))
    }
}

/// One top-level member: the span of its key (quotes included) and of its value.
#[derive(Debug)]
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

/// The top-level members of a JSON object, or `None` when `bytes` is not one.
fn members(bytes: &[u8]) -> Option<Vec<Member>> {
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(bytes, i + 1);
    let mut out = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if bytes.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = skip_string(bytes, i)?;
            let key = i..key_end;
            i = skip_ws(bytes, key_end);
            if bytes.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_ws(bytes, i + 1);
            let end = skip_value(bytes, start)?;
            out.push(Member {
                key,
                value: start..end,
            });
            i = skip_ws(bytes, end);
            match bytes.get(i) {
                Some(b',') => i = skip_ws(bytes, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(bytes, i) == bytes.len()).then_some(out)
}

/// A key's text (its quotes and escapes resolved).
fn decode_key(quoted: &[u8]) -> Option<String> {
    if quoted.contains(&b'\\') {
        return serde_json::from_slice(quoted).ok();
    }
    std::str::from_utf8(quoted.get(1..quoted.len().checked_sub(1)?)?)
        .ok()
        .map(str::to_owned)
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The offset just past the string opening at `i`.
fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match bytes.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The offset just past the value starting at `i`.
fn skip_value(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' => skip_string(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match bytes.get(j)? {
                    b'"' => {
                        j = skip_string(bytes, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(b) = bytes.get(j) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests;
