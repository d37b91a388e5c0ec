//! The example configuration files in `deploy/config/` are what an operator copies, so they
//! are loaded here with the real parser ([`RawConfig::from_file`]), validated with the real
//! rules ([`RawConfig::build_and_validate`] plus the checks `warden-cp` only runs at
//! start-up: audit jobs and sinks, a backend for every key reference), and checked with
//! `warden-cp --config FILE validate`; the single-node example is also started for real.
//! An example that stops parsing or validating fails here. Each example's header names the
//! environment it expects; [`single_node_env`] and [`production_env`] provide it.
//!
//! `warden-dp` takes no config file: `deploy/config/warden-dp.env` is tested end to end in
//! `tests/tests/e2e/deploy_config.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use warden_control_plane::config::{Config, MasterKeySource, RawConfig};
use warden_control_plane::secrets::reference::Scheme;

const SINGLE_NODE: &str = "warden-cp.toml";
const PRODUCTION: &str = "warden-cp-ha.toml";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What `warden-cp.toml` says it expects.
fn single_node_env() -> HashMap<String, String> {
    env(&[("OPENAI_API_KEY", "sk-example-not-a-real-key")])
}

/// What `warden-cp-ha.toml` says it expects (the master key is a file it names).
fn production_env() -> HashMap<String, String> {
    env(&[
        (
            "WARDEN_DATABASE_URL",
            "postgres://warden:example@db.internal:5432/warden?sslmode=require",
        ),
        (
            "WARDEN_REDIS_URL",
            "rediss://warden:example@redis.internal:6380/0",
        ),
        ("VAULT_SECRET_ID", "example-approle-secret-id"),
    ])
}

/// Parses and validates an example as `warden-cp` does at start-up, naming the file and the
/// failing field on error.
fn load(name: &str, env: &HashMap<String, String>) -> Config {
    let raw = RawConfig::from_file(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let config = raw
        .build_and_validate(env)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // Checked when the audit jobs and sinks start, not by `validate`.
    config
        .audit
        .jobs()
        .validate()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(syslog) = &config.audit.syslog {
        syslog.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    if let Some(jsonl) = &config.audit.jsonl {
        jsonl.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A key reference without a backend to read it from fails only at start-up.
    for p in &config.providers {
        for key in &p.keys {
            let scheme = key.scheme();
            assert!(
                scheme == Scheme::Env
                    || config.secrets.backends.iter().any(|b| b.scheme() == scheme),
                "{name}: provider {} names {key}, but no {scheme} backend is configured",
                p.name
            );
        }
    }
    config
}

/// `warden-cp --config FILE validate` with exactly `env`.
fn validate_with_binary(name: &str, env: &HashMap<String, String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden-cp"))
        .arg("--config")
        .arg(example(name))
        .arg("validate")
        .env_clear()
        .envs(env)
        .output()
        .unwrap()
}

fn assert_binary_accepts(name: &str, env: &HashMap<String, String>) {
    let out = validate_with_binary(name, env);
    assert!(
        out.status.success(),
        "warden-cp --config deploy/config/{name} validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");
}

#[test]
fn every_example_in_deploy_config_is_tested_here() {
    let mut found: Vec<String> = std::fs::read_dir(example(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        [PRODUCTION, SINGLE_NODE, "warden-dp.env"],
        "a new example in deploy/config needs a test (here, or in tests/tests/e2e/deploy_config.rs)"
    );
}

#[test]
fn the_single_node_example_keeps_the_embedded_defaults() {
    let config = load(SINGLE_NODE, &single_node_env());
    assert!(config.database_url.is_none(), "SQLite under data_dir");
    assert!(config.redis_url.is_none());
    assert_eq!(config.secrets.store, Scheme::File);
    assert_eq!(
        config.secrets.backends.len(),
        1,
        "only the encrypted file store"
    );
    assert!(!config.dev);
    assert!(matches!(config.master_key, MasterKeySource::File(_)));
    assert!(config.grpc_addr.ip().is_loopback() && config.tls.is_none());
    assert!(!config.providers.is_empty() && !config.models.is_empty());
    assert_binary_accepts(SINGLE_NODE, &single_node_env());

    // The variable the header names is needed, and the binary says which field needs it.
    let out = validate_with_binary(SINGLE_NODE, &HashMap::new());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers[0].keys[0]") && err.contains("OPENAI_API_KEY"),
        "{err}"
    );
}

#[test]
fn the_production_example_uses_postgres_redis_vault_and_tls() {
    let config = load(PRODUCTION, &production_env());
    assert!(
        config.database_url.is_some(),
        "PostgreSQL from WARDEN_DATABASE_URL"
    );
    assert_eq!(config.database_schema.as_deref(), Some("warden"));
    assert!(config.redis_url.is_some(), "Redis from WARDEN_REDIS_URL");
    assert_eq!(config.secrets.store, Scheme::Vault);
    assert!(config.secrets.startup_cache);
    assert!(config.tls.is_some(), "gRPC on a public address over TLS");
    assert!(!config.grpc_addr.ip().is_loopback());
    assert!(config.audit.syslog.is_some());
    assert!(
        config
            .providers
            .iter()
            .flat_map(|p| &p.keys)
            .all(|k| k.scheme() == Scheme::Vault),
        "every provider key lives in Vault"
    );
    assert_binary_accepts(PRODUCTION, &production_env());

    // The URL the header asks for is checked: SQLite is not a production store.
    let mut wrong = production_env();
    wrong.insert(
        "WARDEN_DATABASE_URL".into(),
        "sqlite:///var/lib/warden/state.db".into(),
    );
    let out = validate_with_binary(PRODUCTION, &wrong);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_DATABASE_URL"));
}

/// The single-node example really starts: declarations (providers, models with fallbacks,
/// prices, limits) are applied and the control plane serves. Its data dir, address and
/// master key are overridden the documented way (environment over the file).
#[test]
fn the_single_node_example_starts() {
    let data = tempfile::tempdir().unwrap();
    let mut vars = single_node_env();
    vars.insert("WARDEN_DATA_DIR".into(), data.path().display().to_string());
    vars.insert("WARDEN_GRPC_ADDR".into(), "127.0.0.1:0".into());
    // 32 bytes, base64.
    vars.insert(
        "WARDEN_MASTER_KEY".into(),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden-cp"))
        .arg("--config")
        .arg(example(SINGLE_NODE))
        .env_clear()
        .envs(&vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let ready = line.starts_with("WARDEN_CP_ADDR=");
            seen.push(line);
            if ready {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let printed = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let printed = printed.unwrap_or_else(|_| {
        panic!(
            "warden-cp did not start with deploy/config/{SINGLE_NODE}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("WARDEN_ADMIN_TOKEN=wa_")),
        "{printed:?}"
    );
    assert!(data.path().join("state.db").exists(), "SQLite state store");
    // Warden's own secrets are in the state store, encrypted; none in a secret file.
    let own = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = warden_control_plane::store::sqlite::SqliteStore::open(
                &data.path().join("state.db"),
            )
            .await
            .unwrap();
            warden_control_plane::store::StateStore::list_warden_secret_names(&store)
                .await
                .unwrap()
        });
    assert!(
        own.iter().any(|n| n == "warden/credential-pepper"),
        "{own:?}"
    );
    let file = std::fs::read_to_string(data.path().join("secrets.json")).unwrap_or_default();
    assert!(!file.contains("\"warden/"), "own secrets in secrets.json");
}
