//! Audit records the control plane refuses one by one (too large, malformed): kept, not
//! lost, in the `dead/` directory of the node's spool, one JSON line each, so that an
//! operator can read them; the spool moves on past them.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::spool::Record;

/// The file refused records are appended to, under the spool directory `spool_dir`.
pub fn dead_file(spool_dir: &Path) -> PathBuf {
    spool_dir.join("dead").join("quarantine.jsonl")
}

/// Appends `record` (refused by the control plane for `reason`) to the dead file and syncs
/// it. Blocking.
pub fn keep(spool_dir: &Path, record: &Record, reason: &str) -> io::Result<()> {
    let path = dead_file(spool_dir);
    if let Some(parent) = path.parent() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent)?;
    }
    let line = serde_json::json!({
        "id": record.id, "ts": record.ts, "node": record.node, "action": record.action,
        "actor": record.actor, "subject": record.subject, "result": record.result,
        "detail": record.detail, "refused": reason,
    });
    let mut file = super::spool_dir::open_private_file(&path)?;
    let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    file.write_all(&bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_refused_record_as_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record {
            id: "e1".into(),
            ts: 1,
            node: "n".into(),
            action: "request".into(),
            actor: "a".into(),
            subject: "s".into(),
            result: "ok".into(),
            detail: "x=1".into(),
        };
        keep(dir.path(), &record, "too large").unwrap();
        keep(dir.path(), &record, "too large").unwrap();
        let text = fs::read_to_string(dead_file(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains(r#""refused":"too large""#), "{text}");
    }
}
