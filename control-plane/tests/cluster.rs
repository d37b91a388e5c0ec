//! Several control-plane replicas on one PostgreSQL (`warden_control_plane::cluster`): the
//! leader lease and its fencing token, snapshot versions allocated by the database, and
//! two replicas started in-process that share snapshots, the signer and leadership.
//!
//! Needs the PostgreSQL named by `WARDEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a fresh schema, with at
//! most 3 connections per replica. The in-process replicas keep provider keys in the Vault
//! named by `WARDEN_TEST_VAULT_ADDR`/`WARDEN_TEST_VAULT_TOKEN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use warden_control_plane::audit::chain::AuditCheckpoint;
use warden_control_plane::config::RawConfig;
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::service::Actor;
use warden_control_plane::store::postgres::{PostgresSettings, PostgresStore};
use warden_control_plane::store::{SqlStore, StateStore, StoreError};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn database_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run scripts/test.sh (it starts the test backends)"),
    }
}

fn fresh_schema() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// One replica's store on `schema` (3 connections at most).
async fn replica_store(schema: &str) -> SqlStore {
    let settings = PostgresSettings {
        max_connections: 3,
        schema: Some(schema.to_owned()),
        ..PostgresSettings::default()
    };
    PostgresStore::connect(&SecretString::from(database_url()), &settings)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL test database unreachable ({e}): start it or set WARDEN_TEST_DATABASE_URL")
        })
}

async fn drop_schema(schema: &str) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

fn checkpoint(seq: u64) -> AuditCheckpoint {
    AuditCheckpoint {
        seq_upto: seq,
        hash: "00".repeat(32),
        signature: "11".repeat(64),
        key_id: "test".into(),
        created_at_ms: 1,
    }
}

/// Waits up to `within` for `check`, polling every 50 ms.
async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

