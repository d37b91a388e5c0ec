//! Where Warden's own secrets live: the state store's `warden_secrets` table, `enc:v2:`
//! under the master key (`secrets::own`). A data directory written before the table kept
//! them in `secrets.json`; opening it moves them into the table (insert first, remove
//! after), audits the move once by name, and everything signed or hashed with them before
//! still verifies. Runs on SQLite and on the PostgreSQL server named by
//! `WARDEN_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`, a fresh
//! schema per test; an unreachable server fails the test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

use std::collections::HashMap;
use std::path::Path;

use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use warden_control_plane::config::{Config, RawConfig};
use warden_control_plane::secrets::SecretStore as _;
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::secrets::file::FileSecretStore;
use warden_control_plane::service::Actor;
use warden_control_plane::store::StateStore;

const PEPPER: &str = "warden/credential-pepper";
const CHECKPOINT: &str = "warden/audit/checkpoint-key";
/// A provider key in the same file (the `file` backend): it stays there.
const PROVIDER_KEY: &str = "providers/openai/main";

fn config(dir: &Path, master: &str, database: Option<(&str, &str)>) -> Config {
    let mut env: HashMap<String, String> = [
        ("WARDEN_DEV", "true".to_owned()),
        ("WARDEN_DATA_DIR", dir.display().to_string()),
        ("WARDEN_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("WARDEN_MASTER_KEY", master.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some((url, schema)) = database {
        env.insert("WARDEN_DATABASE_URL".into(), url.to_owned());
        env.insert("WARDEN_DATABASE_SCHEMA".into(), schema.to_owned());
    }
    RawConfig::default().build_and_validate(&env).unwrap()
}

fn master(b64: &str) -> MasterKey {
    MasterKey::from_base64(&SecretBox::from(b64)).unwrap()
}

/// Every stored `(name, value)` of `warden_secrets`, read with raw SQL.
async fn table_rows(config: &Config) -> Vec<(String, String)> {
    let sql = "SELECT name, value FROM warden_secrets ORDER BY name";
    match &config.database_url {
        None => {
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                config.data_dir.join("state.db").display()
            ))
            .await
            .unwrap();
            sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
        }
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url.expose_secret())
                .await
                .unwrap();
            let schema = config.database_schema.clone().unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
        }
    }
}

async fn delete_table_rows(store: &dyn StateStore) {
    for name in store.list_warden_secret_names().await.unwrap() {
        store.delete_warden_secret(&name).await.unwrap();
    }
}

async fn migrate_rows(cp: &warden_control_plane::ControlPlane) -> Vec<(String, String)> {
    cp.list_audit(100, Some("secret.migrate"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.result, r.detail))
        .collect()
}

