//! Every secret backend against a real server on loopback: the file and memory stores,
//! OpenBao (Vault API) for `vault`, moto's server for `aws`, and an HTTPS test double of the
//! Key Vault REST protocol for `azure` (there is no Key Vault emulator).
//!
//! One shared body ([`exercise`]) runs against each store: put/get, rotation (new value →
//! new version id), a missing secret is `NotFound` naming the reference, and no value ever
//! shows in an error message or `Debug` output. Backend-specific tests follow.
//!
//! `scripts/test.sh` starts the servers and exports `WARDEN_TEST_VAULT_ADDR`,
//! `WARDEN_TEST_VAULT_TOKEN`, `WARDEN_TEST_BAO_BIN` and `WARDEN_TEST_AWS_ENDPOINT`; a test
//! that needs one panics when it is missing (never skips). Every test namespaces its
//! secrets with a random suffix, so the tests share one server and run in parallel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

mod support;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::Credentials;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use serde_json::{Value, json};
use warden_control_plane::secrets::aws::{AwsOptions, AwsSecretStore};
use warden_control_plane::secrets::azure::{
    self, AzureKeyVaultStore, AzureOptions, ClientCredentials, ManagedIdentity, StaticToken,
    TokenSource,
};
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::secrets::config::{Backend, SecretResolver};
use warden_control_plane::secrets::file::FileSecretStore;
use warden_control_plane::secrets::memory::MemorySecretStore;
use warden_control_plane::secrets::reference::SecretReference;
use warden_control_plane::secrets::vault::{VaultAuth, VaultOptions, VaultSecretStore};
use warden_control_plane::secrets::{SecretError, SecretStore};

use support::azure_double::{self, AzureDouble};

// ---------------------------------------------------------------- helpers

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the real backend; run scripts/test.sh \
             (it starts OpenBao and moto and exports WARDEN_TEST_*), or start them yourself \
             and export {name}"
        ),
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn canary(label: &str) -> String {
    format!("sk-canary-{label}-{}", suffix())
}

/// A store that can also be shown with `Debug`.
trait DebugStore: SecretStore + Debug {}
impl<T: SecretStore + Debug> DebugStore for T {}

/// Asserts that neither the error's message nor its `Debug` form holds any of `secrets`.
fn assert_no_leak(what: &str, shown: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!shown.contains(s), "{what} leaks a secret value: {shown}");
    }
}

fn assert_not_found(err: &SecretError, reference: &str) {
    assert!(
        matches!(err, SecretError::NotFound { reference: r } if r == reference),
        "expected NotFound for {reference}, got {err:?}"
    );
    assert_eq!(err.to_string(), format!("secret {reference} not found"));
}

/// The body every backend must pass. `name` and `missing` are fresh names in the store's
/// syntax; `missing` must not exist.
async fn exercise(store: &dyn DebugStore, name: &str, missing: &str) {
    let one = canary("one");
    let two = canary("two");
    let secrets = [one.as_str(), two.as_str()];

    // A missing secret is NotFound and names its reference.
    let err = store.get(missing).await.unwrap_err();
    assert_not_found(&err, &store.reference(missing));
    let err = store.get_versioned(missing).await.unwrap_err();
    assert_not_found(&err, &store.reference(missing));

    // put / get
    store
        .put(name, &SecretString::from(one.clone()))
        .await
        .unwrap();
    let (value, v1) = store.get_versioned(name).await.unwrap();
    assert_eq!(value.expose_secret(), one);
    assert_eq!(store.get(name).await.unwrap().expose_secret(), one);
    let (_, again) = store.get_versioned(name).await.unwrap();
    assert_eq!(
        v1, again,
        "version must be stable while the value is unchanged"
    );

    // rotate: a new value has a new version id
    store
        .put(name, &SecretString::from(two.clone()))
        .await
        .unwrap();
    let (value, v2) = store.get_versioned(name).await.unwrap();
    assert_eq!(value.expose_secret(), two);
    assert_ne!(v1, v2, "rotation must change the version id");
    assert_no_leak("a version id", &format!("{v1} {v2}"), &secrets);

    // nothing prints a value
    assert_no_leak("Debug of the store", &format!("{store:?}"), &secrets);
    assert_no_leak("Debug of a value", &format!("{value:?}"), &secrets);

    // delete: gone, and deleting again is fine
    store.delete(name).await.unwrap();
    let err = store.get(name).await.unwrap_err();
    assert_not_found(&err, &store.reference(name));
    assert_no_leak("an error", &format!("{err} {err:?}"), &secrets);
    store.delete(name).await.unwrap();
}

