//! Admin audit rows say what was done (#12 item 7): `token.issue`, `vkey.create` and
//! `node_credential.create` carry what they granted (subject, scopes, models, ttl, name —
//! never the secret), every read RPC leaves an `admin.read` row naming the RPC, and a JWT
//! larger than nodes accept is refused at issue.

use serde_json::Value;
use warden_tests::cluster::TestCluster;

/// The newest audit row of `action` (as `wardenctl audit list -o json` shows it).
fn newest(c: &TestCluster, action: &str) -> Value {
    let rows: Value = serde_json::from_str(
        &c.ctl_ok(&["audit", "list", "--action", action, "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    rows.as_array()
        .unwrap()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no {action} row"))
}

fn detail(row: &Value) -> &str {
    row["detail"].as_str().unwrap()
}

#[tokio::test]
async fn admin_rows_record_what_was_granted_and_reads_are_audited() {
    let c = TestCluster::start(0).await.unwrap();

    let token = c
        .ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                "svc-billing",
                "--models",
                "gpt-mock,gpt-other",
                "--scopes",
                "read,write",
                "--ttl",
                "2h",
            ],
            None,
        )
        .unwrap();
    let row = newest(&c, "token.issue");
    let d = detail(&row);
    for part in [
        "subject=svc-billing",
        "scopes=read,write",
        "models=gpt-mock,gpt-other",
        "ttl_s=7200",
        "expires_at=",
    ] {
        assert!(d.contains(part), "token.issue detail lacks {part}: {row}");
    }
    assert!(!row.to_string().contains(&token), "the token is in its row");

    let vkey = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "billing-key",
                "--owner",
                "team-billing",
                "--models",
                "gpt-mock",
                "--ttl",
                "30d",
            ],
            None,
        )
        .unwrap();
    let row = newest(&c, "vkey.create");
    let d = detail(&row);
    for part in [
        "name=billing-key",
        "owner=team-billing",
        "scopes=read,write",
        "models=gpt-mock",
        "ttl_s=2592000",
        "expires_at=",
    ] {
        assert!(d.contains(part), "vkey.create detail lacks {part}: {row}");
    }
    assert!(!row.to_string().contains(&vkey), "the key is in its row");

    let node = c
        .ctl_ok(&["node", "credential", "issue", "--name", "edge-7"], None)
        .unwrap();
    let row = newest(&c, "node_credential.create");
    assert!(detail(&row).contains("name=edge-7"), "{row}");
    assert!(
        !row.to_string().contains(&node),
        "the credential is in its row"
    );

    // Reads: one `admin.read` row per read RPC, naming it, with the reader.
    c.ctl_ok(&["provider", "list"], None).unwrap();
    let row = newest(&c, "admin.read");
    assert_eq!(row["subject"], "provider.list", "{row}");
    assert_eq!(row["result"], "ok", "{row}");
    assert!(detail(&row).contains("rpc=list_providers"), "{row}");
    assert!(
        row["actor"].as_str().unwrap().starts_with("admin:adm_"),
        "{row}"
    );
    c.ctl_ok(&["vkey", "list"], None).unwrap();
    assert_eq!(newest(&c, "admin.read")["subject"], "vkey.list");
    // Reads that audit themselves (`audit.list`, `policy.get`) are not audited twice.
    c.ctl_ok(&["policy", "get", "--subject", "svc-billing"], None)
        .unwrap();
    assert_eq!(newest(&c, "policy.get")["subject"], "subject:svc-billing");
    let rows: Value = serde_json::from_str(
        &c.ctl_ok(
            &["audit", "list", "--action", "admin.read", "-o", "json"],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["subject"] != "audit.list" && r["subject"] != "policy.get"),
        "{rows}"
    );
}

#[tokio::test]
async fn a_token_larger_than_nodes_accept_is_refused_at_issue() {
    let c = TestCluster::start(0).await.unwrap();
    let limit = warden_core::jwt::MAX_TOKEN_BYTES.to_string();
    // 120 model names of 60 characters make claims of about 10 KiB once encoded.
    let models: Vec<String> = (0..120)
        .map(|i| format!("m{i:03}-{}", "x".repeat(55)))
        .collect();
    let models = models.join(",");
    let out = c
        .ctl(
            &["token", "issue", "--subject", "big", "--models", &models],
            None,
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a token over the limit was issued");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains(&limit),
        "the error does not name the limit: {err}"
    );
    let row = newest(&c, "token.issue");
    assert_eq!(row["result"], "invalid_argument", "{row}");
    // Nothing was stored: the token list has none for `big`.
    let list = c.ctl_ok(&["token", "list", "-o", "json"], None).unwrap();
    assert!(!list.contains("\"big\""), "{list}");
    // Under the limit, the same kind of grant is issued.
    let few: Vec<String> = (0..20)
        .map(|i| format!("m{i:03}-{}", "x".repeat(55)))
        .collect();
    c.ctl_ok(
        &[
            "token",
            "issue",
            "--subject",
            "small",
            "--models",
            &few.join(","),
        ],
        None,
    )
    .unwrap();
}
