//! Secret backends end to end: a running node picks up a provider key rotated in OpenBao or
//! moto's Secrets Manager within the poll interval, under load, with no failed request and
//! no restart; credentials rotate with a grace period; `wardenctl secrets migrate` and
//! `warden-cp migrate encrypt-status` do what they say; and no secret value shows in any
//! log, file or response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_tests::cluster::{MODEL, Options, TestCluster, bin, eventually};

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run scripts/test.sh (it starts the test backends)"),
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

const POLL: &str = "500ms";

fn vault_config() -> (String, Vec<(String, String)>) {
    let config = format!(
        r#"
[secrets]
poll_interval = "{POLL}"
allowed_ref_prefixes = ["vault://secret/e2e/", "aws-sm://warden-e2e-", "azure-kv://test-vault/openai-"]
[[secrets.backends]]
type = "vault"
address = "{addr}"
auth = {{ type = "token", token_env = "E2E_VAULT_TOKEN" }}
"#,
        addr = require_env("WARDEN_TEST_VAULT_ADDR")
    );
    let env = vec![(
        "E2E_VAULT_TOKEN".to_owned(),
        require_env("WARDEN_TEST_VAULT_TOKEN"),
    )];
    (config, env)
}

fn aws_config() -> (String, Vec<(String, String)>) {
    let config = format!(
        r#"
[secrets]
poll_interval = "{POLL}"
allowed_ref_prefixes = ["vault://secret/e2e/", "aws-sm://warden-e2e-", "azure-kv://test-vault/openai-"]
[[secrets.backends]]
type = "aws"
region = "us-east-1"
endpoint = "{endpoint}"
"#,
        endpoint = require_env("WARDEN_TEST_AWS_ENDPOINT")
    );
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned()),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
    ];
    (config, env)
}

