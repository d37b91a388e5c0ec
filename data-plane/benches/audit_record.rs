//! The cost of one request's audit event (issue 17): its detail built the way the request
//! path builds it (`proxy/request_audit.rs`: opened, answered, finished with the usage),
//! the event made (`Event::new`: id, time, clipping, redaction of the detail) and encoded
//! into its spool record (`crc32 json\n`).
//!
//! `cargo bench -p warden-data-plane --bench audit_record` (release profile). Each case runs
//! `ROUNDS` rounds of `ITERS` iterations; the figures are ns per operation, the fastest
//! round and the median, so that a loaded machine's noise shows as their spread.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use warden_core::audit_detail::{self, Detail};
use warden_data_plane::audit::Event;
use warden_data_plane::audit::spool::encode;

const ITERS: u32 = 100_000;
const ROUNDS: usize = 7;

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

/// A completed chat request's detail, pair by pair as the request path adds them.
fn detail() -> String {
    let peer = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    Detail::with_capacity(512)
        .with("request_id", "0193a5b2-7c1e-7d2a-9f3b-5e6d7c8b9a01")
        .with("endpoint", "/v1/chat/completions")
        .with_opt("client_ip", Some(audit_detail::client_ip(peer, false)))
        .with_opt("user_agent", Some("wrk/4.2.0".to_owned()))
        .with("credential", "vk_1234****cdef")
        .with("provider", "openai")
        .with("model_served", "gpt-4o-mini")
        .with("fallback", false)
        .with_opt("upstream_key_fp", Some("3f2a9c1b7d4e"))
        .with("status", 200_u16)
        .with("tokens_in", 12_u64)
        .with("tokens_out", 3_u64)
        .with("cost_usd", "0.000004")
        .with("outcome", "completed")
        .with("latency_ms", 3_u128)
        .build()
}

fn event() -> Event {
    Event::new(
        "request",
        "vk:team-analytics".to_owned(),
        "gpt-4o-mini".to_owned(),
        "ok".to_owned(),
        detail(),
    )
}

fn main() {
    measure("detail built", || {
        black_box(detail());
    });
    measure("event made (detail, id, redaction)", || {
        black_box(event());
    });
    let one = event();
    measure("spool record encoded", || {
        black_box(encode(black_box(&one), "node-1"));
    });
    measure("event made and encoded", || {
        black_box(encode(&event(), "node-1"));
    });
}