#[tokio::test]
async fn one_leader_and_a_stale_fencing_token_is_refused() {
    let schema = fresh_schema();
    let a = replica_store(&schema).await;
    let b = replica_store(&schema).await;
    let ttl = Duration::from_secs(2);

    let t1 = a.acquire_lease("a", ttl).await.unwrap().expect("a leads");
    assert_eq!(b.acquire_lease("b", ttl).await.unwrap(), None, "one leader");
    assert_eq!(
        a.acquire_lease("a", ttl).await.unwrap(),
        Some(t1),
        "a renewal keeps the fencing token"
    );
    let renewed = Instant::now();
    a.fenced(t1)
        .insert_checkpoint(&checkpoint(1))
        .await
        .unwrap();

    // a stops renewing: b cannot take the lease before it expires by the database clock.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        b.acquire_lease("b", ttl).await.unwrap(),
        None,
        "not expired yet"
    );
    let t2 = loop {
        if let Some(t) = b.acquire_lease("b", ttl).await.unwrap() {
            break t;
        }
        assert!(
            renewed.elapsed() < Duration::from_secs(5),
            "b never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        renewed.elapsed() >= ttl - Duration::from_millis(100),
        "taken over after {:?}, before the lease expired",
        renewed.elapsed()
    );
    assert!(t2 > t1, "a takeover bumps the token: {t1} -> {t2}");
    let lease = b.lease().await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.fencing_token), ("b", t2));

    // Every leader-only write of the stale leader is refused; the new leader's pass.
    let stale = a.fenced(t1);
    assert!(matches!(
        stale.insert_checkpoint(&checkpoint(2)).await,
        Err(StoreError::Fenced(t)) if t == t1
    ));
    assert!(matches!(
        stale.delete_audit_older_than(i64::MAX).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        stale.set_meta("audit.jsonl.cursor", "7").await,
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(a.get_meta("audit.jsonl.cursor").await.unwrap(), None);
    // The rotation poll's record of a provider key's version is fenced the same way.
    assert!(matches!(
        stale.record_secret_version("vault://kv/openai#key", "fp-old").await,
        Err(StoreError::Fenced(t)) if t == t1
    ));
    assert!(a.list_secret_versions().await.unwrap().is_empty());
    assert_eq!(
        b.fenced(t2)
            .record_secret_version("vault://kv/openai#key", "fp-new")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.list_secret_versions().await.unwrap(),
        vec![("vault://kv/openai#key".to_owned(), "fp-new".to_owned())]
    );
    b.fenced(t2)
        .insert_checkpoint(&checkpoint(2))
        .await
        .unwrap();
    b.fenced(t2)
        .set_meta("audit.jsonl.cursor", "7")
        .await
        .unwrap();
    let seqs: Vec<u64> = a
        .list_checkpoints(0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq_upto)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(a.acquire_lease("a", ttl).await.unwrap(), None);

    // Giving the lease back lets the other take it at once, under a new token.
    assert!(b.release_lease("b", t2).await.unwrap());
    let t3 = a
        .acquire_lease("a", ttl)
        .await
        .unwrap()
        .expect("free again");
    assert!(t3 > t2);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn snapshot_versions_are_unique_and_monotonic_across_replicas() {
    let schema = fresh_schema();
    let a = replica_store(&schema).await;
    let b = replica_store(&schema).await;
    let base = a.snapshot_version().await.unwrap();
    let take = |s: SqlStore| async move {
        let mut got = Vec::new();
        for _ in 0..25 {
            got.push(s.next_snapshot_version().await.unwrap());
        }
        got
    };
    let (va, vb) = tokio::join!(take(a.clone()), take(b.clone()));
    for v in [&va, &vb] {
        assert!(
            v.windows(2).all(|w| w[0] < w[1]),
            "monotonic per replica: {v:?}"
        );
    }
    let all: HashSet<u64> = va.iter().chain(&vb).copied().collect();
    assert_eq!(all.len(), 50, "no version handed out twice");
    assert_eq!(all.iter().max().copied(), Some(base + 50));
    assert_eq!(b.snapshot_version().await.unwrap(), base + 50);
    drop_schema(&schema).await;
}

/// A replica started in-process on `schema` with a 2 s lease.
async fn start_replica(
    schema: &str,
    master_key: &str,
    id: &str,
    dir: &std::path::Path,
    shutdown: CancellationToken,
) -> warden_control_plane::Running {
    let vars: HashMap<String, String> = [
        ("WARDEN_MASTER_KEY", master_key.to_owned()),
        ("WARDEN_DATA_DIR", dir.display().to_string()),
        ("WARDEN_DATABASE_URL", database_url()),
        ("WARDEN_DATABASE_SCHEMA", schema.to_owned()),
        ("E2E_VAULT_TOKEN", require_env("WARDEN_TEST_VAULT_TOKEN")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Provider keys in Vault: a `file` store is refused beside another replica.
    let toml = format!(
        "[store]\nmax_connections = 3\n\n[cluster]\nlease_ttl = \"2s\"\npoll_interval = \"500ms\"\nreplica_id = \"{id}\"\n\n\
         [secrets]\nstore = \"vault\"\n[[secrets.backends]]\ntype = \"vault\"\naddress = \"{addr}\"\n\
         auth = {{ type = \"token\", token_env = \"E2E_VAULT_TOKEN\" }}\n",
        addr = require_env("WARDEN_TEST_VAULT_ADDR"),
    );
    let config = RawConfig::from_toml("cluster.toml", &toml)
        .unwrap()
        .build_and_validate(&vars)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    warden_control_plane::start(&config, listener, shutdown)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_snapshots_the_signer_and_the_leadership() {
    let schema = fresh_schema();
    let key = MasterKey::generate_base64().to_string();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    // Started together on an empty schema: one pepper, one signer.
    let (a, b) = tokio::join!(
        start_replica(&schema, &key, "replica-a", dir_a.path(), stop_a.clone()),
        start_replica(&schema, &key, "replica-b", dir_b.path(), stop_b.clone()),
    );
    let (cp_a, cp_b) = (Arc::clone(a.control_plane()), Arc::clone(b.control_plane()));
    let store = replica_store(&schema).await;
    assert_eq!(store.list_signing_keys().await.unwrap().len(), 1);

    assert!(
        eventually(Duration::from_secs(5), || async {
            cp_a.is_leader() != cp_b.is_leader()
        })
        .await,
        "exactly one leader"
    );
    let (leader, follower, stop_leader, running_leader, running_follower) = if cp_a.is_leader() {
        (&cp_a, &cp_b, stop_a.clone(), a, b)
    } else {
        (&cp_b, &cp_a, stop_b.clone(), b, a)
    };
    let token = store.lease().await.unwrap().fencing_token;

    // A change through the follower reaches the leader's watchers (NOTIFY), and back.
    let before = leader.current_version();
    let rotated = follower
        .rotate_signing_key(&Actor("admin:test".into()))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            leader.current_version() > before
                && leader.current_version() == follower.current_version()
        })
        .await,
        "the other replica rebuilt the snapshot within 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        eventually(Duration::from_secs(1), || async {
            leader.signing_key().kid == rotated.record.kid
        })
        .await,
        "the other replica signs with the rotated key"
    );
    let mut watch = leader.subscribe();
    assert!(
        watch
            .borrow_and_update()
            .jwt_keys
            .iter()
            .any(|k| k.kid == rotated.record.kid)
    );

    // A node credential revoked through one replica ends its streams on the other.
    let (_, node_id) = follower
        .issue_node_credential(&Actor("admin:test".into()), "n1", None)
        .await
        .unwrap();
    let stream = leader.open_credential_stream(&node_id).unwrap();
    follower
        .revoke_credentials(
            &Actor("admin:test".into()),
            warden_control_plane::domain::CredentialTable::Node,
            &node_id,
            "",
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), stream.cancelled())
        .await
        .expect("the other replica ended the revoked credential's stream within 1 s");
    assert!(leader.credential_revoked(&node_id));

    // Audit appends through one replica wake the other's followers.
    let mut follows = leader.audit_appends();
    follows.borrow_and_update();
    follower
        .audit("test.append", "admin:test", "x", "ok", "")
        .await;
    tokio::time::timeout(Duration::from_secs(1), follows.changed())
        .await
        .expect("woken within 1 s")
        .unwrap();

    // The leader stops: the other takes over under a higher fencing token.
    stop_leader.cancel();
    running_leader.wait().await.unwrap();
    assert!(
        eventually(Duration::from_secs(4), || async { follower.is_leader() }).await,
        "the survivor leads"
    );
    let lease = store.lease().await.unwrap();
    assert!(lease.fencing_token > token && lease.live);
    let actions: Vec<String> = store
        .list_audit_range(1, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.action)
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.as_str() == "cp.leader_acquired")
            .count(),
        2
    );

    stop_a.cancel();
    stop_b.cancel();
    running_follower.wait().await.unwrap();
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waits_for_the_nodes_attached_to_other_live_replicas() {
    let schema = fresh_schema();
    let key = MasterKey::generate_base64().to_string();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (a, b) = tokio::join!(
        start_replica(&schema, &key, "replica-a", dir_a.path(), stop_a.clone()),
        start_replica(&schema, &key, "replica-b", dir_b.path(), stop_b.clone()),
    );
    let (cp_a, cp_b) = (Arc::clone(a.control_plane()), Arc::clone(b.control_plane()));
    let store = replica_store(&schema).await;
    assert_eq!(cp_b.replica_id(), "replica-b");

    // A node on replica b, which has not applied anything yet.
    cp_b.node_connected("node-b", "cred-b", "1.0", 0)
        .await
        .unwrap();
    let row = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_nodes()
                .await
                .unwrap()
                .into_iter()
                .find(|n| n.node_id == id)
                .unwrap()
        }
    };
    assert_eq!(row("node-b").await.replica_id, "replica-b");
    // A node attached to a replica that is not live (no heartbeat) holds nothing up.
    let mut ghost = row("node-b").await;
    ghost.node_id = "node-ghost".into();
    ghost.replica_id = "replica-gone".into();
    store.upsert_node(&ghost).await.unwrap();

    // `wardenctl cluster status`: both replicas, one leader under the lease's token, and
    // node-b on replica b (the ghost's replica is not live, so not listed).
    assert!(
        eventually(Duration::from_secs(5), || async {
            cp_a.is_leader() != cp_b.is_leader()
        })
        .await
    );
    let token = store.lease().await.unwrap().fencing_token;
    let replicas = cp_a.list_replicas().await.unwrap();
    let ids: Vec<&str> = replicas.iter().map(|r| r.replica_id.as_str()).collect();
    assert_eq!(ids, vec!["replica-a", "replica-b"]);
    let leaders: Vec<_> = replicas.iter().filter(|r| r.leader).collect();
    assert_eq!(leaders.len(), 1);
    assert_eq!(leaders[0].fencing_token, token);
    assert_eq!(leaders[0].replica_id == "replica-a", cp_a.is_leader());
    assert!(
        replicas
            .iter()
            .filter(|r| !r.leader)
            .all(|r| r.fencing_token == 0)
    );
    let attached: Vec<u64> = replicas.iter().map(|r| r.nodes_attached).collect();
    assert_eq!(attached, vec![0, 1]);
    assert!(
        replicas
            .iter()
            .all(|r| r.heartbeat_at_ms >= r.started_at_ms && r.started_at_ms > 0)
    );
    let from_b: Vec<(String, bool)> = cp_b
        .list_replicas()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.replica_id, r.leader))
        .collect();
    let from_a: Vec<(String, bool)> = replicas
        .iter()
        .map(|r| (r.replica_id.clone(), r.leader))
        .collect();
    assert_eq!(from_b, from_a, "every replica shows the same cluster");

    // A change through replica a waits for node-b, attached to replica b.
    let version = cp_a.current_version() + 1;
    let started = Instant::now();
    assert!(
        !cp_a
            .await_propagation(version, Duration::from_millis(400))
            .await,
        "node-b has not acknowledged {version}: the wait times out"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    // It acknowledges on replica b 300 ms later: replica a's wait ends soon after.
    let acker = Arc::clone(&cp_b);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        acker.node_acked("node-b", "cred-b", version).await.unwrap();
    });
    let started = Instant::now();
    assert!(
        cp_a.await_propagation(version, Duration::from_secs(2))
            .await,
        "replica a saw node-b acknowledge through the nodes table"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1000),
        "waited {waited:?}"
    );
    assert_eq!(row("node-b").await.acked_version, version);

    // Once node-b left replica b, nobody waits for it.
    cp_b.node_disconnected("node-b");
    assert!(
        eventually(Duration::from_secs(2), || async {
            row("node-b").await.replica_id.is_empty()
        })
        .await,
        "node-b detached from replica b"
    );
    let started = Instant::now();
    assert!(
        cp_a.await_propagation(version + 1, Duration::from_secs(2))
            .await
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    stop_a.cancel();
    stop_b.cancel();
    a.wait().await.unwrap();
    b.wait().await.unwrap();
    drop_schema(&schema).await;
}
