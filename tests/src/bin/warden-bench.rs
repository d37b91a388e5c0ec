//! `warden-bench`: the gateway's added latency and throughput, measured side by side in one
//! run against the same mock provider — straight to the mock vs. through a `warden-dp`
//! node — so that the figures compare on a shared, noisy machine.
//!
//! Usage (release binaries give meaningful numbers):
//!   cargo build --release --workspace --bins
//!   target/release/warden-bench [--requests 2000] [--concurrency 32] [--seconds 10]
//!       [--redis redis://127.0.0.1:6379] [--tls [--new-connection-per-request]]
//!       [--dlp] [--access] [--body-bytes 1024]
//!
//! With `--access`, the client controls of issue 14 that apply to every request are on: a
//! global IP allow-list (`127.0.0.0/8, ::1`, so nothing is refused) and CORS for one origin
//! (`policy set --global --allow-ip … --cors-origin …`); address blocking is on by default.
//!
//! With `--dlp`, the built-in DLP rules are on (`wardenctl dlp enable-builtin --action
//! redact`) for every gateway target. With `--body-bytes N`, the user message of every
//! request is N bytes of text (words, numbers and punctuation that no built-in rule
//! matches, so the figure is the cost of scanning, not of redacting) instead of a short
//! sentence; run with and without `--dlp` at 1024, 32768 and 1048576 to see what DLP costs
//! per request size.
//!
//! With `--redis`, the nodes share state in that Redis and a third target is measured: the
//! same gateway with limits on (a virtual key with rpm, tpm and parallel limits high enough
//! never to refuse), so that every request makes its Redis round trips: the admission before
//! the first byte and, with the parallel limit, the slot's release (carrying the batched
//! settlement) after the answer.
//!
//! With `--tls`, a second node serves HTTPS (a certificate from a throwaway CA; the
//! client trusts that CA) and is measured beside the plain one: the difference is what TLS
//! costs a request on a kept-alive connection. Every client speaks HTTP/1.1 (as the
//! Python SDKs do by default), so that only TLS differs. With
//! `--new-connection-per-request` as well, a sequential phase opens a new connection for
//! every request, plain and TLS: the difference there is a TCP + TLS handshake.
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

