//! The Key Vault test double checked with the official client: the Azure SDK for Python
//! (`azure-keyvault-secrets` with `azure-identity`, pinned in tests/python/requirements.txt)
//! runs tests/python/azure_sdk_conformance.py against [`AzureDouble`], and Warden's own
//! [`AzureKeyVaultStore`] reads what the SDK wrote and writes what the SDK reads.
//!
//! There is no Key Vault emulator, so `secret_backends.rs` tests Warden's client against the
//! double; this test is what keeps the double honest. The SDK authenticates the way it does
//! against a real vault: an unauthenticated first request, the 401 bearer challenge, then a
//! token from `ClientSecretCredential` (MSAL, with the double as its authority). The only
//! concession to loopback is `verify_challenge_resource=False` (the challenge names
//! `https://vault.azure.net`, the double is `127.0.0.1`).
//!
//! Needs `WARDEN_TEST_PYTHON` (a Python with the SDK installed; scripts/test.sh exports it):
//! the test panics when it is missing, it never skips.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use warden_control_plane::secrets::SecretStore;
use warden_control_plane::secrets::azure::{
    self, AzureKeyVaultStore, AzureOptions, ClientCredentials,
};

use support::azure_double::{self, AzureDouble, Seen};

/// The Key Vault REST version Warden speaks; the SDK is pinned to it.
const API_VERSION: &str = azure::API_VERSION;
/// How long the script may take (it makes about thirty requests on loopback).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn python() -> String {
    match std::env::var("WARDEN_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "WARDEN_TEST_PYTHON is not set: this test runs the official Azure SDK for Python; \
             run scripts/test.sh (it installs tests/python/requirements.txt into .venv and \
             exports WARDEN_TEST_PYTHON), or point it at a python with azure-keyvault-secrets \
             and azure-identity installed"
        ),
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn canary(label: &str) -> String {
    format!("sk-canary-{label}-{}", suffix())
}

fn warden_store(double: &AzureDouble) -> AzureKeyVaultStore {
    let http = || {
        azure::http_client(
            Some(double.ca_pem.as_bytes()),
            Duration::from_secs(5),
            false,
        )
        .unwrap()
    };
    let tokens = ClientCredentials::new(
        http(),
        &double.url(),
        azure_double::TENANT,
        azure_double::CLIENT_ID,
        SecretString::from(azure_double::CLIENT_SECRET),
    )
    .unwrap();
    let mut options = AzureOptions::new(double.url(), Arc::new(tokens), http());
    options.vault_name = Some("test-vault".into());
    AzureKeyVaultStore::new(options).unwrap()
}

/// Runs the script with exactly `env` (no inherited proxy or `AZURE_*` settings), with a
/// timeout; returns the JSON object it prints.
async fn run_script(env: &[(&str, String)], secrets: &[&str]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/azure_sdk_conformance.py"
    );
    let mut command = tokio::process::Command::new(python());
    command
        .arg(script)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true);
    for inherited in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(inherited) {
            command.env(inherited, v);
        }
    }
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("azure_sdk_conformance.py did not finish in {SCRIPT_TIMEOUT:?}"))
        .expect("could not start WARDEN_TEST_PYTHON");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for s in secrets {
        assert!(
            !stdout.contains(s) && !stderr.contains(s),
            "the script printed a secret value"
        );
    }
    assert!(
        output.status.success(),
        "azure_sdk_conformance.py failed ({}):\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script printed no JSON object ({e}):\n{stdout}\n{stderr}"))
}

/// The step's result, failing with the SDK's error when the step failed.
fn ok<'a>(result: &'a Value, step: &str) -> &'a Value {
    let r = &result[step];
    assert!(
        r.is_object() && r.get("error").is_none(),
        "step {step} failed: {r}"
    );
    r
}

/// Asserts the step failed with `error` (the SDK's exception type), `status` and `code`.
fn failed(result: &Value, step: &str, error: &str, status: u16, code: &str) {
    let r = &result[step];
    assert_eq!(
        (
            r["error"].as_str(),
            r["status"].as_u64(),
            r["code"].as_str()
        ),
        (Some(error), Some(u64::from(status)), Some(code)),
        "step {step}: {r}"
    );
}

fn version(result: &Value, step: &str) -> String {
    let v = ok(result, step)["version"]
        .as_str()
        .unwrap_or_else(|| panic!("step {step} has no version: {}", result[step]))
        .to_owned();
    assert!(
        v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()),
        "step {step}: Key Vault versions are 32 hex characters: {v}"
    );
    v
}

fn is_sdk(seen: &Seen, package: &str) -> bool {
    seen.user_agent
        .as_deref()
        .is_some_and(|ua| ua.contains(&format!("azsdk-python-{package}/")))
}

