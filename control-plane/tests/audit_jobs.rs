//! The audit chain's scheduled jobs (checkpoint signer, retention) and the JSONL file sink,
//! on every state store backend: SQLite on a temp file and PostgreSQL on a fresh schema of
//! the server named by `WARDEN_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards. An unreachable server
//! fails the PostgreSQL tests; they are never skipped. Every test is bounded by
//! [`TEST_TIMEOUT`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests"
)]

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::Ed25519KeyPair;
use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_control_plane::audit::export::{ExportFormat, ExportRecord, render};
use warden_control_plane::audit::jobs::{
    self, AuditJobsConfig, CheckpointKey, apply_retention, spawn_jobs,
};
use warden_control_plane::audit::jsonl::{self, JsonlConfig, rotated_path};
use warden_control_plane::audit::{
    self, AuditCheckpoint, ChainProblem, ChainedAudit, VerifyReport, checkpoint, cursor,
};
use warden_control_plane::domain::AuditRecord;
use warden_control_plane::secrets::SecretStore;
use warden_control_plane::secrets::memory::MemorySecretStore;
use warden_control_plane::store::StateStore;
use warden_control_plane::store::postgres::{PostgresSettings, PostgresStore};
use warden_control_plane::store::sqlite::SqliteStore;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// No test runs longer than this.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`eventually`] waits.
const CONVERGE: Duration = Duration::from_secs(15);
const DAY_MS: i64 = 86_400_000;

// ---- fixtures ---------------------------------------------------------------------------

fn database_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// The URL with any password masked, for failure messages.
fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
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

/// A fresh, empty store for one test.
struct Db {
    store: Arc<dyn StateStore>,
    /// Holds the SQLite file, and the JSONL files of every backend.
    dir: tempfile::TempDir,
    /// The PostgreSQL URL and schema, dropped at the end.
    postgres: Option<(String, String)>,
}

impl Db {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            dir,
            postgres: None,
        }
    }

    async fn postgres() -> Self {
        let url = database_url();
        let options =
            PgConnectOptions::from_str(&url).unwrap_or_else(|e| unreachable_database(&url, &e));
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = tokio::time::timeout(Duration::from_secs(10), options.connect())
            .await
            .unwrap_or_else(|e| unreachable_database(&url, &e))
            .unwrap_or_else(|e| unreachable_database(&url, &e));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let settings = PostgresSettings {
            schema: Some(schema.clone()),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            ..PostgresSettings::default()
        };
        let store = PostgresStore::connect(&SecretString::from(url.clone()), &settings)
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            dir: tempfile::tempdir().unwrap(),
            postgres: Some((url, schema)),
        }
    }

    fn s(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    fn jsonl_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some((url, schema)) = self.postgres.clone() else {
            return;
        };
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
            eprintln!("warning: could not drop a test schema");
        }
    }
}

/// Generates one bounded `#[tokio::test]` per body and backend: `sqlite::name` and
/// `postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::sqlite().await;
                    super::bounded(super::bodies::$name(&db)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::postgres().await;
                    super::bounded(super::bodies::$name(&db)).await;
                }
            )*
        }
    };
}

on_every_backend!(
    checkpoints_follow_the_head,
    shutdown_signs_the_head_and_the_key_is_kept,
    retention_deletes_old_rows_and_stays_verifiable,
    jsonl_writes_every_record_once_in_order,
    jsonl_rotates_by_size,
    jsonl_resumes_without_gap_or_duplicate,
);

// ---- helpers ----------------------------------------------------------------------------

async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test did not finish in time");
}

/// Polls `check` until it holds, for at most [`CONVERGE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
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

fn record(i: u64, ts: i64) -> AuditRecord {
    AuditRecord {
        id: format!("{ts:013}-{i:06}"),
        timestamp_ms: ts,
        action: "token.issue".to_owned(),
        actor: "admin:ops".into(),
        subject: format!("jti-{i}"),
        result: "ok".into(),
        detail: format!("row {i} — ünïcode \"quoted\"\nnewline ok"),
    }
}

