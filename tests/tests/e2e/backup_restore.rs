//! The runbook's PostgreSQL backup and restore, run as written: the `sh` blocks after
//! `<!-- runbook-test: backup -->` and `<!-- runbook-test: restore -->` in deploy/README.md
//! are read at test time and run in `bash -euo pipefail` with the real `pg_dump`,
//! `pg_restore` and `createdb` (from `PG_BIN` when set, else the `PATH`), with the variables
//! the runbook tells the operator to set.
//!
//! A control plane on PostgreSQL (its own schema in the test database) records admin actions
//! and proxied requests; the backup block dumps the schema and copies the encrypted file
//! secret store; the original schema is then dropped and its control plane killed, as on a
//! lost host. The restore block puts the dump into a fresh database and the secret file into
//! an empty data directory; a control plane started there with the same master key passes
//! `wardenctl audit verify`, keeps the admin and node credentials, the JWTs, virtual keys and
//! revocations issued before the backup, and a new node attached to it serves a request with
//! the provider key from the restored store. A row edited in the restored copy then fails
//! the verification, naming the row.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster, eventually};

const RUNBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/README.md");

fn database_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_DATABASE_URL is not set: run scripts/test.sh (CI has PostgreSQL on 127.0.0.1:5432)"
        )
    })
}

/// The fenced block right after the line `<!-- runbook-test: NAME -->` in deploy/README.md.
fn runbook_block(name: &str) -> String {
    let text = std::fs::read_to_string(RUNBOOK).expect("deploy/README.md is readable");
    let marker = format!("<!-- runbook-test: {name} -->");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == marker)
        .unwrap_or_else(|| panic!("deploy/README.md has no `{marker}`"));
    let open = (at + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty())
        .filter(|&i| lines[i].starts_with("```"))
        .unwrap_or_else(|| panic!("`{marker}` is not followed by a fenced block"));
    let close = (open + 1..lines.len())
        .find(|&i| lines[i].trim_end() == "```")
        .unwrap_or_else(|| panic!("the block after `{marker}` is not closed"));
    lines[open + 1..close].join("\n")
}