fn master() -> MasterKey {
    let b64 = MasterKey::generate_base64();
    MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap()
}

// ---------------------------------------------------------------- vault helpers

fn vault_addr() -> String {
    require_env("WARDEN_TEST_VAULT_ADDR")
}

fn vault_root() -> SecretString {
    SecretString::from(require_env("WARDEN_TEST_VAULT_TOKEN"))
}

async fn vault_store(auth: VaultAuth) -> VaultSecretStore {
    VaultSecretStore::connect(VaultOptions::new(vault_addr(), "secret", auth))
        .await
        .unwrap()
}

/// A raw Vault API call with the root token (test setup only).
async fn vault_admin(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, format!("{}/v1/{path}", vault_addr()))
        .header("X-Vault-Token", vault_root().expose_secret());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn enable_approle() {
    let (status, body) = vault_admin(
        reqwest::Method::POST,
        "sys/auth/approle",
        Some(json!({"type": "approle"})),
    )
    .await;
    // 400 "path is already in use": another test enabled it first.
    assert!(
        status == 204 || status == 200 || status == 400,
        "enable approle: {status} {body}"
    );
}

/// A policy allowing `capabilities` on `secret/data/{prefix}/*`.
async fn vault_policy(name: &str, prefix: &str, capabilities: &[&str]) {
    let caps = capabilities
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let policy = format!("path \"secret/data/{prefix}/*\" {{ capabilities = [{caps}] }}");
    let (status, body) = vault_admin(
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{name}"),
        Some(json!({"policy": policy})),
    )
    .await;
    assert!(status == 204 || status == 200, "policy: {status} {body}");
}

/// An AppRole with `policy`; returns (role_id, secret_id).
async fn approle(role: &str, policy: &str, ttl: &str, max_ttl: &str) -> (String, SecretString) {
    enable_approle().await;
    let (status, body) = vault_admin(
        reqwest::Method::POST,
        &format!("auth/approle/role/{role}"),
        Some(json!({"token_policies": [policy], "token_ttl": ttl, "token_max_ttl": max_ttl})),
    )
    .await;
    assert!(status == 204 || status == 200, "role: {status} {body}");
    let (_, body) = vault_admin(
        reqwest::Method::GET,
        &format!("auth/approle/role/{role}/role-id"),
        None,
    )
    .await;
    let role_id = body["data"]["role_id"].as_str().unwrap().to_owned();
    let (_, body) = vault_admin(
        reqwest::Method::POST,
        &format!("auth/approle/role/{role}/secret-id"),
        None,
    )
    .await;
    let secret_id = SecretString::from(body["data"]["secret_id"].as_str().unwrap());
    (role_id, secret_id)
}

// ---------------------------------------------------------------- aws / azure helpers