/// The whole story on one backend.
async fn old_data_dir_moves_into_the_table(database: Option<(&str, &str)>) {
    warden_core::install_crypto_providers();
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate_base64();
    let config = config(dir.path(), &key, database);
    let file = FileSecretStore::new(config.data_dir.join("secrets.json"), master(&key));

    // 1. Credentials made with the secrets, then the secrets put back where the old
    //    layout kept them: every `warden/…` value in secrets.json, none in the table.
    let (token, admin, kid, checkpoint_id, old) = {
        let cp = warden_control_plane::open(&config).await.unwrap();
        let admin = cp.bootstrap_admin().await.unwrap().unwrap();
        let (token, _) = cp
            .issue_token(
                &Actor("test".into()),
                "old-subject",
                &["admin".into()],
                &[],
                None,
                None,
            )
            .await
            .unwrap();
        let own = cp.own_secrets();
        let checkpoint =
            warden_control_plane::audit::jobs::CheckpointKey::load_or_create(own.as_ref())
                .await
                .unwrap();
        let kid = cp.signing_key().kid.clone();
        let names = [
            PEPPER.to_owned(),
            CHECKPOINT.to_owned(),
            format!("warden/jwt/{kid}"),
        ];
        let mut old = Vec::new();
        for name in &names {
            let value = own.get(name).await.unwrap();
            file.put(name, &value).await.unwrap();
            old.push((name.clone(), value.expose_secret().to_owned()));
        }
        delete_table_rows(cp.state_store().as_ref()).await;
        (token, admin, kid, checkpoint.key_id().to_owned(), old)
    };
    file.put(PROVIDER_KEY, &SecretString::from("sk-canary-provider"))
        .await
        .unwrap();
    assert!(
        table_rows(&config).await.is_empty(),
        "old layout: empty table"
    );

    // 2. Opening the old data dir moves them.
    let cp = warden_control_plane::open(&config).await.unwrap();
    assert_eq!(
        cp.signing_key().kid,
        kid,
        "the old signing key stays the signer"
    );
    cp.authenticate_admin(Some(token.expose_secret()), "test")
        .await
        .expect("a token signed before the move still verifies");
    cp.authenticate_admin(Some(admin.expose_secret()), "test")
        .await
        .expect("an admin credential hashed with the old pepper still matches");
    let checkpoint =
        warden_control_plane::audit::jobs::CheckpointKey::load(cp.own_secrets().as_ref())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(checkpoint.key_id(), checkpoint_id, "same checkpoint key");

    // The file holds no own secret any more; the provider key stays.
    assert_eq!(file.names().await.unwrap(), vec![PROVIDER_KEY.to_owned()]);
    assert_eq!(
        file.get(PROVIDER_KEY).await.unwrap().expose_secret(),
        "sk-canary-provider"
    );
    // The table holds them, as ciphertexts only.
    let rows = table_rows(&config).await;
    let mut names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = old.iter().map(|(n, _)| n.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (name, value) in &rows {
        assert!(value.starts_with("enc:v2:"), "{name} is not encrypted");
        let (_, plain) = old.iter().find(|(n, _)| n == name).unwrap();
        assert!(!value.contains(plain.as_str()), "{name} in plaintext");
    }
    // Audited once, by name, never by value.
    let audited = migrate_rows(&cp).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    let (result, detail) = &audited[0];
    assert_eq!(result, "ok");
    for (name, value) in &old {
        assert!(detail.contains(name.as_str()), "{detail}");
        assert!(!detail.contains(value.as_str()), "value in the audit row");
    }
    drop(cp);

    // 3. Again: nothing left to move, no second row.
    let cp = warden_control_plane::open(&config).await.unwrap();
    assert_eq!(migrate_rows(&cp).await.len(), 1);
    drop(cp);

    // 4. A crash between the insert and the removal leaves both copies: the next start
    //    finishes the move. A different value in the file never replaces the table's: it
    //    is left in the file, and the row says so.
    let (_, pepper) = old.iter().find(|(n, _)| n == PEPPER).unwrap();
    file.put(PEPPER, &SecretString::from(pepper.clone()))
        .await
        .unwrap();
    file.put(CHECKPOINT, &SecretString::from("00ff"))
        .await
        .unwrap();
    let cp = warden_control_plane::open(&config).await.unwrap();
    cp.authenticate_admin(Some(admin.expose_secret()), "test")
        .await
        .expect("the table's pepper is used");
    let audited = migrate_rows(&cp).await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    let (result, detail) = &audited[0];
    assert_eq!(result, "conflict");
    assert!(
        detail.contains(PEPPER) && detail.contains(CHECKPOINT),
        "{detail}"
    );
    assert_eq!(
        file.names().await.unwrap(),
        vec![PROVIDER_KEY.to_owned(), CHECKPOINT.to_owned()]
    );
    let checkpoint =
        warden_control_plane::audit::jobs::CheckpointKey::load(cp.own_secrets().as_ref())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        checkpoint.key_id(),
        checkpoint_id,
        "the table's checkpoint key"
    );
}

#[tokio::test]
async fn sqlite_data_dir_from_before_the_table_moves_into_it() {
    old_data_dir_moves_into_the_table(None).await;
}

#[tokio::test]
async fn postgres_data_dir_from_before_the_table_moves_into_it() {
    let url = std::env::var("WARDEN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    old_data_dir_moves_into_the_table(Some((&url, &schema))).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}
