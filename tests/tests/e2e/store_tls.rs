//! TLS to the stores, against private servers scripts/test.sh starts with TLS only (never the
//! shared ones on :6379/:5432): nodes share limits through a `rediss://` Redis whose
//! certificate a private CA signed (`--redis-ca-file`), and the control plane reads usage
//! through it (`WARDEN_REDIS_CA_FILE`); a CA that did not sign the server's certificate is
//! refused and the logs say why. The control plane runs on a PostgreSQL reached with
//! `sslmode=verify-full&sslrootcert=ca.pem`, and refuses to start with another CA, naming
//! the certificate problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::cluster::{MODEL, Options, TestCluster, bin, eventually};

/// A variable scripts/test.sh exports once its private TLS servers are up.
fn tls_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the suite with scripts/test.sh, whose start_tls_backends starts \
             a private redis-server and PostgreSQL with TLS (certificates from `wardenctl certs dev`)"
        )
    })
}

fn ca_file() -> String {
    tls_env("WARDEN_TEST_TLS_CA_FILE")
}

/// The CA of another `wardenctl certs dev` run: it did not sign the servers' certificates.
fn other_ca(dir: &Path) -> PathBuf {
    let out = Command::new(bin("wardenctl").unwrap())
        .args(["certs", "dev", "--out"])
        .arg(dir.join("other"))
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("other").join("ca.pem")
}

/// A cluster whose nodes and control plane use the TLS Redis, trusting `ca`; nodes refuse
/// limited requests while Redis is unreachable, so per-node limits cannot pass for shared.
async fn redis_tls_cluster(nodes: usize, ca: &str) -> TestCluster {
    TestCluster::start_with(
        nodes,
        Options {
            redis_url: Some(tls_env("WARDEN_TEST_REDIS_TLS_URL")),
            node_count: Some(u32::try_from(nodes).unwrap()),
            node_args: vec![
                "--redis-ca-file".into(),
                ca.to_owned(),
                "--redis-failure-mode".into(),
                "closed".into(),
            ],
            cp_env: vec![("WARDEN_REDIS_CA_FILE".into(), ca.to_owned())],
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// Creates a virtual key limited to `rpm` and waits until every node has the snapshot with it.
async fn limited_vkey(c: &TestCluster, name: &str, rpm: &str) -> String {
    let mut before = Vec::new();
    for node in 0..c.nodes.len() {
        before.push(c.node_version(node).await.unwrap_or(0));
    }
    let key = c
        .ctl_ok(&["vkey", "create", "--name", name, "--rpm", rpm], None)
        .unwrap();
    for (node, before) in before.into_iter().enumerate() {
        eventually(
            Duration::from_secs(10),
            "the node to get the key",
            || async move { (c.node_version(node).await.unwrap_or(0) > before).then_some(()) },
        )
        .await
        .unwrap();
    }
    key
}

async fn limits_mode(c: &TestCluster, node: usize) -> String {
    let r = c
        .http
        .get(c.nodes[node].ops_url("/readyz"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["limits"].as_str().unwrap_or_default().to_owned()
}

fn vkey_usage(c: &TestCluster, name: &str) -> Value {
    let list: Value =
        serde_json::from_str(&c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap()).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let info: Value = serde_json::from_str(
        &c.ctl_ok(&["vkey", "info", &id, "-o", "json"], None)
            .unwrap(),
    )
    .unwrap();
    info["usage"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_limits_through_redis_over_tls_with_a_private_ca() {
    let c = redis_tls_cluster(2, &ca_file()).await;
    for node in 0..2 {
        eventually(
            Duration::from_secs(10),
            "limits shared through rediss://",
            || {
                let c = &c;
                async move { (limits_mode(c, node).await == "shared").then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
    let key = limited_vkey(&c, "tls", "3").await;
    let body = TestCluster::chat_body(MODEL, "hi", false);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = c.chat(i % 2, &key, &body).await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "three requests a minute across both nodes"
    );
    let usage = vkey_usage(&c, "tls");
    assert_eq!(
        usage["available"], true,
        "the control plane reads it: {usage}"
    );
    assert_eq!(usage["requests_remaining"], 0, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_the_ca_did_not_sign_is_refused_and_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let wrong = other_ca(tmp.path());
    let c = redis_tls_cluster(1, wrong.to_str().unwrap()).await;
    let key = limited_vkey(&c, "tls", "3").await;
    let r = c
        .chat(0, &key, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "fail-closed without shared state");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "limits_unavailable", "{v}");
    assert_eq!(limits_mode(&c, 0).await, "per-node (redis unreachable)");
    let logs = eventually(Duration::from_secs(10), "the node to say why", || {
        let logs = c.logs();
        async move {
            (logs.contains("cannot connect to redis") && logs.contains("UnknownIssuer"))
                .then_some(logs)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(!logs.contains(&key));
    let usage = vkey_usage(&c, "tls");
    assert_eq!(usage["available"], false, "{usage}");
    let reason = usage["unavailable_reason"].as_str().unwrap();
    assert!(
        reason.contains("UnknownIssuer"),
        "the control plane says why: {reason}"
    );
}

/// Runs `warden-cp` on `database_url` until it prints its address (then stops it) or exits
/// (at most 40 s); returns whether it came up and its stderr.
fn cp_on_database(database_url: &str, schema: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("stdout");
    let mut child = Command::new(bin("warden-cp").unwrap())
        .args(["--grpc-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_clear()
        .env(
            "WARDEN_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env("WARDEN_DATABASE_URL", database_url)
        .env("WARDEN_DATABASE_SCHEMA", schema)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let up = loop {
        if std::fs::read_to_string(&stdout)
            .unwrap_or_default()
            .contains("WARDEN_CP_ADDR=")
        {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("warden-cp neither came up nor exited in 40 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    (up, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_runs_on_postgres_over_verified_tls() {
    let base = tls_env("WARDEN_TEST_DATABASE_TLS_URL");
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", ca_file());
    // A whole cluster on it: the store is used for every admin call and snapshot.
    let c = TestCluster::start_with(
        1,
        Options {
            database_url: Some(url.clone()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("tls-user", MODEL).unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(c);

    // The server takes TLS only: this test is not passing over a plain link.
    let plain = format!("{base}?sslmode=disable");
    let schema = format!("e2e_tls_{}", uuid::Uuid::new_v4().simple());
    let (up, stderr) = tokio::task::spawn_blocking({
        let schema = schema.clone();
        move || cp_on_database(&plain, &schema)
    })
    .await
    .unwrap();
    assert!(
        !up,
        "the private server must refuse plain connections: {stderr}"
    );

    // Another CA: the control plane stops, naming the certificate problem.
    let tmp = tempfile::tempdir().unwrap();
    let wrong = other_ca(tmp.path());
    let with_password = base.replacen("postgres@", "postgres:pw-canary-7f3a@", 1);
    let bad = format!(
        "{with_password}?sslmode=verify-full&sslrootcert={}",
        wrong.display()
    );
    let (up, stderr) = tokio::task::spawn_blocking(move || cp_on_database(&bad, &schema))
        .await
        .unwrap();
    assert!(!up, "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("UnknownIssuer"),
        "the failure names the certificate problem: {stderr}"
    );
    assert!(!stderr.contains("pw-canary-7f3a"), "{stderr}");
}