async fn aws_store() -> AwsSecretStore {
    AwsSecretStore::connect(AwsOptions {
        region: Some("us-east-1".into()),
        endpoint: Some(require_env("WARDEN_TEST_AWS_ENDPOINT")),
        credentials: Some(Credentials::new("test", "test", None, None, "warden-tests")),
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap()
}

fn azure_http(double: &AzureDouble) -> reqwest::Client {
    azure::http_client(
        Some(double.ca_pem.as_bytes()),
        Duration::from_secs(5),
        false,
    )
    .unwrap()
}

fn azure_store_with(double: &AzureDouble, tokens: Arc<dyn TokenSource>) -> AzureKeyVaultStore {
    let mut options = AzureOptions::new(double.url(), tokens, azure_http(double));
    options.vault_name = Some("test-vault".into());
    AzureKeyVaultStore::new(options).unwrap()
}

fn client_credentials(double: &AzureDouble, secret: &str) -> Arc<dyn TokenSource> {
    Arc::new(
        ClientCredentials::new(
            azure_http(double),
            &double.url(),
            azure_double::TENANT,
            azure_double::CLIENT_ID,
            SecretString::from(secret),
        )
        .unwrap(),
    )
}

// ---------------------------------------------------------------- the shared body, per backend

#[tokio::test]
async fn file_store_passes_the_shared_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSecretStore::new(dir.path().join("secrets.json"), master());
    let s = suffix();
    exercise(&store, &format!("t-{s}/openai"), &format!("t-{s}/missing")).await;
}

#[tokio::test]
async fn memory_store_passes_the_shared_body() {
    let store = MemorySecretStore::new();
    let s = suffix();
    exercise(&store, &format!("t-{s}/openai"), &format!("t-{s}/missing")).await;
}

#[tokio::test]
async fn vault_store_passes_the_shared_body() {
    let store = vault_store(VaultAuth::Token(vault_root())).await;
    let s = suffix();
    exercise(&store, &format!("t-{s}/openai"), &format!("t-{s}/missing")).await;
    // A named field is part of the reference.
    exercise(
        &store,
        &format!("t-{s}/fields#api_key"),
        &format!("t-{s}/missing#api_key"),
    )
    .await;
}

#[tokio::test]
async fn aws_store_passes_the_shared_body() {
    let store = aws_store().await;
    let s = suffix();
    exercise(&store, &format!("t-{s}/openai"), &format!("t-{s}/missing")).await;
}

#[tokio::test]
async fn azure_store_passes_the_shared_body() {
    let double = AzureDouble::start().await;
    let store = azure_store_with(
        &double,
        client_credentials(&double, azure_double::CLIENT_SECRET),
    );
    let s = suffix();
    exercise(&store, &format!("t-{s}-openai"), &format!("t-{s}-missing")).await;
}

// ---------------------------------------------------------------- vault specifics

#[tokio::test]
async fn vault_fields_merge_and_versions_follow_kv_metadata() {
    let store = vault_store(VaultAuth::Token(vault_root())).await;
    let s = suffix();
    let key = canary("key");
    store
        .put(
            &format!("t-{s}/llm#api_key"),
            &SecretString::from(key.clone()),
        )
        .await
        .unwrap();
    store
        .put(&format!("t-{s}/llm#org"), &SecretString::from("acme"))
        .await
        .unwrap();
    let (value, version) = store
        .get_versioned(&format!("t-{s}/llm#api_key"))
        .await
        .unwrap();
    assert_eq!(
        value.expose_secret(),
        key,
        "writing one field keeps the others"
    );
    assert_eq!(version, "2", "KV v2 metadata version");
    let err = store.get(&format!("t-{s}/llm")).await.unwrap_err();
    assert_not_found(&err, &format!("vault://secret/t-{s}/llm"));
    // The same secret through a reference, resolved into this mount.
    let resolver = SecretResolver::new(HashMap::new(), Arc::new(master()))
        .with_backend(Backend::Vault(store.clone()));
    let reference = SecretReference::parse(&format!("vault://secret/t-{s}/llm#api_key")).unwrap();
    let (value, version) = resolver.resolve(&reference).await.unwrap();
    assert_eq!(
        (value.expose_secret(), version.as_str()),
        (key.as_str(), "2")
    );
    store.delete(&format!("t-{s}/llm")).await.unwrap();
}

#[tokio::test]
async fn vault_approle_with_a_read_only_policy_reads_but_cannot_write() {
    let s = suffix();
    let root = vault_store(VaultAuth::Token(vault_root())).await;
    let key = canary("ro");
    root.put(&format!("t-{s}/k"), &SecretString::from(key.clone()))
        .await
        .unwrap();
    vault_policy(&format!("ro-{s}"), &format!("t-{s}"), &["read"]).await;
    let (role_id, secret_id) = approle(&format!("ro-{s}"), &format!("ro-{s}"), "1h", "2h").await;

    let store = vault_store(VaultAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id,
    })
    .await;
    assert_eq!(
        store
            .get(&format!("t-{s}/k"))
            .await
            .unwrap()
            .expose_secret(),
        key
    );
    let new = canary("denied");
    let err = store
        .put(&format!("t-{s}/k"), &SecretString::from(new.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SecretError::PermissionDenied { reference } if *reference == format!("vault://secret/t-{s}/k")),
        "{err:?}"
    );
    assert_no_leak(
        "an error",
        &format!("{err} {err:?} {store:?}"),
        &[&key, &new],
    );
    // Outside the policy's prefix even reads are refused.
    let err = store.get(&format!("t-{s}-other/k")).await.unwrap_err();
    assert!(
        matches!(err, SecretError::PermissionDenied { .. }),
        "{err:?}"
    );

    // A wrong secret id cannot log in at all.
    let err = VaultSecretStore::connect(VaultOptions::new(
        vault_addr(),
        "secret",
        VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: "nope".into(),
            secret_id: SecretString::from("sk-canary-wrong-secret-id"),
        },
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            SecretError::PermissionDenied { .. } | SecretError::Backend { .. }
        ),
        "{err:?}"
    );
    assert_no_leak("an error", &err.to_string(), &["sk-canary-wrong-secret-id"]);
}

