//! A compromised node replays its attacks on the audit log through `Sync.PublishAudit`
//! (in-process services over a real store): submitting an admin action or a forged actor
//! (refused with `InvalidArgument` naming the event, nothing of the batch stored), a
//! timestamp a day in the future (clamped, the node's time kept in the detail, and
//! `--until` queries still see later rows), and a flood beyond its quota (`ResourceExhausted`,
//! legitimate traffic accepted once the quota refills). And an honest node whose spool
//! sends batches again (the acknowledgement lost, a retry on another replica): every event
//! stored once, on SQLite and on PostgreSQL with two replicas, the chain intact. Fields
//! longer than their limits are cut, and the detail redacted, before they are stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};
use warden_control_plane::ControlPlane;
use warden_control_plane::config::RawConfig;
use warden_control_plane::grpc::audit::AuditStreamService;
use warden_control_plane::grpc::sync::SyncService;
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::service::Actor;
use warden_proto::audit::v1 as apb;
use warden_proto::audit::v1::audit_stream_server::AuditStream as _;
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_server::Sync as _;

const NODE: &str = "edge-1";

struct Fixture {
    _dir: tempfile::TempDir,
    cp: Arc<ControlPlane>,
    sync: SyncService,
    audit: AuditStreamService,
    node_credential: String,
    node_credential_id: String,
    admin: String,
}

async fn fixture() -> Fixture {
    fixture_on(&HashMap::new()).await
}

