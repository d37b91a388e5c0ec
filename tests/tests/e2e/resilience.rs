//! Several nodes on one control plane, and a control plane that goes away and comes back.

use std::time::Duration;

use serde_json::Value;
use warden_tests::cluster::{MODEL, OTHER_MODEL, TestCluster, eventually};

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn node_serves_while_the_control_plane_is_down_and_catches_up_after() {
    let mut c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-outage", "*").unwrap();
    let jti = {
        let list: Value =
            serde_json::from_str(&c.ctl_ok(&["token", "list", "-o", "json"], None).unwrap())
                .unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["subject"] == "svc-outage")
            .unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = c.node_version(0).await.unwrap();

    c.kill_cp().unwrap();
    let outage_from = now_ms();
    for i in 0..5 {
        let r = c
            .chat(
                0,
                &token,
                &TestCluster::chat_body(MODEL, &format!("during outage {i}"), false),
            )
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "node stopped serving while the control plane was down"
        );
        let ready = c
            .http
            .get(c.nodes[0].ops_url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ready.status(),
            200,
            "node must stay ready on its last snapshot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready: Value = c
        .http
        .get(c.nodes[0].ops_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["control_plane_connected"], false, "{ready}");
    let health = c.http.get(c.nodes[0].url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let outage_to = now_ms();
    let printed = c.start_cp().await.unwrap();
    assert!(
        printed.is_none(),
        "a restart must not print a new admin credential"
    );
    // A change made after the control plane returns reaches the node.
    c.ctl_ok(&["token", "revoke", &jti], None).unwrap();
    eventually(
        Duration::from_secs(15),
        "the node to apply the revocation",
        || async {
            let r = c
                .chat(0, &token, &TestCluster::chat_body(MODEL, "x", false))
                .await
                .ok()?;
            (r.status() == 401).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(c.node_version(0).await.unwrap() > before);
    // The requests served during the outage were audited once the control plane was back.
    let audit = eventually(
        Duration::from_secs(10),
        "the outage's requests in the audit log",
        || async {
            let a = c
                .ctl_ok(
                    &[
                        "audit", "list", "--action", "request", "--limit", "200", "-o", "json",
                    ],
                    None,
                )
                .ok()?;
            let rows: Value = serde_json::from_str(&a).ok()?;
            let n = rows
                .as_array()?
                .iter()
                .filter(|r| {
                    r["actor"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("jwt:svc-outage"))
                        && r["result"] == "ok"
                        && r["timestamp_ms"]
                            .as_i64()
                            .is_some_and(|t| (outage_from..=outage_to).contains(&t))
                })
                .count();
            (n >= 5).then_some(n)
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            c.ctl_ok(
                &["audit", "list", "--action", "request", "--limit", "20"],
                None
            )
            .unwrap_or_default(),
            c.logs()
                .lines()
                .filter(|l| l.contains("audit") || l.contains("WARN"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(audit, 5, "each request exactly once");
    // State survived the restart: the other token and the provider key still work.
    let other = c.issue_token("svc-after", "*").unwrap();
    let r = c
        .chat(0, &other, &TestCluster::chat_body(MODEL, "after", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn two_nodes_serve_and_both_reject_a_revoked_credential() {
    let c = TestCluster::start(2).await.unwrap();
    let token = c.issue_token("svc-two", "*").unwrap();
    let key = c
        .ctl_ok(&["vkey", "create", "--name", "two-nodes"], None)
        .unwrap();
    for node in 0..2 {
        for credential in [&token, &key] {
            let r = c
                .chat(
                    node,
                    credential,
                    &TestCluster::chat_body(OTHER_MODEL, "x", false),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "node {node}");
        }
    }
    let tokens: Value =
        serde_json::from_str(&c.ctl_ok(&["token", "list", "-o", "json"], None).unwrap()).unwrap();
    let jti = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["subject"] == "svc-two")
        .unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys: Value =
        serde_json::from_str(&c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap()).unwrap();
    let id = keys.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ctl_ok(&["token", "revoke", &jti], None).unwrap();
    c.ctl_ok(&["vkey", "revoke", &id], None).unwrap();
    for node in 0..2 {
        for credential in [&token, &key] {
            eventually(
                Duration::from_secs(1),
                "both nodes to reject the revoked credential",
                || async {
                    let r = c
                        .chat(node, credential, &TestCluster::chat_body(MODEL, "x", false))
                        .await
                        .ok()?;
                    (r.status() == 401).then_some(())
                },
            )
            .await
            .unwrap();
        }
    }
    // Both nodes acknowledged the current snapshot.
    let nodes: Value =
        serde_json::from_str(&c.ctl_ok(&["nodes", "-o", "json"], None).unwrap()).unwrap();
    let current = nodes["current_version"].as_u64().unwrap();
    eventually(
        Duration::from_secs(2),
        "both nodes to ack the current version",
        || async {
            let nodes: Value =
                serde_json::from_str(&c.ctl_ok(&["nodes", "-o", "json"], None).ok()?).ok()?;
            let list = nodes["nodes"].as_array()?.clone();
            (list.len() == 2
                && list.iter().all(|n| {
                    n["acked_version"].as_u64() == Some(current) && n["connected"] == true
                }))
            .then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn control_plane_on_postgresql_serves_and_keeps_state_across_a_restart() {
    let url = std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("WARDEN_TEST_DATABASE_URL is not set: run scripts/test.sh (CI has PostgreSQL on 127.0.0.1:5432)")
    });
    let mut c = TestCluster::start_with(
        1,
        warden_tests::cluster::Options {
            database_url: Some(url.clone()),
            ..warden_tests::cluster::Options::default()
        },
    )
    .await
    .unwrap();
    assert!(
        c.logs().contains("state store: PostgreSQL"),
        "the control plane did not use PostgreSQL"
    );
    let token = c.issue_token("on-postgres", "*").unwrap();
    let key = c
        .ctl_ok(&["vkey", "create", "--name", "pg-key"], None)
        .unwrap();
    for credential in [&token, &key] {
        let r = c
            .chat(0, credential, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Nothing of the state is in a SQLite file under the data dir.
    assert!(!c.dir.path().join("cp-data").join("state.db").exists());
    c.kill_cp().unwrap();
    assert!(
        c.start_cp().await.unwrap().is_none(),
        "state (and the admin credential) must survive"
    );
    let keys: Value =
        serde_json::from_str(&c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap()).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "pg-key")
    );
    let id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "pg-key")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ctl_ok(&["vkey", "revoke", &id], None).unwrap();
    eventually(
        Duration::from_secs(10),
        "the revocation from the restarted control plane",
        || async {
            let r = c
                .chat(0, &key, &TestCluster::chat_body(MODEL, "x", false))
                .await
                .ok()?;
            (r.status() == 401).then_some(())
        },
    )
    .await
    .unwrap();
    // The audit rows are in PostgreSQL too.
    let audit = c
        .ctl_ok(
            &["audit", "list", "--action", "vkey.revoke", "-o", "json"],
            None,
        )
        .unwrap();
    assert!(audit.contains(&id));
    // The chain verifies; an edited row is found and named.
    let ok: Value =
        serde_json::from_str(&c.ctl_ok(&["audit", "verify", "-o", "json"], None).unwrap()).unwrap();
    assert_eq!(ok["valid"], true, "{ok}");
    assert!(ok["rows_checked"].as_u64().unwrap() > 5, "{ok}");
    let tamper = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-qc",
            &format!(
                "UPDATE {}.audit SET detail = 'forged' WHERE seq = 3",
                c.database_schema()
            ),
        ])
        .output()
        .expect("psql is needed to tamper with the audit table (postgresql-client)");
    assert!(
        tamper.status.success(),
        "{}",
        String::from_utf8_lossy(&tamper.stderr)
    );
    let out = c.ctl(&["audit", "verify", "-o", "json"], None).unwrap();
    assert!(!out.status.success(), "verify must fail on a tampered log");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains("row 3 was edited"),
        "{report}"
    );
    // Drop the test schema (best effort: psql may be missing outside CI).
    let _ = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", c.database_schema()),
        ])
        .output();
}
