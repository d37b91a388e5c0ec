//! Shared limits and key health against a real Redis: several limiters / key pickers in one
//! process stand for several nodes (the end-to-end suite runs real node processes).
//!
//! Needs `WARDEN_TEST_REDIS_URL` (scripts/test.sh exports it; CI has Redis on 6379) and,
//! for the restart test, `redis-server` on the PATH. Missing either fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use warden_data_plane::compiled::{Format, Provider, UpstreamKey};
use warden_data_plane::limits::{Denied, LimitKind, Limiter, LimiterSettings, Policy, Scope};
use warden_data_plane::redis_state::redis::{RedisLink, RedisSettings, Topology};
use warden_data_plane::upstream::keys::{KeyPicker, NoKey};

mod support;
use support::PrivateRedis;

fn redis_url() -> String {
    std::env::var("WARDEN_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("WARDEN_TEST_REDIS_URL is not set: run scripts/test.sh, or export it (e.g. redis://127.0.0.1:6379)")
    })
}

fn settings(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        topology: Topology::Single(SecretString::from(url.to_owned())),
        prefix: prefix.to_owned(),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(250),
        root_ca: None,
    }
}

async fn link(url: &str, prefix: &str) -> Arc<RedisLink> {
    let link = RedisLink::start(settings(url, prefix), CancellationToken::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !link.is_healthy() {
        assert!(
            Instant::now() < deadline,
            "redis at {url} did not become reachable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link
}

fn prefix() -> String {
    format!("wt-{}", uuid::Uuid::new_v4().simple())
}

fn scope(id: &str, policy: Policy) -> Scope {
    Scope {
        id: id.to_owned(),
        policy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_holds_across_three_nodes() {
    let url = redis_url();
    let p = prefix();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Limiter::new(
            Some(link(&url, &p).await),
            LimiterSettings {
                node_count: 3,
                ..LimiterSettings::default()
            },
        ));
    }
    let rpm = 600;
    let s = scope(
        "vkey:accuracy",
        Policy {
            rpm,
            ..Policy::default()
        },
    );
    let admitted = Arc::new(AtomicUsize::new(0));
    let run_for = Duration::from_secs(4);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..6 {
            let (node, s, admitted) = (Arc::clone(node), s.clone(), Arc::clone(&admitted));
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run_for {
                    match node.admit(vec![s.clone()], 0).await {
                        Ok(a) => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            a.finish(0, 0).await;
                        }
                        Err(Denied::Limit {
                            kind: LimitKind::Requests,
                            ..
                        }) => {}
                        Err(other) => panic!("unexpected refusal {other:?}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Token bucket: a minute's worth at once, then rpm/60 per second.
    let allowance = rpm as f64 + rpm as f64 / 60.0 * elapsed;
    let got = admitted.load(Ordering::Relaxed) as f64;
    assert!(
        got <= allowance * 1.01,
        "admitted {got}, allowance {allowance:.0}"
    );
    assert!(
        got >= rpm as f64,
        "admitted only {got}: the limiter is stricter than its limit"
    );
}

#[tokio::test]
async fn parallel_slots_are_shared_and_released_on_every_path() {
    let url = redis_url();
    let p = prefix();
    let a = Limiter::new(Some(link(&url, &p).await), LimiterSettings::default());
    let b = Limiter::new(Some(link(&url, &p).await), LimiterSettings::default());
    let s = scope(
        "vkey:slots",
        Policy {
            max_parallel: 2,
            ..Policy::default()
        },
    );
    let first = a.admit(vec![s.clone()], 0).await.unwrap();
    let second = b.admit(vec![s.clone()], 0).await.unwrap();
    let third = a.admit(vec![s.clone()], 0).await;
    assert!(
        matches!(
            third,
            Err(Denied::Limit {
                kind: LimitKind::Parallel,
                ..
            })
        ),
        "{third:?}"
    );
    // Finished normally.
    first.finish(10, 0).await;
    let again = b.admit(vec![s.clone()], 0).await.unwrap();
    // Dropped without finishing (client went away, error path): released by a task.
    drop(second);
    drop(again);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let x = a.admit(vec![s.clone()], 0).await;
        let y = a.admit(vec![s.clone()], 0).await;
        if let (Ok(x), Ok(y)) = (x, y) {
            x.finish(0, 0).await;
            y.finish(0, 0).await;
            break;
        }
        assert!(Instant::now() < deadline, "slots leaked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tpm_reserves_an_estimate_and_settles_to_reported_usage() {
    let url = redis_url();
    let p = prefix();
    let l = Limiter::new(Some(link(&url, &p).await), LimiterSettings::default());
    let s = scope(
        "vkey:tpm",
        Policy {
            tpm: 1000,
            ..Policy::default()
        },
    );
    let a = l.admit(vec![s.clone()], 900).await.unwrap();
    let remaining = a.headers.tokens.unwrap().remaining;
    assert!((99..=101).contains(&remaining), "{remaining}");
    // While 900 are reserved, a request for 300 does not fit.
    assert!(matches!(
        l.admit(vec![s.clone()], 300).await,
        Err(Denied::Limit {
            kind: LimitKind::Tokens,
            ..
        })
    ));
    // The provider reported 100: 800 come back.
    a.finish(100, 0).await;
    let b = l.admit(vec![s.clone()], 800).await.unwrap();
    b.finish(800, 0).await;
}

#[tokio::test]
async fn budgets_refuse_once_spent_and_streams_see_the_ceiling() {
    let url = redis_url();
    let p = prefix();
    let l = Limiter::new(Some(link(&url, &p).await), LimiterSettings::default());
    let s = scope(
        "vkey:budget",
        Policy {
            max_budget_micros: 1_000,
            budget_period_secs: 3600,
            ..Policy::default()
        },
    );
    let mut a = l.admit(vec![s.clone()], 10).await.unwrap();
    assert_eq!(
        a.charge(64, 600).await,
        warden_data_plane::limits::Metered::Within
    );
    assert_eq!(
        a.charge(64, 600).await,
        warden_data_plane::limits::Metered::Exceeded(LimitKind::Budget)
    );
    a.finish(138, 0).await;
    let refused = l.admit(vec![s.clone()], 10).await;
    match refused {
        Err(Denied::Limit {
            kind: LimitKind::Budget,
            retry_after,
            ..
        }) => {
            assert!(retry_after <= Duration::from_secs(3600 + 60));
        }
        other => panic!("expected a budget refusal, got {other:?}"),
    }
}

fn provider(keys: usize) -> Provider {
    Provider {
        name: format!("p-{}", uuid::Uuid::new_v4().simple()),
        format: Format::OpenAi,
        base_url: "http://127.0.0.1:1/v1".into(),
        keys: (0..keys)
            .map(|i| UpstreamKey {
                id: format!("key_{i}"),
                fingerprint: format!("fp{i}"),
                secret: SecretString::from(format!("sk-test-{i}")),
                disabled: false,
                health_epoch: 0,
            })
            .collect(),
        passthrough: false,
        drop_params: Vec::new(),
        client: None,
        cursor: AtomicUsize::new(0),
    }
}

#[tokio::test]
async fn key_rotation_and_health_are_shared_between_nodes() {
    let url = redis_url();
    let p = prefix();
    let node_a = KeyPicker::new(Some(link(&url, &p).await));
    let node_b = KeyPicker::new(Some(link(&url, &p).await));
    let prov = provider(3);
    // Round-robin on each node, over the provider's cursor (one snapshot here): every key
    // is used evenly.
    let mut seen = [0usize; 3];
    for i in 0..30 {
        let picker = if i % 2 == 0 { &node_a } else { &node_b };
        seen[picker.pick(&prov, &[false; 3]).unwrap()] += 1;
    }
    assert_eq!(seen, [10, 10, 10]);
    // Node A finds key 0 rejected and key 1 rate limited: node B hears it (pub/sub) and
    // skips both.
    node_a.disable(&prov, &prov.keys[0]).await;
    node_a
        .cool_down(&prov, &prov.keys[1], Duration::from_millis(600))
        .await;
    let told = Instant::now();
    while node_b.pick(&prov, &[false, false, true]).is_ok() {
        assert!(
            told.elapsed() < Duration::from_millis(300),
            "node B did not hear of the rejections within 300 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..6 {
        assert_eq!(node_b.pick(&prov, &[false; 3]).unwrap(), 2);
    }
    // With key 2 tried already, node B learns that the rest is cooling down.
    match node_b.pick(&prov, &[false, false, true]) {
        Err(NoKey::CoolingDown(wait)) => assert!(wait <= Duration::from_millis(600)),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(650)).await;
    let picks: Vec<usize> = (0..4)
        .map(|_| node_b.pick(&prov, &[false; 3]).unwrap())
        .collect();
    assert!(
        picks.contains(&1),
        "cooled-down key never came back: {picks:?}"
    );
    assert!(!picks.contains(&0), "a rejected key came back: {picks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_degrades_to_per_node_limits_and_recovers() {
    let port = PrivateRedis::free_port();
    let mut redis = PrivateRedis::start(port);
    let url = redis.url();
    let p = prefix();
    let l = Limiter::new(
        Some(link(&url, &p).await),
        LimiterSettings {
            node_count: 2,
            ..LimiterSettings::default()
        },
    );
    let s = scope(
        "vkey:failover",
        Policy {
            rpm: 100,
            ..Policy::default()
        },
    );
    assert!(l.shared());
    l.admit(vec![s.clone()], 0)
        .await
        .unwrap()
        .finish(0, 0)
        .await;

    redis.stop();
    // Every request keeps an answer (fail-open); the node switches to per-node limits:
    // 100 rpm shared by 2 nodes = 50 here.
    let mut admitted = 0;
    for _ in 0..80 {
        match l.admit(vec![s.clone()], 0).await {
            Ok(a) => {
                admitted += 1;
                a.finish(0, 0).await;
            }
            Err(Denied::Limit { .. }) => {}
            Err(Denied::Unavailable) => panic!("fail-open must not refuse for lack of redis"),
        }
    }
    assert!(!l.shared());
    assert!(
        (49..=52).contains(&admitted),
        "per-node limit admitted {admitted}"
    );

    let _redis = PrivateRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !l.shared() {
        assert!(Instant::now() < deadline, "did not return to shared limits");
        let _ = l.admit(vec![s.clone()], 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = l.admit(vec![s.clone()], 0).await.unwrap();
    assert!(
        a.headers.requests.is_some(),
        "shared decisions report x-ratelimit headers"
    );
    a.finish(0, 0).await;
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let l = Limiter::new(
        Some(RedisLink::start(
            settings(&url, &prefix()),
            CancellationToken::new(),
        )),
        LimiterSettings {
            failure_mode: warden_data_plane::limits::FailureMode::Closed,
            ..LimiterSettings::default()
        },
    );
    let s = scope(
        "vkey:closed",
        Policy {
            rpm: 10,
            ..Policy::default()
        },
    );
    assert!(matches!(
        l.admit(vec![s], 0).await,
        Err(Denied::Unavailable)
    ));
    // Requests without limits are not affected.
    assert!(
        l.admit(vec![scope("vkey:free", Policy::default())], 0)
            .await
            .is_ok()
    );
}
