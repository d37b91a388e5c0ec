//! Provider keys by reference through the whole control plane (`warden_control_plane::open`
//! with a TOML config), against real backends: OpenBao for Vault, and the HTTPS Key Vault
//! double for Azure. Rotation in the backend reaches the published snapshot within the poll
//! interval; a key the provider rejected returns to service when its secret changes; a
//! backend that denies access, disappears, or is down at start-up behaves as configured —
//! and no secret value shows in an error, an audit row or a file of the data directory.
//!
//! Needs `WARDEN_TEST_VAULT_ADDR`, `WARDEN_TEST_VAULT_TOKEN` and `WARDEN_TEST_BAO_BIN`
//! (exported by `scripts/test.sh`); a missing one fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use warden_control_plane::ControlPlane;
use warden_control_plane::config::RawConfig;
use warden_control_plane::domain::{ApiFormat, Source};
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::service::{Actor, KeySource, ProviderOptions};

use support::azure_double::{self, AzureDouble};

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run scripts/test.sh (it starts OpenBao and exports it)"),
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn canary(label: &str) -> String {
    format!("sk-canary-{label}-{}", suffix())
}

fn admin() -> Actor {
    Actor("admin:test".into())
}

async fn open_cp(
    dir: &Path,
    master: &str,
    toml: &str,
    env: &[(&str, &str)],
) -> Result<Arc<ControlPlane>, warden_control_plane::RunError> {
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    vars.insert("WARDEN_MASTER_KEY".into(), master.to_owned());
    vars.insert("WARDEN_DATA_DIR".into(), dir.display().to_string());
    let mut raw = RawConfig::from_toml("test.toml", toml).unwrap();
    // The Admin API adds references only under configured prefixes.
    raw.secrets.allowed_ref_prefixes = vec![
        "vault://secret/".to_owned(),
        "azure-kv://test-vault/".to_owned(),
    ];
    let config = raw.build_and_validate(&vars).unwrap();
    warden_control_plane::open(&config).await
}

async fn add_provider(cp: &ControlPlane) {
    cp.add_provider(
        &admin(),
        "p",
        ApiFormat::OpenAi,
        "http://127.0.0.1:9/v1",
        Source::Admin,
        ProviderOptions::default(),
    )
    .await
    .unwrap();
}

/// The value of provider `p`'s only key in the newest snapshot.
fn snapshot_value(cp: &ControlPlane) -> Option<String> {
    let snapshot = cp.subscribe().borrow().clone();
    snapshot
        .providers
        .iter()
        .find(|p| p.name == "p")
        .and_then(|p| p.keys.first())
        .map(|k| k.secret.expose_secret().to_owned())
}

async fn wait_for_value(cp: &ControlPlane, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let mut rx = cp.subscribe();
    loop {
        if snapshot_value(cp).as_deref() == Some(want) {
            return started.elapsed();
        }
        let left = within.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "the rotated value did not reach a snapshot in {within:?}"
        );
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

async fn audit_text(cp: &ControlPlane) -> String {
    cp.list_audit(1000, None)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}\n",
                r.action, r.actor, r.subject, r.result, r.detail
            )
        })
        .collect()
}

