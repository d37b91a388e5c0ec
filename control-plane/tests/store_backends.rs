//! One set of test bodies for every [`StateStore`] backend: SQLite on a temp file and
//! PostgreSQL on a fresh schema of the server named by `WARDEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards. An unreachable server
//! fails the PostgreSQL tests; they are never skipped.
//!
//! The bodies cover every store method, the audit chain's tamper detection (rows edited,
//! deleted, inserted and reordered with raw SQL), checkpoint signatures, retention, the
//! one-time chaining of rows written before the chain existed, the migration of
//! PostgreSQL's JSONB list columns to TEXT with rows in them, concurrent appends, and node
//! batches appended once however often they are delivered (`append_audit_new`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use secrecy::SecretString;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use warden_control_plane::audit::{
    self, AuditCheckpoint, ChainProblem, ChainedAudit, VerifyReport, link_hash,
};
use warden_control_plane::domain::{
    ApiFormat, AuditRecord, CredentialRecord, CredentialTable, Limits, Model, NodeRecord,
    PolicyRecord, PolicyTarget, Price, Provider, ProviderKey, SigningKey, Source, TokenRecord,
    VirtualKeyRecord,
};
use warden_control_plane::store::StateStore;
use warden_control_plane::store::postgres::{PostgresSettings, PostgresStore};
use warden_control_plane::store::sqlite::SqliteStore;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

// ---- fixtures ---------------------------------------------------------------------------

fn database_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// The URL with any password masked, for failure messages.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn unreachable_database(url: &str, e: &dyn std::fmt::Display) -> ! {
    panic!(
        "PostgreSQL test database at {} is unreachable: {e}. These tests need a real server: \
         start PostgreSQL (trust auth on 127.0.0.1:5432, database `test`) or set \
         WARDEN_TEST_DATABASE_URL",
        shown_url(url)
    )
}

enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

enum Target {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

/// A fresh, empty database for one test: a raw pool for tampering, and the store on top.
struct Backend {
    target: Target,
    raw: Raw,
}

impl Backend {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
        let raw = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        Self {
            target: Target::Sqlite { _dir: dir, path },
            raw: Raw::Sqlite(raw),
        }
    }

    async fn postgres() -> Self {
        let url = database_url();
        let options =
            PgConnectOptions::from_str(&url).unwrap_or_else(|e| unreachable_database(&url, &e));
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        // One plain connection first, so that a refused connection shows as such.
        let mut admin = tokio::time::timeout(Duration::from_secs(10), options.connect())
            .await
            .unwrap_or_else(|e| unreachable_database(&url, &e))
            .unwrap_or_else(|e| unreachable_database(&url, &e));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let raw = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .unwrap();
        Self {
            target: Target::Postgres { url, schema },
            raw: Raw::Postgres(raw),
        }
    }

    /// Opens the store under test (runs migrations and the legacy backfill).
    async fn open(&self) -> Arc<dyn StateStore> {
        match &self.target {
            Target::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await.unwrap()),
            Target::Postgres { url, schema } => {
                let settings = PostgresSettings {
                    schema: Some(schema.clone()),
                    max_connections: 8,
                    acquire_timeout: Duration::from_secs(10),
                    ..PostgresSettings::default()
                };
                Arc::new(
                    PostgresStore::connect(&SecretString::from(url.clone()), &settings)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    fn migrations(&self) -> PathBuf {
        let backend = match self.target {
            Target::Sqlite { .. } => "sqlite",
            Target::Postgres { .. } => "postgres",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend)
    }

    /// Runs raw SQL (several statements allowed), as an attacker with database access would.
    async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
            Raw::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        }
        .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.raw {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .unwrap()
    }

    /// Inserts a chained row directly (a forger who knows the algorithm).
    async fn insert_row(&self, row: &ChainedAudit) {
        let ph = self.placeholders(10);
        let sql = format!(
            "INSERT INTO audit (id, seq, timestamp_ms, action, actor, subject, result, detail, prev_hash, hash) VALUES ({ph})"
        );
        let r = &row.record;
        macro_rules! bound {
            ($q:expr) => {
                $q.bind(r.id.clone())
                    .bind(i64::try_from(row.seq).unwrap())
                    .bind(r.timestamp_ms)
                    .bind(r.action.clone())
                    .bind(r.actor.clone())
                    .bind(r.subject.clone())
                    .bind(r.result.clone())
                    .bind(r.detail.clone())
                    .bind(row.prev_hash.clone())
                    .bind(row.hash.clone())
            };
        }
        match &self.raw {
            Raw::Sqlite(p) => bound!(sqlx::query(sqlx::AssertSqlSafe(sql)))
                .execute(p)
                .await
                .map(|_| ()),
            Raw::Postgres(p) => bound!(sqlx::query(sqlx::AssertSqlSafe(sql)))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .unwrap();
    }

    /// Rewrites a stored row's content, links and hash in place.
    async fn rewrite_row(&self, row: &ChainedAudit) {
        self.exec(&format!("DELETE FROM audit WHERE seq = {}", row.seq))
            .await;
        self.insert_row(row).await;
    }

    fn placeholders(&self, n: usize) -> String {
        (1..=n)
            .map(|i| match self.raw {
                Raw::Sqlite(_) => "?".to_owned(),
                Raw::Postgres(_) => format!("${i}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let Target::Postgres { url, schema } = &self.target else {
            return;
        };
        let (url, schema) = (url.clone(), schema.clone());
        // Runs even when the test panicked: a fresh runtime on a plain thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url)
                    .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&pool)
                .await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test schema {}",
                self.target_schema()
            );
        }
    }
}

impl Backend {
    fn target_schema(&self) -> &str {
        match &self.target {
            Target::Postgres { schema, .. } => schema,
            Target::Sqlite { .. } => "",
        }
    }
}

/// Generates one `#[tokio::test]` per body and backend: `sqlite::name` and `postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::Backend::sqlite().await;
                    super::bodies::$name(&backend).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::Backend::postgres().await;
                    super::bodies::$name(&backend).await;
                }
            )*
        }
    };
}

on_every_backend!(
    policies_prices_and_key_state,
    providers_keys_and_models,
    signing_keys,
    tokens_revoke_once_and_meta_round_trips,
    virtual_keys,
    credentials,
    bootstrap_admin_once,
    nodes,
    audit_append_list_and_verify,
    tamper_edited_row,
    tamper_deleted_row,
    tamper_inserted_row,
    tamper_reordered_rows,
    tamper_tail,
    checkpoints_sign_and_verify,
    checkpoint_signature_failures,
    checkpoint_detects_rewritten_chain,
    retention_keeps_chain_verifiable,
    legacy_rows_are_chained_once,
    lists_stored_before_migration_8_read_back,
    malformed_rows_are_reported,
    concurrent_appends_form_one_chain,
    redelivered_batches_append_only_new_ids,
    concurrent_redelivered_batches_store_each_id_once,
    warden_secrets_hold_only_ciphertexts,
    ip_blocks_replace_delete_and_list,
);

// ---- helpers ----------------------------------------------------------------------------

fn record(i: u64, ts: i64) -> AuditRecord {
    AuditRecord {
        id: format!("{ts:013}-{i:06}"),
        timestamp_ms: ts,
        action: if i.is_multiple_of(2) {
            "token.issue"
        } else {
            "token.revoke"
        }
        .to_owned(),
        actor: "admin:ops".into(),
        subject: format!("jti-{i}"),
        result: "ok".into(),
        detail: format!("row {i} — ünïcode ok"),
    }
}

