//! Paged Admin listings (`warden_control_plane::page`) through the whole control plane, on
//! SQLite and on the PostgreSQL server named by `WARDEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, a fresh schema per test, dropped afterwards;
//! an unreachable server fails the test): 2,500 virtual keys seeded by SQL (with many equal
//! creation times, so the id breaks ties) read in pages of 1,000 — every id once, in
//! order, 3 pages, the last token empty; malformed and foreign tokens refused naming
//! `page_token`; audit rows paged under an action filter and a `limit`; tokens, node and
//! admin credentials and nodes paged in their stored order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

use std::collections::{HashMap, HashSet};
use std::path::Path;

use warden_control_plane::ControlPlane;
use warden_control_plane::config::{Config, RawConfig};
use warden_control_plane::domain::CredentialTable;
use warden_control_plane::error::ServiceError;
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::service::Actor;

const KEYS: usize = 2500;

fn config(dir: &Path, database: Option<(&str, &str)>) -> Config {
    let mut env: HashMap<String, String> = [
        ("WARDEN_DEV", "true".to_owned()),
        ("WARDEN_DATA_DIR", dir.display().to_string()),
        ("WARDEN_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("WARDEN_MASTER_KEY", (*MasterKey::generate_base64()).clone()),
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

/// `(id, created_at)` of the seeded keys, in the listing's order: creation time, then id.
/// Seven keys share each second, and ids are not in creation order.
fn seeded() -> Vec<(String, i64)> {
    let mut keys: Vec<(String, i64)> = (0..KEYS)
        .map(|i| {
            let id = format!("vk_{:08x}", (i * 7919) % 100_003);
            (id, 1_700_000_000 + (i / 7) as i64)
        })
        .collect();
    keys.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    keys
}

/// One multi-row INSERT per 500 keys, on whichever backend `config` names.
async fn seed_virtual_keys(config: &Config, keys: &[(String, i64)]) {
    let statements: Vec<String> = keys
        .chunks(500)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|(id, at)| {
                    format!(
                        "('{id}', 'hash-{id}', 'seeded', 'team-a', '[\"chat\"]', '[]', {at}, 0, NULL)"
                    )
                })
                .collect();
            format!(
                "INSERT INTO virtual_keys (id, hash, name, owner, scopes, models, created_at, expires_at, revoked_at) VALUES {}",
                values.join(", ")
            )
        })
        .collect();
    match &config.database_url {
        None => {
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                config.data_dir.join("state.db").display()
            ))
            .await
            .unwrap();
            for sql in statements {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        Some(url) => {
            use secrecy::ExposeSecret as _;
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
            for sql in statements {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }
}

fn assert_page_token_refused(result: Result<impl std::fmt::Debug, ServiceError>, what: &str) {
    match result {
        Err(ServiceError::InvalidArgument(m)) => {
            assert!(
                m.contains("page_token"),
                "{what}: message names the field: {m}"
            );
        }
        other => panic!("{what}: expected INVALID_ARGUMENT, got {other:?}"),
    }
}

async fn virtual_keys_page_through(cp: &ControlPlane) {
    let want = seeded();
    let mut got: Vec<(String, i64)> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = cp.virtual_keys_page(1000, &token).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 1000);
        got.extend(page.items.into_iter().map(|k| (k.id, k.created_at)));
        if page.next_token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
        token = page.next_token;
    }
    assert_eq!(pages, 3, "2,500 keys in pages of 1,000");
    let unique: HashSet<&String> = got.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), KEYS, "every id exactly once");
    assert_eq!(got, want, "in (created_at, id) order");

    // page_size 0 is the default (500); above the cap is 1000.
    assert_eq!(cp.virtual_keys_page(0, "").await.unwrap().items.len(), 500);
    assert_eq!(
        cp.virtual_keys_page(5000, "").await.unwrap().items.len(),
        1000
    );

    // A token is checked: malformed, tampered, or issued for another listing.
    let first = cp.virtual_keys_page(10, "").await.unwrap();
    assert_page_token_refused(cp.virtual_keys_page(10, "not a token!").await, "malformed");
    let mut tampered = first.next_token.clone();
    tampered.insert(3, '*');
    assert_page_token_refused(cp.virtual_keys_page(10, &tampered).await, "tampered");
    assert_page_token_refused(cp.tokens_page(10, &first.next_token).await, "other listing");
    // The token continues where the page ended, whatever size the next page asks for.
    let second = cp.virtual_keys_page(5, &first.next_token).await.unwrap();
    let ids: Vec<&String> = second.items.iter().map(|k| &k.id).collect();
    let want_ids: Vec<&String> = want[10..15].iter().map(|(id, _)| id).collect();
    assert_eq!(ids, want_ids);
}

