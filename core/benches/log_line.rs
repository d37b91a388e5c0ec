//! The cost of the node's per-request log line (issue 17): `redact` on a typical line and
//! on one holding a secret, and the whole writer path (tracing's formatting, redaction,
//! escaping; everything but the final `write`).
//!
//! `cargo bench -p warden-core --bench log_line` (release profile). Each case runs
//! `ROUNDS` rounds of `ITERS` iterations; the figures are ns per operation, the fastest
//! round and the median, so that a loaded machine's noise shows as their spread.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::hint::black_box;
use std::time::Instant;

use secrecy::SecretString;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};
use warden_core::redact;
use warden_core::telemetry::{LogFormat, RedactingStderr};

const ITERS: u32 = 100_000;
const ROUNDS: usize = 7;

/// The node's `request forwarded` line as the text format renders it.
const PLAIN: &str = "2026-12-06T19:02:24.123456Z  INFO warden_data_plane::proxy: request forwarded \
request_id=0193a5b2-7c1e-7d2a-9f3b-5e6d7c8b9a01 endpoint=/v1/chat/completions \
principal=vk:team-analytics model=gpt-4o-mini provider=openai status=200 latency_ms=3\n";

/// An upstream error passed on, with a provider key in it.
const SECRET: &str = "2026-12-06T19:02:24.123456Z  WARN warden_data_plane::upstream: upstream \
answered 401 error=\"Incorrect API key provided: sk-proj-abcdef1234567890XYZ\" provider=openai\n";

fn measure(name: &str, mut op: impl FnMut()) {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERS {
                op();
            }
            start.elapsed().as_nanos() as f64 / f64::from(ITERS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "{name:<48} min {:>8.1} ns/op  median {:>8.1}  max {:>8.1}",
        rounds[0],
        rounds[ROUNDS / 2],
        rounds[ROUNDS - 1]
    );
}

fn redaction() {
    measure("redact: plain line", || {
        black_box(redact::redact(black_box(PLAIN)));
    });
    measure("redact: line with sk- key", || {
        black_box(redact::redact(black_box(SECRET)));
    });
    redact::register(
        [
            "prov-key-one-0123456789abcdef",
            "prov-key-two-fedcba9876543210",
            "AKIAEXAMPLEKEYVALUE00",
        ]
        .map(SecretString::from),
    );
    measure("redact: plain line, 3 known secrets", || {
        black_box(redact::redact(black_box(PLAIN)));
    });
    let known = PLAIN.replace("vk:team-analytics", "prov-key-two-fedcba9876543210");
    measure("redact: line with a known secret, 3 known", || {
        black_box(redact::redact(black_box(&known)));
    });
    measure("sanitize_line: plain line, 3 known", || {
        black_box(warden_core::telemetry::sanitize_line(
            black_box(PLAIN),
            LogFormat::Text,
        ));
    });
}

fn forwarded() {
    tracing::info!(
        request_id = %"0193a5b2-7c1e-7d2a-9f3b-5e6d7c8b9a01",
        endpoint = "/v1/chat/completions",
        principal = %"vk:team-analytics",
        model = %"gpt-4o-mini",
        provider = %"openai",
        status = 200_u16,
        latency_ms = 3_u64,
        "request forwarded"
    );
}

fn with_writer<W>(name: &str, writer: W, format: LogFormat)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(fmt.with_filter(EnvFilter::new("info")));
    tracing::subscriber::with_default(subscriber, || {
        measure(name, forwarded);
    });
}

fn writer_path() {
    with_writer(
        "format only (io::sink), text",
        std::io::sink,
        LogFormat::Text,
    );
    with_writer(
        "format + redact + escape, text",
        RedactingStderr::discarding(LogFormat::Text),
        LogFormat::Text,
    );
    with_writer(
        "format only (io::sink), json",
        std::io::sink,
        LogFormat::Json,
    );
    with_writer(
        "format + redact + escape, json",
        RedactingStderr::discarding(LogFormat::Json),
        LogFormat::Json,
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(RedactingStderr::discarding(LogFormat::Text))
        .with_ansi(false)
        .with_filter(EnvFilter::new("warn"));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt), || {
        measure("filtered out (level warn): no formatting", forwarded);
    });
}

fn main() {
    redaction();
    writer_path();
}
