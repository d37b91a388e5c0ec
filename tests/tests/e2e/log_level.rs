//! SIGHUP puts a new log filter in force without a restart, audited as `config.reload`: a
//! node re-reads its `--log-level-file`, a control-plane replica its config file's
//! `[server] log_level`. Debug lines appear once the filter asks for them and stop when it
//! no longer does; a filter that does not parse is refused (`log_level=failed`) and the one
//! in force stays.

use std::time::Duration;

use serde_json::Value;
use warden_tests::cluster::{MODEL, Options, TestCluster, eventually};

use crate::graceful::{audit_rows, signal};

/// The log of the process whose log file name contains `name` (`node-1`, `cp0`).
fn log_of(c: &TestCluster, name: &str) -> String {
    let mut files: Vec<_> = std::fs::read_dir(c.dir.path().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(name))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

/// The `config.reload` rows of `actor`, oldest first.
fn reloads(c: &TestCluster, actor: &str) -> Vec<Value> {
    let mut rows: Vec<Value> = audit_rows(c, "config.reload")
        .into_iter()
        .filter(|r| r["actor"] == actor)
        .collect();
    rows.reverse();
    rows
}

/// Sends SIGHUP to `pid` and waits for `actor`'s next `config.reload` row.
async fn hup_and_row(c: &TestCluster, pid: u32, actor: &str) -> Value {
    let before = reloads(c, actor).len();
    signal(pid, "HUP");
    eventually(Duration::from_secs(15), "a config.reload row", || async {
        reloads(c, actor).get(before).cloned()
    })
    .await
    .unwrap()
}

fn detail(row: &Value) -> std::collections::HashMap<String, String> {
    warden_core::audit_detail::parse(row["detail"].as_str().unwrap())
        .into_iter()
        .collect()
}

#[tokio::test]
async fn sighup_puts_a_new_log_filter_in_force_on_nodes_and_replicas_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let level = dir.path().join("warden-dp.log-level");
    std::fs::write(&level, "# the node's log filter\ninfo\n").unwrap();
    let c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--log-level-file".to_owned(), level.display().to_string()],
            cp_config: Some("[server]\nlog_level = \"info\"\n".to_owned()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-levels", "*").unwrap();
    let chat = || async {
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "hello", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    // `upstream answered` is a debug line of every forwarded request.
    let debug_lines = || log_of(&c, "node-1").matches("upstream answered").count();
    chat().await;
    assert_eq!(debug_lines(), 0, "a debug line at `info`");

    let node = format!("node:{}", c.nodes[0].id);
    let pid = c.nodes[0].child.id();
    std::fs::write(&level, "info,warden_data_plane=debug\n").unwrap();
    let row = hup_and_row(&c, pid, &node).await;
    assert_eq!(row["result"], "ok", "{row}");
    assert_eq!(detail(&row)["log_level"], "ok", "{row}");
    chat().await;
    eventually(Duration::from_secs(5), "a debug line", || async {
        (debug_lines() > 0).then_some(())
    })
    .await
    .unwrap();

    // The same filter again: unchanged.
    let row = hup_and_row(&c, pid, &node).await;
    assert_eq!(detail(&row)["log_level"], "unchanged", "{row}");

    // Back to `info`: the debug lines stop.
    std::fs::write(&level, "info\n").unwrap();
    let row = hup_and_row(&c, pid, &node).await;
    assert_eq!(detail(&row)["log_level"], "ok", "{row}");
    let seen = debug_lines();
    chat().await;
    chat().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        debug_lines(),
        seen,
        "debug lines after the filter went back to info"
    );

    // A filter that does not parse: refused, audited as failed, `info` stays.
    std::fs::write(&level, "info,warden_data_plane=loud\n").unwrap();
    let row = hup_and_row(&c, pid, &node).await;
    assert_eq!(row["result"], "failure", "{row}");
    assert_eq!(detail(&row)["log_level"], "failed", "{row}");
    chat().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(debug_lines(), seen);
    assert!(c.nodes[0].child.id() == pid);

    // The control plane: its config file's `[server] log_level`.
    let cp_debug = || {
        log_of(&c, "cp0")
            .lines()
            .filter(|l| l.contains(" DEBUG "))
            .count()
    };
    c.ctl_ok(&["provider", "list"], None).unwrap();
    assert_eq!(cp_debug(), 0, "a control-plane debug line at `info`");
    let cp_pid = c.cp.as_ref().unwrap().id();
    std::fs::write(
        c.dir.path().join("cp.toml"),
        "[server]\nlog_level = \"info,warden_control_plane=debug,h2=debug\"\n",
    )
    .unwrap();
    let row = hup_and_row(&c, cp_pid, "system:signal").await;
    assert_eq!(row["result"], "ok", "{row}");
    assert_eq!(detail(&row)["log_level"], "ok", "{row}");
    c.ctl_ok(&["provider", "list"], None).unwrap();
    eventually(
        Duration::from_secs(5),
        "a control-plane debug line",
        || async { (cp_debug() > 0).then_some(()) },
    )
    .await
    .unwrap();
    // A file that no longer parses: refused, the filter in force stays.
    std::fs::write(c.dir.path().join("cp.toml"), "[server]\nlog_level = 3\n").unwrap();
    let row = hup_and_row(&c, cp_pid, "system:signal").await;
    assert_eq!(row["result"], "failure", "{row}");
    assert_eq!(detail(&row)["log_level"], "failed", "{row}");
}
