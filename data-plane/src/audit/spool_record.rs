//! One spooled audit record on disk: `crc32-hex json\n`, written and read back.

use serde::{Deserialize, Serialize};

use super::Event;

/// A record as written.
#[derive(Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    ts: i64,
    node: &'a str,
    action: &'a str,
    actor: &'a str,
    subject: &'a str,
    result: &'a str,
    detail: &'a str,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    pub id: String,
    pub ts: i64,
    /// The node that recorded it (a spool may outlive a node id).
    pub node: String,
    pub action: String,
    pub actor: String,
    pub subject: String,
    pub result: String,
    pub detail: String,
}

/// One line: `crc32-hex json\n`.
pub fn encode(event: &Event, node: &str) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(&RecordRef {
        id: &event.id,
        ts: event.timestamp_ms,
        node,
        action: event.action,
        actor: &event.actor,
        subject: &event.subject,
        result: &event.result,
        detail: &event.detail,
    })
    .ok()?;
    let mut line = Vec::with_capacity(json.len() + 10);
    line.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
    line.extend_from_slice(&json);
    line.push(b'\n');
    Some(line)
}

/// Parses one complete line (with its `\n`); `None` when damaged.
pub(super) fn decode(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\n")?;
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc != crc32fast::hash(json) {
        return None;
    }
    serde_json::from_slice(json).ok()
}
