//! The request path's per-request body work, in ns per operation (issue 17):
//! `upstream_request` for a 1 KB chat body (non-streaming and streaming), and the pump's
//! cost per event of a 20-event OpenAI stream passed through unchanged.
//!
//! `cargo bench -p warden-data-plane --bench hot_path` (release). Plain loops over
//! `ITERATIONS`; figures on a loaded machine are noisy: run it several times.
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: it prints its figures and stops on a broken fixture"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use axum::http;
use bytes::Bytes;
use warden_data_plane::compiled::{Format, Price, Provider, Route};
use warden_data_plane::limits::Policy;
use warden_data_plane::proxy::Endpoint;
use warden_data_plane::proxy::forward::upstream_request;
use warden_data_plane::proxy::parse::parse_request;
use warden_data_plane::proxy::pump::{PumpPlan, pump};
use warden_data_plane::translate::Wire;

const ITERATIONS: u32 = 100_000;
const EVENTS: usize = 20;

/// A chat request of about 1 KB for alias `gpt-mock`.
fn chat_body(stream: bool) -> Bytes {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let body = serde_json::json!({
        "model": "gpt-mock",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
        "temperature": 0.2,
        "stream": stream,
    });
    Bytes::from(serde_json::to_vec(&body).expect("encode"))
}

fn route() -> Route {
    Route {
        alias: "gpt-mock".into(),
        provider: Arc::new(Provider {
            name: "mock".into(),
            format: Format::OpenAi,
            base_url: "http://127.0.0.1:1".into(),
            keys: Vec::new(),
            passthrough: false,
            drop_params: Vec::new(),
            client: None,
            cursor: AtomicUsize::new(0),
        }),
        upstream_model: "gpt-4o-mini".into(),
        fallbacks: Vec::new(),
        policy: Policy::default(),
        price: Price::default(),
        priced: false,
        limits_alias: "gpt-mock".into(),
        deployments: Vec::new(),
        alias_header: None,
    }
}

fn bench_upstream_request(stream: bool) -> f64 {
    let bytes = chat_body(stream);
    let request = parse_request(Endpoint::Chat, &bytes)
        .expect("parse")
        .with_raw(bytes.clone());
    let route = route();
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        let r = upstream_request(Endpoint::Chat, black_box(&request), &route).expect("request");
        black_box(r.body);
    }
    started.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
}

/// The 20 events of a streamed chat answer (and `[DONE]`), one network chunk each.
fn stream_chunks() -> Vec<Bytes> {
    let mut chunks: Vec<Bytes> = (0..EVENTS)
        .map(|i| {
            let data = if i + 1 == EVENTS {
                serde_json::json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":19,"total_tokens":31}})
            } else {
                serde_json::json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]})
            };
            Bytes::from(format!("data: {data}\n\n"))
        })
        .collect();
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    chunks
}

fn bench_pump(runtime: &tokio::runtime::Runtime, iterations: u32) -> f64 {
    let chunks = stream_chunks();
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..iterations {
            let body = reqwest::Body::wrap_stream(futures::stream::iter(
                chunks.clone().into_iter().map(Ok::<_, std::io::Error>),
            ));
            let response = http::Response::builder()
                .header(http::header::CONTENT_TYPE, "text/event-stream")
                .body(body)
                .expect("response");
            let plan = PumpPlan {
                sse: true,
                upstream: Wire::OpenAi,
                client: Wire::OpenAi,
                client_wants_usage: true,
                prompt_estimate: 10,
                price: Price::default(),
                requested_model: "gpt-mock".into(),
                dlp: None,
                deadline: None,
                cut: tokio_util::sync::CancellationToken::new(),
            };
            let mut rx = pump(reqwest::Response::from(response), None, plan, None);
            while let Some(frame) = rx.recv().await {
                black_box(frame.expect("frame"));
            }
        }
    });
    started.elapsed().as_nanos() as f64 / f64::from(iterations) / (EVENTS + 1) as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "upstream_request, 1 KB chat, non-streaming: {:>8.0} ns/op",
        bench_upstream_request(false)
    );
    println!(
        "upstream_request, 1 KB chat, streaming:     {:>8.0} ns/op",
        bench_upstream_request(true)
    );
    println!(
        "pump, 20-event OpenAI stream passed through: {:>7.0} ns/event",
        bench_pump(&runtime, ITERATIONS / 4)
    );
}