async fn append_n(store: &dyn StateStore, n: u64, ts0: i64) {
    for i in 1..=n {
        store
            .append_audit(&record(i, ts0 + i64::try_from(i).unwrap()))
            .await
            .unwrap();
    }
}

async fn verify(store: &dyn StateStore, keys: &HashMap<String, Vec<u8>>) -> VerifyReport {
    audit::verify(store, keys, None).await.unwrap()
}

async fn all_rows(store: &dyn StateStore) -> Vec<ChainedAudit> {
    store.list_audit_range(0, 10_000).await.unwrap()
}

fn no_keys() -> HashMap<String, Vec<u8>> {
    HashMap::new()
}

fn keypair() -> (Ed25519KeyPair, HashMap<String, Vec<u8>>) {
    let key = Ed25519KeyPair::generate().unwrap();
    let keys = HashMap::from([("cp-1".to_owned(), key.public_key().as_ref().to_vec())]);
    (key, keys)
}

mod bodies {
    use super::*;

    pub async fn providers_keys_and_models(b: &Backend) {
        let s = b.open().await;
        let mut p = Provider {
            name: "p".into(),
            format: ApiFormat::OpenAi,
            base_url: "https://x/v1".into(),
            source: Source::Admin,
            created_at: 1,
            passthrough: false,
            drop_params: Vec::new(),
            ca_pem: None,
        };
        s.upsert_provider(&p).await.unwrap();
        p.format = ApiFormat::Anthropic;
        p.base_url = "https://y/v1".into();
        p.source = Source::Config;
        p.ca_pem = Some("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n".into());
        s.upsert_provider(&p).await.unwrap();
        s.upsert_provider(&Provider {
            name: "a".into(),
            format: ApiFormat::Echo,
            base_url: "builtin:echo".into(),
            source: Source::Builtin,
            created_at: 2,
            passthrough: false,
            drop_params: Vec::new(),
            ca_pem: None,
        })
        .await
        .unwrap();
        let providers = s.list_providers().await.unwrap();
        assert_eq!(
            providers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "p"]
        );
        assert_eq!(providers[1].format, ApiFormat::Anthropic);
        assert_eq!(providers[1].base_url, "https://y/v1");
        assert_eq!(providers[1].source, Source::Config);
        assert_eq!(providers[1].created_at, 1, "upsert keeps created_at");
        assert_eq!(
            providers[1].ca_pem.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"),
            "the CA bundle is stored and updated"
        );
        assert_eq!(providers[0].ca_pem, None);