/// Appends rows `from..=to` with timestamps `ts`, in one transaction: the head moves
/// from `from - 1` to `to` at once, never through the rows between.
async fn append(store: &dyn StateStore, from: u64, to: u64, ts: i64) {
    let records: Vec<AuditRecord> = (from..=to).map(|i| record(i, ts)).collect();
    let links = store.append_audit_batch(&records).await.unwrap();
    assert_eq!(
        links.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (from..=to).collect::<Vec<_>>()
    );
}

async fn all_rows(store: &dyn StateStore) -> Vec<ChainedAudit> {
    store.list_audit_range(0, 100_000).await.unwrap()
}

async fn verify(store: &dyn StateStore, keys: &HashMap<String, Vec<u8>>) -> VerifyReport {
    audit::verify(store, keys, None).await.unwrap()
}

fn fast_checkpoints() -> AuditJobsConfig {
    AuditJobsConfig {
        checkpoint_interval: Duration::from_millis(100),
        ..AuditJobsConfig::default()
    }
}

fn line(row: &ChainedAudit) -> String {
    render(&ExportRecord::from(row), ExportFormat::Json)
}

/// The lines the sink must have written for `rows`.
fn lines_of(rows: &[ChainedAudit]) -> Vec<String> {
    rows.iter().map(line).collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line",
        path.display()
    );
    text.lines().map(str::to_owned).collect()
}

/// The file holds every row of the chain, once each, in order.
async fn expect_all(store: &dyn StateStore, path: &Path, what: &str) {
    assert_same_lines(&read_lines(path), &lines_of(&all_rows(store).await), what);
}

