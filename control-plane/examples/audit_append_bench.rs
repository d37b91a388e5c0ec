//! Audit events persisted per second, SQLite and PostgreSQL, through the real
//! `StateStore::append_audit` (hash-chained, one transaction per event).
//!
//! ```sh
//! cargo run --release -p warden-control-plane --example audit_append_bench
//! cargo run --release -p warden-control-plane --example audit_append_bench -- --events 20000 --writers 16
//! ```
//!
//! For each backend: `--events` appends from one task, then `--events` appends spread over
//! `--writers` concurrent tasks, then `--events` appended in batches of `--batch` per
//! transaction (`append_audit_batch`, as node batches arrive), then a full chain
//! verification. SQLite runs on a temp file
//! (WAL, synchronous=FULL, the store's defaults); PostgreSQL on a fresh schema of
//! `WARDEN_BENCH_DATABASE_URL` (else `WARDEN_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards.

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use secrecy::SecretString;
use warden_control_plane::audit;
use warden_control_plane::domain::AuditRecord;
use warden_control_plane::store::postgres::{PostgresSettings, PostgresStore};
use warden_control_plane::store::sqlite::SqliteStore;
use warden_control_plane::store::{Pool, StateStore};

struct Args {
    events: usize,
    writers: usize,
    batch: usize,
    skip_postgres: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        events: 5000,
        writers: 8,
        batch: 100,
        skip_postgres: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => args.events = it.next().context("--events N")?.parse()?,
            "--writers" => args.writers = it.next().context("--writers N")?.parse()?,
            "--batch" => args.batch = it.next().context("--batch N")?.parse()?,
            "--skip-postgres" => args.skip_postgres = true,
            other => bail!(
                "unknown argument {other} (--events N, --writers N, --batch N, --skip-postgres)"
            ),
        }
    }
    if args.writers == 0 || args.events == 0 || args.batch == 0 {
        bail!("--events, --writers and --batch must be positive");
    }
    Ok(args)
}

fn record(i: usize) -> AuditRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        timestamp_ms: now,
        action: "token.issue".into(),
        actor: "admin:bench".into(),
        subject: format!("0198f3a2-7c1e-7b3d-9d2c-{i:012}"),
        result: "ok".into(),
        detail: String::new(),
    }
}

struct Run {
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn line(&self, label: &str) -> String {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let pct = |p: f64| {
            let idx = ((l.len() as f64 - 1.0) * p).round() as usize;
            l.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        format!(
            "{label:<34} {:>7} events {:>8.2} s {:>9.0} events/s   p50 {:>6.2} ms  p99 {:>6.2} ms",
            self.events,
            self.elapsed.as_secs_f64(),
            self.events as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
        )
    }
}

async fn sequential(store: &Arc<dyn StateStore>, events: usize) -> anyhow::Result<Run> {
    let mut latencies = Vec::with_capacity(events);
    let start = Instant::now();
    for i in 0..events {
        let t = Instant::now();
        store.append_audit(&record(i)).await?;
        latencies.push(t.elapsed());
    }
    Ok(Run {
        events,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn batched(store: &Arc<dyn StateStore>, events: usize, batch: usize) -> anyhow::Result<Run> {
    let mut latencies = Vec::with_capacity(events.div_ceil(batch));
    let start = Instant::now();
    let mut done = 0;
    while done < events {
        let n = batch.min(events - done);
        let records: Vec<_> = (done..done + n)
            .map(|i| record(2_000_000_000 + i))
            .collect();
        let t = Instant::now();
        store.append_audit_batch(&records).await?;
        latencies.push(t.elapsed());
        done += n;
    }
    Ok(Run {
        events,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn concurrent(
    store: &Arc<dyn StateStore>,
    events: usize,
    writers: usize,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(store);
            // Spread `events` over the writers; the first ones take the remainder.
            let mine = events / writers + usize::from(w < events % writers);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(mine);
                for i in 0..mine {
                    let t = Instant::now();
                    store.append_audit(&record(w * 1_000_000 + i)).await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(events);
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Run {
        events,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn bench(name: &str, store: Arc<dyn StateStore>, args: &Args) -> anyhow::Result<()> {
    let seq = sequential(&store, args.events).await?;
    println!("{}", seq.line(&format!("{name} sequential (1 writer)")));
    let conc = concurrent(&store, args.events, args.writers).await?;
    println!(
        "{}",
        conc.line(&format!("{name} concurrent ({} writers)", args.writers))
    );
    let batch = batched(&store, args.events, args.batch).await?;
    println!(
        "{}   (latency per batch)",
        batch.line(&format!("{name} batched ({} per tx)", args.batch))
    );
    let t = Instant::now();
    let report = audit::verify(store.as_ref(), &HashMap::new(), None).await?;
    let elapsed = t.elapsed();
    if !report.is_valid() || report.rows_checked != (3 * args.events) as u64 {
        bail!("{name}: chain does not verify after the run: {report:?}");
    }
    println!(
        "{:<34} {:>7} rows   {:>8.2} s {:>9.0} rows/s",
        format!("{name} verify (whole chain)"),
        report.rows_checked,
        elapsed.as_secs_f64(),
        report.rows_checked as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "audit append bench: {} events per run, {} concurrent writers, {} CPUs",
        args.events,
        args.writers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).await?);
    bench("sqlite", sqlite, &args).await?;

    if args.skip_postgres {
        return Ok(());
    }
    let url = std::env::var("WARDEN_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("WARDEN_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let settings = PostgresSettings {
        schema: Some(schema.clone()),
        max_connections: u32::try_from(args.writers + 2).unwrap_or(u32::MAX),
        ..PostgresSettings::default()
    };
    let pg = PostgresStore::connect(&SecretString::from(url), &settings)
        .await
        .context("connecting to PostgreSQL (set WARDEN_BENCH_DATABASE_URL, or --skip-postgres)")?;
    let Pool::Postgres(pool) = pg.pool().clone() else {
        bail!("PostgresStore::connect opened a store on another backend");
    };
    let result = bench("postgres", Arc::new(pg), &args).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await?;
    pool.close().await;
    result
}
