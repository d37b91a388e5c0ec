//! The provider's body built from the client's bytes as received, when the request was not
//! modified and needs no translation: the top-level `model` value is replaced in place
//! (and `"stream_options":{"include_usage":true}` appended to a chat stream that did not
//! ask for usage), everything else copied as it came — one copy, no encoding. Anything
//! this path does not handle (a repeated top-level key, a parameter the provider drops,
//! a `stream_options` without `include_usage`) returns `None`, and the caller encodes the
//! parsed body again, as it did before.
//!
//! Only the top level is read (by `serde_json`, each member's value borrowed as a
//! [`RawValue`], so its span in the body is known); a nested `model` (inside `messages`,
//! say) is never touched.

use std::ops::Range;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

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
        for m in members {
            let key = m.key;
            if keys.contains(&key) {
                // serde_json keeps the last of a repeated key; do not guess which one.
                return None;
            }
            if key == "model" {
                model = Some(m.value);
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

/// One top-level member: its key (escapes resolved) and the span of its value in the body.
#[derive(Debug)]
struct Member {
    key: String,
    value: Range<usize>,
}

/// The top-level members of a JSON object, in order and repeats kept, or `None` when
/// `bytes` is not one object. `serde_json` reads it; each value is borrowed as a
/// [`RawValue`], a slice of `bytes`, so its span is where that slice starts.
fn members(bytes: &[u8]) -> Option<Vec<Member>> {
    struct Object<'a>(Vec<(String, &'a RawValue)>);

    impl<'de> Deserialize<'de> for Object<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Entries;
            impl<'de> Visitor<'de> for Entries {
                type Value = Object<'de>;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        out.push(entry);
                    }
                    Ok(Object(out))
                }
            }
            d.deserialize_map(Entries)
        }
    }

    let Object(entries) = serde_json::from_slice(bytes).ok()?;
    let base = bytes.as_ptr() as usize;
    entries
        .into_iter()
        .map(|(key, value)| {
            let text = value.get();
            let start = (text.as_ptr() as usize).checked_sub(base)?;
            Some(Member {
                key,
                value: start..start + text.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
