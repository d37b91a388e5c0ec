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

/// One line: `crc32-hex json\n`, built in one buffer.
pub fn encode(event: &Event, node: &str) -> Option<Vec<u8>> {
    const PREFIX: usize = 9;
    let mut line = Vec::with_capacity(
        PREFIX
            + 128
            + event.id.len()
            + node.len()
            + event.actor.len()
            + event.subject.len()
            + event.result.len()
            + event.detail.len() * 11 / 10,
    );
    line.extend_from_slice(&[b' '; PREFIX]);
    serde_json::to_writer(
        &mut line,
        &RecordRef {
            id: &event.id,
            ts: event.timestamp_ms,
            node,
            action: event.action,
            actor: &event.actor,
            subject: &event.subject,
            result: &event.result,
            detail: &event.detail,
        },
    )
    .ok()?;
    let crc = crc32fast::hash(line.get(PREFIX..)?);
    hex::encode_to_slice(crc.to_be_bytes(), line.get_mut(..PREFIX - 1)?).ok()?;
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