async fn vault_write(path: &str, value: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/secret/data/{path}",
            require_env("WARDEN_TEST_VAULT_ADDR")
        ))
        .header("X-Vault-Token", require_env("WARDEN_TEST_VAULT_TOKEN"))
        .json(&json!({ "data": { "value": value } }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

async fn vault_read(path: &str) -> Value {
    reqwest::Client::new()
        .get(format!(
            "{}/v1/secret/data/{path}",
            require_env("WARDEN_TEST_VAULT_ADDR")
        ))
        .header("X-Vault-Token", require_env("WARDEN_TEST_VAULT_TOKEN"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One Secrets Manager call on moto's server (JSON protocol; moto does not check
/// signatures, the credential scope only names the region).
async fn aws_call(target: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(require_env("WARDEN_TEST_AWS_ENDPOINT"))
        .header("X-Amz-Target", format!("secretsmanager.{target}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=00",
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{target}: {status} {body}");
    body
}

/// Starts a cluster on `config`, adds provider `rot` (the mock) with one key by
/// `reference` and model `rot-model`, and checks the rotation to `new_value` (done by
/// `rotate`) reaches the node under load: every request succeeds, and within the poll
/// interval (plus a margin) the mock sees only the new key.
async fn rotation_under_load<F, Fut>(
    config: (String, Vec<(String, String)>),
    reference: &str,
    old_value: &str,
    new_value: &str,
    rotate: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (cp_config, cp_env) = config;
    let cluster = TestCluster::start_with(
        1,
        Options {
            cp_config: Some(cp_config),
            cp_env,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let base = cluster.mock.base_url();
    cluster
        .ctl_ok(
            &[
                "provider",
                "add",
                "rot",
                "--format",
                "openai",
                "--base-url",
                &base,
            ],
            None,
        )
        .unwrap();
    let added = cluster
        .ctl_ok(
            &[
                "-o", "json", "provider", "key", "add", "rot", "--ref", reference,
            ],
            None,
        )
        .unwrap();
    let added: Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["reference"], reference);
    cluster
        .ctl_ok(
            &[
                "model",
                "add",
                "rot-model",
                "--provider",
                "rot",
                "--upstream-model",
                "m",
            ],
            None,
        )
        .unwrap();
    let token = cluster.issue_token("svc-rotation", "rot-model").unwrap();

    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (cluster, stop, token) = (Arc::clone(&cluster), Arc::clone(&stop), token.clone());
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let body = TestCluster::chat_body("rot-model", "hello", false);
                let status = cluster
                    .chat(0, &token, &body)
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                statuses.push(status);
            }
            statuses
        }));
    }
    let sees = |value: &str| {
        let want = format!("Bearer {value}");
        cluster
            .mock
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(want.as_str()))
    };
    eventually(
        Duration::from_secs(10),
        "requests with the first key",
        || async { sees(old_value).then_some(()) },
    )
    .await
    .unwrap();

    rotate().await;
    let rotated_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the rotated key upstream",
        || async { sees(new_value).then_some(()) },
    )
    .await
    .unwrap();
    let took = rotated_at.elapsed();
    // New requests use the new key from then on.
    let seen_before = cluster.mock.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    let later: Vec<_> = cluster.mock.requests()[seen_before..]
        .iter()
        .map(|r| r.authorization.clone().unwrap_or_default())
        .collect();
    assert!(!later.is_empty());
    assert!(
        later.iter().all(|a| a == &format!("Bearer {new_value}")),
        "after the rotation reached the node only the new key is used"
    );
    assert!(
        took < Duration::from_millis(500 + 2500),
        "the node used the new key {took:?} after the rotation (poll {POLL})"
    );
    assert!(statuses.len() > 10, "load ran: {} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no failed request during the rotation: {statuses:?}"
    );
    let audit = cluster
        .ctl_ok(
            &["-o", "json", "audit", "list", "--action", "secret.rotate"],
            None,
        )
        .unwrap();
    assert!(audit.contains(reference), "{audit}");
    for value in [old_value, new_value] {
        let hits = cluster.find_everywhere(value);
        assert!(hits.is_empty(), "a provider key was found in {hits:?}");
        assert!(!audit.contains(value));
    }
}

#[tokio::test]
async fn vault_rotation_reaches_a_running_node_without_a_failed_request() {
    let path = format!("e2e/{}", suffix());
    let (v1, v2) = (
        format!("sk-canary-vault1-{}", suffix()),
        format!("sk-canary-vault2-{}", suffix()),
    );
    vault_write(&path, &v1).await;
    let reference = format!("vault://secret/{path}#value");
    let (p, new) = (path.clone(), v2.clone());
    rotation_under_load(vault_config(), &reference, &v1, &v2, || async move {
        vault_write(&p, &new).await;
    })
    .await;
}

#[tokio::test]
async fn aws_rotation_by_new_version_reaches_a_running_node_without_a_failed_request() {
    let name = format!("warden-e2e-{}", suffix());
    let (v1, v2) = (
        format!("sk-canary-aws1-{}", suffix()),
        format!("sk-canary-aws2-{}", suffix()),
    );
    aws_call(
        "CreateSecret",
        json!({ "Name": name, "SecretString": json!({ "api_key": v1 }).to_string() }),
    )
    .await;
    let reference = format!("aws-sm://{name}#api_key");
    let (n, new) = (name.clone(), v2.clone());
    rotation_under_load(aws_config(), &reference, &v1, &v2, || async move {
        aws_call(
            "PutSecretValue",
            json!({ "SecretId": n, "SecretString": json!({ "api_key": new }).to_string() }),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn provider_key_values_go_to_the_configured_backend_and_rotate_through_wardenctl() {
    let (config, env) = vault_config();
    let cluster = TestCluster::start_with(
        1,
        Options {
            cp_config: Some(config.replace("[secrets]\n", "[secrets]\nstore = \"vault\"\n")),
            cp_env: env,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let base = cluster.mock.base_url();
    cluster
        .ctl_ok(
            &[
                "provider",
                "add",
                "vp",
                "--format",
                "openai",
                "--base-url",
                &base,
            ],
            None,
        )
        .unwrap();
    let v1 = format!("sk-canary-stdin1-{}", suffix());
    let added: Value = serde_json::from_str(
        &cluster
            .ctl_ok(
                &["-o", "json", "provider", "key", "add", "vp", "--from-stdin"],
                Some(&v1),
            )
            .unwrap(),
    )
    .unwrap();
    let reference = added["reference"].as_str().unwrap().to_owned();
    assert!(
        reference.starts_with("vault://secret/warden-pk-vp-key-"),
        "{reference}"
    );
    let path = reference.trim_start_matches("vault://secret/");
    assert_eq!(vault_read(path).await["data"]["data"]["value"], v1.as_str());

    let v2 = format!("sk-canary-stdin2-{}", suffix());
    let rotated: Value = serde_json::from_str(
        &cluster
            .ctl_ok(
                &["-o", "json", "provider", "key", "rotate", "vp"],
                Some(&v2),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(vault_read(path).await["data"]["data"]["value"], v2.as_str());
    assert_ne!(rotated["fingerprint"], added["fingerprint"]);
    cluster
        .ctl_ok(&["model", "add", "vp-model", "--provider", "vp"], None)
        .unwrap();
    let token = cluster.issue_token("svc", "vp-model").unwrap();
    let response = cluster
        .chat(0, &token, &TestCluster::chat_body("vp-model", "hi", false))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let last = cluster.mock.requests().last().cloned().unwrap();
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Bearer {v2}").as_str())
    );

    // env:// references are read-only; a bad reference is refused naming it.
    let out = cluster
        .ctl(
            &[
                "provider",
                "key",
                "add",
                "vp",
                "--ref",
                "vault://secret/nope/none#value",
            ],
            None,
        )
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vault://secret/nope/none#value"), "{err}");

    // Removing the key deletes the secret Warden wrote into Vault.
    cluster
        .ctl_ok(
            &["provider", "key", "rm", "vp", added["id"].as_str().unwrap()],
            None,
        )
        .unwrap();
    let gone = vault_read(path).await;
    assert!(gone["data"]["data"].is_null(), "{gone}");
    for v in [&v1, &v2] {
        let hits = cluster.find_everywhere(v);
        assert!(hits.is_empty(), "{hits:?}");
    }
}

#[tokio::test]
async fn virtual_keys_rotate_with_a_grace_period() {
    let cluster = TestCluster::start(1).await.unwrap();
    let old = cluster
        .ctl_ok(
            &["vkey", "create", "--name", "rotating", "--models", MODEL],
            None,
        )
        .unwrap();
    let list: Value = serde_json::from_str(
        &cluster
            .ctl_ok(&["-o", "json", "vkey", "list"], None)
            .unwrap(),
    )
    .unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let body = TestCluster::chat_body(MODEL, "hi", false);
    assert_eq!(cluster.chat(0, &old, &body).await.unwrap().status(), 200);

    let new = cluster
        .ctl_ok(&["vkey", "rotate", &id, "--grace", "3s"], None)
        .unwrap();
    assert!(new.starts_with("wk_") && new != old);
    assert_eq!(cluster.chat(0, &new, &body).await.unwrap().status(), 200);
    assert_eq!(
        cluster.chat(0, &old, &body).await.unwrap().status(),
        200,
        "the old key works during the grace period"
    );
    let info = cluster
        .ctl_ok(&["-o", "json", "vkey", "list"], None)
        .unwrap();
    assert!(info.contains(&id));
    eventually(Duration::from_secs(8), "the old key to be refused", || {
        let (c, old, body) = (&cluster, &old, &body);
        async move { (c.chat(0, old, body).await.ok()?.status() == 401).then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(cluster.chat(0, &new, &body).await.unwrap().status(), 200);

    // Without grace the old secret is refused at once.
    let newer = cluster.ctl_ok(&["vkey", "rotate", &id], None).unwrap();
    assert_eq!(cluster.chat(0, &new, &body).await.unwrap().status(), 401);
    assert_eq!(cluster.chat(0, &newer, &body).await.unwrap().status(), 200);
    let audit = cluster
        .ctl_ok(&["audit", "list", "--action", "vkey.rotate"], None)
        .unwrap();
    assert!(audit.contains(&id), "{audit}");
    for secret in [&old, &new, &newer] {
        assert!(!audit.contains(secret.as_str()));
        assert!(cluster.find_everywhere(secret).is_empty());
    }
}

fn jwt_kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn signing_keys_rotate_and_old_tokens_verify_until_they_expire() {
    let cluster = TestCluster::start(1).await.unwrap();
    let old_token = cluster.issue_token("svc-a", "*").unwrap();
    let short = cluster
        .ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                "svc-b",
                "--models",
                "*",
                "--ttl",
                "3s",
            ],
            None,
        )
        .unwrap();
    let rotated: Value = serde_json::from_str(
        &cluster
            .ctl_ok(&["-o", "json", "signing-key", "rotate"], None)
            .unwrap(),
    )
    .unwrap();
    let new_kid = rotated[0]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, jwt_kid(&old_token));
    let new_token = cluster.issue_token("svc-a", "*").unwrap();
    assert_eq!(jwt_kid(&new_token), new_kid);
    let body = TestCluster::chat_body(MODEL, "hi", false);
    for token in [&old_token, &new_token, &short] {
        assert_eq!(cluster.chat(0, token, &body).await.unwrap().status(), 200);
    }
    let keys: Value = serde_json::from_str(
        &cluster
            .ctl_ok(&["-o", "json", "signing-key", "list"], None)
            .unwrap(),
    )
    .unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let old = keys.iter().find(|k| k["kid"] != new_kid.as_str()).unwrap();
    assert_eq!(old["active"], false);
    assert!(old["needed_until"].as_i64().unwrap() > 0, "{old}");

    // Once the old key's last token is revoked, the next snapshot drops its public key.
    let tokens: Value = serde_json::from_str(
        &cluster
            .ctl_ok(&["-o", "json", "token", "list"], None)
            .unwrap(),
    )
    .unwrap();
    for t in tokens.as_array().unwrap() {
        if t["kid"] == old["kid"] && t["subject"] == "svc-a" {
            cluster
                .ctl_ok(&["token", "revoke", t["jti"].as_str().unwrap()], None)
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.ctl_ok(&["signing-key", "rotate"], None).unwrap();
    let keys: Value = serde_json::from_str(
        &cluster
            .ctl_ok(&["-o", "json", "signing-key", "list"], None)
            .unwrap(),
    )
    .unwrap();
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == old["kid"])
        .unwrap();
    assert_eq!(first["needed_until"], 0, "no live token needs it: {first}");
    assert_eq!(
        cluster.chat(0, &new_token, &body).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn secrets_migrate_moves_env_keys_into_vault_and_encrypt_status_reports() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("sk-canary-migrate-{}", suffix());
    let var = format!("E2E_OPENAI_KEY_{}", suffix().to_uppercase());
    let config = format!(
        r#"
[server]
data_dir = "{data}"
[[secrets.backends]]
type = "vault"
address = "{addr}"
auth = {{ type = "token", token_env = "E2E_VAULT_TOKEN" }}
[[providers]]
name = "openai"
format = "openai"
base_url = "https://api.openai.com/v1"
keys = ["env://{var}"]
"#,
        data = dir.path().join("data").display(),
        addr = require_env("WARDEN_TEST_VAULT_ADDR"),
    );
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config).unwrap();
    let master = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let out = std::process::Command::new(bin("wardenctl").unwrap())
        .args([
            "-o", "json", "secrets", "migrate", "--from", "env", "--to", "vault", "--config",
        ])
        .arg(&path)
        .env_clear()
        .env("WARDEN_MASTER_KEY", master)
        .env("E2E_VAULT_TOKEN", require_env("WARDEN_TEST_VAULT_TOKEN"))
        .env(&var, &value)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(&value) && !String::from_utf8_lossy(&out.stderr).contains(&value));
    let moved: Value = serde_json::from_str(&stdout).unwrap();
    let reference = moved[0]["reference"].as_str().unwrap();
    assert_eq!(moved[0]["variable"], var.as_str());
    assert_eq!(moved[0]["provider"], "openai");
    let vault_path = reference.trim_start_matches("vault://secret/");
    assert_eq!(
        vault_read(vault_path).await["data"]["data"]["value"],
        value.as_str()
    );

    // encrypt-status on the data dir: reports, never prints a value.
    let status = std::process::Command::new(bin("warden-cp").unwrap())
        .args(["--config"])
        .arg(&path)
        .args(["migrate", "encrypt-status"])
        .env_clear()
        .env("WARDEN_MASTER_KEY", master)
        .env(&var, &value)
        .env("E2E_VAULT_TOKEN", require_env("WARDEN_TEST_VAULT_TOKEN"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("state store: Warden's own secrets")
            && text.contains("in table warden_secrets, always encrypted under the master key"),
        "{text}"
    );
}

// The double serves from this test's runtime while `wardenctl` runs blocking: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_rotation_reaches_a_running_node_without_a_failed_request() {
    use crate::azure_double::{self, AzureDouble};
    let double = AzureDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("azure-ca.pem");
    std::fs::write(&ca, &double.ca_pem).unwrap();
    let config = format!(
        r#"
[secrets]
poll_interval = "{POLL}"
allowed_ref_prefixes = ["vault://secret/e2e/", "aws-sm://warden-e2e-", "azure-kv://test-vault/openai-"]
[[secrets.backends]]
type = "azure"
vault_url = "{url}"
vault_name = "test-vault"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_env = "E2E_AZURE_SECRET"
authority_host = "{url}"
ca_file = "{ca}"
"#,
        url = double.url(),
        tenant = azure_double::TENANT,
        client = azure_double::CLIENT_ID,
        ca = ca.display(),
    );
    let env = vec![(
        "E2E_AZURE_SECRET".to_owned(),
        azure_double::CLIENT_SECRET.to_owned(),
    )];
    let name = format!("openai-{}", suffix());
    let (v1, v2) = (
        format!("sk-canary-azure1-{}", suffix()),
        format!("sk-canary-azure2-{}", suffix()),
    );
    double.set(&name, &v1);
    let reference = format!("azure-kv://test-vault/{name}");
    let (n, new, d) = (name.clone(), v2.clone(), &double);
    rotation_under_load((config, env), &reference, &v1, &v2, || async move {
        d.set(&n, &new);
    })
    .await;
}
