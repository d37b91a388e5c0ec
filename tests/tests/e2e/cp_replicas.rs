//! Several `warden-cp` replicas on one PostgreSQL schema (`control-plane/src/cluster.rs`):
//! a change made through one replica reaches a node attached to another within a second,
//! versions only grow, killing the leader hands its work to another replica under a higher
//! fencing token, checkpoints are signed once per interval across replicas, audit appends
//! from every replica form one chain that verifies. And the refusals: a second process on
//! one SQLite data dir, and `[secrets] store = "file"` beside another live replica.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::cluster::{MODEL, Options, TestCluster, bin, eventually};

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run scripts/test.sh (it starts the test backends)"),
    }
}

/// Provider keys in Vault (a local `file` store is refused with several replicas), and
/// checkpoints every second.
fn replicas_options(replicas: usize) -> Options {
    let config = format!(
        r#"
[secrets]
store = "vault"
[[secrets.backends]]
type = "vault"
address = "{addr}"
auth = {{ type = "token", token_env = "E2E_VAULT_TOKEN" }}

[audit]
checkpoint_interval = "1s"
"#,
        addr = require_env("WARDEN_TEST_VAULT_ADDR"),
    );
    Options {
        database_url: Some(require_env("WARDEN_TEST_DATABASE_URL")),
        cp_config: Some(config),
        cp_env: vec![(
            "E2E_VAULT_TOKEN".to_owned(),
            require_env("WARDEN_TEST_VAULT_TOKEN"),
        )],
        cp_replicas: replicas,
        ..Options::default()
    }
}