        for (id, at) in [("k2", 5), ("k1", 5), ("k0", 9)] {
            s.insert_provider_key(&ProviderKey {
                id: id.into(),
                provider: "p".into(),
                secret_name: format!("providers/p/{id}"),
                fingerprint: format!("fp-{id}"),
                created_at: at,
                disabled_reason: None,
                disabled_at: None,
                health_epoch: 0,
            })
            .await
            .unwrap();
        }
        let dup = s
            .insert_provider_key(&ProviderKey {
                id: "k1".into(),
                provider: "p".into(),
                secret_name: "x".into(),
                fingerprint: "x".into(),
                created_at: 1,
                disabled_reason: None,
                disabled_at: None,
                health_epoch: 0,
            })
            .await;
        assert!(dup.is_err(), "duplicate key id is rejected");
        let orphan = s
            .insert_provider_key(&ProviderKey {
                id: "k9".into(),
                provider: "nope".into(),
                secret_name: "x".into(),
                fingerprint: "x".into(),
                created_at: 1,
                disabled_reason: None,
                disabled_at: None,
                health_epoch: 0,
            })
            .await;
        assert!(orphan.is_err(), "a key needs its provider");
        let keys = s.list_provider_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["k1", "k2", "k0"],
            "ordered by provider, created_at, id"
        );
        assert_eq!(keys[0].secret_name, "providers/p/k1");
        assert_eq!(keys[0].fingerprint, "fp-k1");
        assert!(s.delete_provider_key("p", "k2").await.unwrap());
        assert!(!s.delete_provider_key("p", "k2").await.unwrap());
        assert!(!s.delete_provider_key("a", "k1").await.unwrap());

        let mut m = Model {
            alias: "m".into(),
            provider: "p".into(),
            upstream_model: "m-1".into(),
            source: Source::Admin,
            created_at: 1,
            fallbacks: Vec::new(),
            weight: 1,
        };
        s.upsert_model(&m).await.unwrap();
        m.upstream_model = "m-2".into();
        s.upsert_model(&m).await.unwrap();
        s.upsert_model(&Model {
            alias: "e".into(),
            provider: "a".into(),
            upstream_model: "echo".into(),
            source: Source::Builtin,
            created_at: 3,
            fallbacks: Vec::new(),
            weight: 1,
        })
        .await
        .unwrap();
        let models = s.list_models().await.unwrap();
        assert_eq!(
            models.iter().map(|m| m.alias.as_str()).collect::<Vec<_>>(),
            ["e", "m"]
        );
        assert_eq!(models[1].upstream_model, "m-2");
        assert!(s.delete_model("e").await.unwrap());
        assert!(!s.delete_model("e").await.unwrap());

        // Deleting a provider cascades to its keys and models.
        assert!(s.delete_provider("p").await.unwrap());
        assert!(s.list_provider_keys().await.unwrap().is_empty());
        assert!(s.list_models().await.unwrap().is_empty());
        assert!(!s.delete_provider("p").await.unwrap());
        assert_eq!(s.list_providers().await.unwrap().len(), 1);
    }

    pub async fn policies_prices_and_key_state(b: &Backend) {
        let s = b.open().await;
        let limits = Limits {
            rpm: 600,
            tpm: 90_000,
            max_parallel: 4,
            max_budget_micros: 25_000_000,
            budget_period_secs: 86_400,
            max_tokens: 4096,
        };
        for target in [
            PolicyTarget::Global,
            PolicyTarget::Subject("svc-a".into()),
            PolicyTarget::VirtualKey("vk_1".into()),
            PolicyTarget::Model("gpt-4o".into()),
        ] {
            s.upsert_policy(&PolicyRecord {
                target: target.clone(),
                limits,
                source: Source::Admin,
                updated_at: 5,
            })
            .await
            .unwrap();
        }
        let mut changed = limits;
        changed.rpm = 60;
        s.upsert_policy(&PolicyRecord {
            target: PolicyTarget::Subject("svc-a".into()),
            limits: changed,
            source: Source::Config,
            updated_at: 6,
        })
        .await
        .unwrap();
        let all = s.list_policies().await.unwrap();
        assert_eq!(all.len(), 4);
        let sub = all
            .iter()
            .find(|p| p.target == PolicyTarget::Subject("svc-a".into()))
            .unwrap();
        assert_eq!(sub.limits, changed);
        assert_eq!(sub.source, Source::Config);
        assert!(s.delete_policy(&PolicyTarget::Global).await.unwrap());
        assert!(!s.delete_policy(&PolicyTarget::Global).await.unwrap());
        assert_eq!(s.list_policies().await.unwrap().len(), 3);

        s.upsert_price(
            "gpt-4o",
            Price {
                input_per_mtok: 2.5,
                output_per_mtok: 10.0,
            },
        )
        .await
        .unwrap();
        s.upsert_price(
            "gpt-4o",
            Price {
                input_per_mtok: 3.0,
                output_per_mtok: 12.5,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            s.list_prices().await.unwrap(),
            vec![(
                "gpt-4o".to_owned(),
                Price {
                    input_per_mtok: 3.0,
                    output_per_mtok: 12.5
                }
            )]
        );

        s.upsert_provider(&Provider {
            name: "p".into(),
            format: ApiFormat::OpenAi,
            base_url: "https://x/v1".into(),
            source: Source::Admin,
            created_at: 1,
            passthrough: false,
            drop_params: Vec::new(),
            ca_pem: None,
        })
        .await
        .unwrap();
        s.insert_provider_key(&ProviderKey {
            id: "k".into(),
            provider: "p".into(),
            secret_name: "providers/p/k".into(),
            fingerprint: "fp".into(),
            created_at: 1,
            disabled_reason: None,
            disabled_at: None,
            health_epoch: 0,
        })
        .await
        .unwrap();
        assert!(
            s.set_provider_key_state("p", "k", Some("quarantined: leak"), Some(9), false)
                .await
                .unwrap()
        );
        let k = s.list_provider_keys().await.unwrap().remove(0);
        assert_eq!(k.disabled_reason.as_deref(), Some("quarantined: leak"));
        assert_eq!((k.disabled_at, k.health_epoch), (Some(9), 0));
        assert!(
            s.set_provider_key_state("p", "k", None, None, true)
                .await
                .unwrap()
        );
        let k = s.list_provider_keys().await.unwrap().remove(0);
        assert_eq!(
            (k.disabled_reason, k.disabled_at, k.health_epoch),
            (None, None, 1)
        );
        assert!(
            !s.set_provider_key_state("p", "nope", None, None, true)
                .await
                .unwrap()
        );
        assert!(
            s.set_provider_key_fingerprint("p", "k", "fp2")
                .await
                .unwrap()
        );
        assert_eq!(s.list_provider_keys().await.unwrap()[0].fingerprint, "fp2");
        assert!(
            !s.set_provider_key_fingerprint("p", "nope", "x")
                .await
                .unwrap()
        );

        s.upsert_model(&Model {
            alias: "m".into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            source: Source::Admin,
            created_at: 1,
            fallbacks: vec!["a".into(), "b".into()],
            weight: 1,
        })
        .await
        .unwrap();
        assert_eq!(s.list_models().await.unwrap()[0].fallbacks, ["a", "b"]);
        let d = warden_control_plane::domain::Deployment {
            alias: "m".into(),
            provider: "p".into(),
            upstream_model: "m-east".into(),
            weight: 2,
        };
        s.upsert_deployment(&d).await.unwrap();
        s.upsert_deployment(&warden_control_plane::domain::Deployment {
            weight: 5,
            ..d.clone()
        })
        .await
        .unwrap();
        let all = s.list_deployments().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].weight, 5);
        assert!(s.delete_deployment("m", "p", "m-east").await.unwrap());
        assert!(!s.delete_deployment("m", "p", "m-east").await.unwrap());
        s.upsert_deployment(&d).await.unwrap();
        assert!(s.delete_model("m").await.unwrap());
        assert!(
            s.list_deployments().await.unwrap().is_empty(),
            "deployments go with their model"
        );
    }

    /// Warden's own secrets: the table round-trips through `OwnSecrets`, holds only
    /// `enc:v2:` values bound to their names, inserts once, swaps only an expected value,
    /// lists names and deletes.
    pub async fn warden_secrets_hold_only_ciphertexts(b: &Backend) {
        use secrecy::{ExposeSecret as _, SecretBox};
        use warden_control_plane::secrets::SecretStore as _;
        use warden_control_plane::secrets::cipher::MasterKey;
        use warden_control_plane::secrets::own::OwnSecrets;
        let key = |b64: &str| Arc::new(MasterKey::from_base64(&SecretBox::from(b64)).unwrap());
        let b64 = MasterKey::generate_base64();
        let s = b.open().await;
        let own = OwnSecrets::new(Arc::clone(&s), key(&b64));
        assert!(own.names().await.unwrap().is_empty());
        own.put(
            "warden/credential-pepper",
            &SecretString::from("canary-pepper-1"),
        )
        .await
        .unwrap();
        own.put("warden/jwt/k1", &SecretString::from("canary-jwt-1"))
            .await
            .unwrap();
        assert_eq!(
            own.get("warden/credential-pepper")
                .await
                .unwrap()
                .expose_secret(),
            "canary-pepper-1"
        );
        // Replacing keeps one row: created_at stays, updated_at follows the last write.
        s.put_warden_secret("warden/jwt/k1", "enc:v1:placeholder", 5)
            .await
            .unwrap();
        own.put("warden/jwt/k1", &SecretString::from("canary-jwt-2"))
            .await
            .unwrap();
        assert_eq!(
            own.get("warden/jwt/k1").await.unwrap().expose_secret(),
            "canary-jwt-2"
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM warden_secrets WHERE name = 'warden/jwt/k1' AND created_at > 5 AND updated_at >= created_at")
                .await,
            1
        );
        assert_eq!(
            own.names().await.unwrap(),
            vec!["warden/credential-pepper", "warden/jwt/k1"]
        );
        // At rest: ciphertexts only.
        assert_eq!(
            b.count("SELECT COUNT(*) FROM warden_secrets WHERE value LIKE '%canary%'")
                .await,
            0
        );
        assert_eq!(
            b.count("SELECT COUNT(*) FROM warden_secrets WHERE value NOT LIKE 'enc:v2:%'")
                .await,
            0
        );
        // insert only when absent.
        let sealed = s.get_warden_secret("warden/jwt/k1").await.unwrap().unwrap();
        assert!(
            !s.insert_warden_secret("warden/jwt/k1", "enc:v1:other", 9)
                .await
                .unwrap()
        );
        assert_eq!(
            s.get_warden_secret("warden/jwt/k1").await.unwrap(),
            Some(sealed.clone())
        );
        // Compare-and-swap (master-key rotation): only while the value is the one expected.
        assert!(
            !s.replace_warden_secret("warden/jwt/k1", "enc:v2:stale", "enc:v2:other", 9)
                .await
                .unwrap()
        );
        assert!(
            s.replace_warden_secret("warden/jwt/k1", &sealed, &sealed, 9)
                .await
                .unwrap()
        );
        assert_eq!(
            s.get_warden_secret("warden/jwt/k1").await.unwrap(),
            Some(sealed.clone())
        );
        // A value copied under another name does not decrypt (the name is bound in).
        assert!(
            s.insert_warden_secret("warden/jwt/k2", &sealed, 9)
                .await
                .unwrap()
        );
        let err = own.get("warden/jwt/k2").await.unwrap_err();
        assert_eq!(err.metric_label(), "decrypt");
        assert!(!err.to_string().contains("canary"), "{err}");
        // Another master key reads nothing, and says so without the value.
        let other = OwnSecrets::new(Arc::clone(&s), key(&MasterKey::generate_base64()));
        let err = other.get("warden/jwt/k1").await.unwrap_err();
        assert_eq!(err.metric_label(), "unknown_master_key");
        assert!(err.to_string().contains("warden/jwt/k1"), "{err}");
        assert_eq!(
            own.get("warden/nope").await.unwrap_err().metric_label(),
            "not_found"
        );
        // Replicas starting together on one database agree on the first value written.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let own = OwnSecrets::new(Arc::clone(&s), key(&b64));
                tokio::spawn(async move {
                    own.put_if_absent("warden/race", &SecretString::from(format!("v{i}")))
                        .await
                        .unwrap()
                        .expose_secret()
                        .to_owned()
                })
            })
            .collect();
        let mut won = Vec::new();
        for r in racers {
            won.push(r.await.unwrap());
        }
        let stored = own.get("warden/race").await.unwrap();
        assert!(
            won.iter().all(|v| v == stored.expose_secret()),
            "{won:?} vs one stored value"
        );
        own.delete("warden/race").await.unwrap();
        assert!(s.delete_warden_secret("warden/jwt/k2").await.unwrap());
        assert!(!s.delete_warden_secret("warden/jwt/k2").await.unwrap());
        own.delete("warden/jwt/k1").await.unwrap();
        assert_eq!(own.names().await.unwrap(), vec!["warden/credential-pepper"]);
    }

    pub async fn ip_blocks_replace_delete_and_list(b: &Backend) {
        let s = b.open().await;
        let block = |cidr: &str, expires_at| warden_control_plane::domain::IpBlockRecord {
            cidr: cidr.into(),
            reason: "incident 7".into(),
            created_by: "admin:ops".into(),
            created_at: 1_700_000_000,
            expires_at,
        };
        s.put_ip_block(&block("203.0.113.0/24", None))
            .await
            .unwrap();
        s.put_ip_block(&block("192.0.2.7/32", Some(1_800_000_000)))
            .await
            .unwrap();
        // Setting a network again replaces its block.
        let mut again = block("203.0.113.0/24", Some(1_900_000_000));
        again.reason = "renewed".into();
        s.put_ip_block(&again).await.unwrap();
        let listed = s.list_ip_blocks().await.unwrap();
        assert_eq!(
            listed,
            vec![block("192.0.2.7/32", Some(1_800_000_000)), again.clone()]
        );
        assert!(s.delete_ip_block("192.0.2.7/32").await.unwrap());
        assert!(!s.delete_ip_block("192.0.2.7/32").await.unwrap());
        assert_eq!(s.list_ip_blocks().await.unwrap(), vec![again]);
    }

    pub async fn signing_keys(b: &Backend) {
        let s = b.open().await;
        for (kid, at) in [("b", 2), ("a", 2), ("c", 1)] {
            s.insert_signing_key(&SigningKey {
                kid: kid.into(),
                algorithm: "EdDSA".into(),
                secret_name: format!("jwt/{kid}"),
                created_at: at,
            })
            .await
            .unwrap();
        }
        let keys = s.list_signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["c", "a", "b"]
        );
        assert_eq!(keys[0].algorithm, "EdDSA");
        assert_eq!(keys[0].secret_name, "jwt/c");
        assert!(
            s.insert_signing_key(&keys[0]).await.is_err(),
            "kid is unique"
        );
    }

    pub async fn tokens_revoke_once_and_meta_round_trips(b: &Backend) {
        let s = b.open().await;
        let t = TokenRecord {
            jti: "j".into(),
            subject: "s".into(),
            scopes: vec!["read".into(), "write".into()],
            models: vec!["*".into(), "gpt-4o".into()],
            kid: "k".into(),
            issued_at: 10,
            expires_at: 20,
            revoked_at: None,
        };
        s.insert_token(&t).await.unwrap();
        s.insert_token(&TokenRecord {
            jti: "i".into(),
            issued_at: 5,
            scopes: vec![],
            models: vec![],
            ..t.clone()
        })
        .await
        .unwrap();
        assert!(s.insert_token(&t).await.is_err(), "jti is unique");
        let listed = s.list_tokens().await.unwrap();
        assert_eq!(
            listed.iter().map(|t| t.jti.as_str()).collect::<Vec<_>>(),
            ["i", "j"]
        );
        assert!(listed[0].scopes.is_empty());
        let got = s.get_token("j").await.unwrap().unwrap();
        assert_eq!(got.scopes, ["read", "write"]);
        assert_eq!(got.models, ["*", "gpt-4o"]);
        assert_eq!((got.issued_at, got.expires_at), (10, 20));
        assert_eq!(got.kid, "k");
        assert_eq!(got.subject, "s");
        assert!(s.get_token("nope").await.unwrap().is_none());

        assert!(s.revoke_token("j", 5).await.unwrap());
        assert!(!s.revoke_token("j", 6).await.unwrap());
        assert!(!s.revoke_token("nope", 6).await.unwrap());
        assert_eq!(s.get_token("j").await.unwrap().unwrap().revoked_at, Some(5));

        assert_eq!(s.get_meta("v").await.unwrap(), None);
        s.set_meta("v", "3").await.unwrap();
        s.set_meta("v", "4").await.unwrap();
        assert_eq!(s.get_meta("v").await.unwrap().as_deref(), Some("4"));
    }

    pub async fn virtual_keys(b: &Backend) {
        let s = b.open().await;
        let k = VirtualKeyRecord {
            id: "vk2".into(),
            hash: "h2".into(),
            name: "team-a".into(),
            owner: "admin".into(),
            scopes: vec!["write".into()],
            models: vec!["gpt-4o".into()],
            created_at: 7,
            expires_at: 0,
            revoked_at: None,
            previous_hash: None,
            previous_expires_at: 0,
        };
        s.insert_virtual_key(&k).await.unwrap();
        s.insert_virtual_key(&VirtualKeyRecord {
            id: "vk1".into(),
            hash: "h1".into(),
            expires_at: 99,
            ..k.clone()
        })
        .await
        .unwrap();
        let dup_hash = s
            .insert_virtual_key(&VirtualKeyRecord {
                id: "vk3".into(),
                ..k.clone()
            })
            .await;
        assert!(dup_hash.is_err(), "hash is unique");
        let keys = s.list_virtual_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["vk1", "vk2"]
        );
        assert_eq!(keys[0].expires_at, 99);
        assert_eq!(keys[1].scopes, ["write"]);
        assert_eq!(keys[1].models, ["gpt-4o"]);
        assert_eq!(keys[1].name, "team-a");
        assert_eq!(keys[1].owner, "admin");
        assert!(s.revoke_virtual_key("vk2", 8).await.unwrap());
        assert!(!s.revoke_virtual_key("vk2", 9).await.unwrap());
        assert!(!s.revoke_virtual_key("nope", 9).await.unwrap());
        let keys = s.list_virtual_keys().await.unwrap();
        assert_eq!(keys[1].revoked_at, Some(8));
        assert_eq!(keys[0].revoked_at, None);

        // Rotation keeps the old hash for a grace period; a revoked key cannot rotate.
        assert!(s.rotate_virtual_key("vk1", "h1-new", 500).await.unwrap());
        let keys = s.list_virtual_keys().await.unwrap();
        assert_eq!(keys[0].hash, "h1-new");
        assert_eq!(keys[0].previous_hash.as_deref(), Some("h1"));
        assert_eq!(keys[0].previous_expires_at, 500);
        assert!(!s.rotate_virtual_key("vk2", "h2-new", 500).await.unwrap());
        assert!(!s.rotate_virtual_key("nope", "x", 1).await.unwrap());
    }

    pub async fn bootstrap_admin_once(b: &Backend) {
        let s = b.open().await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = std::sync::Arc::clone(&s);
                tokio::spawn(async move {
                    s.insert_bootstrap_admin(&CredentialRecord {
                        id: format!("boot-{i}"),
                        hash: format!("boot-hash-{i}"),
                        name: "bootstrap".into(),
                        created_at: 1,
                        revoked_at: None,
                        role: "admin".into(),
                        expires_at: None,
                        cert_spki_sha256: None,
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "exactly one bootstrap wins");
        assert_eq!(
            s.count_credentials(CredentialTable::Admin).await.unwrap(),
            1
        );
    }

    pub async fn credentials(b: &Backend) {
        let s = b.open().await;
        for table in [CredentialTable::Admin, CredentialTable::Node] {
            assert_eq!(s.count_credentials(table).await.unwrap(), 0);
            for (id, name) in [("c1", "ops"), ("c2", "ops"), ("c3", "edge-1")] {
                s.insert_credential(
                    table,
                    &CredentialRecord {
                        id: id.into(),
                        hash: format!("hash-{id}"),
                        name: name.into(),
                        created_at: 1,
                        revoked_at: None,
                        role: "admin".into(),
                        expires_at: None,
                        cert_spki_sha256: None,
                    },
                )
                .await
                .unwrap();
            }
            assert_eq!(s.count_credentials(table).await.unwrap(), 3);
            let found = s.find_credential(table, "hash-c3").await.unwrap().unwrap();
            assert_eq!(
                (found.id.as_str(), found.name.as_str(), found.created_at),
                ("c3", "edge-1", 1)
            );
            assert!(s.find_credential(table, "nope").await.unwrap().is_none());
            assert_eq!(
                s.revoke_credentials_named(table, "ops", 5).await.unwrap(),
                2
            );
            assert_eq!(
                s.revoke_credentials_named(table, "ops", 6).await.unwrap(),
                0
            );
            assert_eq!(
                s.find_credential(table, "hash-c1")
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at,
                Some(5)
            );
            assert_eq!(
                s.count_credentials(table).await.unwrap(),
                3,
                "revoked still counted"
            );
            let listed = s.list_credentials(table).await.unwrap();
            assert_eq!(
                listed
                    .iter()
                    .map(|c| (c.id.as_str(), c.revoked_at))
                    .collect::<Vec<_>>(),
                [("c1", Some(5)), ("c2", Some(5)), ("c3", None)]
            );
            assert!(s.revoke_credential(table, "c3", 7).await.unwrap());
            assert!(!s.revoke_credential(table, "c3", 8).await.unwrap());
            assert!(!s.revoke_credential(table, "nope", 8).await.unwrap());
            assert_eq!(
                s.find_credential(table, "hash-c3")
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at,
                Some(7)
            );
        }
        // The two tables are separate.
        s.insert_credential(
            CredentialTable::Admin,
            &CredentialRecord {
                id: "only-admin".into(),
                hash: "only-admin".into(),
                name: "x".into(),
                created_at: 1,
                revoked_at: None,
                role: "admin".into(),
                expires_at: None,
                cert_spki_sha256: None,
            },
        )
        .await
        .unwrap();
        assert!(
            s.find_credential(CredentialTable::Node, "only-admin")
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn nodes(b: &Backend) {
        let s = b.open().await;
        let mut n = NodeRecord {
            node_id: "edge-2".into(),
            credential_id: "c1".into(),
            acked_version: 3,
            last_seen: 100,
            software_version: "0.1.0".into(),
            replica_id: "cp-1".into(),
        };
        s.upsert_node(&n).await.unwrap();
        s.upsert_node(&NodeRecord {
            node_id: "edge-1".into(),
            ..n.clone()
        })
        .await
        .unwrap();
        n.acked_version = u64::from(u32::MAX) + 7;
        n.last_seen = 200;
        n.software_version = "0.2.0".into();
        n.replica_id = "cp-2".into();
        s.upsert_node(&n).await.unwrap();
        let nodes = s.list_nodes().await.unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
            ["edge-1", "edge-2"]
        );
        assert_eq!(nodes[1].acked_version, u64::from(u32::MAX) + 7);
        assert_eq!(nodes[1].last_seen, 200);
        assert_eq!(nodes[1].software_version, "0.2.0");
        assert_eq!(
            nodes[1].replica_id, "cp-2",
            "a node moves to another replica"
        );
        assert_eq!(nodes[0].acked_version, 3);
        assert_eq!(nodes[0].replica_id, "cp-1");
    }

    pub async fn audit_append_list_and_verify(b: &Backend) {
        let s = b.open().await;
        assert_eq!(s.audit_head().await.unwrap(), audit::ChainHead::genesis());
        let empty = verify(s.as_ref(), &no_keys()).await;
        assert!(empty.is_valid(), "{empty:?}");
        assert_eq!(empty.rows_checked, 0);

        let mut prev = audit::GENESIS_HASH.to_owned();
        for i in 1..=6u64 {
            let r = record(i, 1000 + i64::try_from(i).unwrap());
            let link = s.append_audit(&r).await.unwrap();
            assert_eq!(link.seq, i);
            assert_eq!(link.prev_hash, prev);
            assert_eq!(link.hash, link_hash(&prev, i, &r).unwrap());
            prev = link.hash;
        }
        let head = s.audit_head().await.unwrap();
        assert_eq!((head.seq, head.hash.as_str()), (6, prev.as_str()));
        assert!(
            s.append_audit(&record(1, 1001)).await.is_err(),
            "event ids are unique"
        );
        assert_eq!(
            s.audit_head().await.unwrap().seq,
            6,
            "a failed append does not move the head"
        );

        let newest_first = s.list_audit(100, None).await.unwrap();
        assert_eq!(
            newest_first
                .iter()
                .map(|r| r.subject.as_str())
                .collect::<Vec<_>>(),
            ["jti-6", "jti-5", "jti-4", "jti-3", "jti-2", "jti-1"]
        );
        assert_eq!(newest_first[0].detail, "row 6 — ünïcode ok");
        let issues = s.list_audit(2, Some("token.issue")).await.unwrap();
        assert_eq!(
            issues
                .iter()
                .map(|r| r.subject.as_str())
                .collect::<Vec<_>>(),
            ["jti-6", "jti-4"]
        );

        // A batch is one transaction: all rows or none.
        let batch: Vec<_> = (7..=9u64)
            .map(|i| record(i, 1000 + i64::try_from(i).unwrap()))
            .collect();
        let links = s.append_audit_batch(&batch).await.unwrap();
        assert_eq!(links.iter().map(|l| l.seq).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(links[0].prev_hash, prev);
        assert_eq!(links[1].prev_hash, links[0].hash);
        assert!(s.append_audit_batch(&[]).await.unwrap().is_empty());
        let bad = [record(10, 1010), record(3, 1003)];
        assert!(
            s.append_audit_batch(&bad).await.is_err(),
            "duplicate id in the batch"
        );
        assert_eq!(s.audit_head().await.unwrap().seq, 9);
        assert_eq!(
            s.list_audit_range(10, 10).await.unwrap().len(),
            0,
            "nothing of a failed batch stays"
        );
        s.append_audit(&record(10, 1010)).await.unwrap();

        let range = s.list_audit_range(3, 2).await.unwrap();
        assert_eq!(range.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(range[1].prev_hash, range[0].hash);
        assert_eq!(range[0].record.subject, "jti-3");
        assert!(s.list_audit_range(11, 10).await.unwrap().is_empty());

        let report = verify(s.as_ref(), &no_keys()).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.rows_checked, report.last_seq), (10, 10));
        let from = audit::verify(s.as_ref(), &no_keys(), Some(4))
            .await
            .unwrap();
        assert!(from.is_valid(), "{from:?}");
    }

    pub async fn tamper_edited_row(b: &Backend) {
        let s = b.open().await;
        append_n(s.as_ref(), 10, 1000).await;
        b.exec("UPDATE audit SET actor = 'mallory' WHERE seq = 5")
            .await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::Edited { seq: 5 }));
        assert_eq!(report.last_seq, 4);
    }

    pub async fn tamper_deleted_row(b: &Backend) {
        let s = b.open().await;
        append_n(s.as_ref(), 10, 1000).await;
        b.exec("DELETE FROM audit WHERE seq = 5").await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::Missing { seq: 5 }));

        // Deleting the first row is a deletion too, not a new start.
        b.exec("DELETE FROM audit WHERE seq = 1").await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::Missing { seq: 1 }));
    }

    pub async fn tamper_inserted_row(b: &Backend) {
        let s = b.open().await;
        append_n(s.as_ref(), 10, 1000).await;
        let rows = all_rows(s.as_ref()).await;
        // Make room at 5, then forge a row that links correctly to row 4.
        b.exec(
            "UPDATE audit SET seq = seq + 1000000 WHERE seq >= 5;
             UPDATE audit SET seq = seq - 999999 WHERE seq >= 1000000;",
        )
        .await;
        let forged = record(99, 1004);
        b.insert_row(&ChainedAudit {
            seq: 5,
            prev_hash: rows[3].hash.clone(),
            hash: link_hash(&rows[3].hash, 5, &forged).unwrap(),
            record: forged,
        })
        .await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::Inserted { seq: 5 }));

        // A row appended behind the store's back, even with a correct link and hash, lies
        // beyond the chain head.
        let b2 = s.audit_head().await.unwrap();
        assert_eq!(b2.seq, 10);
        b.exec("DELETE FROM audit WHERE seq = 5").await;
        b.exec(
            "UPDATE audit SET seq = seq + 1000000 WHERE seq >= 6;
             UPDATE audit SET seq = seq - 1000001 WHERE seq >= 1000000;",
        )
        .await;
        assert!(verify(s.as_ref(), &no_keys()).await.is_valid());
        let extra = record(100, 2000);
        b.insert_row(&ChainedAudit {
            seq: 11,
            prev_hash: rows[9].hash.clone(),
            hash: link_hash(&rows[9].hash, 11, &extra).unwrap(),
            record: extra,
        })
        .await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::Inserted { seq: 11 }));
    }

    pub async fn tamper_reordered_rows(b: &Backend) {
        let s = b.open().await;
        append_n(s.as_ref(), 10, 1000).await;
        b.exec(
            "UPDATE audit SET seq = 1000000 WHERE seq = 5;
             UPDATE audit SET seq = 5 WHERE seq = 6;
             UPDATE audit SET seq = 6 WHERE seq = 1000000;",
        )
        .await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(
            report.problem,
            Some(ChainProblem::Reordered {
                seq: 5,
                follows_seq: 6
            })
        );
    }

    pub async fn tamper_tail(b: &Backend) {
        let s = b.open().await;
        append_n(s.as_ref(), 10, 1000).await;
        // The last rows deleted: the head still says 10.
        b.exec("DELETE FROM audit WHERE seq >= 9").await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::Missing { seq: 9 }));
        assert_eq!(report.rows_checked, 8);

        // The last row rewritten with a fresh, self-consistent hash: the head disagrees.
        b.exec(
            "UPDATE audit_chain_head SET seq = 8, hash = (SELECT hash FROM audit WHERE seq = 8)",
        )
        .await;
        assert!(verify(s.as_ref(), &no_keys()).await.is_valid());
        let mut last = all_rows(s.as_ref()).await.pop().unwrap();
        last.record.result = "denied".into();
        last.hash = link_hash(&last.prev_hash, last.seq, &last.record).unwrap();
        b.rewrite_row(&last).await;
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(report.problem, Some(ChainProblem::HeadMismatch { seq: 8 }));
    }

    pub async fn checkpoints_sign_and_verify(b: &Backend) {
        let s = b.open().await;
        let (key, keys) = keypair();
        assert!(
            audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
                .await
                .unwrap()
                .is_none(),
            "nothing to sign on an empty chain"
        );
        append_n(s.as_ref(), 5, 1000).await;
        let cp = audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cp.seq_upto, 5);
        assert_eq!(cp.hash, s.audit_head().await.unwrap().hash);
        assert!(
            audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
                .await
                .unwrap()
                .is_none(),
            "the same head is signed once per key"
        );
        append_n(s.as_ref(), 3, 2000).await;
        let cp2 = audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cp2.seq_upto, 8);
        let listed = s.list_checkpoints(0).await.unwrap();
        assert_eq!(listed, vec![cp.clone(), cp2.clone()]);
        assert_eq!(s.list_checkpoints(6).await.unwrap(), vec![cp2.clone()]);
        assert!(
            s.insert_checkpoint(&cp).await.is_err(),
            "one checkpoint per (seq_upto, key_id)"
        );

        let report = verify(s.as_ref(), &keys).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.checkpoints_checked, 2);
        assert_eq!(report.rows_checked, 8);
        // Starting later anchors on the latest checkpoint before the start.
        let from = audit::verify(s.as_ref(), &keys, Some(8)).await.unwrap();
        assert!(from.is_valid(), "{from:?}");
        assert_eq!((from.anchor_seq, from.rows_checked), (5, 3));
    }

    pub async fn checkpoint_signature_failures(b: &Backend) {
        let s = b.open().await;
        let (key, keys) = keypair();
        append_n(s.as_ref(), 4, 1000).await;
        audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
            .await
            .unwrap()
            .unwrap();

        // Unknown key id.
        let report = verify(s.as_ref(), &no_keys()).await;
        assert_eq!(
            report.problem,
            Some(ChainProblem::UnknownCheckpointKey {
                seq_upto: 4,
                key_id: "cp-1".into()
            })
        );
        // The right id with another key.
        let other = Ed25519KeyPair::generate().unwrap();
        let wrong = HashMap::from([("cp-1".to_owned(), other.public_key().as_ref().to_vec())]);
        let report = verify(s.as_ref(), &wrong).await;
        assert_eq!(
            report.problem,
            Some(ChainProblem::BadCheckpointSignature {
                seq_upto: 4,
                key_id: "cp-1".into()
            })
        );
        // A forged signature in the database.
        b.exec(&format!(
            "UPDATE audit_checkpoints SET signature = '{}' WHERE seq_upto = 4",
            "00".repeat(64)
        ))
        .await;
        let report = verify(s.as_ref(), &keys).await;
        assert_eq!(
            report.problem,
            Some(ChainProblem::BadCheckpointSignature {
                seq_upto: 4,
                key_id: "cp-1".into()
            })
        );
        // A checkpoint moved to another position no longer verifies either.
        let cp = s.list_checkpoints(0).await.unwrap().remove(0);
        b.exec("DELETE FROM audit_checkpoints").await;
        let good = AuditCheckpoint {
            signature: {
                let msg = audit::checkpoint::signed_message(
                    cp.seq_upto,
                    &cp.hash,
                    cp.created_at_ms,
                    "cp-1",
                )
                .unwrap();
                hex::encode(key.sign(&msg).as_ref())
            },
            ..cp
        };
        s.insert_checkpoint(&AuditCheckpoint {
            seq_upto: 3,
            ..good.clone()
        })
        .await
        .unwrap();
        let report = verify(s.as_ref(), &keys).await;
        assert_eq!(
            report.problem,
            Some(ChainProblem::BadCheckpointSignature {
                seq_upto: 3,
                key_id: "cp-1".into()
            })
        );
        b.exec("DELETE FROM audit_checkpoints").await;
        s.insert_checkpoint(&good).await.unwrap();
        assert!(verify(s.as_ref(), &keys).await.is_valid());
    }

    pub async fn checkpoint_detects_rewritten_chain(b: &Backend) {
        let s = b.open().await;
        let (key, keys) = keypair();
        append_n(s.as_ref(), 10, 1000).await;
        audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
            .await
            .unwrap()
            .unwrap();
        // An attacker edits row 4 and recomputes every hash after it, and the head.
        let mut rows = all_rows(s.as_ref()).await;
        rows[3].record.actor = "mallory".into();
        for i in 3..rows.len() {
            let prev = rows[i - 1].hash.clone();
            let seq = rows[i].seq;
            rows[i].prev_hash = prev.clone();
            rows[i].hash = link_hash(&prev, seq, &rows[i].record).unwrap();
            b.rewrite_row(&rows[i]).await;
        }
        b.exec(&format!(
            "UPDATE audit_chain_head SET hash = '{}' WHERE id = 1",
            rows[9].hash
        ))
        .await;
        // Without the checkpoint the forgery is consistent; the signature catches it.
        let report = verify(s.as_ref(), &keys).await;
        assert_eq!(
            report.problem,
            Some(ChainProblem::CheckpointMismatch {
                seq_upto: 10,
                key_id: "cp-1".into(),
                since_seq: 0
            })
        );
    }

    pub async fn retention_keeps_chain_verifiable(b: &Backend) {
        let s = b.open().await;
        let (key, keys) = keypair();
        append_n(s.as_ref(), 10, 1000).await; // timestamps 1001..=1010
        assert_eq!(
            s.delete_audit_older_than(5000).await.unwrap(),
            0,
            "nothing is deleted without a checkpoint to start from"
        );
        audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
            .await
            .unwrap()
            .unwrap();
        for i in 11..=15u64 {
            s.append_audit(&record(i, 1000 + i64::try_from(i).unwrap()))
                .await
                .unwrap();
        }
        // Rows 11..=15 are old too, but after the latest checkpoint: they stay.
        assert_eq!(s.delete_audit_older_than(5000).await.unwrap(), 10);
        assert_eq!(all_rows(s.as_ref()).await.first().map(|r| r.seq), Some(11));
        let report = verify(s.as_ref(), &keys).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(
            (report.anchor_seq, report.rows_checked, report.last_seq),
            (10, 5, 15)
        );
        let from_expired = audit::verify(s.as_ref(), &keys, Some(2)).await.unwrap();
        assert!(from_expired.is_valid(), "{from_expired:?}");
        assert_eq!(from_expired.anchor_seq, 10);

        // The cut-off is respected: a young row stops the prefix before it.
        audit::sign_checkpoint(s.as_ref(), &key, "cp-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.delete_audit_older_than(1013).await.unwrap(), 0);
        assert_eq!(s.delete_audit_older_than(1016).await.unwrap(), 5);
        assert!(all_rows(s.as_ref()).await.is_empty());
        let report = verify(s.as_ref(), &keys).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.anchor_seq, 15);
        // The chain goes on from the head after everything was deleted.
        let link = s.append_audit(&record(16, 9000)).await.unwrap();
        assert_eq!(link.seq, 16);
        assert!(verify(s.as_ref(), &keys).await.is_valid());

        // Deleting rows after the retention boundary is still caught.
        s.append_audit(&record(17, 9001)).await.unwrap();
        b.exec("DELETE FROM audit WHERE seq = 16").await;
        let report = verify(s.as_ref(), &keys).await;
        assert_eq!(report.problem, Some(ChainProblem::Missing { seq: 16 }));
    }

    pub async fn legacy_rows_are_chained_once(b: &Backend) {
        // A database at migration 1, with audit rows written before the chain existed.
        let migrator = Migrator::new(b.migrations()).await.unwrap();
        match &b.raw {
            Raw::Sqlite(p) => migrator.run_to(1, p).await.unwrap(),
            Raw::Postgres(p) => migrator.run_to(1, p).await.unwrap(),
        }
        for (id, ts) in [("b", 20), ("c", 30), ("a", 20)] {
            b.exec(&format!(
                "INSERT INTO audit (id, timestamp_ms, action, actor, subject, result, detail)
                 VALUES ('{id}', {ts}, 'token.issue', 'admin', 'jti-{id}', 'ok', '')"
            ))
            .await;
        }
        let s = b.open().await;
        let rows = all_rows(s.as_ref()).await;
        assert_eq!(
            rows.iter()
                .map(|r| (r.seq, r.record.id.as_str()))
                .collect::<Vec<_>>(),
            [(1, "a"), (2, "b"), (3, "c")],
            "oldest first, then by id"
        );
        let legacy_tables = match b.raw {
            Raw::Sqlite(_) => {
                b.count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'audit_legacy'")
                    .await
            }
            Raw::Postgres(_) => {
                b.count(
                    "SELECT COUNT(*) FROM pg_tables
                     WHERE tablename = 'audit_legacy' AND schemaname = current_schema()",
                )
                .await
            }
        };
        assert_eq!(legacy_tables, 0, "audit_legacy is dropped");
        assert!(verify(s.as_ref(), &no_keys()).await.is_valid());
        s.append_audit(&record(4, 40)).await.unwrap();
        drop(s);
        // Opening again changes nothing.
        let s = b.open().await;
        assert_eq!(s.audit_head().await.unwrap().seq, 4);
        let report = verify(s.as_ref(), &no_keys()).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.rows_checked, 4);
    }

    pub async fn lists_stored_before_migration_8_read_back(b: &Backend) {
        // A database at migration 7 (PostgreSQL still stores these lists as JSONB), with
        // tokens and virtual keys in it.
        let migrator = Migrator::new(b.migrations()).await.unwrap();
        match &b.raw {
            Raw::Sqlite(p) => migrator.run_to(7, p).await.unwrap(),
            Raw::Postgres(p) => migrator.run_to(7, p).await.unwrap(),
        }
        b.exec(
            r#"INSERT INTO tokens (jti, subject, scopes, models, kid, issued_at, expires_at)
               VALUES ('j', 's', '["read", "write"]', '[]', 'k', 1, 2);
               INSERT INTO virtual_keys (id, hash, name, owner, scopes, models, created_at, expires_at)
               VALUES ('vk', 'h', 'team', 'admin', '["write"]', '["gpt-4o", "ünï \"q\""]', 3, 0)"#,
        )
        .await;
        let s = b.open().await;
        let t = s.get_token("j").await.unwrap().unwrap();
        assert_eq!(t.scopes, ["read", "write"]);
        assert!(t.models.is_empty());
        assert_eq!(s.list_tokens().await.unwrap().len(), 1);
        let keys = s.list_virtual_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].scopes, ["write"]);
        assert_eq!(keys[0].models, ["gpt-4o", "ünï \"q\""]);
        if let Raw::Postgres(_) = b.raw {
            let text_columns = b
                .count(
                    "SELECT COUNT(*) FROM information_schema.columns
                     WHERE table_schema = current_schema()
                       AND table_name IN ('tokens', 'virtual_keys')
                       AND column_name IN ('scopes', 'models') AND data_type = 'text'",
                )
                .await;
            assert_eq!(text_columns, 4, "the four list columns are TEXT");
        }
        // Rows written after the migration read back the same way.
        s.insert_token(&TokenRecord {
            jti: "j2".into(),
            scopes: vec!["admin".into()],
            models: vec!["*".into()],
            ..t
        })
        .await
        .unwrap();
        let t2 = s.get_token("j2").await.unwrap().unwrap();
        assert_eq!(
            (t2.scopes, t2.models),
            (vec!["admin".to_owned()], vec!["*".to_owned()])
        );
    }

    pub async fn malformed_rows_are_reported(b: &Backend) {
        let s = b.open().await;
        let malformed = |e: warden_control_plane::store::StoreError| e.to_string();
        b.exec(
            "INSERT INTO providers (name, format, base_url, source, created_at)
             VALUES ('p', 'bogus', 'https://x/v1', 'admin', 1)",
        )
        .await;
        assert_eq!(
            malformed(s.list_providers().await.unwrap_err()),
            "stored row is malformed: provider format bogus"
        );
        b.exec(
            "UPDATE providers SET format = 'openai';
             INSERT INTO models (alias, provider, upstream_model, source, created_at, fallbacks)
             VALUES ('m', 'p', 'm', 'admin', 1, 'not a list')",
        )
        .await;
        assert!(
            malformed(s.list_models().await.unwrap_err())
                .starts_with("stored row is malformed: list column: "),
        );
        b.exec(
            "INSERT INTO policies (target_kind, target_id, rpm, tpm, max_parallel,
                 max_budget_micros, budget_period_secs, source, updated_at)
             VALUES ('planet', 'x', 0, 0, 0, 0, 0, 'admin', 1)",
        )
        .await;
        assert_eq!(
            malformed(s.list_policies().await.unwrap_err()),
            "stored row is malformed: policy target kind planet"
        );
        b.exec("UPDATE audit_chain_head SET seq = -1").await;
        assert_eq!(
            malformed(s.audit_head().await.unwrap_err()),
            "stored row is malformed: negative audit position -1"
        );
        // Out-of-range counters read as 0, an out-of-range weight as 1.
        b.exec(
            "UPDATE models SET fallbacks = '[]', weight = -3;
             INSERT INTO provider_keys (id, provider, secret_name, fingerprint, created_at, health_epoch)
             VALUES ('k', 'p', 'providers/p/k', 'f', 1, -5)",
        )
        .await;
        assert_eq!(s.list_models().await.unwrap()[0].weight, 1);
        assert_eq!(s.list_provider_keys().await.unwrap()[0].health_epoch, 0);
    }

    pub async fn concurrent_appends_form_one_chain(b: &Backend) {
        let s = b.open().await;
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let rows: Vec<_> = (0..50u64)
                        .map(|i| {
                            let mut r = record(t * 1000 + i, 1000);
                            r.id = format!("task-{t}-{i}");
                            r
                        })
                        .collect();
                    let mut seqs = Vec::new();
                    if t % 2 == 0 {
                        for r in &rows {
                            seqs.push(s.append_audit(r).await.unwrap().seq);
                        }
                    } else {
                        // The other half appends in batches of 10, each contiguous.
                        for batch in rows.chunks(10) {
                            let links = s.append_audit_batch(batch).await.unwrap();
                            assert!(links.windows(2).all(|w| w[1].seq == w[0].seq + 1));
                            seqs.extend(links.iter().map(|l| l.seq));
                        }
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            let mine = t.await.unwrap();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "per task increasing");
            seqs.extend(mine);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
        assert_eq!(s.audit_head().await.unwrap().seq, 400);
        let report = verify(s.as_ref(), &no_keys()).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.rows_checked, 400);
    }

    /// Every stored id, in `seq` order.
    async fn stored_ids(s: &dyn StateStore) -> Vec<String> {
        s.list_audit_range(1, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.record.id)
            .collect()
    }

    pub async fn redelivered_batches_append_only_new_ids(b: &Backend) {
        let s = b.open().await;
        assert!(s.append_audit_new(&[]).await.unwrap().is_empty());
        // A batch repeating ids inside it: the first of each is kept, in order.
        let batch = [
            record(1, 1001),
            record(2, 1002),
            record(1, 1001),
            record(3, 1003),
            record(2, 1002),
        ];
        let links = s.append_audit_new(&batch).await.unwrap();
        assert_eq!(links.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(links[0].prev_hash, audit::GENESIS_HASH);
        assert_eq!(
            links[2].hash,
            link_hash(&links[1].hash, 3, &batch[3]).unwrap()
        );
        assert_eq!(
            stored_ids(s.as_ref()).await,
            [
                batch[0].id.clone(),
                batch[1].id.clone(),
                batch[3].id.clone()
            ]
        );

        // The same batch again (the acknowledgement was lost): nothing appended, the head
        // stays.
        assert!(s.append_audit_new(&batch).await.unwrap().is_empty());
        assert_eq!(s.audit_head().await.unwrap().seq, 3);

        // A batch overlapping the earlier one: only the new ids, linked to the head.
        let head = s.audit_head().await.unwrap();
        let overlap = [
            record(3, 1003),
            record(4, 1004),
            record(2, 1002),
            record(5, 1005),
        ];
        let links = s.append_audit_new(&overlap).await.unwrap();
        assert_eq!(links.iter().map(|l| l.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(links[0].prev_hash, head.hash);
        assert_eq!(
            links[0].hash,
            link_hash(&head.hash, 4, &overlap[1]).unwrap()
        );
        assert_eq!(links[1].prev_hash, links[0].hash);

        // The strict batch still refuses a stored id, whole.
        assert!(
            s.append_audit_batch(&[record(6, 1006), record(5, 1005)])
                .await
                .is_err()
        );
        assert_eq!(s.audit_head().await.unwrap().seq, 5);

        // A node's largest batch (1,000 events, a quarter of them redelivered) is one append.
        let big: Vec<_> = (250..1250u64).map(|i| record(i, 2000)).collect();
        s.append_audit_new(&big[..250]).await.unwrap();
        let links = s.append_audit_new(&big).await.unwrap();
        assert_eq!(links.len(), 750);
        assert_eq!(links.first().unwrap().seq, 256);
        assert_eq!(s.audit_head().await.unwrap().seq, 1005);

        let ids = stored_ids(s.as_ref()).await;
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!((ids.len(), unique.len()), (1005, 1005), "one row per id");
        let stored = &s.list_audit_range(4, 1).await.unwrap()[0].record;
        assert_eq!(
            (
                stored.id.as_str(),
                stored.subject.as_str(),
                stored.detail.as_str()
            ),
            (overlap[1].id.as_str(), "jti-4", "row 4 — ünïcode ok"),
            "stored as given"
        );
        let report = verify(s.as_ref(), &no_keys()).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.rows_checked, report.last_seq), (1005, 1005));
    }

    pub async fn concurrent_redelivered_batches_store_each_id_once(b: &Backend) {
        // Four nodes each deliver 20 batches of 25 events; every batch is delivered
        // twice, at once, from two tasks (a retry landing on another replica while the
        // first try is still running), and each node's next batch repeats the previous
        // batch's last 5 events. Plain appends run beside them.
        let s = b.open().await;
        let mut tasks = Vec::new();
        for node in 0..4u64 {
            for copy in 0..2u64 {
                let s = Arc::clone(&s);
                tasks.push(tokio::spawn(async move {
                    let mut appended = 0;
                    for batch in 0..20u64 {
                        let first = (batch * 20).saturating_sub(5);
                        let events: Vec<_> = (first..batch * 20 + 20)
                            .map(|i| {
                                let mut r = record(i, 1000);
                                r.id = format!("node-{node}-{i}");
                                r
                            })
                            .collect();
                        let links = s.append_audit_new(&events).await.unwrap();
                        assert!(links.windows(2).all(|w| w[1].seq == w[0].seq + 1));
                        appended += links.len();
                        if copy == 0 && batch % 4 == 0 {
                            s.append_audit(&record(node * 1000 + batch, 1000))
                                .await
                                .unwrap();
                            appended += 1;
                        }
                    }
                    appended
                }));
            }
        }
        let mut appended = 0;
        for t in tasks {
            appended += t.await.unwrap();
        }
        // Per node 400 distinct events, plus 5 plain appends.
        assert_eq!(appended, 4 * 405);
        let ids = stored_ids(s.as_ref()).await;
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!((ids.len(), unique.len()), (1620, 1620), "one row per id");
        assert_eq!(s.audit_head().await.unwrap().seq, 1620);
        let report = verify(s.as_ref(), &no_keys()).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(report.rows_checked, 1620);
    }
}