/// `bytes` of prose-like text that no built-in DLP rule matches: words, short numbers,
/// dashes and an `sk`-less sprinkling of key-like words.
fn filler(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "gateway",
        "order",
        "1234",
        "invoice",
        "2026-12-06",
        "sky-high",
        "task",
        "AKIA",
        "number",
        "555-0100",
        "account",
        "ref",
        "42",
        "summary",
        "of",
        "the",
        "quarter,",
    ];
    let mut out = String::with_capacity(bytes + 16);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(WORDS[i % WORDS.len()]);
        out.push(' ');
        i += 1;
    }
    out.truncate(bytes);
    out
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
    let with_tls = args.iter().any(|a| a == "--tls");
    let with_dlp = args.iter().any(|a| a == "--dlp");
    let with_access = args.iter().any(|a| a == "--access");
    let body_bytes = arg("--body-bytes", 0);
    let new_connections = args.iter().any(|a| a == "--new-connection-per-request");
    let mut cluster = TestCluster::start_with(
        1,
        Options {
            redis_url: redis.clone(),
            node_count: Some(1),
            ..Options::default()
        },
    )
    .await?;
    let token = cluster.issue_token("bench", "*")?;
    if with_dlp {
        cluster.ctl_ok(&["dlp", "enable-builtin", "--action", "redact"], None)?;
        println!("DLP: the built-in rules are on (redact)");
    }
    if with_access {
        cluster.ctl_ok(
            &[
                "policy",
                "set",
                "--global",
                "--allow-ip",
                "127.0.0.0/8,::1",
                "--cors-origin",
                "https://app.example",
            ],
            None,
        )?;
        println!("access: global IP allow-list and CORS on");
    }
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
    // The HTTPS node: a second node with a certificate from a throwaway CA.
    let ca = warden_tests::pki::TestCa::new()?;
    let certs = tempfile::tempdir()?;
    let https = if with_tls {
        let (cert_file, key_file) = (certs.path().join("node.pem"), certs.path().join("node.key"));
        ca.server_cert(1)?.install(&cert_file, &key_file)?;
        cluster.options.node_args = vec![
            "--http-tls-cert-file".to_owned(),
            cert_file.display().to_string(),
            "--http-tls-key-file".to_owned(),
            key_file.display().to_string(),
        ];
        let index = cluster.add_node().await?;
        Some(Target {
            name: "gateway over TLS",
            url: format!(
                "https://127.0.0.1:{}/v1/chat/completions",
                cluster.nodes[index].port
            ),
            auth: gateway.auth.clone(),
        })
    } else {
        None
    };
    let text = if body_bytes > 0 {
        filler(usize::try_from(body_bytes)?)
    } else {
        "measure the added latency of the gateway".to_owned()
    };
    println!("request text: {} bytes", text.len());
    let body = TestCluster::chat_body(MODEL, &text, false);
    let client = || {
        reqwest::Client::builder()
            .http1_only()
            .tls_certs_only([ca.reqwest_certificate().unwrap()])
    };
    let http = client().pool_max_idle_per_host(256).build()?;

    for _ in 0..200 {
        one(&http, &direct, &body).await;
        one(&http, &gateway, &body).await;
        if with_limits {
            one(&http, &limited, &body).await;
        }
        if let Some(https) = &https {
            one(&http, https, &body).await;
        }
    }
    let (mut d, mut g, mut l, mut t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..requests {
        d.push(one(&http, &direct, &body).await);
        g.push(one(&http, &gateway, &body).await);
        if with_limits {
            l.push(one(&http, &limited, &body).await);
        }
        if let Some(https) = &https {
            t.push(one(&http, https, &body).await);
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
    if https.is_some() {
        let (t50, t90, t99) = report("warden-dp over TLS", t);
        println!(
            "{:<28} p50={:>9.1}µs p90={:>9.1}µs p99={:>9.1}µs",
            "added by TLS (kept alive)",
            t50 - g50,
            t90 - g90,
            t99 - g99
        );
    }
    if let (Some(https), true) = (&https, new_connections) {
        // No idle connection is kept: every request connects (and handshakes) anew.
        let fresh = client().pool_max_idle_per_host(0).build()?;
        let (mut g, mut t) = (Vec::new(), Vec::new());
        for _ in 0..50 {
            one(&fresh, &gateway, &body).await;
            one(&fresh, https, &body).await;
        }
        for _ in 0..(requests / 2).max(100) {
            g.push(one(&fresh, &gateway, &body).await);
            t.push(one(&fresh, https, &body).await);
        }
        println!("# sequential, a new connection per request (alternating)");
        let (g50, g90, g99) = report("warden-dp, new connection", g);
        let (t50, t90, t99) = report("over TLS, new connection", t);
        println!(
            "{:<28} p50={:>9.1}µs p90={:>9.1}µs p99={:>9.1}µs",
            "TLS handshake (TLS - plain)",
            t50 - g50,
            t90 - g90,
            t99 - g99
        );
    }

    let stream_body = TestCluster::chat_body(MODEL, "first chunk timing", true);
    let (mut d, mut g, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..(requests / 4).max(50) {
        d.push(first_chunk(&http, &direct, &stream_body).await);
        g.push(first_chunk(&http, &gateway, &stream_body).await);
        if let Some(https) = &https {
            t.push(first_chunk(&http, https, &stream_body).await);
        }
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
    if https.is_some() {
        report("warden-dp over TLS", t);
    }

    println!("# throughput: {concurrency} concurrent clients, {seconds}s each");
    let mut targets = vec![&direct, &gateway];
    if with_limits {
        targets.push(&limited);
    }
    if let Some(https) = &https {
        targets.push(https);
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
