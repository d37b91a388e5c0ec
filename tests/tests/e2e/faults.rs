//! Reliability under load (issue #17 item 3): a bounded test that stops itself. While two
//! loads run through 3 nodes on a private Redis and a control plane on PostgreSQL — a main
//! virtual key (rpm, tpm, parallel and budget limits too high to trip, streaming and not)
//! and a tight key (rpm 12, driven far past it) — one fault after another: Redis SIGKILLed
//! and restarted empty; the control plane SIGKILLed and restarted; one node SIGKILLed and
//! restarted on its spool; upstream key A answering 401 and key B 429; the provider's
//! stream stalling past the node's `--upstream-read-timeout`. Then, per fault: failed
//! requests, admissions over the tight key's limit, audit completeness (every request the
//! client saw complete, or cut, has exactly one audit event) and the time to recover.
//!
//! `WARDEN_FAULT_TEST_LONG=1` holds each fault four times as long.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::cluster::{Options, TestCluster, eventually};
use warden_tests::faults::{Load, NodeUrls, Outcome, PrivateRedis, Record, node_urls, spawn_load};
use warden_tests::mock::{Behavior, KeyFault};

/// The tight key's requests per minute.
const TIGHT_RPM: u64 = 12;
const NODES: usize = 3;
/// The node's stream idle timeout in this test, and how long the provider stalls.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const STALL: Duration = Duration::from_secs(5);
/// Longest a path may take to serve again once its fault ended.
const MAX_RECOVERY: Duration = Duration::from_secs(10);
/// A node's events of the last moments before a SIGKILL may be lost: they are written
/// just after the answer (README, "Known limits today").
const CRASH_WINDOW: Duration = Duration::from_millis(500);
/// A priced alias on the mock provider (a budget needs prices to meter).
const MODEL: &str = "gpt-fault";
const KEY_A: &str = "sk-fault-key-A-5e1c7a90d2b4";
const KEY_B: &str = "sk-fault-key-B-8f3a6c21e7d9";

/// One fault: when it began, when it was taken away, when its path served again.
#[derive(Debug)]
struct Phase {
    name: &'static str,
    start: Instant,
    end: Instant,
    recovered: Instant,
}

impl Phase {
    /// Failures may happen from the fault's start until shortly after its path recovered.
    fn may_fail(&self, r: &Record) -> bool {
        r.done >= self.start && r.sent <= self.recovered + Duration::from_secs(1)
    }
}

fn database_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("WARDEN_TEST_DATABASE_URL is not set: run scripts/test.sh (CI has PostgreSQL on 127.0.0.1:5432)")
    })
}

/// The `/readyz` answers of every node.
async fn readiness(c: &TestCluster) -> Option<Vec<Value>> {
    let mut all = Vec::new();
    for n in &c.nodes {
        let r = c.http.get(n.ops_url("/readyz")).send().await.ok()?;
        all.push(r.json().await.ok()?);
    }
    Some(all)
}