#[tokio::test]
async fn vault_renewable_token_is_renewed_before_it_expires() {
    let s = suffix();
    let root = vault_store(VaultAuth::Token(vault_root())).await;
    root.put(&format!("t-{s}/k"), &SecretString::from("sk-canary-renew"))
        .await
        .unwrap();
    vault_policy(&format!("renew-{s}"), &format!("t-{s}"), &["read"]).await;
    let (status, body) = vault_admin(
        reqwest::Method::POST,
        "auth/token/create",
        Some(json!({"policies": [format!("renew-{s}")], "ttl": "6s", "renewable": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = SecretString::from(body["auth"]["client_token"].as_str().unwrap());
    let store = vault_store(VaultAuth::Token(token)).await;
    // Without renewal (due every ~4 s) the 6 s token would be gone after 13 s.
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert_eq!(
        store
            .get(&format!("t-{s}/k"))
            .await
            .unwrap()
            .expose_secret(),
        "sk-canary-renew"
    );
}

#[tokio::test]
async fn vault_approle_logs_in_again_after_the_max_ttl() {
    let s = suffix();
    let root = vault_store(VaultAuth::Token(vault_root())).await;
    root.put(
        &format!("t-{s}/k"),
        &SecretString::from("sk-canary-relogin"),
    )
    .await
    .unwrap();
    vault_policy(&format!("relogin-{s}"), &format!("t-{s}"), &["read"]).await;
    let (role_id, secret_id) =
        approle(&format!("relogin-{s}"), &format!("relogin-{s}"), "2s", "3s").await;
    let store = vault_store(VaultAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id,
    })
    .await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            store
                .get(&format!("t-{s}/k"))
                .await
                .unwrap()
                .expose_secret(),
            "sk-canary-relogin"
        );
    }
}

/// A private OpenBao on a free port (so killing it does not disturb the other tests).
async fn private_bao() -> (tokio::process::Child, String, SecretString) {
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
    loop {
        let up = reqwest::get(format!("{addr}/v1/sys/health"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "private OpenBao did not start in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, addr, SecretString::from(token))
}

#[tokio::test]
async fn vault_server_killed_is_unavailable_naming_the_reference() {
    let (mut child, addr, token) = private_bao().await;
    let mut options = VaultOptions::new(addr, "secret", VaultAuth::Token(token));
    options.timeout = Duration::from_secs(2);
    let store = VaultSecretStore::connect(options).await.unwrap();
    let key = canary("killed");
    store
        .put("t/k", &SecretString::from(key.clone()))
        .await
        .unwrap();
    assert_eq!(store.get("t/k").await.unwrap().expose_secret(), key);

    child.kill().await.unwrap();
    let started = Instant::now();
    let err = store.get("t/k").await.unwrap_err();
    assert!(
        matches!(&err, SecretError::Unavailable { reference, .. } if reference == "vault://secret/t/k"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("vault://secret/t/k"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the timeout"
    );
    assert_no_leak("an error", &format!("{err} {err:?}"), &[&key]);
    let err = store
        .put("t/k", &SecretString::from(key.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::Unavailable { .. }), "{err:?}");
}

// ---------------------------------------------------------------- aws specifics

#[tokio::test]
async fn aws_missing_secret_is_not_found() {
    let store = aws_store().await;
    let s = suffix();
    for name in [format!("t-{s}/none"), format!("t-{s}/none#field")] {
        let err = store.get(&name).await.unwrap_err();
        assert_not_found(&err, &format!("aws-sm://{name}"));
    }
}

#[tokio::test]
async fn aws_json_fields_are_selected_and_merged() {
    let store = aws_store().await;
    let s = suffix();
    let name = format!("t-{s}/llm");
    let key = canary("aws-field");
    let whole = json!({"api_key": key, "org": "acme"}).to_string();
    store.put(&name, &SecretString::from(whole)).await.unwrap();

    let (value, v1) = store
        .get_versioned(&format!("{name}#api_key"))
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), key);
    assert_eq!(
        store
            .get(&format!("{name}#org"))
            .await
            .unwrap()
            .expose_secret(),
        "acme"
    );
    // Writing one field keeps the others and makes a new VersionId.
    let rotated = canary("aws-rotated");
    store
        .put(
            &format!("{name}#api_key"),
            &SecretString::from(rotated.clone()),
        )
        .await
        .unwrap();
    let (value, v2) = store
        .get_versioned(&format!("{name}#api_key"))
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), rotated);
    assert_ne!(v1, v2);
    assert_eq!(
        store
            .get(&format!("{name}#org"))
            .await
            .unwrap()
            .expose_secret(),
        "acme"
    );
    // A missing field is NotFound naming the field.
    let err = store.get(&format!("{name}#nope")).await.unwrap_err();
    assert_not_found(&err, &format!("aws-sm://{name}#nope"));
    // A field of a plain-string secret: an error that does not show the string.
    let plain_name = format!("t-{s}/plain");
    let plain = canary("aws-plain");
    store
        .put(&plain_name, &SecretString::from(plain.clone()))
        .await
        .unwrap();
    let err = store
        .get(&format!("{plain_name}#api_key"))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::Backend { .. }), "{err:?}");
    assert_no_leak(
        "an error",
        &format!("{err} {err:?}"),
        &[&plain, &key, &rotated],
    );
    // A field written to a secret that does not exist yet creates it as JSON.
    let fresh = format!("t-{s}/fresh");
    store
        .put(
            &format!("{fresh}#token"),
            &SecretString::from("sk-canary-fresh"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&fresh).await.unwrap().expose_secret(),
        r#"{"token":"sk-canary-fresh"}"#
    );
    // References resolve through the resolver too.
    let resolver = SecretResolver::new(HashMap::new(), Arc::new(master()))
        .with_backend(Backend::Aws(store.clone()));
    let (value, _) = resolver
        .resolve(&SecretReference::parse(&format!("aws-sm://{name}#org")).unwrap())
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), "acme");
    for n in [name, plain_name, fresh] {
        store.delete(&n).await.unwrap();
    }
}