/// Compares by `seq` first, so a failure shows a short list.
fn assert_same_lines(got: &[String], expected: &[String], what: &str) {
    let seqs = |lines: &[String]| lines.iter().map(|l| seq_of(l)).collect::<Vec<_>>();
    assert_eq!(seqs(got), seqs(expected), "{what}");
    assert_eq!(got, expected, "{what}");
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

fn assert_private(path: &Path) {
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
}

async fn jsonl_cursor(store: &dyn StateStore) -> u64 {
    cursor::load(store, jsonl::CURSOR_KEY).await.unwrap()
}

/// A running JSONL sink.
struct Sink {
    handle: JoinHandle<()>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
}

impl Sink {
    async fn start(db: &Db, config: &JsonlConfig) -> Self {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let handle = jsonl::spawn(
            config.clone(),
            Arc::clone(&db.store),
            Some(Arc::clone(&wake)),
            shutdown.clone(),
        )
        .await
        .unwrap();
        Self {
            handle,
            wake,
            shutdown,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }

    /// Wakes the sink and waits until its cursor reaches `seq`.
    async fn wait_for(&self, db: &Db, seq: u64) {
        self.wake.notify_one();
        eventually(&format!("the JSONL cursor at {seq}"), || async {
            jsonl_cursor(db.s()).await == seq
        })
        .await;
    }
}

/// A checkpoint at the head signed by a key that is not the control plane's, under the
/// control plane's key id.
async fn forged_checkpoint(store: &dyn StateStore, key_id: &str) -> AuditCheckpoint {
    let head = store.audit_head().await.unwrap();
    let attacker = Ed25519KeyPair::generate().unwrap();
    let created_at_ms = now_ms();
    let message = checkpoint::signed_message(head.seq, &head.hash, created_at_ms, key_id).unwrap();
    AuditCheckpoint {
        seq_upto: head.seq,
        hash: head.hash,
        signature: hex::encode(attacker.sign(&message).as_ref()),
        key_id: key_id.to_owned(),
        created_at_ms,
    }
}

mod bodies {
    use super::*;

    pub async fn checkpoints_follow_the_head(db: &Db) {
        let s = db.s();
        let secrets = Arc::new(MemorySecretStore::new());
        let shutdown = CancellationToken::new();
        let jobs = spawn_jobs(
            fast_checkpoints(),
            Arc::clone(&db.store),
            secrets.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let key_id = jobs.key_id().to_owned();
        let keys = jobs.verification_keys();
        assert_eq!(
            keys,
            jobs::verification_keys(secrets.as_ref()).await.unwrap()
        );
        assert_eq!(
            keys.get(&key_id).map(Vec::as_slice),
            Some(jobs.public_key())
        );

        // An empty chain has nothing to sign.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(s.list_checkpoints(0).await.unwrap().is_empty());

        append(s, 1, 5, now_ms()).await;
        eventually("a checkpoint at 5", || async {
            s.list_checkpoints(0).await.unwrap().len() == 1
        })
        .await;
        // Nothing moved: no new checkpoint over several intervals.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let signed = s.list_checkpoints(0).await.unwrap();
        assert_eq!(signed.len(), 1);
        assert_eq!(
            (signed[0].seq_upto, signed[0].key_id.as_str()),
            (5, key_id.as_str())
        );

        append(s, 6, 8, now_ms()).await;
        eventually("a checkpoint at 8", || async {
            s.list_checkpoints(6).await.unwrap().len() == 1
        })
        .await;
        let signed = s.list_checkpoints(0).await.unwrap();
        assert_eq!(
            signed.iter().map(|c| c.seq_upto).collect::<Vec<_>>(),
            [5, 8]
        );
        let report = verify(s, &keys).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.checkpoints_checked, report.last_seq), (2, 8));

        // Without the checkpoint key they do not verify.
        assert_eq!(
            verify(s, &HashMap::new()).await.problem,
            Some(ChainProblem::UnknownCheckpointKey {
                seq_upto: 5,
                key_id: key_id.clone()
            })
        );

        shutdown.cancel();
        jobs.join().await;

        // A checkpoint forged under the control plane's key id is rejected.
        append(s, 9, 9, now_ms()).await;
        s.insert_checkpoint(&forged_checkpoint(s, &key_id).await)
            .await
            .unwrap();
        assert_eq!(
            verify(s, &keys).await.problem,
            Some(ChainProblem::BadCheckpointSignature {
                seq_upto: 9,
                key_id
            })
        );
    }

    pub async fn shutdown_signs_the_head_and_the_key_is_kept(db: &Db) {
        let s = db.s();
        let secrets: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::new());
        // Hourly: after the signature at start, only the stop and `sign_now` sign.
        let hourly = AuditJobsConfig::default();
        let checkpoints = || async {
            s.list_checkpoints(0)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.seq_upto, c.key_id))
                .collect::<Vec<_>>()
        };

        append(s, 1, 2, now_ms()).await;
        let shutdown = CancellationToken::new();
        let jobs = spawn_jobs(
            hourly.clone(),
            Arc::clone(&db.store),
            Arc::clone(&secrets),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let key_id = jobs.key_id().to_owned();
        let public = jobs.public_key().to_vec();
        eventually("the signature at start", || async {
            checkpoints().await == [(2, key_id.clone())]
        })
        .await;
        append(s, 3, 3, now_ms()).await;
        shutdown.cancel();
        jobs.join().await;
        assert_eq!(
            checkpoints().await,
            [(2, key_id.clone()), (3, key_id.clone())],
            "the stop signs the head"
        );

        // A restart loads the same key from the secret store.
        append(s, 4, 4, now_ms()).await;
        let shutdown = CancellationToken::new();
        let jobs = spawn_jobs(
            hourly,
            Arc::clone(&db.store),
            Arc::clone(&secrets),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            (jobs.key_id(), jobs.public_key()),
            (key_id.as_str(), &public[..])
        );
        eventually("the signature at restart", || async {
            checkpoints().await.len() == 3
        })
        .await;
        assert!(jobs.sign_now().await.unwrap().is_none(), "already signed");
        append(s, 5, 5, now_ms()).await;
        let cp = jobs.sign_now().await.unwrap().unwrap();
        assert_eq!((cp.seq_upto, cp.key_id.as_str()), (5, key_id.as_str()));
        let report = verify(s, &jobs.verification_keys()).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.checkpoints_checked, report.last_seq), (4, 5));
        shutdown.cancel();
        jobs.join().await;
        assert_eq!(
            checkpoints().await.len(),
            4,
            "nothing new to sign at the stop"
        );
    }

    pub async fn retention_deletes_old_rows_and_stays_verifiable(db: &Db) {
        let s = db.s();
        let secrets: Arc<dyn SecretStore> = Arc::new(MemorySecretStore::new());
        let key = CheckpointKey::load_or_create(secrets.as_ref())
            .await
            .unwrap();
        let keys = key.verification_keys();
        let old = now_ms() - 10 * DAY_MS;

        // One run by hand: every row is old, so it signs the head and the cut lands there.
        append(s, 1, 10, old).await;
        assert_eq!(apply_retention(s, &key, 0).await.unwrap(), 0, "0 keeps all");
        assert_eq!(all_rows(s).await.len(), 10);
        assert_eq!(apply_retention(s, &key, 1).await.unwrap(), 10);
        assert!(all_rows(s).await.is_empty());
        let report = verify(s, &keys).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.anchor_seq, report.rows_checked), (10, 0));

        // Scheduled: old rows up to a checkpoint go, young rows stay.
        append(s, 11, 15, old).await;
        jobs::sign_now(s, &key).await.unwrap().unwrap();
        append(s, 16, 20, now_ms()).await;
        let shutdown = CancellationToken::new();
        let jobs = spawn_jobs(
            AuditJobsConfig {
                retention_days: 1,
                retention_interval: Duration::from_millis(100),
                ..AuditJobsConfig::default()
            },
            Arc::clone(&db.store),
            Arc::clone(&secrets),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert_eq!(jobs.key_id(), key.key_id());
        eventually("rows 11..=15 deleted", || async {
            all_rows(s).await.first().map(|r| r.seq) == Some(16)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            all_rows(s).await.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [16, 17, 18, 19, 20],
            "young rows stay"
        );
        let report = verify(s, &keys).await;
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(
            (report.anchor_seq, report.rows_checked, report.last_seq),
            (15, 5, 20)
        );
        shutdown.cancel();
        jobs.join().await;
        assert!(verify(s, &keys).await.is_valid());
    }

    pub async fn jsonl_writes_every_record_once_in_order(db: &Db) {
        let s = db.s();
        let path = db.jsonl_path();
        let config: JsonlConfig =
            toml::from_str(&format!("path = {:?}", path.display().to_string())).unwrap();
        append(s, 1, 50, now_ms()).await;
        let sink = Sink::start(db, &config).await;
        sink.wait_for(db, 50).await;
        expect_all(s, &path, "first batch").await;

        append(s, 51, 80, now_ms()).await;
        sink.wait_for(db, 80).await;
        expect_all(s, &path, "after a wake-up").await;
        assert_eq!(all_rows(s).await.len(), 80);
        assert_private(&path);
        sink.stop().await;
        assert!(!rotated_path(&path, 1).exists());
    }

    pub async fn jsonl_rotates_by_size(db: &Db) {
        let s = db.s();
        let path = db.jsonl_path();
        let config = JsonlConfig {
            path: path.clone(),
            max_bytes: 4096,
            max_files: 3,
        };
        append(s, 1, 120, now_ms()).await;
        let line_len = line(&all_rows(s).await[0]).len();
        assert!(
            120 * (line_len + 1) > 5 * 4096,
            "enough rows for more files than are kept"
        );
        let sink = Sink::start(db, &config).await;
        sink.wait_for(db, 120).await;
        sink.stop().await;

        let check = |last: u64| {
            let files: Vec<PathBuf> = [3, 2, 1]
                .into_iter()
                .map(|n| rotated_path(&path, n))
                .chain([path.clone()])
                .collect();
            assert!(!rotated_path(&path, 4).exists(), "at most 3 rotated files");
            let mut seqs = Vec::new();
            let mut previous: Option<u64> = None;
            for f in &files {
                assert_private(f);
                let size = fs::metadata(f).unwrap().len();
                assert!(size <= 4096, "{} is {size} bytes", f.display());
                let lines = read_lines(f);
                assert!(!lines.is_empty(), "{} is empty", f.display());
                if let Some(prev_size) = previous {
                    assert!(
                        prev_size + lines[0].len() as u64 + 1 > 4096,
                        "rotated before {} was full",
                        f.display()
                    );
                }
                previous = Some(size);
                seqs.extend(lines.iter().map(|l| seq_of(l)));
            }
            let first = seqs[0];
            assert!(first > 1, "the oldest files were dropped");
            assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
            first
        };
        let first = check(120);
        let kept: Vec<String> = [3, 2, 1]
            .into_iter()
            .map(|n| rotated_path(&path, n))
            .chain([path.clone()])
            .flat_map(|f| read_lines(&f))
            .collect();
        let rows = all_rows(s).await;
        assert_same_lines(
            &kept,
            &lines_of(&rows[usize::try_from(first - 1).unwrap()..]),
            "rotated files",
        );

        // A restart continues in the current file and rotates as before.
        let sink = Sink::start(db, &config).await;
        append(s, 121, 160, now_ms()).await;
        sink.wait_for(db, 160).await;
        sink.stop().await;
        check(160);
    }

    pub async fn jsonl_resumes_without_gap_or_duplicate(db: &Db) {
        let s = db.s();
        let path = db.jsonl_path();
        let config = JsonlConfig {
            path: path.clone(),
            max_bytes: jsonl::DEFAULT_MAX_BYTES,
            max_files: 2,
        };

        append(s, 1, 20, now_ms()).await;
        let sink = Sink::start(db, &config).await;
        sink.wait_for(db, 20).await;
        sink.stop().await;

        // Rows appended while stopped are written after a restart.
        append(s, 21, 30, now_ms()).await;
        let sink = Sink::start(db, &config).await;
        sink.wait_for(db, 30).await;
        sink.stop().await;
        expect_all(s, &path, "stop and start").await;

        // Crash window: lines 26..=30 were synced, the cursor was not stored.
        s.set_meta(jsonl::CURSOR_KEY, "25").await.unwrap();
        let sink = Sink::start(db, &config).await;
        sink.wait_for(db, 30).await;
        append(s, 31, 31, now_ms()).await;
        sink.wait_for(db, 31).await;
        sink.stop().await;
        expect_all(s, &path, "cursor behind the file").await;

        // Crash window: line 32 written, cursor not stored, line 33 torn mid-write.
        append(s, 32, 33, now_ms()).await;
        let rows = all_rows(s).await;
        let (l32, l33) = (line(&rows[31]), line(&rows[32]));
        {
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            write!(f, "{l32}\n{}", &l33[..l33.len() / 2]).unwrap();
        }
        assert_eq!(jsonl_cursor(s).await, 31);
        let sink = Sink::start(db, &config).await;
        sink.wait_for(db, 33).await;
        sink.stop().await;
        expect_all(s, &path, "torn line after an unrecorded one").await;

        // A last line that is not a record of this chain does not move the cursor.
        {
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            writeln!(f, r#"{{"seq":999,"id":"elsewhere"}}"#).unwrap();
        }
        let sink = Sink::start(db, &config).await;
        append(s, 34, 34, now_ms()).await;
        sink.wait_for(db, 34).await;
        sink.stop().await;
        let lines = read_lines(&path);
        let rows = all_rows(s).await;
        let mut expected = lines_of(&rows[..33]);
        expected.push(r#"{"seq":999,"id":"elsewhere"}"#.to_owned());
        expected.push(line(&rows[33]));
        assert_same_lines(&lines, &expected, "a foreign last line");
        assert_private(&path);
    }
}
