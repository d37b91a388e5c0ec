//! Audit events per second end to end on PostgreSQL, driven by a synthetic node: a real
//! `warden-cp` process on a fresh schema, `Sync.PublishAudit` batches sent by `--concurrency`
//! node connections, each acknowledged only after commit; at the end the rows are counted
//! and the chain verified, so every event reported was acknowledged *and* persisted.
//!
//! ```sh
//! CARGO_TARGET_DIR=target-rel cargo build --release -p warden-control-plane \
//!     --bin warden-cp --example publish_audit_load
//! target-rel/release/examples/publish_audit_load --batch 256 --concurrency 8 --events 200000
//! ```
//!
//! Prints the batch size, the concurrency, PostgreSQL's `synchronous_commit`, events/s
//! (first batch sent to last acknowledgement), the latency of one `PublishAudit` call, the
//! rows counted and `audit verify`'s verdict (the Admin API's, checkpoints included), and
//! the control plane's CPU per event (`/proc/<pid>/stat` utime + stime over the load, ticks
//! of `getconf CLK_TCK`) — on one line for people, then as one JSON object on the last line
//! (`bench/run`'s audit stage reads it). The control plane runs from `--cp-bin` (default: `warden-cp`
//! beside this example's directory, i.e. the same build) with `RUST_LOG=warn`, its node
//! ingest quota raised out of the way (`[audit] node_ingest_rate`), on a fresh schema of
//! `WARDEN_BENCH_DATABASE_URL` (else `WARDEN_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards. Each event looks like a
//! node's `request` event (uuid v7 id, about 200 bytes of detail).

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::AsyncBufReadExt as _;
use tonic::transport::{Channel, Endpoint};
use warden_control_plane::secrets::cipher::MasterKey;
use warden_proto::admin::v1 as admin_pb;
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_client::SyncClient;

struct Args {
    events: usize,
    batch: usize,
    concurrency: usize,
    cp_bin: Option<PathBuf>,
    verify: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        events: 100_000,
        batch: 256,
        concurrency: 8,
        cp_bin: None,
        verify: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => args.events = it.next().context("--events N")?.parse()?,
            "--batch" => args.batch = it.next().context("--batch N")?.parse()?,
            "--concurrency" => args.concurrency = it.next().context("--concurrency N")?.parse()?,
            "--cp-bin" => args.cp_bin = Some(it.next().context("--cp-bin PATH")?.into()),
            "--no-verify" => args.verify = false,
            other => bail!(
                "unknown argument {other} (--events N, --batch N, --concurrency N, --cp-bin PATH, --no-verify)"
            ),
        }
    }
    if args.events == 0 || args.concurrency == 0 || !(1..=1000).contains(&args.batch) {
        bail!("--events and --concurrency must be positive, --batch 1 to 1000");
    }
    Ok(args)
}

/// `warden-cp` of the same build: `target/<profile>/warden-cp` beside `examples/`.
fn default_cp_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .context("cannot locate the build directory")?;
    Ok(profile_dir.join("warden-cp"))
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()?)
    };
    // utime is field 14, stime field 15.
    Ok((ticks(11)? + ticks(12)?) / ticks_per_second)
}

fn clock_ticks() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A node's `request` event, as the data plane writes it.
fn event(n: usize) -> pb::AuditEvent {
    let id = uuid::Uuid::now_v7().to_string();
    pb::AuditEvent {
        detail: format!(
            "request_id={id} endpoint=/v1/chat/completions provider=mock key=k_0001 \
             upstream_model=mock-model status=200 tokens_in=12 tokens_out=34 cost_micros=7 \
             outcome=complete latency_ms={}",
            n % 50
        ),
        id,
        timestamp_ms: now_ms(),
        action: "request".into(),
        actor: "vkey:vk_load****0001".into(),
        subject: "gpt-mock".into(),
        result: "ok".into(),
    }
}

/// The control plane under load, killed when dropped.
struct Cp {
    child: tokio::process::Child,
    addr: String,
    admin: String,
}

