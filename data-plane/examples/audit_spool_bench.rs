//! What the on-disk audit spool costs: the time `AuditSink::emit` takes on the request path
//! (queue only: no disk I/O), how long an event takes to be durable (append + fdatasync of
//! its group) at a light rate, and how many events per second the writer thread makes
//! durable when events arrive as fast as it takes them. Events carry a detail like a real
//! request's (~330 bytes).
//!
//! `cargo run --release -p warden-data-plane --example audit_spool_bench [-- DIR]`
//! (default: a fresh directory under the OS temporary directory; give a directory on the
//! disk the node would use).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool"
)]

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use warden_data_plane::audit::AuditSink;
use warden_data_plane::audit::spool::{OnFull, SpoolConfig};

fn detail(i: u64) -> String {
    format!(
        "request_id=019ad3f1-7c2e-7b3a-9d41-{i:012} endpoint=/v1/chat/completions client_ip=10.1.2.3 \
         user_agent=\"OpenAI/Python 1.99.1\" credential=jwt:svc-bench provider=openai \
         model_served=gpt-4o-mini fallback=false upstream_key_fp=3f9a1c2b status=200 \
         tokens_in=812 tokens_out=211 cost_usd=0.000249 outcome=completed latency_ms=734"
    )
}

fn emit(sink: &AuditSink, i: u64) {
    sink.emit(
        "request",
        "jwt:svc-bench".to_owned(),
        "gpt-4o-mini".to_owned(),
        "ok".to_owned(),
        detail(i),
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().join("spool"), Into::into);
    println!("spool: {}", dir.display());

    // 1. Durability latency at a light rate: one event at a time, wait until synced.
    {
        let config = SpoolConfig {
            dir: dir.join("light"),
            max_bytes: 256 * 1024 * 1024,
            on_full: OnFull::Closed,
            previous_default: None,
        };
        let (sink, _reader) = AuditSink::start(&config, "bench", CancellationToken::new()).unwrap();
        let mut lat = Vec::new();
        for i in 0..500 {
            let target = sink.spool().handled() + 1;
            let start = Instant::now();
            emit(&sink, i);
            while sink.spool().handled() < target {
                std::hint::spin_loop();
            }
            lat.push(start.elapsed());
        }
        lat.sort();
        println!(
            "emit -> durable, one event at a time (500): p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs",
            percentile(&lat, 0.5).as_secs_f64() * 1e6,
            percentile(&lat, 0.9).as_secs_f64() * 1e6,
            percentile(&lat, 0.99).as_secs_f64() * 1e6,
        );
    }

    // 2. Throughput: emit as fast as the writer takes them (keeping the queue below full).
    {
        let config = SpoolConfig {
            dir: dir.join("burst"),
            max_bytes: 1024 * 1024 * 1024,
            on_full: OnFull::Closed,
            previous_default: None,
        };
        let (sink, _reader) = AuditSink::start(&config, "bench", CancellationToken::new()).unwrap();
        let total: u64 = 200_000;
        let mut in_emit = Duration::ZERO;
        let start = Instant::now();
        let mut i = 0;
        while i < total {
            let t = Instant::now();
            for _ in 0..1000 {
                emit(&sink, i);
                i += 1;
            }
            in_emit += t.elapsed();
            while i - sink.spool().handled() > 20_000 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        assert!(sink.drain(Duration::from_secs(120)).await);
        let elapsed = start.elapsed();
        println!(
            "burst of {total}: {:.0} events/s durable, emit() {:.2} µs/call, {:.0} bytes/event on disk, dropped {}",
            total as f64 / elapsed.as_secs_f64(),
            in_emit.as_secs_f64() * 1e6 / total as f64,
            sink.spool().used_bytes() as f64 / total as f64,
            sink.spool().dropped(),
        );
    }
}
