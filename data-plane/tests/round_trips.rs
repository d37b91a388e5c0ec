//! One Redis round trip before the first byte (issue 17): counted on a private
//! `redis-server` (its `INFO commandstats`), settlement batched off the response path with
//! exact totals, and key health spread by pub/sub — reloaded when a node (re)subscribes,
//! Redis restarts included. Several limiters / key pickers in one process stand for several
//! nodes.
//!
//! Needs `redis-server` on the PATH (a missing one fails the test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests; the figures they measure are printed"
)]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use warden_data_plane::compiled::{Format, Provider, UpstreamKey};
use warden_data_plane::limits::{Limiter, LimiterSettings, Policy, Scope};
use warden_data_plane::redis_state::redis::{RedisLink, RedisSettings, Topology};
use warden_data_plane::upstream::keys::KeyPicker;

mod support;
use support::PrivateRedis;

impl PrivateRedis {
    /// A counter of the round trips clients made to the server.
    async fn counter(&self) -> RoundTrips {
        let client = redis::Client::open(self.url()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut counter = RoundTrips { conn, own: 0 };
        // What one reading costs itself (its own request), measured.
        let a = counter.reads().await;
        let b = counter.reads().await;
        counter.own = b - a;
        counter
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut c).await.unwrap()
    }
}

/// Counts round trips by the server's read events (`total_reads_processed`): one per
/// request a client sends when it waits for each answer, as a node does per call. Commands
/// that scripts run inside the server are not round trips and are not counted
/// (`INFO commandstats` would count them).
struct RoundTrips {
    conn: redis::aio::MultiplexedConnection,
    own: u64,
}