/// A control plane on the store `store_vars` name (`WARDEN_DATABASE_URL`, …; none: SQLite
/// in a temp directory), with the master key `WARDEN_MASTER_KEY` there or a new one.
async fn open_cp(store_vars: &HashMap<String, String>) -> (tempfile::TempDir, Arc<ControlPlane>) {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = store_vars.clone();
    vars.entry("WARDEN_MASTER_KEY".to_owned())
        .or_insert_with(|| MasterKey::generate_base64().to_string());
    vars.insert(
        "WARDEN_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    );
    let config = RawConfig::from_toml("test.toml", "")
        .unwrap()
        .build_and_validate(&vars)
        .unwrap();
    (dir, warden_control_plane::open(&config).await.unwrap())
}

async fn fixture_on(store_vars: &HashMap<String, String>) -> Fixture {
    let (dir, cp) = open_cp(store_vars).await;
    let admin = cp.bootstrap_admin().await.unwrap().unwrap();
    let (secret, id) = cp
        .issue_node_credential(&Actor("test".into()), "edge", None)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    Fixture {
        sync: SyncService::new(Arc::clone(&cp), shutdown.clone()),
        audit: AuditStreamService::new(Arc::clone(&cp), shutdown),
        cp,
        _dir: dir,
        node_credential: secret.expose_secret().to_owned(),
        node_credential_id: id,
        admin: admin.expose_secret().to_owned(),
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn event(id: &str, action: &str, actor: &str, timestamp_ms: i64) -> pb::AuditEvent {
    pb::AuditEvent {
        id: id.to_owned(),
        timestamp_ms,
        action: action.to_owned(),
        actor: actor.to_owned(),
        subject: "gpt-mock".to_owned(),
        result: "ok".to_owned(),
        detail: "status=200".to_owned(),
    }
}

fn with_credential<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    request
}

impl Fixture {
    async fn publish(&self, events: Vec<pb::AuditEvent>) -> Result<u32, tonic::Status> {
        self.sync
            .publish_audit(with_credential(
                pb::AuditBatch {
                    node_id: NODE.to_owned(),
                    events,
                },
                &self.node_credential,
            ))
            .await
            .map(|r| r.into_inner().accepted)
    }

    /// Every stored row with an id in `ids`.
    async fn stored(&self, ids: &[&str]) -> Vec<warden_control_plane::domain::AuditRecord> {
        self.cp
            .list_audit(1000, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| ids.contains(&r.id.as_str()))
            .collect()
    }

    /// `audit query --until until_ms` (history only).
    async fn query_until(&self, until_ms: i64) -> Vec<apb::AuditRecord> {
        self.query(0, until_ms).await
    }

    /// `audit query --since since_ms --until until_ms` (0: unbounded; history only).
    async fn query(&self, since_ms: i64, until_ms: i64) -> Vec<apb::AuditRecord> {
        let mut stream = self
            .audit
            .subscribe(with_credential(
                apb::SubscribeRequest {
                    filter: Some(apb::Filter {
                        until_ms,
                        ..apb::Filter::default()
                    }),
                    history_only: true,
                    since_ms,
                    ..apb::SubscribeRequest::default()
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            futures::StreamExt::next(&mut stream),
        )
        .await
        .expect("the query did not end")
        {
            out.push(r.unwrap());
        }
        out
    }
}

#[tokio::test]
async fn a_node_cannot_submit_an_admin_action() {
    let f = fixture().await;
    let now = now_ms();
    let err = f
        .publish(vec![
            event("ev-good-1", "request", "jwt:svc", now),
            event("ev-forged-revoke", "token.revoke", "admin:wa_fake", now),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ev-forged-revoke"), "{err:?}");
    assert!(err.message().contains("token.revoke"), "{err:?}");
    // Nothing of the refused batch is stored.
    assert!(
        f.stored(&["ev-good-1", "ev-forged-revoke"])
            .await
            .is_empty()
    );
    assert!(
        f.cp.list_audit(1000, Some("token.revoke"))
            .await
            .unwrap()
            .is_empty()
    );
    // The refusal is audited, naming the node, its credential and the event.
    let refused =
        f.cp.list_audit(1000, Some("node.event_refused"))
            .await
            .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].subject, NODE);
    assert_eq!(refused[0].actor, format!("node:{}", f.node_credential_id));
    let detail = warden_core::audit_detail::parse(&refused[0].detail);
    assert_eq!(
        detail.get("event_id").map(String::as_str),
        Some("ev-forged-revoke")
    );
    assert!(detail["reason"].contains("token.revoke"), "{detail:?}");
    // The node's own events still go through once the bad record is split off.
    assert_eq!(
        f.publish(vec![event("ev-good-1", "request", "jwt:svc", now)])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_node_cannot_forge_an_actor() {
    let f = fixture().await;
    let now = now_ms();
    for (id, action, actor) in [
        ("ev-a1", "request", "admin:wa_1234"),
        ("ev-a2", "request", "system:config"),
        ("ev-a3", "auth.client", "jwt:someone"),
        ("ev-a4", "node.audit_quarantine", "jwt:svc"),
    ] {
        let err = f
            .publish(vec![event(id, action, actor, now)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{actor}: {err:?}");
        assert!(err.message().contains(id), "{err:?}");
    }
    assert!(
        f.stored(&["ev-a1", "ev-a2", "ev-a3", "ev-a4"])
            .await
            .is_empty()
    );
    // A node may not set the attributes the control plane adds either.
    let mut spoofed = event("ev-a5", "request", "jwt:svc", now);
    spoofed.detail = "status=200 node=other-node".into();
    assert_eq!(
        f.publish(vec![spoofed]).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Everything a node emits today passes, with its credential recorded.
    let accepted = f
        .publish(vec![
            event("ok-1", "request", "vkey:vk_1234****cdef", now),
            event("ok-2", "request", "-", now),
            event("ok-3", "auth.client", "fp:0123456789ab", now),
            event("ok-4", "node.audit_quarantine", "node:edge-1", now),
            event("ok-5", "node.dangerous_settings", "-", now),
            event("ok-6", "edge.block", "jwt:svc", now),
        ])
        .await
        .unwrap();
    assert_eq!(accepted, 6);
    let rows = f
        .stored(&["ok-1", "ok-2", "ok-3", "ok-4", "ok-5", "ok-6"])
        .await;
    assert_eq!(rows.len(), 6);
    for row in rows {
        let detail = warden_core::audit_detail::parse(&row.detail);
        assert_eq!(detail.get("node").map(String::as_str), Some(NODE));
        assert_eq!(
            detail.get("node_credential"),
            Some(&f.node_credential_id),
            "{row:?}"
        );
    }
}

#[tokio::test]
async fn a_future_timestamp_is_clamped_and_cannot_hide_later_rows() {
    let f = fixture().await;
    let now = now_ms();
    let day = 86_400_000;
    assert_eq!(
        f.publish(vec![
            event("ev-future", "request", "jwt:svc", now + day),
            event("ev-past", "request", "jwt:svc", now - day),
        ])
        .await
        .unwrap(),
        2
    );
    let after = now_ms();
    let rows = f.stored(&["ev-future", "ev-past"]).await;
    let future = rows.iter().find(|r| r.id == "ev-future").unwrap();
    assert!(
        future.timestamp_ms >= now && future.timestamp_ms <= after,
        "not clamped to now: {future:?}"
    );
    let detail = warden_core::audit_detail::parse(&future.detail);
    assert_eq!(detail.get("node_time_ms"), Some(&(now + day).to_string()));
    let past = rows.iter().find(|r| r.id == "ev-past").unwrap();
    assert!(past.timestamp_ms >= now - 5 * 60 * 1000, "{past:?}");
    let detail = warden_core::audit_detail::parse(&past.detail);
    assert_eq!(detail.get("node_time_ms"), Some(&(now - day).to_string()));

    // A row appended after the forged one is still found by a query bounded a minute from
    // now.
    assert_eq!(
        f.publish(vec![event("ev-later", "request", "jwt:svc", now_ms())])
            .await
            .unwrap(),
        1
    );
    let found = f.query_until(now_ms() + 60_000).await;
    let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
    for id in ["ev-future", "ev-past", "ev-later"] {
        assert!(
            ids.contains(&id),
            "{id} missing from --until query: {ids:?}"
        );
    }
    // And --until still excludes rows stamped at or after it.
    let before = f.query_until(now - 60_000).await;
    assert!(before.iter().all(|r| r.id != "ev-later"));
    // --since reads back over the clamping window but lists only rows stamped since then:
    // the replayed past event (stamped five minutes ago) is not among the last minute's.
    let since = f.query(now - 60_000, 0).await;
    let ids: Vec<&str> = since.iter().map(|r| r.id.as_str()).collect();
    assert!(
        ids.contains(&"ev-future") && ids.contains(&"ev-later"),
        "{ids:?}"
    );
    assert!(!ids.contains(&"ev-past"), "{ids:?}");
}

#[tokio::test]
async fn long_fields_are_cut_to_their_limits_and_secrets_in_the_detail_redacted() {
    let f = fixture().await;
    let now = now_ms();
    let mut long = event("ev-long", "request", "jwt:svc", now);
    long.subject = "é".repeat(600);
    long.result = "r".repeat(100);
    let sent_detail = format!(
        "status=200 error=\"Incorrect API key provided: sk-proj-abcdef123456\" pad={}",
        "x".repeat(3000)
    );
    long.detail = sent_detail.clone();
    let mut short = event("ev-short", "request", "jwt:svc", now);
    short.detail = "status=200 provider=mock".into();
    assert_eq!(f.publish(vec![long, short]).await.unwrap(), 2);
    let stored = f.stored(&["ev-long", "ev-short"]).await;
    let row = |id: &str| stored.iter().find(|r| r.id == id).unwrap();
    let long = row("ev-long");
    assert_eq!(long.subject, "é".repeat(512));
    assert_eq!(long.result, "r".repeat(64));
    assert!(
        !long.detail.contains("sk-proj-abcdef123456"),
        "{}",
        long.detail
    );
    assert!(long.detail.contains("[REDACTED:"), "{}", long.detail);
    let added = format!(" node={NODE} node_credential={}", f.node_credential_id);
    // The node's part cut to 2,048 characters, then redacted, then the added pairs.
    let cut: String = sent_detail.chars().take(2048).collect();
    assert_eq!(
        long.detail,
        format!("{}{added}", warden_core::redact::redact(&cut))
    );
    let short = row("ev-short");
    assert_eq!(short.subject, "gpt-mock");
    assert_eq!(short.detail, format!("status=200 provider=mock{added}"));
}

#[tokio::test]
async fn a_flood_beyond_the_quota_is_refused_and_legitimate_traffic_resumes() {
    let f = fixture().await;
    f.cp.set_node_ingest_quota(2, 1000).unwrap();
    let now = now_ms();
    let batch = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| event(&format!("{prefix}-{i}"), "request", "jwt:svc", now))
            .collect::<Vec<_>>()
    };
    assert_eq!(f.publish(batch("flood-a", 1000)).await.unwrap(), 1000);
    let err = f.publish(batch("flood-b", 1000)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(f.stored(&["flood-b-0", "flood-b-999"]).await.is_empty());
    let err = f.publish(batch("flood-c", 10)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The node backs off; at 2 events/s its next small batch is accepted.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(f.publish(batch("legit", 2)).await.unwrap(), 2);
    assert_eq!(f.stored(&["legit-0", "legit-1"]).await.len(), 2);
    // The quota is per node credential: another credential is not held back.
    let (other, _) =
        f.cp.issue_node_credential(&Actor("test".into()), "edge-b", None)
            .await
            .unwrap();
    let accepted = f
        .sync
        .publish_audit(with_credential(
            pb::AuditBatch {
                node_id: "edge-2".into(),
                events: batch("other", 1000),
            },
            other.expose_secret(),
        ))
        .await
        .unwrap()
        .into_inner()
        .accepted;
    assert_eq!(accepted, 1000);
}

#[test]
fn the_quota_settings_are_read_from_the_audit_table() {
    let vars: HashMap<String, String> = [
        (
            "WARDEN_MASTER_KEY".to_owned(),
            MasterKey::generate_base64().to_string(),
        ),
        ("WARDEN_DATA_DIR".to_owned(), "/tmp/unused".to_owned()),
    ]
    .into();
    let config = RawConfig::from_toml(
        "test.toml",
        "[audit]\nnode_ingest_rate = 100\nnode_ingest_burst = 5000\n",
    )
    .unwrap()
    .build_and_validate(&vars)
    .unwrap();
    assert_eq!(config.audit.node_ingest_rate, 100);
    assert_eq!(config.audit.node_ingest_burst, 5000);
    let defaults = RawConfig::from_toml("test.toml", "")
        .unwrap()
        .build_and_validate(&vars)
        .unwrap();
    assert_eq!(defaults.audit.node_ingest_rate, 5000);
    assert_eq!(defaults.audit.node_ingest_burst, 20_000);
    let err = RawConfig::from_toml("test.toml", "[audit]\nnode_ingest_burst = 10\n")
        .unwrap()
        .build_and_validate(&vars)
        .unwrap_err()
        .to_string();
    assert!(err.contains("audit.node_ingest_burst"), "{err}");
}

/// `WARDEN_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) on a
/// fresh schema, and one master key for every replica opened on it.
fn postgres_vars() -> HashMap<String, String> {
    let url = std::env::var("WARDEN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    [
        ("WARDEN_DATABASE_URL".to_owned(), url),
        (
            "WARDEN_DATABASE_SCHEMA".to_owned(),
            format!("t_{}", uuid::Uuid::new_v4().simple()),
        ),
        (
            "WARDEN_MASTER_KEY".to_owned(),
            MasterKey::generate_base64().to_string(),
        ),
    ]
    .into()
}

/// Drops the schema a PostgreSQL test ran on.
async fn drop_schema(vars: &HashMap<String, String>) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&vars["WARDEN_DATABASE_URL"])
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        vars["WARDEN_DATABASE_SCHEMA"]
    )))
    .execute(&mut conn)
    .await
    .unwrap();
}

fn events(prefix: &str, range: std::ops::Range<u32>) -> Vec<pb::AuditEvent> {
    let now = now_ms();
    range
        .map(|i| event(&format!("{prefix}-{i}"), "request", "jwt:svc", now))
        .collect()
}

/// How many rows each id has, over the whole log.
async fn rows_per_id(cp: &ControlPlane) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for row in cp.audit_range(1, 100_000).await.unwrap() {
        *out.entry(row.record.id).or_insert(0) += 1;
    }
    out
}

/// `events` from node [`NODE`] with `credential`, to the Sync service `sync`.
async fn publish_via(
    sync: &SyncService,
    credential: &str,
    events: Vec<pb::AuditEvent>,
) -> Result<u32, tonic::Status> {
    let request = with_credential(
        pb::AuditBatch {
            node_id: NODE.to_owned(),
            events,
        },
        credential,
    );
    sync.publish_audit(request)
        .await
        .map(|r| r.into_inner().accepted)
}

/// The node's spool sends batches again and again; `other` is a second replica's Sync
/// service (or the same one), where a retry may land while the first try still runs.
async fn redelivered_batches_are_stored_once(f: &Fixture, other: &SyncService) {
    let head = || async { f.cp.audit_head().await.unwrap().seq };
    let mut appends = f.cp.audit_appends();
    let before = head().await;
    // A batch repeating one event inside it: acknowledged whole, stored once.
    let mut first = events("rd-a", 0..10);
    first.push(first[3].clone());
    assert_eq!(f.publish(first.clone()).await.unwrap(), 11);
    assert_eq!(head().await, before + 10);
    assert_eq!(*appends.borrow_and_update(), before + 10, "followers woken");
    // The acknowledgement was lost: the whole batch again, acknowledged, nothing stored.
    assert_eq!(f.publish(first.clone()).await.unwrap(), 11);
    assert_eq!(head().await, before + 10, "a redelivery appends nothing");
    assert!(!appends.has_changed().unwrap());
    // The next batch starts with the previous one's tail.
    let mut second = events("rd-a", 6..10);
    second.extend(events("rd-b", 0..6));
    assert_eq!(f.publish(second).await.unwrap(), 10);
    assert_eq!(head().await, before + 16);
    // The same batches at once on both replicas, several times over.
    let mut tries = Vec::new();
    for round in 0..4 {
        let batch = events(&format!("rd-c{round}"), 0..50);
        tries.push(publish_via(&f.sync, &f.node_credential, batch.clone()));
        tries.push(publish_via(other, &f.node_credential, batch.clone()));
        tries.push(publish_via(other, &f.node_credential, batch));
    }
    for accepted in futures::future::join_all(tries).await {
        assert_eq!(accepted.unwrap(), 50);
    }
    let counts = rows_per_id(&f.cp).await;
    let node_rows: Vec<_> = counts
        .iter()
        .filter(|(id, _)| id.starts_with("rd-"))
        .collect();
    assert_eq!(node_rows.len(), 10 + 6 + 4 * 50, "{node_rows:?}");
    assert!(
        node_rows.iter().all(|(_, n)| **n == 1),
        "an event stored twice: {node_rows:?}"
    );
    let report = f.cp.verify_audit(None).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_batch_is_stored_once_on_sqlite() {
    let f = fixture().await;
    let again = SyncService::new(Arc::clone(&f.cp), CancellationToken::new());
    redelivered_batches_are_stored_once(&f, &again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_batch_is_stored_once_on_postgres_across_replicas() {
    let vars = postgres_vars();
    let f = fixture_on(&vars).await;
    let (_dir, replica) = open_cp(&vars).await;
    let other = SyncService::new(replica, CancellationToken::new());
    redelivered_batches_are_stored_once(&f, &other).await;
    drop(f);
    drop(other);
    drop_schema(&vars).await;
}