/// Waits until `check` holds for every node's `/readyz`; returns when it did.
async fn until_every_node(c: &TestCluster, what: &str, check: fn(&Value) -> bool) -> Instant {
    eventually(MAX_RECOVERY, what, || async {
        let all = readiness(c).await?;
        all.iter().all(check).then(Instant::now)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", warnings(c)))
}

/// The first warnings and errors of the cluster's logs, for failure messages.
fn warnings(c: &TestCluster) -> String {
    c.logs()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(40)
        .collect::<Vec<_>>()
        .join("\n")
}

/// When a probe (a chat with the main key through `node`, streamed or not) first gets a
/// complete answer, polled from now on; the load's own records come back only at the end.
async fn first_success_after(
    c: &TestCluster,
    urls: &NodeUrls,
    token: &str,
    node: usize,
    stream: bool,
) -> Instant {
    eventually(
        MAX_RECOVERY,
        "a success through the faulted path",
        || async {
            let url = urls.read().ok()?[node].clone();
            let body = TestCluster::chat_body(MODEL, "probe", stream);
            let r = c
                .http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            let text = r.text().await.ok()?;
            let ok = if stream {
                text.contains("data: [DONE]") && !text.contains("\"error\"")
            } else {
                text.contains("mock: probe")
            };
            ok.then(Instant::now)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", warnings(c)))
}

/// The upstream key id of `secret` on provider `mock`.
fn provider_key_id(c: &TestCluster, secret: &str) -> String {
    let providers: Value =
        serde_json::from_str(&c.ctl_ok(&["provider", "list", "-o", "json"], None).unwrap())
            .unwrap();
    let fp = warden_core::fingerprint::of(secret.as_bytes());
    providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mock")
        .unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == fp)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the mock has seen a request with `secret` after its `from`-th request.
async fn key_back_in_use(c: &TestCluster, secret: &str, from: usize) -> Instant {
    let bearer = format!("Bearer {secret}");
    eventually(MAX_RECOVERY, "the key back in rotation", || async {
        c.mock.requests()[from..]
            .iter()
            .any(|r| r.authorization.as_deref() == Some(bearer.as_str()))
            .then(Instant::now)
    })
    .await
    .unwrap()
}

/// `result` and parsed detail of every request audit row, by request id.
async fn audit_rows(pool: &sqlx::PgPool, schema: &str) -> HashMap<String, Vec<(String, String)>> {
    // The schema is the cluster's own `e2e_<hex>` name.
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT result, detail FROM {schema}.audit WHERE action = 'request'"
    )))
    .fetch_all(pool)
    .await
    .expect("the audit table of the cluster's schema");
    let mut by_id: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (result, detail) in rows {
        let d = warden_core::audit_detail::parse(&detail);
        if let Some(id) = d.get("request_id") {
            let outcome = d.get("outcome").cloned().unwrap_or_default();
            by_id.entry(id.clone()).or_default().push((result, outcome));
        }
    }
    by_id
}

/// How many admissions of the tight key its limit allows by `t`: a token bucket of
/// `TIGHT_RPM` refilling at `TIGHT_RPM`/min from the first request `t0`; while Redis is out
/// (its kill until every node is back on it) each node's own bucket of `TIGHT_RPM / nodes`
/// (README: fail-open, limits divided by `--node-count`); and after the restart Redis's
/// bucket starts full again (no persistence).
fn allowed(t: Instant, t0: Instant, redis: &Phase) -> u64 {
    let rpm = TIGHT_RPM as f64;
    let share = (TIGHT_RPM / NODES as u64).max(1) as f64;
    let mut bound = rpm + rpm * t.saturating_duration_since(t0).as_secs_f64() / 60.0;
    if t >= redis.start {
        let out = t.min(redis.recovered).duration_since(redis.start);
        bound += NODES as f64 * share * (1.0 + out.as_secs_f64() / 60.0) + rpm;
    }
    bound.floor() as u64
}

/// The largest number of tight-key admissions (answers with status 200, after `prior` ones
/// since `t0`) beyond [`allowed`] at any moment, before the faults (index 0) and in each
/// phase (index 1..). An admission happens before its answer ends, so counting by answer
/// end never overcounts.
fn over_limit(
    tight: &[Record],
    (t0, prior): (Instant, u64),
    redis: &Phase,
    phases: &[Phase],
) -> Vec<u64> {
    let mut admitted: Vec<&Record> = tight.iter().filter(|r| r.status == 200).collect();
    admitted.sort_by_key(|r| r.done);
    let mut worst = vec![0u64; phases.len() + 1];
    for (n, r) in admitted.iter().enumerate() {
        let excess = (prior + n as u64 + 1).saturating_sub(allowed(r.done, t0, redis));
        let phase = phases
            .iter()
            .rposition(|p| p.start <= r.sent)
            .map_or(0, |p| p + 1);
        worst[phase] = worst[phase].max(excess);
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_under_load_lose_no_answered_request_and_hold_the_limits() {
    let long = std::env::var("WARDEN_FAULT_TEST_LONG").is_ok_and(|v| v == "1");
    let hold = if long {
        Duration::from_secs(12)
    } else {
        Duration::from_secs(3)
    };
    let logs = tempfile::tempdir().unwrap();
    let mut redis = PrivateRedis::start(logs.path()).await.unwrap();
    let url = database_url();
    let mut c = TestCluster::start_with(
        NODES,
        Options {
            redis_url: Some(redis.url()),
            database_url: Some(url.clone()),
            node_count: Some(NODES as u32),
            node_args: vec![
                "--upstream-read-timeout".into(),
                format!("{}s", READ_TIMEOUT.as_secs()),
            ],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    c.ctl_ok(
        &[
            "model",
            "add",
            MODEL,
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
            "--input-price",
            "0.01",
            "--output-price",
            "0.01",
        ],
        None,
    )
    .unwrap();
    for key in [KEY_A, KEY_B] {
        c.ctl_ok(&["provider", "key", "add", "mock"], Some(key))
            .unwrap();
    }
    let main = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "fault-main",
                "--rpm",
                "100000",
                "--tpm",
                "100000000",
                "--max-parallel",
                "64",
                "--max-budget",
                "1000",
            ],
            None,
        )
        .unwrap();
    let tight = c
        .ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "fault-tight",
                "--rpm",
                &TIGHT_RPM.to_string(),
            ],
            None,
        )
        .unwrap();
    // Every node serves both keys before the load starts: the tight key's first three
    // admissions.
    let tight_t0 = Instant::now();
    for node in 0..NODES {
        for key in [&main, &tight] {
            let last = std::sync::Mutex::new(String::new());
            eventually(
                Duration::from_secs(10),
                "the keys on every node",
                || async {
                    let r = c
                        .chat(node, key, &TestCluster::chat_body(MODEL, "x", false))
                        .await
                        .ok()?;
                    let status = r.status();
                    *last.lock().unwrap() =
                        format!("{status} {}", r.text().await.unwrap_or_default());
                    (status == 200).then_some(())
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}: node {node} answered {}", last.lock().unwrap()));
        }
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let schema = c.database_schema();

    let urls = node_urls(&c);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = spawn_load(
        &c.http,
        &urls,
        Load {
            load: 0,
            model: MODEL.into(),
            credential: main.clone(),
            workers: 6,
            pause: Duration::from_millis(20),
            streams: true,
        },
        &stop,
    );
    workers.extend(spawn_load(
        &c.http,
        &urls,
        Load {
            load: 1,
            model: MODEL.into(),
            credential: tight.clone(),
            workers: 1,
            pause: Duration::from_millis(100),
            streams: false,
        },
        &stop,
    ));
    let began = Instant::now();
    tokio::time::sleep(hold).await;
    let mut phases = Vec::new();

    // 1. Redis SIGKILLed, restarted empty on its port.
    let start = Instant::now();
    redis.kill().unwrap();
    tokio::time::sleep(hold).await;
    redis.restart().await.unwrap();
    let end = Instant::now();
    let recovered =
        until_every_node(&c, "every node back on Redis", |r| r["limits"] == "shared").await;
    phases.push(Phase {
        name: "redis kill+restart",
        start,
        end,
        recovered,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. The control plane SIGKILLed and restarted.
    let start = Instant::now();
    c.kill_cp().unwrap();
    tokio::time::sleep(hold).await;
    c.start_cp().await.unwrap();
    let end = Instant::now();
    let recovered = until_every_node(&c, "every node back on the control plane", |r| {
        r["control_plane_connected"] == true
    })
    .await;
    phases.push(Phase {
        name: "control plane kill+restart",
        start,
        end,
        recovered,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. Node 2 SIGKILLed and restarted on its spool (on a new port).
    let start = Instant::now();
    c.restart_node(1).unwrap();
    let end = Instant::now();
    urls.write().unwrap()[1] = c.nodes[1].url("/v1/chat/completions");
    c.wait_node_ready(1).await.unwrap();
    let recovered = first_success_after(&c, &urls, &main, 1, false).await;
    phases.push(Phase {
        name: "node SIGKILL+restart",
        start,
        end,
        recovered,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 4. Upstream key A answers 401 (invalid), key B 429: rotation routes around them.
    let start = Instant::now();
    c.mock.set_behavior(Behavior::KeyErrors(vec![
        KeyFault {
            key: KEY_A.into(),
            status: 401,
            retry_after: None,
        },
        KeyFault {
            key: KEY_B.into(),
            status: 429,
            retry_after: Some(1),
        },
    ]));
    tokio::time::sleep(hold + Duration::from_secs(1)).await;
    c.mock.set_behavior(Behavior::Normal);
    let seen = c.mock.requests().len();
    let end = Instant::now();
    // A was disabled everywhere: an operator enables it again; B rested only.
    c.ctl_ok(
        &[
            "provider",
            "key",
            "enable",
            "mock",
            &provider_key_id(&c, KEY_A),
        ],
        None,
    )
    .unwrap();
    let a_back = key_back_in_use(&c, KEY_A, seen).await;
    let b_back = key_back_in_use(&c, KEY_B, seen).await;
    phases.push(Phase {
        name: "upstream key A 401, B 429",
        start,
        end,
        recovered: a_back.max(b_back),
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 5. The provider's streams stall past the node's read timeout.
    let start = Instant::now();
    c.mock.set_behavior(Behavior::StalledStream(STALL));
    tokio::time::sleep(hold).await;
    c.mock.set_behavior(Behavior::Normal);
    let end = Instant::now();
    let recovered = first_success_after(&c, &urls, &main, 0, true).await;
    phases.push(Phase {
        name: "provider stream stall",
        start,
        end,
        recovered,
    });
    // Streams that stalled end at the read timeout; then a quiet stretch.
    tokio::time::sleep(READ_TIMEOUT + Duration::from_secs(2)).await;

    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for w in workers {
        records.extend(
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let load_time = began.elapsed();
    let main_load: Vec<&Record> = records.iter().filter(|r| r.load == 0).collect();
    let tight_load: Vec<Record> = records.iter().filter(|r| r.load == 1).cloned().collect();

    // Every answered request (complete or cut) reaches the audit log once the nodes are
    // back: wait (bounded) for the spools to be delivered.
    let node_kill = &phases[2];
    let crash_window = |r: &Record| {
        r.node == 1 && r.done <= node_kill.start && r.done + CRASH_WINDOW >= node_kill.start
    };
    // A stream the SIGKILL itself cut may have no event (the node died before the
    // provider's answer ended) or an `ok` one (it died before the last bytes reached the
    // client): required of it is only that it is not audited twice.
    let killed_mid_answer = |r: &Record| {
        r.node == 1
            && r.outcome == Outcome::Cut
            && r.sent <= node_kill.start
            && r.done >= node_kill.start
    };
    let must: Vec<&Record> = records
        .iter()
        .filter(|r| r.outcome != Outcome::Failed && r.request_id.is_some() && !killed_mid_answer(r))
        .collect();
    let audited = eventually(
        Duration::from_secs(60),
        "every answered request audited",
        || async {
            let rows = audit_rows(&pool, &schema).await;
            must.iter()
                .filter(|r| !crash_window(r))
                .all(|r| rows.contains_key(r.request_id.as_deref().unwrap_or_default()))
                .then_some(rows)
        },
    )
    .await;
    let rows = match audited {
        Ok(rows) => rows,
        Err(e) => {
            let rows = audit_rows(&pool, &schema).await;
            let missing: Vec<_> = must
                .iter()
                .filter(|r| {
                    !crash_window(r) && !rows.contains_key(r.request_id.as_deref().unwrap())
                })
                .map(|r| (r.node, r.stream, r.outcome, r.request_id.clone()))
                .take(20)
                .collect();
            panic!("{e}: missing {missing:?}\n{}", warnings(&c));
        }
    };

    // Per phase: requests, failures, cuts, over-limit admissions, lost and duplicated
    // audit events, recovery.
    let over = over_limit(&tight_load, (tight_t0, NODES as u64), &phases[0], &phases);
    // Which fault may make a main-load request fail, and how. (A request sent just before
    // a fault may meet it: any fault whose window it overlaps may explain it.)
    let explained = |p: usize, r: &Record| match p {
        // Fail-open limits, the node's last snapshot, rotation around bad keys: no client
        // sees these faults.
        0 | 1 | 3 => false,
        // Requests to the killed node fail until it is back.
        2 => r.node == 1,
        // A stalled stream is cut; nothing else fails.
        _ => r.stream && r.outcome == Outcome::Cut,
    };
    // A request is counted in the phase whose fault explains its failure, else in the one
    // it was sent in.
    let phase_of = |r: &Record| {
        (r.load == 0 && r.outcome != Outcome::Complete)
            .then(|| (0..phases.len()).find(|&p| phases[p].may_fail(r) && explained(p, r)))
            .flatten()
            .or_else(|| phases.iter().rposition(|p| p.start <= r.sent))
    };
    println!(
        "\nfault test ({}; load {:.1} s; {} main requests, {} tight-key requests)",
        if long { "long form" } else { "short form" },
        load_time.as_secs_f64(),
        main_load.len(),
        tight_load.len()
    );
    println!(
        "| fault | requests | failed | cut | tight key admitted/sent | over limit | lost | duplicated | crash-window lost | recovery |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut problems = Vec::new();
    for (i, name) in std::iter::once("before the faults")
        .chain(phases.iter().map(|p| p.name))
        .enumerate()
    {
        let phase = i.checked_sub(1);
        let of_phase: Vec<&Record> = records.iter().filter(|r| phase_of(r) == phase).collect();
        let main_of: Vec<&&Record> = of_phase.iter().filter(|r| r.load == 0).collect();
        let failed = main_of
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .count();
        let cut = main_of.iter().filter(|r| r.outcome == Outcome::Cut).count();
        let mut lost = 0;
        let mut window_lost = 0;
        let mut duplicated = 0;
        for r in of_phase.iter().filter(|r| r.outcome != Outcome::Failed) {
            let Some(id) = &r.request_id else { continue };
            match rows.get(id).map(Vec::len) {
                None if killed_mid_answer(r) => {}
                None if crash_window(r) => window_lost += 1,
                None => lost += 1,
                Some(1) => {
                    let (result, outcome) = &rows[id][0];
                    // A stream the SIGKILL cut may have been audited `ok`: its event is
                    // written when the provider's answer ended, and the node died before
                    // the last bytes reached the client.
                    let as_seen = match r.outcome {
                        Outcome::Complete => result == "ok" && outcome != "upstream_error",
                        _ => result != "ok" || killed_mid_answer(r),
                    };
                    if !as_seen {
                        problems.push(format!(
                            "{name}: {id} seen {:?}, audited {result} {outcome}",
                            r.outcome
                        ));
                    }
                }
                Some(_) => duplicated += 1,
            }
        }
        let over = over[i];
        let recovery = phase.map_or("-".to_owned(), |p| {
            format!(
                "{} ms",
                phases[p]
                    .recovered
                    .duration_since(phases[p].end)
                    .as_millis()
            )
        });
        let tight_sent = of_phase.iter().filter(|r| r.load == 1).count();
        let tight_admitted = of_phase
            .iter()
            .filter(|r| r.load == 1 && r.status == 200)
            .count();
        println!(
            "| {name} | {} | {failed} | {cut} | {tight_admitted}/{tight_sent} | {over} | {lost} | {duplicated} | {window_lost} | {recovery} |",
            of_phase.len()
        );
        if lost + duplicated + over as usize > 0 || window_lost > 3 {
            problems.push(format!(
                "{name}: {lost} lost, {duplicated} duplicated, {window_lost} in the crash window, {over} over the limit"
            ));
        }
    }
    let killed: Vec<&Record> = records.iter().filter(|r| killed_mid_answer(r)).collect();
    println!(
        "streams cut by the node's SIGKILL: {} ({} audited)",
        killed.len(),
        killed
            .iter()
            .filter(|r| r
                .request_id
                .as_ref()
                .is_some_and(|id| rows.contains_key(id)))
            .count()
    );
    let admitted = tight_load.iter().filter(|r| r.status == 200).count();
    let end = tight_load.iter().map(|r| r.done).max().unwrap();
    println!(
        "tight key (rpm {TIGHT_RPM}, 3 nodes): {} admitted ({admitted} of {} under load); its limits allowed {} by the end",
        admitted + NODES,
        tight_load.len(),
        allowed(end, tight_t0, &phases[0])
    );
    assert!(
        tight_load.iter().filter(|r| r.status == 429).count() > tight_load.len() / 2,
        "the tight key was not driven past its limit"
    );

    // Failures only while a fault lasts, and only of the kind it causes.
    for r in main_load.iter().filter(|r| r.outcome != Outcome::Complete) {
        let windows: Vec<usize> = (0..phases.len())
            .filter(|&p| phases[p].may_fail(r))
            .collect();
        if !windows.iter().any(|&p| explained(p, r)) {
            let names: Vec<_> = windows.iter().map(|&p| phases[p].name).collect();
            problems.push(format!(
                "{:?} not explained by the faults {names:?}: {r:?}",
                r.outcome
            ));
        }
    }
    for p in &phases {
        let took = p.recovered.duration_since(p.end);
        if took > MAX_RECOVERY {
            problems.push(format!("{}: recovered after {took:?}", p.name));
        }
    }
    // Each fault had load to act on; the stall cut streams.
    assert!(
        main_load.len() > 300,
        "too little load: {} requests",
        main_load.len()
    );
    assert!(
        main_load
            .iter()
            .any(|r| r.outcome == Outcome::Cut && phase_of(r) == Some(4)),
        "no stream was cut by the stall"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        warnings(&c)
    );
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await;
}
