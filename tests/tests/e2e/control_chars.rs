//! Client strings cannot forge lines (#12 item 7): a `model` with a line feed reaches the
//! node's log and `wardenctl audit list` escaped, on its own line, and a virtual key's owner
//! with a line feed or an ESC is refused.

use std::time::Duration;

use serde_json::Value;
use warden_tests::cluster::{TestCluster, eventually};

/// A request `model` that, printed raw, starts a line that reads like an admin action.
const FORGED_MODEL: &str = "gpt\ntoken.issue admin:adm_forged";
/// The same, as every log line and table must show it.
const ESCAPED_MODEL: &str = "gpt\\ntoken.issue admin:adm_forged";

/// The lines of `text` that begin with the forged text.
fn forged_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("token.issue admin:adm_forged"))
        .collect()
}

#[tokio::test]
async fn a_model_with_a_line_feed_forges_no_log_line_and_no_audit_row() {
    let c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("forger", "*").unwrap();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body(FORGED_MODEL, "hi", false),
        )
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    // (a) The node's log: the request is logged, escaped, on one line.
    let node_log = c.dir.path().join("logs");
    let log = eventually(
        Duration::from_secs(10),
        "the rejection in the node's log",
        || {
            let dir = node_log.clone();
            async move {
                let mut text = String::new();
                for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                    if entry.file_name().to_string_lossy().contains("node-1") {
                        text.push_str(&std::fs::read_to_string(entry.path()).ok()?);
                    }
                }
                text.contains("adm_forged").then_some(text)
            }
        },
    )
    .await
    .unwrap();
    assert!(forged_lines(&log).is_empty(), "forged log line:\n{log}");
    assert!(log.contains(ESCAPED_MODEL), "{log}");

    // (b) `wardenctl audit list`: the event's row shows the model escaped, on one line.
    let table = eventually(
        Duration::from_secs(10),
        "the request's audit row",
        || async {
            let t = c
                .ctl_ok(&["audit", "list", "--action", "request"], None)
                .ok()?;
            t.contains("adm_forged").then_some(t)
        },
    )
    .await
    .unwrap();
    assert!(forged_lines(&table).is_empty(), "forged row:\n{table}");
    let row = table
        .lines()
        .find(|l| l.contains("adm_forged"))
        .unwrap_or_default();
    assert!(row.contains(ESCAPED_MODEL), "{row}");
    assert!(
        row.starts_with("20"),
        "the row does not start with its time: {row}"
    );
    // The JSON form keeps the value exactly.
    let json: Value = serde_json::from_str(
        &c.ctl_ok(
            &["audit", "list", "--action", "request", "-o", "json"],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|r| r["subject"] == FORGED_MODEL),
        "{json}"
    );
}

#[tokio::test]
async fn a_virtual_key_owner_with_control_characters_is_refused() {
    let c = TestCluster::start(0).await.unwrap();
    for owner in ["team\nvkey.create admin", "team\u{1b}[2J", "team\r"] {
        let out = c
            .ctl(&["vkey", "create", "--name", "k1", "--owner", owner], None)
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "owner {owner:?} was accepted");
        assert!(err.contains("owner"), "{err}");
        assert!(out.stdout.is_empty(), "a key was printed for {owner:?}");
    }
    // The refusal is an INVALID_ARGUMENT, audited with what was asked, escaped.
    let rows: Value = serde_json::from_str(
        &c.ctl_ok(
            &["audit", "list", "--action", "vkey.create", "-o", "json"],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in rows {
        assert_eq!(r["result"], "invalid_argument", "{r}");
        assert!(
            !r["detail"].as_str().unwrap().chars().any(char::is_control),
            "{r}"
        );
    }
    // An ordinary owner is still fine.
    c.ctl_ok(
        &[
            "vkey",
            "create",
            "--name",
            "k2",
            "--owner",
            "search@example.com",
        ],
        None,
    )
    .unwrap();
}
