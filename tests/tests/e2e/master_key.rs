//! The master key: `warden-cp encrypt-value` makes `enc:` values for `env://` references,
//! and `warden-cp migrate rotate-master-key` moves every value under the master key (the
//! secret file, the start-up cache, the state store's `warden_secrets`, on SQLite and
//! PostgreSQL) to a new key — resumable, audited — after which the control plane starts
//! with only the new key, and one holding only the old key fails, naming the key it lacks.

use std::process::Stdio;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretBox};
use serde_json::Value;
use warden_control_plane::secrets::SecretStore as _;
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::secrets::file::FileSecretStore;
use warden_control_plane::secrets::own::OwnSecrets;
use warden_control_plane::store::{StateStore, postgres, sqlite};
use warden_tests::cluster::{CANARY_UPSTREAM_KEY, MODEL, Options, TestCluster, bin};
use warden_tests::mock::MockUpstream;

const ENV_CANARY: &str = "sk-canary-ENVREF-0a1b2c3d4e5f";

fn key(b64: &str) -> MasterKey {
    MasterKey::from_base64(&SecretBox::from(b64)).unwrap()
}

/// `warden-cp` with the cluster's config, data dir and state store, and `master` as its
/// master key (the cluster's `cp_env` may add more).
fn warden_cp(c: &TestCluster, master: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin("warden-cp").unwrap());
    if c.options.cp_config.is_some() {
        cmd.arg("--config").arg(c.dir.path().join("cp.toml"));
    }
    cmd.args(args)
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{}", c.cp_port))
        .arg("--data-dir")
        .arg(c.dir.path().join("cp-data"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "WARDEN_DATABASE_URL",
            c.options.database_url.clone().unwrap_or_default(),
        )
        .env("WARDEN_DATABASE_SCHEMA", c.database_schema())
        .env("WARDEN_JWT_ALGORITHM", "EdDSA")
        .envs(c.options.cp_env.iter().map(|(k, v)| (k, v)))
        .env("WARDEN_MASTER_KEY", master)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to its end (at most 60 s), feeding it `stdin`.
async fn run(mut cmd: tokio::process::Command, stdin: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).await.unwrap();
    drop(pipe);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("warden-cp did not finish within 60 s")
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `warden-cp encrypt-value --name VAR` under `master`, value on stdin.
async fn encrypt_value(c: &TestCluster, master: &str, var: &str, value: &str) -> String {
    let out = run(
        warden_cp(c, master, &["encrypt-value", "--name", var]),
        &format!("{value}\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sealed = text(&out.stdout).trim().to_owned();
    assert!(sealed.starts_with("enc:v2:"), "{sealed}");
    assert!(!sealed.contains(value));
    sealed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_value_output_is_read_through_an_env_reference() {
    let master = MasterKey::generate_base64().to_string();
    let upstream = MockUpstream::start().await.unwrap();
    // A throwaway cluster value for the helper: encrypt-value needs only the master key.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin("warden-cp").unwrap());
    cmd.args(["encrypt-value", "--name", "ENVP_KEY", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("WARDEN_MASTER_KEY", &master)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = run(cmd, &format!("{ENV_CANARY}\n")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sealed = text(&out.stdout).trim().to_owned();
    assert!(
        sealed.starts_with(&format!("enc:v2:{}:", key(&master).kid())),
        "{sealed}"
    );
    assert!(!sealed.contains(ENV_CANARY) && !text(&out.stderr).contains(ENV_CANARY));

    // An empty stdin is refused; the value is never taken from argv.
    let mut empty = tokio::process::Command::new(bin("warden-cp").unwrap());
    empty
        .args(["encrypt-value", "--name", "ENVP_KEY", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("WARDEN_MASTER_KEY", &master)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = run(empty, "").await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("stdin"), "{}", text(&out.stderr));

    let config = format!(
        "[[providers]]\nname = \"envp\"\nformat = \"openai\"\nbase_url = \"{}\"\nkeys = [\"env://ENVP_KEY\"]\n\n\
         [[models]]\nalias = \"envp-model\"\nprovider = \"envp\"\n",
        upstream.base_url()
    );
    // With the config that names env://ENVP_KEY, before the variable exists.
    std::fs::write(dir.path().join("cp.toml"), &config).unwrap();
    let mut with_config = tokio::process::Command::new(bin("warden-cp").unwrap());
    with_config
        .args(["encrypt-value", "--name", "ENVP_KEY", "--config"])
        .arg(dir.path().join("cp.toml"))
        .arg("--data-dir")
        .arg(dir.path())
        .env_clear()
        .env("WARDEN_MASTER_KEY", &master)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = run(with_config, ENV_CANARY).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = text(&out.stdout).trim().to_owned();
    assert_eq!(
        &key(&master).decrypt("ENVP_KEY", &again).unwrap()[..],
        ENV_CANARY.as_bytes(),
        "no trailing newline needed, none added"
    );
    let mut c = TestCluster::start_with(
        1,
        Options {
            cp_config: Some(config),
            cp_env: vec![
                ("WARDEN_MASTER_KEY".into(), master.clone()),
                ("ENVP_KEY".into(), sealed),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    c.master_key = master;
    let token = c.issue_token("env-user", "envp-model").unwrap();
    let r = c
        .chat(
            0,
            &token,
            &TestCluster::chat_body("envp-model", "hi", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.requests();
    assert_eq!(
        seen.last().unwrap().authorization.as_deref(),
        Some(format!("Bearer {ENV_CANARY}").as_str()),
        "the provider got the decrypted value"
    );
}

/// Every `(name, value)` of the cluster's `warden_secrets` table, as stored.
async fn table(c: &TestCluster) -> Vec<(String, String)> {
    let store = state_store(c).await;
    let mut rows = Vec::new();
    for name in store.list_warden_secret_names().await.unwrap() {
        let value = store.get_warden_secret(&name).await.unwrap().unwrap();
        rows.push((name, value));
    }
    rows
}

async fn state_store(c: &TestCluster) -> std::sync::Arc<dyn StateStore> {
    match &c.options.database_url {
        Some(url) => std::sync::Arc::new(
            postgres::PostgresStore::connect(
                &secrecy::SecretString::from(url.clone()),
                &postgres::PostgresSettings {
                    schema: Some(c.database_schema()),
                    ..postgres::PostgresSettings::default()
                },
            )
            .await
            .unwrap(),
        ),
        None => std::sync::Arc::new(
            sqlite::SqliteStore::open(&c.dir.path().join("cp-data").join("state.db"))
                .await
                .unwrap(),
        ),
    }
}

/// Every value of a secret file, as stored.
fn file_values(c: &TestCluster, name: &str) -> Vec<(String, String)> {
    let path = c.dir.path().join("cp-data").join(name);
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    map.into_iter().collect()
}

fn assert_all_under(values: &[(String, String)], kid: &str, what: &str) {
    assert!(!values.is_empty(), "{what} is empty");
    for (name, value) in values {
        assert!(
            value.starts_with(&format!("enc:v2:{kid}:")),
            "{what}: {name} is not under key {kid}"
        );
    }
}

async fn rotation_moves_every_value_to_the_new_key(database_url: Option<String>) {
    let old = MasterKey::generate_base64().to_string();
    let new = MasterKey::generate_base64().to_string();
    let (old_kid, new_kid) = (key(&old).kid().to_owned(), key(&new).kid().to_owned());
    let env_value = key(&old)
        .encrypt("ROT_ENV_KEY", b"sk-canary-rot-env")
        .unwrap();
    let config = "[secrets]\nstartup = \"cache\"\n\n\
         [[providers]]\nname = \"envp\"\nformat = \"openai\"\nbase_url = \"https://envp.invalid/v1\"\nkeys = [\"env://ROT_ENV_KEY\"]\n";
    let mut c = TestCluster::start_with(
        1,
        Options {
            database_url,
            cp_config: Some(config.to_owned()),
            cp_env: vec![
                ("WARDEN_MASTER_KEY".into(), old.clone()),
                ("ROT_ENV_KEY".into(), env_value),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    c.master_key = old.clone();
    assert_all_under(&file_values(&c, "secrets.json"), &old_kid, "secrets.json");
    assert_all_under(&file_values(&c, "secret-cache.json"), &old_kid, "cache");
    assert_all_under(&table(&c).await, &old_kid, "warden_secrets");

    // A replica given the new key, with the old one in previous_master_key_files, reads
    // every old value and seals what it writes under the new key: old and new coexist.
    c.kill_cp().unwrap();
    let new_file = c.dir.path().join("new.key");
    std::fs::write(&new_file, &new).unwrap();
    let old_file = c.dir.path().join("old.key");
    std::fs::write(&old_file, &old).unwrap();
    let env_only = c.options.cp_env[1..].to_vec();
    c.options.cp_env = [
        env_only.clone(),
        vec![
            ("WARDEN_MASTER_KEY".into(), new.clone()),
            (
                "WARDEN_PREVIOUS_MASTER_KEY_FILES".into(),
                old_file.display().to_string(),
            ),
        ],
    ]
    .concat();
    c.start_cp().await.unwrap();
    c.ctl_ok(&["signing-key", "rotate"], None).unwrap();
    let kids: std::collections::BTreeSet<String> = table(&c)
        .await
        .iter()
        .map(|(_, v)| v.split(':').nth(2).unwrap().to_owned())
        .collect();
    assert_eq!(
        kids,
        [old_kid.clone(), new_kid.clone()].into(),
        "both keys in use"
    );
    let token = c.issue_token("during-rotation", MODEL).unwrap();
    warden_tests::cluster::eventually(
        Duration::from_secs(10),
        "a token of the new signing key to be served",
        || async {
            let r = c
                .chat(0, &token, &TestCluster::chat_body(MODEL, "hi", false))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();

    // Rotate with the control plane stopped.
    c.kill_cp().unwrap();
    c.options.cp_env = env_only;
    let new_path = new_file.to_str().unwrap();
    let rotate = ["migrate", "rotate-master-key", "--new-key-file", new_path];
    let out = run(warden_cp(&c, &old, &rotate), "").await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{old_kid} -> {new_kid}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("warden-cp encrypt-value --name ROT_ENV_KEY"),
        "env:// values to re-issue are named: {stdout}"
    );
    for secret in [&old, &new] {
        assert!(!stdout.contains(secret.as_str()) && !text(&out.stderr).contains(secret.as_str()));
    }
    assert_all_under(&file_values(&c, "secrets.json"), &new_kid, "secrets.json");
    assert_all_under(&file_values(&c, "secret-cache.json"), &new_kid, "cache");
    assert_all_under(&table(&c).await, &new_kid, "warden_secrets");

    // Run twice: nothing left to do.
    let out = run(warden_cp(&c, &old, &rotate), "").await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(": 0 value(s) re-encrypted"), "{stdout}");

    // An interrupted rotation, or a replica still on the old key writing meanwhile: one
    // file value and one table row are under the old key again. The next run finishes.
    let ring = || std::sync::Arc::new(key(&new).with_previous([key(&old)]));
    let file = FileSecretStore::with_shared_key(
        c.dir.path().join("cp-data").join("secrets.json"),
        std::sync::Arc::new(key(&old)),
    );
    file.put(
        "warden-pk-leftover",
        &secrecy::SecretString::from("sk-canary-left"),
    )
    .await
    .unwrap();
    let (row, _) = table(&c).await.into_iter().next().unwrap();
    let value = OwnSecrets::new(state_store(&c).await, ring())
        .get(&row)
        .await
        .unwrap();
    OwnSecrets::new(state_store(&c).await, std::sync::Arc::new(key(&old)))
        .put(&row, &value)
        .await
        .unwrap();
    let out = run(warden_cp(&c, &old, &rotate), "").await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(": 2 value(s) re-encrypted"), "{stdout}");
    assert_all_under(&file_values(&c, "secrets.json"), &new_kid, "secrets.json");
    assert_all_under(&table(&c).await, &new_kid, "warden_secrets");

    // A control plane holding only the old key refuses to start, naming the key it lacks.
    let mut server = warden_cp(&c, &old, &[]);
    server.stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(60), server.output())
        .await
        .expect("a control plane without the key must exit")
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "started without the key: {stderr}");
    assert!(
        stderr.contains(&format!("master key {new_kid}")),
        "the failure names the missing key: {stderr}"
    );

    // The env:// value is re-issued under the new key; then the control plane starts with
    // only the new key and reads every secret: its own (signing keys) and the provider key
    // (a fresh node gets it in its first snapshot).
    let env_value = encrypt_value(&c, &new, "ROT_ENV_KEY", "sk-canary-rot-env").await;
    c.options.cp_env = vec![
        ("ROT_ENV_KEY".into(), env_value),
        ("WARDEN_MASTER_KEY".into(), new.clone()),
    ];
    c.master_key = new.clone();
    c.start_cp().await.unwrap();
    c.own_secret("warden/credential-pepper").await.unwrap();
    c.restart_node(0).unwrap();
    c.wait_node_ready(0).await.unwrap();
    let token = c.issue_token("after-rotation", MODEL).unwrap();
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "hi", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.mock.requests().last().unwrap().authorization.as_deref(),
        Some(format!("Bearer {CANARY_UPSTREAM_KEY}").as_str())
    );

    // Each run is audited, with counts and key ids, never a key.
    let rows: Value = serde_json::from_str(
        &c.ctl_ok(
            &[
                "audit",
                "list",
                "--action",
                "master_key.rotate",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let shown = serde_json::to_string(rows).unwrap();
    assert!(
        shown.contains(&new_kid) && shown.contains("resealed"),
        "{shown}"
    );
    assert!(!shown.contains(&old) && !shown.contains(&new));
    let pepper = c.own_secret("warden/credential-pepper").await.unwrap();
    assert!(!pepper.expose_secret().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_on_sqlite() {
    rotation_moves_every_value_to_the_new_key(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_on_postgres() {
    let url = std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("WARDEN_TEST_DATABASE_URL is not set: run scripts/test.sh (CI has PostgreSQL)")
    });
    rotation_moves_every_value_to_the_new_key(Some(url)).await;
}
