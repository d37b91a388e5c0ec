//! `warden-bench`: the gateway's added latency and throughput, measured side by side in one
//! run against the same mock provider — straight to the mock vs. through a `warden-dp`
//! node — so that the figures compare on a shared, noisy machine.
//!
//! Usage (release binaries give meaningful numbers):
//!   cargo build --release --workspace --bins
//!   target/release/warden-bench [--requests 2000] [--concurrency 32] [--seconds 10]
//!       [--redis redis://127.0.0.1:6379]
//!
//! With `--redis`, the nodes share state in that Redis and a third target is measured: the
//! same gateway with limits on (a virtual key with rpm, tpm and parallel limits high enough
//! never to refuse), so that every request makes the admission and settlement round trips.
//!
//! Sequential phase: requests alternate direct / gateway, so drift hits both equally;
//! reports p50/p90/p99 and the difference. Concurrent phase: `concurrency` workers for
//! `seconds` each against direct, then gateway; reports requests per second. Streaming
//! phase: time to the first SSE chunk, direct vs. gateway.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool that prints its results"
)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use warden_tests::cluster::{MODEL, Options, TestCluster};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Target {
    name: &'static str,
    url: String,
    auth: String,
}

async fn one(http: &reqwest::Client, t: &Target, body: &serde_json::Value) -> Duration {
    let start = Instant::now();
    let r = http
        .post(&t.url)
        .bearer_auth(&t.auth)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{} answered {}",
        t.name,
        r.status()
    );
    let _ = r.bytes().await.unwrap();
    start.elapsed()
}

async fn first_chunk(http: &reqwest::Client, t: &Target, body: &serde_json::Value) -> Duration {
    let start = Instant::now();
    let r = http
        .post(&t.url)
        .bearer_auth(&t.auth)
        .json(body)
        .send()
        .await
        .unwrap();
    let mut s = r.bytes_stream();
    let _ = s.next().await.unwrap().unwrap();
    let ttfb = start.elapsed();
    while s.next().await.is_some() {}
    ttfb
}

fn report(name: &str, mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let (p50, p90, p99) = (
        micros(percentile(&samples, 0.50)),
        micros(percentile(&samples, 0.90)),
        micros(percentile(&samples, 0.99)),
    );
    println!(
        "{name:<28} n={:<6} p50={p50:>9.1}µs p90={p90:>9.1}µs p99={p99:>9.1}µs",
        samples.len()
    );
    (p50, p90, p99)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests = arg("--requests", 2000);
    let concurrency = arg("--concurrency", 32);
    let seconds = arg("--seconds", 10);
    let args: Vec<String> = std::env::args().collect();
    let redis = args
        .iter()
        .position(|a| a == "--redis")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cluster = TestCluster::start_with(
        1,
        Options {
            redis_url: redis.clone(),
            node_count: Some(1),
            ..Options::default()
        },
    )
    .await?;
    let token = cluster.issue_token("bench", "*")?;
    let limited_key = cluster.ctl_ok(
        &[
            "vkey",
            "create",
            "--name",
            "bench-limited",
            "--rpm",
            "100000000",
            "--tpm",
            "100000000000",
            "--max-parallel",
            "100000",
        ],
        None,
    )?;
    let direct = Target {
        name: "direct",
        url: format!("{}/chat/completions", cluster.mock.base_url()),
        auth: "sk-direct-bench".into(),
    };
    let gateway = Target {
        name: "gateway",
        url: cluster.nodes[0].url("/v1/chat/completions"),
        auth: token,
    };
    let limited = Target {
        name: "gateway, limits on",
        url: cluster.nodes[0].url("/v1/chat/completions"),
        auth: limited_key,
    };
    let with_limits = redis.is_some();
    let body = TestCluster::chat_body(MODEL, "measure the added latency of the gateway", false);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    for _ in 0..200 {
        one(&http, &direct, &body).await;
        one(&http, &gateway, &body).await;
        if with_limits {
            one(&http, &limited, &body).await;
        }
    }
    let (mut d, mut g, mut l) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..requests {
        d.push(one(&http, &direct, &body).await);
        g.push(one(&http, &gateway, &body).await);
        if with_limits {
            l.push(one(&http, &limited, &body).await);
        }
    }
    println!("# sequential non-streaming chat completions (alternating)");
    let (d50, d90, d99) = report("direct to mock", d);
    let (g50, g90, g99) = report("through warden-dp", g);
    println!(
        "{:<28} p50={:>9.1}µs p90={:>9.1}µs p99={:>9.1}µs",
        "added by the gateway",
        g50 - d50,
        g90 - d90,
        g99 - d99
    );
    if with_limits {
        let (l50, l90, l99) = report("warden-dp, limits on", l);
        println!(
            "{:<28} p50={:>9.1}µs p90={:>9.1}µs p99={:>9.1}µs",
            "added by the limiter",
            l50 - g50,
            l90 - g90,
            l99 - g99
        );
    }

    let stream_body = TestCluster::chat_body(MODEL, "first chunk timing", true);
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for _ in 0..(requests / 4).max(50) {
        d.push(first_chunk(&http, &direct, &stream_body).await);
        g.push(first_chunk(&http, &gateway, &stream_body).await);
    }
    println!("# streaming: time to first chunk (alternating)");
    let (d50, _, d99) = report("direct to mock", d);
    let (g50, _, g99) = report("through warden-dp", g);
    println!(
        "{:<28} p50={:>9.1}µs p99={:>9.1}µs",
        "added by the gateway",
        g50 - d50,
        g99 - d99
    );

    println!("# throughput: {concurrency} concurrent clients, {seconds}s each");
    let mut targets = vec![&direct, &gateway];
    if with_limits {
        targets.push(&limited);
    }
    for t in targets {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (http, url, auth, body) =
                (http.clone(), t.url.clone(), t.auth.clone(), body.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let r = http
                        .post(&url)
                        .bearer_auth(&auth)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    let _ = r.bytes().await.unwrap();
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for w in workers {
            total += w.await?;
        }
        println!(
            "{:<28} {:>9.0} req/s",
            t.name,
            total as f64 / seconds as f64
        );
    }
    eprintln!("(client, mock provider and node share this machine's cores)");
    Ok(())
}