async fn audit_pages_under_a_filter(cp: &ControlPlane) {
    // 30 rows of one action interleaved with 20 of another (many in the same millisecond).
    for i in 0..50 {
        let action = if i % 5 < 3 {
            "page.test_a"
        } else {
            "page.test_b"
        };
        cp.audit(action, "admin:test", &format!("row-{i:02}"), "ok", "")
            .await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = cp
            .audit_page(25, Some("page.test_a"), 7, &token)
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.iter().all(|r| r.action == "page.test_a"));
        seen.extend(page.items.into_iter().map(|r| r.subject));
        if page.next_token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
        token = page.next_token;
    }
    assert_eq!(pages, 4, "limit 25 in pages of 7: 7, 7, 7, 4");
    // Newest first: the 25 newest of the 30 `test_a` subjects, each once.
    let mut want: Vec<String> = (0..50)
        .filter(|i| i % 5 < 3)
        .map(|i| format!("row-{i:02}"))
        .collect();
    want.reverse();
    want.truncate(25);
    assert_eq!(seen, want);

    // Without page_size, a limit up to 1000 comes in one page; the whole filter fits.
    let one = cp
        .audit_page(1000, Some("page.test_b"), 0, "")
        .await
        .unwrap();
    assert_eq!(one.items.len(), 20);
    assert!(one.next_token.is_empty());

    // A token holds only for the filters it was issued for.
    let first = cp.audit_page(25, Some("page.test_a"), 7, "").await.unwrap();
    assert!(!first.next_token.is_empty());
    assert_page_token_refused(
        cp.audit_page(25, Some("page.test_b"), 7, &first.next_token)
            .await,
        "other action",
    );
    assert_page_token_refused(
        cp.audit_page(26, Some("page.test_a"), 7, &first.next_token)
            .await,
        "other limit",
    );
    assert_page_token_refused(
        cp.audit_page(25, None, 7, &first.next_token).await,
        "no action",
    );
    assert_page_token_refused(
        cp.virtual_keys_page(7, &first.next_token).await,
        "other listing",
    );
}

/// Every item of a paged listing with `page_size`, and how many pages it took.
async fn all_pages<T, F, Fut>(page_size: u32, mut page: F) -> (Vec<T>, usize)
where
    F: FnMut(u32, String) -> Fut,
    Fut: std::future::Future<Output = Result<warden_control_plane::page::Page<T>, ServiceError>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let p = page(page_size, token).await.unwrap();
        pages += 1;
        assert!(p.items.len() <= page_size as usize);
        items.extend(p.items);
        if p.next_token.is_empty() {
            return (items, pages);
        }
        assert!(pages < 100, "paging does not end");
        token = p.next_token;
    }
}

/// Tokens, both credential tables and nodes page in their stored order.
async fn other_big_listings_page(cp: &ControlPlane) {
    let actor = Actor("admin:test".into());
    let mut jtis = Vec::new();
    for i in 0..5 {
        let (_, t) = cp
            .issue_token(
                &actor,
                &format!("svc-{i}"),
                &["read".into()],
                &[],
                None,
                None,
            )
            .await
            .unwrap();
        jtis.push(t.jti);
    }
    let (tokens, pages) = all_pages(2, |n, t| async move { cp.tokens_page(n, &t).await }).await;
    assert_eq!(pages, 3);
    let listed: Vec<String> = tokens.into_iter().map(|t| t.jti).collect();
    let mut want = cp.list_tokens().await.unwrap();
    want.sort_by(|a, b| (a.issued_at, &a.jti).cmp(&(b.issued_at, &b.jti)));
    assert_eq!(listed, want.into_iter().map(|t| t.jti).collect::<Vec<_>>());
    assert!(jtis.iter().all(|j| listed.contains(j)));

    let mut node_ids = Vec::new();
    for i in 0..5 {
        let (_, id) = cp
            .issue_node_credential(&actor, &format!("edge-{i}"), None)
            .await
            .unwrap();
        cp.node_acked(&format!("node-{i}"), &id, 1).await.unwrap();
        node_ids.push(id);
    }
    let (creds, pages) = all_pages(2, |n, t| async move {
        cp.credentials_page(CredentialTable::Node, n, &t).await
    })
    .await;
    assert_eq!(pages, 3);
    let listed: Vec<String> = creds.iter().map(|(c, _)| c.id.clone()).collect();
    let want: Vec<String> = cp
        .list_credentials(CredentialTable::Node)
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c.id)
        .collect();
    assert_eq!(listed, want);
    assert!(
        creds.iter().all(|(_, last_used)| last_used.is_some()),
        "last use shown"
    );
    // A node-credential token is no admin-credential token.
    let first = cp
        .credentials_page(CredentialTable::Node, 2, "")
        .await
        .unwrap();
    assert_page_token_refused(
        cp.credentials_page(CredentialTable::Admin, 2, &first.next_token)
            .await,
        "other credential table",
    );
    cp.issue_admin_credential(&actor, "ops", "operator", None, None)
        .await
        .unwrap();
    let (admins, _) = all_pages(1, |n, t| async move {
        cp.credentials_page(CredentialTable::Admin, n, &t).await
    })
    .await;
    assert_eq!(
        admins.len(),
        cp.list_credentials(CredentialTable::Admin)
            .await
            .unwrap()
            .len()
    );

    let (nodes, pages) = all_pages(2, |n, t| async move { cp.nodes_page(n, &t).await }).await;
    assert_eq!(pages, 3);
    let names: Vec<String> = nodes.into_iter().map(|n| n.record.node_id).collect();
    assert_eq!(
        names,
        (0..5).map(|i| format!("node-{i}")).collect::<Vec<_>>()
    );
}

async fn run(database: Option<(&str, &str)>) {
    warden_core::install_crypto_providers();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), database);
    let cp = warden_control_plane::open(&config).await.unwrap();
    seed_virtual_keys(&config, &seeded()).await;
    virtual_keys_page_through(&cp).await;
    audit_pages_under_a_filter(&cp).await;
    other_big_listings_page(&cp).await;
}

#[tokio::test]
async fn sqlite_lists_page_by_keyset() {
    run(None).await;
}

#[tokio::test]
async fn postgres_lists_page_by_keyset() {
    let url = std::env::var("WARDEN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    run(Some((&url, &schema))).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}