/// Runs runbook block `name` with `env` (and the PostgreSQL client binaries on the `PATH`);
/// fails the test with the block's output when it fails.
fn run_block(name: &str, env: &[(&str, &str)]) {
    let script = format!("set -euo pipefail\n{}\n", runbook_block(name));
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(pg_bin) = std::env::var_os("PG_BIN") {
        path = format!("{}:{path}", pg_bin.to_string_lossy());
    }
    for tool in ["pg_dump", "pg_restore", "createdb", "psql", "sha256sum"] {
        let found = std::env::split_paths(&path).any(|d| d.join(tool).is_file());
        assert!(
            found,
            "{tool} is not on the PATH or in PG_BIN: install postgresql-client (or set PG_BIN)"
        );
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "runbook block `{name}` failed ({}):\n{script}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one SQL command with `psql`; fails the test when it fails.
fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql is needed (postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let mut u = reqwest::Url::parse(url).expect("WARDEN_TEST_DATABASE_URL is a URL");
    u.set_path(&format!("/{database}"));
    u.to_string()
}

/// The `jti` of a JWT.
fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

fn audit_verify(c: &TestCluster) -> (bool, Value) {
    let out = c.ctl(&["audit", "verify", "-o", "json"], None).unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

async fn status_of(c: &TestCluster, node: usize, credential: &str) -> u16 {
    c.chat(node, credential, &TestCluster::chat_body(MODEL, "x", false))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_postgresql_backup_restored_by_the_runbook_passes_audit_verify_and_serves() {
    let url = database_url();
    let mut c = TestCluster::start_with(
        1,
        Options {
            database_url: Some(url.clone()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let schema = c.database_schema();
    let _original = CleanUp {
        url: url.clone(),
        sql: format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
    };

    // Admin actions and requests to audit; credentials to find again after the restore.
    let token = c.issue_token("before-backup", "*").unwrap();
    let revoked = c.issue_token("revoked-before-backup", "*").unwrap();
    let vkey = c
        .ctl_ok(&["vkey", "create", "--name", "before-backup"], None)
        .unwrap();
    for credential in [&token, &vkey, &revoked] {
        assert_eq!(status_of(&c, 0, credential).await, 200);
    }
    c.ctl_ok(&["token", "revoke", &jti_of(&revoked)], None)
        .unwrap();
    eventually(Duration::from_secs(10), "the revocation", || async {
        (status_of(&c, 0, &revoked).await == 401).then_some(())
    })
    .await
    .unwrap();
    // The node's request events reach the control plane's log before the backup.
    eventually(
        Duration::from_secs(20),
        "the node's request events in the audit log",
        || async {
            let rows: Value = serde_json::from_str(
                &c.ctl_ok(
                    &["audit", "list", "--action", "request", "-o", "json"],
                    None,
                )
                .ok()?,
            )
            .ok()?;
            (rows.as_array()?.len() >= 3).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{:?}",
            c.ctl_ok(
                &["audit", "list", "--action", "request", "-o", "json"],
                None
            )
        )
    });
    let (ok, before) = audit_verify(&c);
    assert!(ok && before["valid"] == true, "{before}");
    let rows_before = before["rows_checked"].as_u64().unwrap();

    // Back up, as the runbook says, with the control plane running.
    let backup = c.dir.path().join("backup");
    let data_dir = c.dir.path().join("cp-data");
    let (backup_s, data_s) = (backup.display().to_string(), data_dir.display().to_string());
    run_block(
        "backup",
        &[
            ("WARDEN_DATABASE_URL", &url),
            ("WARDEN_DATABASE_SCHEMA", &schema),
            ("WARDEN_DATA_DIR", &data_s),
            ("BACKUP", &backup_s),
        ],
    );
    assert!(backup.join("warden.dump").is_file());
    assert!(
        c.find_everywhere(CANARY_UPSTREAM_KEY).is_empty(),
        "the backup (or anything else) holds the provider key in the clear"
    );

    // The host and its database are gone.
    c.kill_cp().unwrap();
    c.nodes[0].child.kill().unwrap();
    c.nodes[0].child.wait().unwrap();
    psql(&url, &format!("DROP SCHEMA {schema} CASCADE"));
    std::fs::remove_dir_all(&data_dir).unwrap();

    // Restore into a fresh database and an empty data directory.
    let restore_db = format!("{schema}_restored");
    let restore_url = with_database(&url, &restore_db);
    let _restored = CleanUp {
        url: url.clone(),
        sql: format!("DROP DATABASE IF EXISTS {restore_db} WITH (FORCE)"),
    };
    let key_file = c.dir.path().join("escrow").join("master.key");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, format!("{}\n", c.master_key)).unwrap();
    let key_file_s = key_file.display().to_string();
    run_block(
        "restore",
        &[
            ("PG_ADMIN_URL", &url),
            ("RESTORE_DB", &restore_db),
            ("RESTORE_URL", &restore_url),
            ("WARDEN_DATABASE_SCHEMA", &schema),
            ("WARDEN_MASTER_KEY_FILE", &key_file_s),
            ("WARDEN_DATA_DIR", &data_s),
            ("BACKUP", &backup_s),
        ],
    );
    restore_and_check(&mut c, &restore_url, &token, &vkey, &revoked, rows_before)
        .await
        .unwrap();
}

/// SQL that removes what the test made in the shared PostgreSQL (a schema, a database),
/// run when the test ends, passed or failed.
struct CleanUp {
    url: String,
    sql: String,
}

impl Drop for CleanUp {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.url)
            .args(["-qc", &self.sql])
            .output();
    }
}

/// Starts the control plane on the restored database and checks it.
async fn restore_and_check(
    c: &mut TestCluster,
    restore_url: &str,
    token: &str,
    vkey: &str,
    revoked: &str,
    rows_before: u64,
) -> anyhow::Result<()> {
    c.options.database_url = Some(restore_url.to_owned());
    let printed = c.start_cp().await?;
    anyhow::ensure!(
        printed.is_none(),
        "the restored control plane issued a new admin credential: the old one must work"
    );
    // The admin credential from before the backup works (every `ctl` call uses it).
    let (ok, after) = audit_verify(c);
    anyhow::ensure!(ok && after["valid"] == true, "restored log: {after}");
    anyhow::ensure!(
        after["rows_checked"].as_u64().unwrap_or(0) >= rows_before,
        "rows lost: {after} after {rows_before}"
    );

    // A node with the node credential from before the backup attaches and serves with the
    // provider key from the restored secret store.
    let node = c.add_node().await?;
    for credential in [token, vkey] {
        anyhow::ensure!(status_of(c, node, credential).await == 200);
    }
    anyhow::ensure!(
        status_of(c, node, revoked).await == 401,
        "a revocation was lost in the restore"
    );
    let last = c.mock.requests().last().cloned();
    anyhow::ensure!(
        last.and_then(|r| r.authorization) == Some(format!("Bearer {CANARY_UPSTREAM_KEY}")),
        "the provider key did not come back"
    );

    // A row edited in the restored copy is found and named.
    psql(
        restore_url,
        &format!(
            "UPDATE {}.audit SET detail = 'forged' WHERE seq = 3",
            c.database_schema()
        ),
    );
    let (ok, report) = audit_verify(c);
    anyhow::ensure!(!ok, "verify must fail on a tampered restored log: {report}");
    anyhow::ensure!(report["valid"] == false, "{report}");
    anyhow::ensure!(
        report["problem"]
            .as_str()
            .is_some_and(|p| p.contains("row 3 was edited")),
        "{report}"
    );
    Ok(())
}
