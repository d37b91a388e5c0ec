//! Data loss prevention on the request path: the snapshot's rules
//! ([`warden_core::dlp`]) that apply to a request — the gateway's, its model's and its
//! credential's — run over every text part of the body ([`inspect`]): chat `messages`
//! (content strings and parts, tool calls and results), Anthropic `system` and `messages`
//! (content blocks, `tool_use` input, `tool_result` content), Responses `input` and
//! `instructions`, and embeddings `input` (strings or arrays of them). Identifiers,
//! roles, types and binary payloads (`image_url`, base64 `source`, audio, files) are not
//! text and are skipped. `redact` rules rewrite the parsed body in place (and the body is
//! then encoded again for the provider); a `block` finding refuses the request.
//!
//! Answers are only flagged ([`ResponseScan`]): the text of each streamed event as it
//! passes (with [`warden_core::dlp::STREAM_WINDOW`] bytes carried over, so that a match
//! split across events is found), or of a JSON answer once whole; nothing is held back
//! or delayed.
//!
//! With no rule in the snapshot, the cost is one `is_empty` check.

use std::sync::Arc;

use serde_json::{Map, Value};
use warden_core::dlp::{Findings, RuleSet, Scan, StreamScan};

use super::Endpoint;
use super::parse::ModelRequest;
use crate::auth::Principal;
use crate::compiled::Snapshot;

/// Keys whose values are not text a person wrote: identifiers, roles, types, enums, and
/// binary or remote payloads.
const SKIPPED: &[&str] = &[
    "id",
    "type",
    "role",
    "model",
    "object",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "media_type",
    "image_url",
    "input_audio",
    "file_data",
    "file_id",
    "url",
    "detail",
    "cache_control",
    "finish_reason",
    "stop_reason",
    "stop_sequence",
    "system_fingerprint",
    "service_tier",
    "status",
    "previous_response_id",
];

/// The body fields that hold an endpoint's text.
fn text_fields(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::Chat => &["messages"],
        Endpoint::Messages => &["system", "messages"],
        Endpoint::Responses => &["instructions", "input"],
        Endpoint::Embeddings => &["input"],
    }
}

/// Visits every text string under `value` (mutably).
fn walk(value: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(s) => visit(s),
        Value::Array(items) => {
            for v in items {
                walk(v, visit);
            }
        }
        Value::Object(o) => {
            // A base64 image or document: data, not text.
            if o.get("type").and_then(Value::as_str) == Some("base64") {
                return;
            }
            for (k, v) in o.iter_mut() {
                if !SKIPPED.contains(&k.as_str()) {
                    walk(v, visit);
                }
            }
        }
        _ => {}
    }
}

/// Runs the rules that apply to this request over its text, redacting in place (and then
/// marking the request [`ModelRequest::modified`]). `None` when no rule applies (nothing
/// was scanned); else what was found (possibly nothing).
pub fn inspect(
    snapshot: &Snapshot,
    principal: &Principal,
    model: &str,
    endpoint: Endpoint,
    request: &mut ModelRequest,
) -> Option<Findings> {
    if snapshot.dlp.is_empty() {
        return None;
    }
    let mut redacted = false;
    let found = inspect_marking(
        &snapshot.dlp,
        &principal.owner,
        model,
        endpoint,
        &mut request.body,
        &mut redacted,
    );
    request.modified |= redacted;
    found
}

/// [`inspect`] with the rules and the caller's owner key (`vkey:<id>`, `sub:<subject>`).
#[cfg(test)]
fn inspect_with(
    rules: &RuleSet,
    owner: &str,
    model: &str,
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
) -> Option<Findings> {
    inspect_marking(rules, owner, model, endpoint, body, &mut false)
}

/// [`inspect_with`], setting `redacted` when a string of `body` was rewritten.
fn inspect_marking(
    rules: &RuleSet,
    owner: &str,
    model: &str,
    endpoint: Endpoint,
    body: &mut Map<String, Value>,
    redacted: &mut bool,
) -> Option<Findings> {
    let selected = rules.select(model, owner);
    if selected.is_empty() {
        return None;
    }
    let mut scan = Scan::new(rules, selected);
    for field in text_fields(endpoint) {
        if let Some(v) = body.get_mut(*field) {
            walk(v, &mut |s| {
                if let Some(r) = scan.text(s) {
                    *s = r;
                    *redacted = true;
                }
            });
        }
    }
    Some(scan.into_findings())
}

/// The rules that apply to a request, for scanning its answer.
pub fn response_scan(
    snapshot: &Snapshot,
    principal: &Principal,
    model: &str,
) -> Option<ResponseScan> {
    if snapshot.dlp.is_empty() {
        return None;
    }
    let selected = snapshot.dlp.select(model, &principal.owner);
    (!selected.is_empty()).then(|| ResponseScan {
        rules: Arc::clone(&snapshot.dlp),
        scan: StreamScan::new(selected),
    })
}

/// Flags what the rules find in an answer, as it passes.
#[derive(Debug)]
pub struct ResponseScan {
    rules: Arc<RuleSet>,
    scan: StreamScan,
}

impl ResponseScan {
    /// One streamed event's (or a whole JSON answer's) data: its text strings in order.
    pub fn observe(&mut self, data: &Value) {
        let Self { rules, scan } = self;
        read_walk(data, &mut |s| scan.push(rules, s));
    }

    pub fn findings(&self) -> &Findings {
        self.scan.findings()
    }
}

/// [`walk`], read-only.
fn read_walk(value: &Value, visit: &mut dyn FnMut(&str)) {
    match value {
        Value::String(s) => visit(s),
        Value::Array(items) => {
            for v in items {
                read_walk(v, visit);
            }
        }
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("base64") {
                return;
            }
            for (k, v) in o {
                if !SKIPPED.contains(&k.as_str()) {
                    read_walk(v, visit);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