async fn start_cp(
    bin: &PathBuf,
    dir: &std::path::Path,
    url: &str,
    schema: &str,
    connections: usize,
) -> anyhow::Result<Cp> {
    if !bin.exists() {
        bail!(
            "{} is missing: build it in the same profile (--bin warden-cp), or pass --cp-bin",
            bin.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("cp.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\nnode_ingest_rate = 100000000\nnode_ingest_burst = 100000000\n\
             [store]\nmax_connections = {connections}\n"
        ),
    )?;
    let mut child = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("cp-data"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WARDEN_MASTER_KEY", MasterKey::generate_base64().as_str())
        .env("WARDEN_DATABASE_URL", url)
        .env("WARDEN_DATABASE_SCHEMA", schema)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("cp.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let (mut addr, mut admin) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(v) = line.strip_prefix("WARDEN_ADMIN_TOKEN=") {
                admin = Some(v.to_owned());
            }
            if let Some(v) = line.strip_prefix("WARDEN_CP_ADDR=") {
                addr = Some(v.to_owned());
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .context("warden-cp did not start within 60 s")??;
    let (Some(addr), Some(admin)) = (addr, admin) else {
        bail!(
            "warden-cp exited before printing its address and first admin credential (see {})",
            dir.join("cp.log").display()
        );
    };
    Ok(Cp { child, addr, admin })
}

fn with_bearer<T>(message: T, credential: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {credential}").parse()?);
    Ok(request)
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr.to_owned())?.connect().await?)
}

struct Load {
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu_seconds: f64,
}

/// Sends `args.events` events in batches of `args.batch` over `args.concurrency` node
/// connections, each batch after the previous one on its connection was acknowledged.
async fn run_load(cp: &Cp, credential: &str, args: &Args) -> anyhow::Result<Load> {
    let pid = cp.child.id().context("warden-cp has exited")?;
    let ticks = clock_ticks()?;
    let batches = args.events.div_ceil(args.batch);
    let next = Arc::new(AtomicUsize::new(0));
    // Connections first, so that connecting is not measured.
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        clients.push(
            SyncClient::new(channel(&cp.addr).await?)
                .max_encoding_message_size(warden_proto::GRPC_REQUEST_MAX_BYTES),
        );
    }
    let cpu_before = cpu_seconds(pid, ticks)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut client) in clients.into_iter().enumerate() {
        let next = Arc::clone(&next);
        let credential = credential.to_owned();
        let (events, batch) = (args.events, args.batch);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(latencies);
                }
                let range = b * batch..((b + 1) * batch).min(events);
                let sent = range.len();
                let message = pb::AuditBatch {
                    node_id: format!("load-{k}"),
                    events: range.map(event).collect(),
                };
                let t = Instant::now();
                let ack = client
                    .publish_audit(with_bearer(message, &credential)?)
                    .await
                    .with_context(|| format!("batch {b}"))?;
                latencies.push(t.elapsed());
                if usize::try_from(ack.into_inner().accepted)? != sent {
                    bail!("batch {b}: not every event acknowledged");
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let cpu_seconds = cpu_seconds(pid, ticks)? - cpu_before;
    Ok(Load {
        elapsed,
        latencies,
        cpu_seconds,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let url = std::env::var("WARDEN_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("WARDEN_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let bin = match &args.cp_bin {
        Some(b) => b.clone(),
        None => default_cp_bin()?,
    };
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir()?;
    let mut cp = start_cp(&bin, dir.path(), &url, &schema, args.concurrency + 4).await?;

    let mut admin = AdminClient::new(channel(&cp.addr).await?);
    let credential = admin
        .issue_node_credential(with_bearer(
            admin_pb::IssueNodeCredentialRequest {
                name: "publish-audit-load".into(),
                client_certificate_pem: String::new(),
            },
            &cp.admin,
        )?)
        .await
        .context("issuing a node credential")?
        .into_inner()
        .credential;

    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .context("WARDEN_BENCH_DATABASE_URL")?
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL (set WARDEN_BENCH_DATABASE_URL)")?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await?;
    let rows_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
        .fetch_one(&pool)
        .await?;

    let result = run_load(&cp, &credential, &args).await;
    let outcome = async {
        let load = result?;
        let rows: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit WHERE action = 'request' AND actor = 'vkey:vk_load****0001'",
        )
        .fetch_one(&pool)
        .await?;
        let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&pool)
            .await?;
        if usize::try_from(rows)? != args.events {
            bail!(
                "{rows} rows stored for {} acknowledged events",
                args.events
            );
        }
        // `wardenctl audit verify`: the control plane checks its checkpoints' signatures too.
        let verified = if args.verify {
            let report = admin
                .verify_audit(with_bearer(
                    admin_pb::VerifyAuditRequest { from_seq: 0 },
                    &cp.admin,
                )?)
                .await?
                .into_inner();
            if !report.valid {
                bail!("audit verify failed: {}", report.problem);
            }
            format!(
                "audit verify ok ({} rows, {} checkpoints)",
                report.rows_checked, report.checkpoints_checked
            )
        } else {
            "audit not verified (--no-verify)".to_owned()
        };
        let mut l = load.latencies.clone();
        l.sort_unstable();
        let pct = |p: f64| {
            let idx = ((l.len() as f64 - 1.0) * p).round() as usize;
            l.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let secs = load.elapsed.as_secs_f64();
        let cp_ms_per_event = load.cpu_seconds * 1000.0 / args.events as f64;
        println!(
            "batch {:>4}  concurrency {:>3}  synchronous_commit={synchronous_commit}  {} events in {secs:.2} s  \
             {:>8.0} events/s  PublishAudit p50 {:.2} ms p99 {:.2} ms  control plane CPU {:.2} s = {:.4} ms/event  \
             rows {} (+{} of its own)  {verified}",
            args.batch,
            args.concurrency,
            args.events,
            args.events as f64 / secs,
            pct(0.50),
            pct(0.99),
            load.cpu_seconds,
            cp_ms_per_event,
            rows,
            all - rows - rows_before,
        );
        // The same figures for a program (bench/run's audit stage reads the last line).
        println!(
            "{}",
            serde_json::json!({
                "events_per_s": (args.events as f64 / secs).round(),
                "batch_size": args.batch,
                "concurrency": args.concurrency,
                "synchronous_commit": synchronous_commit,
                "events": args.events,
                "seconds": (secs * 100.0).round() / 100.0,
                "publish_p50_ms": (pct(0.50) * 100.0).round() / 100.0,
                "publish_p99_ms": (pct(0.99) * 100.0).round() / 100.0,
                "cp_cpu_ms_per_event": (cp_ms_per_event * 10_000.0).round() / 10_000.0,
                "rows": rows,
                "verified": args.verify,
            })
        );
        anyhow::Ok(())
    }
    .await;
    cp.child.start_kill()?;
    cp.child.wait().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await?;
    pool.close().await;
    outcome
}