/// `wardenctl` against replica `i`.
fn ctl_on(c: &TestCluster, i: usize, args: &[&str]) -> anyhow::Result<String> {
    let addr = c.cp_addrs()[i].clone();
    let out = c.ctl_with(
        args,
        None,
        &[
            ("WARDEN_ADMIN_TOKEN", c.admin_token.as_str()),
            ("WARDEN_CP_ADDR", addr.as_str()),
        ],
    )?;
    anyhow::ensure!(
        out.status.success(),
        "wardenctl {} on replica {i}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn sql_pool(c: &TestCluster) -> sqlx::PgPool {
    let url = c.options.database_url.clone().unwrap();
    let schema = c.database_schema();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            let schema = schema.clone();
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_changes_leadership_checkpoints_and_the_audit_chain() {
    let mut c = TestCluster::start_with(0, replicas_options(3))
        .await
        .unwrap();
    // The node is attached to replica 2; changes go through replica 1.
    c.add_node_on(2).await.unwrap();
    let token = ctl_on(
        &c,
        1,
        &["token", "issue", "--subject", "ha", "--models", "*"],
    )
    .unwrap();
    let first = c.node_version(0).await.unwrap();
    let body = TestCluster::chat_body(MODEL, "hello", false);
    let ok = eventually(
        Duration::from_secs(5),
        "the token to work on the node",
        || async {
            let r = c.chat(0, &token, &body).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    assert!(ok.is_ok(), "{}", c.logs());

    // A revocation through replica 1 reaches the node on replica 2 within 1 s.
    let jti = {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).expect("a JWT");
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    };
    ctl_on(&c, 1, &["token", "revoke", &jti]).unwrap();
    let revoked_at = Instant::now();
    let mut refused_after = None;
    while revoked_at.elapsed() < Duration::from_secs(3) {
        let r = c.chat(0, &token, &body).await.unwrap();
        if r.status() == 401 {
            refused_after = Some(revoked_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = refused_after.expect("the node on replica 2 still accepts the token");
    println!("revocation through replica 1 refused on replica 2's node after {refused_after:?}");
    assert!(refused_after <= Duration::from_secs(1), "{refused_after:?}");
    let second = c.node_version(0).await.unwrap();
    assert!(second > first, "versions only grow: {first} -> {second}");

    // Audit appends from every replica at once form one chain.
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let addr = c.cp_addrs()[i].clone();
            let admin = c.admin_token.clone();
            std::thread::spawn(move || {
                for n in 0..4 {
                    let out = Command::new(bin("wardenctl").unwrap())
                        .args(["vkey", "create", "--name", &format!("r{i}-{n}")])
                        .env_clear()
                        .env("WARDEN_CP_ADDR", &addr)
                        .env("WARDEN_ADMIN_TOKEN", &admin)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let third = c.node_version(0).await.unwrap();
    assert!(third > second, "versions only grow: {second} -> {third}");

    // Kill the leader: another replica takes over under a higher fencing token.
    let pool = sql_pool(&c).await;
    let leader = eventually(Duration::from_secs(10), "a leader", || c.leader())
        .await
        .unwrap();
    let token_before: i64 = sqlx::query_scalar("SELECT fencing_token FROM cp_lease")
        .fetch_one(&pool)
        .await
        .unwrap();
    c.kill_cp_replica(leader).unwrap();
    let killed_at = Instant::now();
    let next = eventually(Duration::from_secs(10), "another leader", || async {
        c.leader().await.filter(|l| *l != leader)
    })
    .await
    .unwrap();
    println!(
        "leader {leader} killed; replica {next} leads after {:?}",
        killed_at.elapsed()
    );
    let token_after: i64 = sqlx::query_scalar("SELECT fencing_token FROM cp_lease")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        token_after > token_before,
        "{token_before} -> {token_after}"
    );
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    ctl_on(
        &c,
        survivor,
        &["vkey", "create", "--name", "after-failover"],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // One checkpoint per interval across replicas: never two signed within half an
    // interval of each other, and none twice for one head.
    let made: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT seq_upto, created_at_ms FROM audit_checkpoints ORDER BY created_at_ms",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(made.len() >= 2, "checkpoints were signed: {made:?}");
    for w in made.windows(2) {
        assert!(
            w[1].1 - w[0].1 >= 500,
            "two checkpoints within one interval: {made:?}"
        );
        assert!(w[1].0 > w[0].0, "one head signed twice: {made:?}");
    }
    let verify: Value =
        serde_json::from_str(&ctl_on(&c, survivor, &["-o", "json", "audit", "verify"]).unwrap())
            .unwrap();
    assert_eq!(verify["valid"], true, "{verify}");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        actions
            .iter()
            .filter(|a| *a == "cp.leader_acquired")
            .count()
            >= 2
    );
    pool.close().await;
}

/// Starts `warden-cp` on `data_dir` with `env` and waits (at most 30 s) for it to exit;
/// returns whether it failed and its stderr.
fn refused_start(
    data_dir: &std::path::Path,
    config: Option<&str>,
    env: &[(String, String)],
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("warden-cp").unwrap());
    if let Some(text) = config {
        let path = dir.path().join("cp.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd
        .args(["--grpc-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    (status.is_some_and(|s| !s.success()), stderr)
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_data_dir_is_refused() {
    let c = TestCluster::start(0).await.unwrap();
    let data = c.dir.path().join("cp-data");
    let env = vec![("WARDEN_MASTER_KEY".to_owned(), c.master_key.clone())];
    let (refused, stderr) = tokio::task::spawn_blocking(move || refused_start(&data, None, &env))
        .await
        .unwrap();
    let pid = c.cp.as_ref().unwrap().id();
    assert!(refused, "a second warden-cp started: {stderr}");
    assert!(
        stderr.contains(&format!("another warden-cp (pid {pid}) uses"))
            && stderr.contains("use PostgreSQL to run several"),
        "{stderr}"
    );
    // The first one still serves.
    c.ctl_ok(&["provider", "list"], None).unwrap();
}

#[tokio::test]
async fn a_file_secret_store_is_refused_beside_another_replica() {
    let c = TestCluster::start_with(0, replicas_options(2))
        .await
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    let data = other.path().join("data");
    let env = vec![
        (
            "E2E_VAULT_TOKEN".to_owned(),
            require_env("WARDEN_TEST_VAULT_TOKEN"),
        ),
        ("WARDEN_MASTER_KEY".to_owned(), c.master_key.clone()),
        (
            "WARDEN_DATABASE_URL".to_owned(),
            c.options.database_url.clone().unwrap(),
        ),
        ("WARDEN_DATABASE_SCHEMA".to_owned(), c.database_schema()),
    ];
    // It reads the keys in Vault, but new keys would go to `file`, the default store.
    let config = format!(
        "[store]\nmax_connections = 2\n[cluster]\nreplica_id = \"file-replica\"\n\
         [[secrets.backends]]\ntype = \"vault\"\naddress = \"{addr}\"\n\
         auth = {{ type = \"token\", token_env = \"E2E_VAULT_TOKEN\" }}\n",
        addr = require_env("WARDEN_TEST_VAULT_ADDR"),
    );
    let (refused, stderr) =
        tokio::task::spawn_blocking(move || refused_start(&data, Some(&config), &env))
            .await
            .unwrap();
    assert!(
        refused,
        "a file-store replica started beside live ones: {stderr}"
    );
    assert!(
        stderr.contains("store = \"file\"") && stderr.contains("replica-"),
        "{stderr}"
    );
    let pool = sql_pool(&c).await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT replica_id FROM cp_replicas ORDER BY replica_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        ids,
        vec!["replica-0", "replica-1"],
        "the refused replica left no row"
    );
    pool.close().await;
}