impl RoundTrips {
    async fn reads(&mut self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut self.conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Round trips of other clients since `since` (a reading of [`RoundTrips::now`]).
    async fn since(&mut self, since: u64) -> u64 {
        self.reads().await - since - self.own
    }

    async fn now(&mut self) -> u64 {
        self.reads().await
    }
}

async fn link(url: &str, prefix: &str) -> Arc<RedisLink> {
    let link = RedisLink::start(
        RedisSettings {
            topology: Topology::Single(SecretString::from(url.to_owned())),
            prefix: prefix.to_owned(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(250),
            root_ca: None,
        },
        CancellationToken::new(),
    );
    wait_until(Duration::from_secs(5), "redis to be reachable", || {
        link.is_healthy()
    })
    .await;
    link
}

async fn wait_until(bound: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < bound, "waited {bound:?} for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
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

/// A virtual key with every limit but parallel slots, and the model's and global scopes
/// without limits (as a request carries them).
fn limited(id: &str, max_parallel: u32) -> Vec<Scope> {
    vec![
        Scope {
            id: id.to_owned(),
            policy: Policy {
                rpm: 1_000_000,
                tpm: 100_000_000,
                max_parallel,
                max_budget_micros: 1_000_000_000_000,
                budget_period_secs: 3600,
                max_tokens: 0,
            },
        },
        Scope {
            id: "model:m".to_owned(),
            policy: Policy::default(),
        },
        Scope {
            id: "global".to_owned(),
            policy: Policy::default(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_request_costs_one_round_trip_before_its_first_byte() {
    let redis = PrivateRedis::start(PrivateRedis::free_port());
    let p = format!("rt-{}", uuid::Uuid::new_v4().simple());
    let link = link(&redis.url(), &p).await;
    // No timer flush in the middle of a measurement: settlements wait for the next call.
    let limiter = Limiter::new(
        Some(Arc::clone(&link)),
        LimiterSettings {
            settle_interval: Duration::from_secs(60),
            settle_batch: 10_000,
            ..LimiterSettings::default()
        },
    );
    let picker = KeyPicker::new(Some(link));
    let prov = provider(3);
    let scopes = limited("vkey:rt", 0);
    // Warm up: scripts loaded, the key-health subscription made.
    for _ in 0..3 {
        picker.pick(&prov, &[false; 3]).unwrap();
        let a = limiter.admit(scopes.clone(), 100).await.unwrap();
        a.finish(120, 50).await;
    }
    limiter.flush().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Before the first byte: pick a key, then admit. One command.
    let n = 40u64;
    let mut before_first_byte = Vec::new();
    let mut count = redis.counter().await;
    let start = count.now().await;
    for i in 0..n {
        let c0 = count.now().await;
        picker.pick(&prov, &[false; 3]).unwrap();
        let a = limiter.admit(scopes.clone(), 100).await.unwrap();
        before_first_byte.push(count.since(c0).await);
        // The answer ends: its usage is settled off the response path.
        let c0 = count.now().await;
        a.finish(100 + i, 7).await;
        assert_eq!(count.since(c0).await, 0, "settling waits for the next call");
    }
    // Four readings per request were taken in the loop, each one read of our own.
    let total = count.since(start).await - 4 * n * count.own;
    assert!(
        before_first_byte.iter().all(|c| *c == 1),
        "commands before the first byte, per request: {before_first_byte:?}"
    );
    // Every admission carried the settlements waiting: nothing else.
    assert_eq!(
        total, n,
        "round trips for {n} requests (pick + admit + settle)"
    );
    // The last settlement is written by the batch when asked (at shutdown, or by the
    // timer).
    let c0 = count.now().await;
    limiter.flush().await;
    assert_eq!(count.since(c0).await, 1);

    // With a parallel-slot limit, the slots are released when the answer ends, before the
    // client can send its next request: one more call, carrying the settlement.
    let scopes = limited("vkey:rt-par", 4);
    for _ in 0..n {
        let c0 = count.now().await;
        picker.pick(&prov, &[false; 3]).unwrap();
        let a = limiter.admit(scopes.clone(), 100).await.unwrap();
        assert_eq!(count.since(c0).await, 1, "before the first byte");
        let c0 = count.now().await;
        a.finish(90, 7).await;
        assert_eq!(count.since(c0).await, 1, "the release, with the settlement");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_settlement_keeps_spend_and_tokens_exact_after_a_burst() {
    let redis = PrivateRedis::start(PrivateRedis::free_port());
    let p = format!("rt-{}", uuid::Uuid::new_v4().simple());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(Limiter::new(
            Some(link(&redis.url(), &p).await),
            LimiterSettings {
                node_count: 2,
                ..LimiterSettings::default()
            },
        ));
    }
    // The tpm bucket starts half full at a known server time, so it never reaches its
    // capacity during the test and its level tells exactly what was charged: the start
    // level plus the refill since then, minus the charges.
    let tpm = 10_000_000u64;
    let scope = Scope {
        id: "vkey:burst".to_owned(),
        policy: Policy {
            tpm,
            max_budget_micros: 1_000_000_000_000,
            budget_period_secs: 3600,
            ..Policy::default()
        },
    };
    let server_ms = || async {
        let t: Vec<u64> = redis.query(&mut redis::cmd("TIME")).await;
        t[0] * 1000 + t[1] / 1000
    };
    let began = server_ms().await;
    let bucket = format!("{{{p}}}:rl:vkey:burst:tpm");
    let start_level = tpm / 2;
    let _: () = redis
        .query(
            redis::cmd("HSET")
                .arg(&bucket)
                .arg("t")
                .arg(start_level)
                .arg("ts")
                .arg(began),
        )
        .await;
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let node = Arc::clone(&nodes[usize::try_from(t % 2).unwrap()]);
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tokens, mut cost) = (0u64, 0u64);
            for i in 0..25u64 {
                let a = node.admit(vec![scope.clone()], 500).await.unwrap();
                let used = 100 + (t * 31 + i * 17) % 700;
                let c = 3 + (t + i) % 11;
                a.finish(used, c).await;
                tokens += used;
                cost += c;
            }
            (tokens, cost)
        }));
    }
    let (mut tokens, mut cost) = (0u64, 0u64);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        tokens += a;
        cost += b;
    }
    for n in &nodes {
        n.flush().await;
    }
    let spend_keys: Vec<String> = redis
        .query(redis::cmd("KEYS").arg(format!("{{{p}}}:spend:vkey:burst:*")))
        .await;
    assert_eq!(spend_keys.len(), 1, "{spend_keys:?}");
    let spent: u64 = redis.query(redis::cmd("GET").arg(&spend_keys[0])).await;
    assert_eq!(
        spent, cost,
        "spend in redis is the sum of the requests' costs"
    );
    let (level, at): (f64, u64) = redis
        .query(redis::cmd("HMGET").arg(&bucket).arg("t").arg("ts"))
        .await;
    let refill = tpm as f64 / 60_000.0 * (at - began) as f64;
    let charged = start_level as f64 + refill - level;
    assert!(
        (charged - tokens as f64).abs() < 1.0,
        "bucket charged {charged:.1}, usage {tokens} (refill {refill:.1} over the test)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_health_reaches_other_nodes_and_survives_a_redis_restart() {
    let port = PrivateRedis::free_port();
    let mut redis = PrivateRedis::start(port);
    let p = format!("rt-{}", uuid::Uuid::new_v4().simple());
    let node_a = KeyPicker::new(Some(link(&redis.url(), &p).await));
    let node_b = KeyPicker::new(Some(link(&redis.url(), &p).await));
    let prov = provider(3);
    // A 429 on node A: node B skips the key within a bound.
    tokio::time::sleep(Duration::from_millis(100)).await;
    node_a
        .cool_down(&prov, &prov.keys[0], Duration::from_secs(60))
        .await;
    let heard = wait_until(Duration::from_millis(300), "node B to hear of it", || {
        node_b.pick(&prov, &[false, true, true]).is_err()
    })
    .await;
    eprintln!("cool-down heard by the other node after {heard:?}");
    // A node started later loads what is in force.
    node_a.disable(&prov, &prov.keys[1]).await;
    let node_c = KeyPicker::new(Some(link(&redis.url(), &p).await));
    wait_until(Duration::from_secs(2), "node C to load key health", || {
        node_c.pick(&prov, &[false, false, true]).is_err()
    })
    .await;

    // Redis restarts (empty): the subscribers come back and hear new changes.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = PrivateRedis::start(port);
    // Node A's link recovers on its next call; retry until its record is stored.
    let index = format!("{{{p}}}:keyhealth");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        node_a
            .cool_down(&prov, &prov.keys[2], Duration::from_secs(60))
            .await;
        let n: u64 = redis.query(redis::cmd("ZCARD").arg(&index)).await;
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node A never wrote to redis again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whether B was subscribed again when A published or reloaded after: it knows.
    wait_until(Duration::from_secs(5), "node B to know key 2 rests", || {
        node_b.pick(&prov, &[true, true, false]).is_err()
    })
    .await;
    // And a change made only in Redis (as by a node whose message B missed) reaches B by
    // its reload on resubscribe: break B's subscription by restarting Redis once more,
    // write the record directly, and wait.
    drop(redis);
    let redis = PrivateRedis::start(port);
    let name = format!("{}:key_0:fp0:0", prov.name);
    let _: () = redis
        .query(redis::cmd("ZADD").arg(&index).arg("+inf").arg(&name))
        .await;
    wait_until(
        Duration::from_secs(10),
        "node B to reload after resubscribing",
        || {
            // Key 0's cool-down from before would also hide it; a disabled record is kept
            // for good, so check the map itself.
            node_b.health().get(&name)
                == Some(warden_data_plane::upstream::key_health::Health::Disabled)
        },
    )
    .await;
}