#[tokio::test]
async fn aws_unreachable_endpoint_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = AwsSecretStore::connect(AwsOptions {
        region: Some("us-east-1".into()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        credentials: Some(Credentials::new("test", "test", None, None, "warden-tests")),
        timeout: Duration::from_secs(2),
    })
    .await
    .unwrap();
    let err = store.get("t/x").await.unwrap_err();
    assert!(
        matches!(&err, SecretError::Unavailable { reference, .. } if reference == "aws-sm://t/x"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- azure specifics

#[tokio::test]
async fn azure_answers_401_with_a_bearer_challenge_and_the_client_follows_it() {
    let double = AzureDouble::start().await;
    let store = azure_store_with(
        &double,
        client_credentials(&double, azure_double::CLIENT_SECRET),
    );
    let s = suffix();
    let name = format!("t-{s}-key");
    let key = canary("az");
    store
        .put(&name, &SecretString::from(key.clone()))
        .await
        .unwrap();

    // The protocol as the double speaks it: no token → 401 with a challenge; no api-version
    // → 400.
    let raw = azure_http(&double);
    let r = raw
        .get(format!("{}/secrets/{name}?api-version=7.5", double.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer authorization=\"https://login.microsoftonline.com/")
            && challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
    let r = raw
        .get(format!("{}/secrets/{name}", double.url()))
        .bearer_auth(double.issue_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Every token issued so far stops working (expired, rotated): the next read gets the
    // 401 challenge, fetches a fresh token and succeeds, without an error to the caller.
    let before = double.log().len();
    double.revoke_tokens();
    assert_eq!(store.get(&name).await.unwrap().expose_secret(), key);
    let flow: Vec<(String, bool, bool, u16)> = double.log()[before..]
        .iter()
        .map(|s| {
            let vault = s.path.starts_with("/secrets/");
            (s.method.clone(), vault, s.authorized, s.status)
        })
        .collect();
    assert_eq!(
        flow,
        vec![
            ("GET".to_owned(), true, false, 401),
            ("POST".to_owned(), false, false, 200),
            ("GET".to_owned(), true, true, 200),
        ],
        "challenge, token refresh, retry"
    );
    // The cached token serves the next request directly.
    let before = double.log().len();
    store.get(&name).await.unwrap();
    assert_eq!(double.log().len(), before + 1);

    // A token the vault never accepts: one retry, then PermissionDenied naming the secret.
    let stranger = azure_store_with(
        &double,
        Arc::new(StaticToken(SecretString::from("sk-canary-not-a-token"))),
    );
    let err = stranger.get(&name).await.unwrap_err();
    assert!(
        matches!(&err, SecretError::PermissionDenied { reference } if *reference == format!("azure-kv://test-vault/{name}")),
        "{err:?}"
    );
    // A wrong client secret: the token endpoint refuses, PermissionDenied, secret not shown.
    let wrong = azure_store_with(
        &double,
        client_credentials(&double, "sk-canary-wrong-secret"),
    );
    let err = wrong.get(&name).await.unwrap_err();
    assert!(
        matches!(err, SecretError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert_no_leak(
        "an error",
        &format!("{err} {err:?} {wrong:?} {stranger:?}"),
        &["sk-canary-wrong-secret", "sk-canary-not-a-token", &key],
    );
}

#[tokio::test]
async fn azure_versions_come_from_the_id_and_can_be_read_back() {
    let double = AzureDouble::start().await;
    let store = azure_store_with(
        &double,
        client_credentials(&double, azure_double::CLIENT_SECRET),
    );
    let s = suffix();
    let name = format!("t-{s}-key");
    let first = canary("az-v1");
    let second = canary("az-v2");
    store
        .put(&name, &SecretString::from(first.clone()))
        .await
        .unwrap();
    let (_, v1) = store.get_versioned(&name).await.unwrap();
    assert_eq!(
        v1.len(),
        32,
        "Key Vault versions are 32 hex characters: {v1}"
    );
    // Rotated by someone else, directly in the vault.
    let v2 = double.set(&name, &second);
    let (value, seen) = store.get_versioned(&name).await.unwrap();
    assert_eq!(
        (value.expose_secret(), seen.as_str()),
        (second.as_str(), v2.as_str())
    );
    // An older version stays readable by name.
    assert_eq!(
        store
            .get(&format!("{name}/{v1}"))
            .await
            .unwrap()
            .expose_secret(),
        first
    );
    let resolver = SecretResolver::new(HashMap::new(), Arc::new(master()))
        .with_backend(Backend::Azure(store.clone()));
    let reference = SecretReference::parse(&format!("azure-kv://test-vault/{name}/{v1}")).unwrap();
    let (value, version) = resolver.resolve(&reference).await.unwrap();
    assert_eq!(
        (value.expose_secret(), version.as_str()),
        (first.as_str(), v1.as_str())
    );
    // A version that does not exist is NotFound naming it.
    let unknown = "0123456789abcdef0123456789abcdef";
    let err = store.get(&format!("{name}/{unknown}")).await.unwrap_err();
    assert_not_found(&err, &format!("azure-kv://test-vault/{name}/{unknown}"));
    // Writing to a version is refused before any request.
    let err = store
        .put(&format!("{name}/{v1}"), &SecretString::from("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::BadReference { .. }), "{err:?}");
}

#[tokio::test]
async fn azure_managed_identity_and_an_untrusted_certificate() {
    let double = AzureDouble::start().await;
    double.set("mi-key", "sk-canary-mi");
    let mi = Arc::new(ManagedIdentity::new(
        azure_http(&double),
        format!("{}/metadata/identity/oauth2/token", double.url()),
        None,
    ));
    let store = azure_store_with(&double, mi);
    assert_eq!(
        store.get("mi-key").await.unwrap().expose_secret(),
        "sk-canary-mi"
    );

    // A client that does not trust the test CA never gets to send its token.
    let untrusted = azure::http_client(None, Duration::from_secs(5), false).unwrap();
    let mut options = AzureOptions::new(
        double.url(),
        Arc::new(StaticToken(SecretString::from(double.issue_token()))),
        untrusted,
    );
    options.vault_name = Some("test-vault".into());
    let store = AzureKeyVaultStore::new(options).unwrap();
    let err = store.get("mi-key").await.unwrap_err();
    assert!(matches!(err, SecretError::Unavailable { .. }), "{err:?}");
}