#[tokio::test]
async fn the_official_azure_sdk_agrees_with_the_double_and_with_warden() {
    let double = AzureDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("azure-test-ca.pem");
    std::fs::write(&ca_file, &double.ca_pem).unwrap();
    let store = warden_store(&double);

    let s = suffix();
    let name = format!("sdk-{s}");
    let warden_name = format!("warden-{s}");
    let warden_deleted_name = format!("warden-deleted-{s}");
    let doomed_name = format!("doomed-{s}");
    let missing_name = format!("missing-{s}");
    let (value_1, value_2) = (canary("sdk-1"), canary("sdk-2"));
    let (warden_value, doomed_value) = (canary("warden"), canary("doomed"));

    // Warden writes one secret for the SDK to read, and deletes another.
    store
        .put(&warden_name, &SecretString::from(warden_value.clone()))
        .await
        .unwrap();
    let (_, warden_version) = store.get_versioned(&warden_name).await.unwrap();
    store
        .put(&warden_deleted_name, &SecretString::from("short-lived"))
        .await
        .unwrap();
    store.delete(&warden_deleted_name).await.unwrap();
    assert!(double.is_deleted(&warden_deleted_name));

    let before_sdk = double.log().len();
    let env = [
        ("KV_TEST_VAULT_URL", double.url()),
        ("KV_TEST_AUTHORITY", double.url()),
        ("KV_TEST_CA_FILE", ca_file.display().to_string()),
        ("KV_TEST_TENANT_ID", azure_double::TENANT.to_owned()),
        ("KV_TEST_CLIENT_ID", azure_double::CLIENT_ID.to_owned()),
        (
            "KV_TEST_CLIENT_SECRET",
            azure_double::CLIENT_SECRET.to_owned(),
        ),
        ("KV_TEST_API_VERSION", API_VERSION.to_owned()),
        ("KV_TEST_NAME", name.clone()),
        ("KV_TEST_VALUE_1", value_1.clone()),
        ("KV_TEST_VALUE_2", value_2.clone()),
        ("KV_TEST_WARDEN_NAME", warden_name.clone()),
        ("KV_TEST_WARDEN_VALUE", warden_value.clone()),
        ("KV_TEST_WARDEN_DELETED_NAME", warden_deleted_name.clone()),
        ("KV_TEST_DOOMED_NAME", doomed_name.clone()),
        ("KV_TEST_DOOMED_VALUE", doomed_value.clone()),
        ("KV_TEST_MISSING_NAME", missing_name.clone()),
    ];
    let secrets = [
        value_1.as_str(),
        value_2.as_str(),
        warden_value.as_str(),
        doomed_value.as_str(),
        azure_double::CLIENT_SECRET,
    ];
    let r = run_script(&env, &secrets).await;
    eprintln!("azure_sdk_conformance.py: {r:#}");
    assert_eq!(r["credential"], "ClientSecretCredential", "{r}");

    // set / get, a second version, the latest and the older one by id.
    let v1 = version(&r, "set_first");
    let first = ok(&r, "set_first");
    assert_eq!(first["name"], name.as_str());
    assert_eq!(first["value_matches"], true, "{first}");
    assert_eq!(first["content_type"], "text/plain", "{first}");
    assert_eq!(first["tags"]["owner"], "warden-test", "{first}");
    assert_eq!(first["enabled"], true, "{first}");
    assert_eq!(first["has_created_on"], true, "{first}");
    assert_eq!(first["recovery_level"], "Recoverable+Purgeable", "{first}");
    assert_eq!(first["vault_url"], double.url().as_str(), "{first}");
    assert_eq!(version(&r, "get_first"), v1);
    let get_first = ok(&r, "get_first");
    assert_eq!(get_first["value_matches"], true, "{get_first}");
    assert_eq!(get_first["content_type"], "text/plain", "{get_first}");
    let v2 = version(&r, "set_second");
    assert_ne!(v1, v2, "a new value is a new version");
    assert_eq!(ok(&r, "set_second")["value_matches"], true);
    assert_eq!(version(&r, "get_latest"), v2);
    assert_eq!(ok(&r, "get_latest")["value_matches"], true);
    assert_eq!(version(&r, "get_older"), v1);
    assert_eq!(ok(&r, "get_older")["value_matches"], true);

    // Listing versions: one page by default, one page per item with max_page_size=1 (the
    // SDK follows nextLink); a name without versions lists nothing.
    let list = ok(&r, "list_versions");
    assert_eq!(list["versions"], serde_json::json!([v1, v2]), "{list}");
    assert_eq!(list["pages"], 1, "{list}");
    let paged = ok(&r, "list_versions_paged");
    assert_eq!(paged["versions"], serde_json::json!([v1, v2]), "{paged}");
    assert_eq!(paged["pages"], 2, "{paged}");
    assert_eq!(
        ok(&r, "list_versions_missing")["versions"],
        serde_json::json!([])
    );

    // What Warden wrote, the SDK reads with the same version; what Warden deleted is in
    // the deleted collection.
    assert_eq!(version(&r, "get_warden_written"), warden_version);
    assert_eq!(ok(&r, "get_warden_written")["value_matches"], true);
    let warden_deleted = ok(&r, "get_warden_deleted");
    assert_eq!(warden_deleted["name"], warden_deleted_name.as_str());
    assert!(
        warden_deleted["recovery_id"]
            .as_str()
            .is_some_and(|id| id.ends_with(&format!("/deletedsecrets/{warden_deleted_name}"))),
        "{warden_deleted}"
    );

    // Soft delete: a DeletedSecretBundle without the value, the poller completes on
    // GET /deletedsecrets/{name}, the name is taken until purged.
    let deleted = ok(&r, "delete");
    assert_eq!(deleted["name"], doomed_name.as_str(), "{deleted}");
    assert_eq!(deleted["has_deleted_date"], true, "{deleted}");
    assert_eq!(deleted["has_scheduled_purge_date"], true, "{deleted}");
    assert_eq!(deleted["has_value"], false, "{deleted}");
    assert_eq!(deleted["poller_done"], true, "{deleted}");
    assert!(
        deleted["recovery_id"]
            .as_str()
            .is_some_and(|id| id == format!("{}/deletedsecrets/{doomed_name}", double.url())),
        "{deleted}"
    );
    assert_eq!(ok(&r, "get_deleted")["name"], doomed_name.as_str());
    failed(
        &r,
        "get_after_delete",
        "ResourceNotFoundError",
        404,
        "SecretNotFound",
    );
    failed(
        &r,
        "set_while_deleted",
        "ResourceExistsError",
        409,
        "Conflict",
    );
    assert_eq!(ok(&r, "purge")["purged"], true);
    failed(
        &r,
        "get_deleted_after_purge",
        "ResourceNotFoundError",
        404,
        "SecretNotFound",
    );
    version(&r, "set_after_purge");

    // Missing secrets.
    failed(
        &r,
        "get_missing",
        "ResourceNotFoundError",
        404,
        "SecretNotFound",
    );
    failed(
        &r,
        "delete_missing",
        "ResourceNotFoundError",
        404,
        "SecretNotFound",
    );

    // Warden reads what the SDK wrote: the same values under the same versions.
    let (value, seen) = store.get_versioned(&name).await.unwrap();
    assert_eq!(
        (value.expose_secret(), seen.as_str()),
        (value_2.as_str(), v2.as_str())
    );
    let (value, seen) = store.get_versioned(&format!("{name}/{v1}")).await.unwrap();
    assert_eq!(
        (value.expose_secret(), seen.as_str()),
        (value_1.as_str(), v1.as_str())
    );

    // The wire, from the double's log: the SDK's first Key Vault request (set_secret, sent
    // without its body) carried no token and got the 401 challenge; MSAL then read the tenant's OpenID configuration and
    // posted the client-credentials grant; the retried request was authorized. Every Key
    // Vault request named the API version.
    let sdk: Vec<Seen> = double.log()[before_sdk..]
        .iter()
        .filter(|s| is_sdk(s, "keyvault-secrets") || is_sdk(s, "identity"))
        .cloned()
        .collect();
    let flow: Vec<(&str, &str, bool, bool, u16)> = sdk
        .iter()
        .take(4)
        .map(|s| {
            let (method, path) = (s.method.as_str(), s.path.as_str());
            (method, path, s.bearer, s.authorized, s.status)
        })
        .collect();
    let token_path = format!("/{}/oauth2/v2.0/token", azure_double::TENANT);
    let openid_path = format!(
        "/{}/v2.0/.well-known/openid-configuration",
        azure_double::TENANT
    );
    let secret_path = format!("/secrets/{name}");
    assert_eq!(
        flow,
        vec![
            ("PUT", secret_path.as_str(), false, false, 401),
            ("GET", openid_path.as_str(), false, false, 200),
            ("POST", token_path.as_str(), false, false, 200),
            ("PUT", secret_path.as_str(), true, true, 200),
        ],
        "challenge, OpenID configuration, token, retry: {sdk:#?}"
    );
    let vault: Vec<&Seen> = sdk
        .iter()
        .filter(|s| is_sdk(s, "keyvault-secrets"))
        .collect();
    assert!(vault.len() > 20, "{vault:#?}");
    for s in &vault {
        assert_eq!(s.api_version(), Some(API_VERSION), "{s:?}");
    }
    // One token served the whole run: no request after the first was refused.
    assert_eq!(
        vault.iter().filter(|s| s.status == 401).count(),
        1,
        "{vault:#?}"
    );
    assert_eq!(
        sdk.iter().filter(|s| s.path == token_path).count(),
        1,
        "{sdk:#?}"
    );
}