/// No canary in any file under `dir` (state database, WAL, secret files, cache).
fn assert_not_on_disk(dir: &Path, needles: &[&str]) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for n in needles {
                assert!(
                    !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                    "{} holds a secret value",
                    path.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------- vault (OpenBao)

async fn vault(
    method: reqwest::Method,
    addr: &str,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{addr}/v1/{path}"))
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn vault_write(addr: &str, token: &str, path: &str, value: &str) {
    let (status, body) = vault(
        reqwest::Method::POST,
        addr,
        token,
        &format!("secret/data/{path}"),
        Some(json!({ "data": { "value": value } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn vault_toml(addr: &str, poll: &str, startup: &str) -> String {
    format!(
        r#"
[secrets]
poll_interval = "{poll}"
startup = "{startup}"
[[secrets.backends]]
type = "vault"
address = "{addr}"
timeout = "2s"
auth = {{ type = "token", token_env = "TEST_VAULT_TOKEN" }}
"#
    )
}

#[tokio::test]
async fn vault_rotation_reaches_the_snapshot_and_reenables_a_rejected_key() {
    let addr = require_env("WARDEN_TEST_VAULT_ADDR");
    let token = require_env("WARDEN_TEST_VAULT_TOKEN");
    let dir = tempfile::tempdir().unwrap();
    let path = format!("rotation/{}", suffix());
    let (v1, v2) = (canary("v1"), canary("v2"));
    vault_write(&addr, &token, &path, &v1).await;

    let master = MasterKey::generate_base64();
    let cp = open_cp(
        dir.path(),
        &master,
        &vault_toml(&addr, "300ms", "refuse"),
        &[("TEST_VAULT_TOKEN", &token)],
    )
    .await
    .unwrap();
    add_provider(&cp).await;
    let reference = format!("vault://secret/{path}#value");
    let key = cp
        .add_provider_key(&admin(), "p", KeySource::Reference(reference.clone()))
        .await
        .unwrap();
    assert_eq!(key.secret_name, reference);
    assert_eq!(snapshot_value(&cp).as_deref(), Some(v1.as_str()));

    // The provider rejects the key: out of service on every node.
    cp.upstream_key_rejected("node-1", "p", &key.id, &key.fingerprint, 401, "invalid key")
        .await
        .unwrap();
    let (_, keys) = cp.list_providers().await.unwrap();
    assert!(keys[0].disabled_reason.is_some());

    // Rotated in Vault: the poll picks it up and puts the key back into service.
    vault_write(&addr, &token, &path, &v2).await;
    let took = wait_for_value(&cp, &v2, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 300ms poll"
    );
    let (_, keys) = cp.list_providers().await.unwrap();
    assert_eq!(
        keys[0].disabled_reason, None,
        "re-enabled by the new secret"
    );
    assert_eq!(
        keys[0].fingerprint,
        warden_core::fingerprint::of(v2.as_bytes())
    );
    assert_eq!(keys[0].health_epoch, 1, "fresh shared health record");

    let audit = audit_text(&cp).await;
    assert!(audit.contains("secret.rotate system:secrets p/"), "{audit}");
    assert!(audit.contains(&format!("ref={reference}")), "{audit}");
    assert!(audit.contains("reenabled=true"), "{audit}");
    assert!(
        !audit.contains(&v1) && !audit.contains(&v2),
        "no value in the audit log"
    );
    assert_not_on_disk(dir.path(), &[&v1, &v2]);

    // `rotate` by Warden writes the new value where the reference points.
    let v3 = canary("v3");
    let rotated = cp
        .rotate_provider_key(
            &admin(),
            "p",
            &key.id,
            secrecy::SecretString::from(v3.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        rotated.fingerprint,
        warden_core::fingerprint::of(v3.as_bytes())
    );
    assert_eq!(snapshot_value(&cp).as_deref(), Some(v3.as_str()));
    let (_, body) = vault(
        reqwest::Method::GET,
        &addr,
        &token,
        &format!("secret/data/{path}"),
        None,
    )
    .await;
    assert_eq!(body["data"]["data"]["value"], v3.as_str());
}

#[tokio::test]
async fn vault_permission_denied_names_the_reference_and_is_audited() {
    let addr = require_env("WARDEN_TEST_VAULT_ADDR");
    let root = require_env("WARDEN_TEST_VAULT_TOKEN");
    let allowed = format!("allowed-{}", suffix());
    let policy = format!("warden-narrow-{}", suffix());
    let (status, body) = vault(
        reqwest::Method::PUT,
        &addr,
        &root,
        &format!("sys/policies/acl/{policy}"),
        Some(json!({ "policy": format!("path \"secret/data/{allowed}/*\" {{ capabilities = [\"read\"] }}") })),
    )
    .await;
    assert!(status == 204 || status == 200, "{body}");
    let (_, body) = vault(
        reqwest::Method::POST,
        &addr,
        &root,
        "auth/token/create",
        Some(json!({ "policies": [policy], "ttl": "1h" })),
    )
    .await;
    let narrow = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let secret = canary("denied");
    vault_write(&addr, &root, "forbidden/openai", &secret).await;

    let dir = tempfile::tempdir().unwrap();
    let cp = open_cp(
        dir.path(),
        &MasterKey::generate_base64(),
        &vault_toml(&addr, "30s", "refuse"),
        &[("TEST_VAULT_TOKEN", &narrow)],
    )
    .await
    .unwrap();
    add_provider(&cp).await;
    let err = cp
        .add_provider_key(
            &admin(),
            "p",
            KeySource::Reference("vault://secret/forbidden/openai#value".into()),
        )
        .await
        .unwrap_err();
    let status = err.to_status();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("vault://secret/forbidden/openai#value"),
        "{status:?}"
    );
    let missing = cp
        .add_provider_key(
            &admin(),
            "p",
            KeySource::Reference(format!("vault://secret/{allowed}/nothing-here#value")),
        )
        .await
        .unwrap_err()
        .to_status();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let audit = audit_text(&cp).await;
    assert!(
        audit.contains(
            "provider.key.add admin:test p ref=vault://secret/forbidden/openai#value permission_denied"
        ),
        "{audit}"
    );
    assert!(!audit.contains(&secret));
}

async fn private_bao() -> (tokio::process::Child, String, String) {
    let bin = require_env("WARDEN_TEST_BAO_BIN");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = format!("root-{}", suffix());
    let child = tokio::process::Command::new(bin)
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reqwest::get(format!("{addr}/v1/sys/health"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "private OpenBao did not start in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, addr, token)
}

#[tokio::test]
async fn vault_down_keeps_the_last_value_and_start_up_follows_the_setting() {
    let (mut bao, addr, token) = private_bao().await;
    let value = canary("last-known");
    vault_write(&addr, &token, "team/openai", &value).await;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate_base64();
    let env = [("TEST_VAULT_TOKEN", token.as_str())];
    let cache_toml = vault_toml(&addr, "1h", "cache");
    {
        let cp = open_cp(dir.path(), &master, &cache_toml, &env)
            .await
            .unwrap();
        add_provider(&cp).await;
        cp.add_provider_key(
            &admin(),
            "p",
            KeySource::Reference("vault://secret/team/openai".into()),
        )
        .await
        .unwrap();

        // Vault goes away: polls fail, are audited once, and the last value keeps serving.
        bao.kill().await.unwrap();
        assert_eq!(cp.poll_provider_keys().await.unwrap(), 0);
        assert_eq!(cp.poll_provider_keys().await.unwrap(), 0);
        assert_eq!(snapshot_value(&cp).as_deref(), Some(value.as_str()));
        let audit = audit_text(&cp).await;
        assert_eq!(
            audit.matches("secret.unavailable").count(),
            1,
            "one audit row per failure spell: {audit}"
        );
        assert!(audit.contains("ref=vault://secret/team/openai"), "{audit}");
        assert!(!audit.contains(&value));
    }

    // Restart while Vault is down: `refuse` stops with the reference named...
    let refused = open_cp(
        dir.path(),
        &master,
        &vault_toml(&addr, "1h", "refuse"),
        &env,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("vault://secret/team/openai"), "{refused}");
    assert!(!refused.contains(&value));
    // ...`cache` starts from the encrypted cache, which holds no plaintext.
    let cp = open_cp(dir.path(), &master, &cache_toml, &env)
        .await
        .unwrap();
    assert_eq!(snapshot_value(&cp).as_deref(), Some(value.as_str()));
    assert!(audit_text(&cp).await.contains("start-up cache"));
    assert_not_on_disk(dir.path(), &[&value]);
}

// ---------------------------------------------------------------- azure (HTTPS double)

#[tokio::test]
async fn azure_rotation_reaches_the_snapshot_within_the_poll_interval() {
    let double = AzureDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("azure-ca.pem");
    std::fs::write(&ca, &double.ca_pem).unwrap();
    let toml = format!(
        r#"
[secrets]
poll_interval = "300ms"
store = "azure"
[[secrets.backends]]
type = "azure"
vault_url = "{url}"
vault_name = "test-vault"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_env = "TEST_AZURE_SECRET"
authority_host = "{url}"
ca_file = "{ca}"
"#,
        url = double.url(),
        tenant = azure_double::TENANT,
        client = azure_double::CLIENT_ID,
        ca = ca.display(),
    );
    let data = dir.path().join("data");
    let cp = open_cp(
        &data,
        &MasterKey::generate_base64(),
        &toml,
        &[("TEST_AZURE_SECRET", azure_double::CLIENT_SECRET)],
    )
    .await
    .unwrap();
    add_provider(&cp).await;

    // A value given to Warden lands in Key Vault under a name Warden owns.
    let v1 = canary("az1");
    let key = cp
        .add_provider_key(
            &admin(),
            "p",
            KeySource::Value(secrecy::SecretString::from(v1.clone())),
        )
        .await
        .unwrap();
    assert!(
        key.secret_name
            .starts_with("azure-kv://test-vault/warden-pk-p-key-"),
        "{}",
        key.secret_name
    );
    assert_eq!(snapshot_value(&cp).as_deref(), Some(v1.as_str()));
    let name = key.secret_name.rsplit('/').next().unwrap().to_owned();

    // A new version set in Key Vault reaches the snapshot within the poll interval.
    let v2 = canary("az2");
    double.set(&name, &v2);
    let took = wait_for_value(&cp, &v2, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 300ms poll"
    );
    let audit = audit_text(&cp).await;
    assert!(audit.contains("secret.rotate"), "{audit}");
    assert!(!audit.contains(&v1) && !audit.contains(&v2));
    assert_not_on_disk(&data, &[&v1, &v2]);

    // Removing the key deletes the secret Warden wrote.
    cp.remove_provider_key(&admin(), "p", &key.id)
        .await
        .unwrap();
    assert!(snapshot_value(&cp).is_none());
}

#[tokio::test]
async fn a_reference_shared_by_two_providers_survives_removing_one() {
    let addr = require_env("WARDEN_TEST_VAULT_ADDR");
    let token = require_env("WARDEN_TEST_VAULT_TOKEN");
    let dir = tempfile::tempdir().unwrap();
    let path = format!("shared/{}", suffix());
    let value = canary("shared");
    vault_write(&addr, &token, &path, &value).await;
    let cp = open_cp(
        dir.path(),
        &MasterKey::generate_base64(),
        &vault_toml(&addr, "30s", "refuse"),
        &[("TEST_VAULT_TOKEN", &token)],
    )
    .await
    .unwrap();
    add_provider(&cp).await;
    cp.add_provider(
        &admin(),
        "q",
        ApiFormat::OpenAi,
        "http://127.0.0.1:9/v1",
        Source::Admin,
        ProviderOptions::default(),
    )
    .await
    .unwrap();
    let reference = format!("vault://secret/{path}");
    let kp = cp
        .add_provider_key(&admin(), "p", KeySource::Reference(reference.clone()))
        .await
        .unwrap();
    cp.add_provider_key(&admin(), "q", KeySource::Reference(reference.clone()))
        .await
        .unwrap();
    cp.remove_provider_key(&admin(), "p", &kp.id).await.unwrap();
    let snapshot = cp.subscribe().borrow().clone();
    let q = snapshot.providers.iter().find(|p| p.name == "q").unwrap();
    assert_eq!(q.keys.len(), 1, "q keeps its key");
    assert_eq!(q.keys[0].secret.expose_secret(), value);
    // Not Warden's secret: still in Vault.
    let (status, _) = vault(
        reqwest::Method::GET,
        &addr,
        &token,
        &format!("secret/data/{path}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// A "backend" that accepts connections and never answers: every read runs into the
/// timeout.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_hanging_backend_costs_one_timeout_per_poll_not_one_per_key() {
    let addr = require_env("WARDEN_TEST_VAULT_ADDR");
    let token = require_env("WARDEN_TEST_VAULT_TOKEN");
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate_base64();
    let env = [("TEST_VAULT_TOKEN", token.as_str())];
    let with_timeout = |address: &str| {
        vault_toml(address, "1h", "cache").replace("timeout = \"2s\"", "timeout = \"1s\"")
    };
    let base = format!("hang/{}", suffix());
    let mut values = Vec::new();
    {
        let cp = open_cp(dir.path(), &master, &with_timeout(&addr), &env)
            .await
            .unwrap();
        add_provider(&cp).await;
        for i in 0..6 {
            let value = canary(&format!("hang{i}"));
            vault_write(&addr, &token, &format!("{base}/{i}"), &value).await;
            cp.add_provider_key(
                &admin(),
                "p",
                KeySource::Reference(format!("vault://secret/{base}/{i}")),
            )
            .await
            .unwrap();
            values.push(value);
        }
    }
    // The same keys, now behind a Vault that hangs: start-up (from the cache) and one poll
    // each take about one 1 s timeout, not six.
    let (hole, _task) = black_hole().await;
    let started = Instant::now();
    let cp = open_cp(dir.path(), &master, &with_timeout(&hole), &env)
        .await
        .unwrap();
    let start_took = started.elapsed();
    let snapshot = cp.subscribe().borrow().clone();
    assert_eq!(
        snapshot
            .providers
            .iter()
            .find(|p| p.name == "p")
            .unwrap()
            .keys
            .len(),
        6
    );
    let started = Instant::now();
    assert_eq!(cp.poll_provider_keys().await.unwrap(), 0);
    let poll_took = started.elapsed();
    assert!(
        start_took < Duration::from_secs(4) && poll_took < Duration::from_secs(3),
        "start {start_took:?}, poll {poll_took:?} (a sequential read would take 6 s each)"
    );
    let audit = audit_text(&cp).await;
    assert_eq!(audit.matches("secret.unavailable").count(), 6, "{audit}");
    for v in &values {
        assert!(!audit.contains(v.as_str()));
    }
}

#[tokio::test]
async fn a_reference_to_wardens_own_secret_stored_before_the_rules_is_never_served() {
    use warden_control_plane::domain::ProviderKey;
    use warden_control_plane::store::StateStore as _;
    use warden_control_plane::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate_base64();
    let cp = open_cp(dir.path(), &master, "", &[]).await.unwrap();
    add_provider(&cp).await;
    // What an admin could add before the reference rules: the credential pepper.
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    store
        .insert_provider_key(&ProviderKey {
            id: "key_legacy".into(),
            provider: "p".into(),
            secret_name: "file://warden/credential-pepper".into(),
            fingerprint: String::new(),
            created_at: 0,
            disabled_reason: None,
            disabled_at: None,
            health_epoch: 0,
        })
        .await
        .unwrap();
    drop(store);
    // A restart (not dev mode, start-up "refuse") still starts; the key is left out.
    let cp = open_cp(dir.path(), &master, "", &[]).await.unwrap();
    assert_eq!(snapshot_value(&cp), None);
    let audit = audit_text(&cp).await;
    assert!(
        audit.contains("secret.unavailable system:secrets p/key_legacy ref=file://warden/credential-pepper refused"),
        "{audit}"
    );
    // And the admin can remove it.
    cp.remove_provider_key(&admin(), "p", "key_legacy")
        .await
        .unwrap();
}
