//! Graceful operations against real processes: a node under streaming load drains on
//! SIGTERM (readiness 503 at once, new connections refused, every started stream answered
//! whole, exit 0, every answer audited once at the control plane before the exit); a
//! stream that outlives `--drain-timeout` is cut with an error event and audited
//! `cut_at_shutdown`; SIGHUP swaps the HTTPS certificate at once and is audited
//! `config.reload` (as it is on a control-plane replica); a leading control-plane replica
//! given SIGTERM gives its lease back, so another replica leads without waiting for the
//! lease to expire.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use warden_tests::cluster::{MODEL, Options, TestCluster, eventually};
use warden_tests::mock::Behavior;

use crate::audit_spool::{assert_each_audited_once, request_id};

/// Sends `signal` (`TERM`, `HUP`) to process `pid`.
pub(crate) fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits up to `limit` for `child` to exit; its status and how long it took.
async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "the process did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `n` streaming requests on node 0 and returns, once each has its first chunk, a
/// task per stream that reads it to its end: (request id, whole text).
async fn open_streams(
    c: &TestCluster,
    token: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(String, String)>> {
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel(n);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, url, token, first_tx) = (
            c.http.clone(),
            c.nodes[0].url("/v1/chat/completions"),
            token.to_owned(),
            first_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = TestCluster::chat_body(MODEL, &format!("stream number {i}"), true);
            let r = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let id = request_id(&r);
            let mut stream = r.bytes_stream();
            let mut text =
                String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).to_string();
            first_tx.send(()).await.unwrap();
            while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("the stream stalled")
            {
                match chunk {
                    Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                    Err(e) => {
                        text.push_str(&format!("\n<transport error: {e}>"));
                        break;
                    }
                }
            }
            (id, text)
        }));
    }
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(10), first_rx.recv())
            .await
            .expect("every stream starts")
            .unwrap();
    }
    tasks
}

/// The content an OpenAI stream carried.
fn content(text: &str) -> String {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The audit rows of `action` (newest first), as JSON.
pub(crate) fn audit_rows(c: &TestCluster, action: &str) -> Vec<Value> {
    let out = c
        .ctl_ok(
            &[
                "audit", "list", "--action", action, "--limit", "1000", "-o", "json",
            ],
            None,
        )
        .unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn sigterm_under_streaming_load_answers_every_started_stream_and_audits_each_once() {
    let mut c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--drain-timeout".to_owned(), "8s".to_owned()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-drain", "*").unwrap();
    // A few answered before the signal, whose events may still be in the spool.
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = c
            .chat(
                0,
                &token,
                &TestCluster::chat_body(MODEL, &format!("before {i}"), false),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r));
    }
    c.mock.set_behavior(Behavior::GatedStream);
    let streams = open_streams(&c, &token, 8).await;

    signal(c.nodes[0].child.id(), "TERM");
    let signalled = Instant::now();
    // Readiness goes 503 as soon as the signal is handled (the ops listener serves through
    // the drain); the signal is asynchronous, so poll briefly rather than race it.
    let why: Value = eventually(Duration::from_secs(2), "/readyz to answer 503", || async {
        let ready = c
            .http
            .get(c.nodes[0].ops_url("/readyz"))
            .send()
            .await
            .ok()?;
        (ready.status() == 503).then_some(())?;
        ready.json::<Value>().await.ok()
    })
    .await
    .unwrap();
    assert!(
        why["reason"].as_str().unwrap().contains("draining"),
        "{why}"
    );
    // No new connection is accepted.
    let api = format!("127.0.0.1:{}", c.nodes[0].port);
    eventually(
        Duration::from_secs(2),
        "new connections to be refused",
        || async {
            tokio::net::TcpStream::connect(&api)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await
    .unwrap();
    // On a new connection (the harness's client may hold a keep-alive one).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let refused = fresh
        .post(c.nodes[0].url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&TestCluster::chat_body(MODEL, "after the signal", false))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a request on a new connection after SIGTERM was served"
    );

    // The streams that had started run to their end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.mock.release_stream();
    for (i, task) in streams.into_iter().enumerate() {
        let (id, text) = task.await.unwrap();
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "stream {i}: {text}"
        );
        assert_eq!(content(&text), format!("mock: stream number {i}"));
        ids.push(id);
    }
    let (status, _) = wait_exit(&mut c.nodes[0].child, Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "the node exited with {status}");
    assert!(
        took < Duration::from_secs(8),
        "the drain took {took:?}: past its deadline"
    );
    println!("node drained and exited 0 {took:?} after SIGTERM");
    let log = c.logs();
    assert!(
        log.contains("audit spool delivered to the control plane"),
        "{log}"
    );

    // Delivered before the exit: the node is gone, nothing else could send them.
    assert_each_audited_once(&c, &ids).await;
    let rows = audit_rows(&c, "request");
    for row in rows {
        let detail = warden_core::audit_detail::parse(row["detail"].as_str().unwrap());
        if detail.get("request_id").is_some_and(|id| ids.contains(id)) {
            assert_eq!(detail["outcome"], "completed", "{row}");
            assert_eq!(row["result"], "ok", "{row}");
        }
    }
}

#[tokio::test]
async fn a_stream_past_the_drain_deadline_is_cut_with_an_error_event_and_audited() {
    let mut c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--drain-timeout".to_owned(), "1s".to_owned()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-cut", "*").unwrap();
    // The mock holds the rest of each answer for 10 s: past the 1 s drain deadline.
    c.mock.set_behavior(Behavior::GatedStream);
    let streams = open_streams(&c, &token, 2).await;
    signal(c.nodes[0].child.id(), "TERM");
    let signalled = Instant::now();
    let mut ids = Vec::new();
    for task in streams {
        let (id, text) = task.await.unwrap();
        assert!(
            text.contains("shutting_down"),
            "the stream did not end with the error event: {text}"
        );
        ids.push(id);
    }
    let (status, _) = wait_exit(&mut c.nodes[0].child, Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "the node exited with {status}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "exit {took:?} after SIGTERM with a 1 s drain deadline"
    );
    assert_each_audited_once(&c, &ids).await;
    let rows = audit_rows(&c, "request");
    let cut = rows
        .iter()
        .filter(|row| {
            let d = warden_core::audit_detail::parse(row["detail"].as_str().unwrap());
            ids.iter().any(|id| d.get("request_id") == Some(id))
                && d.get("outcome").map(String::as_str) == Some("cut_at_shutdown")
                && row["result"] == "incomplete"
        })
        .count();
    assert_eq!(cut, 2, "{rows:?}");
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_at_once_and_audits_config_reload() {
    // The periodic reload is an hour away: only SIGHUP can swap the certificate in time.
    let n = crate::https::HttpsNode::start(&["--http-tls-reload-interval", "1h"]).await;
    let first = n.served().await;
    let second = n.ca.server_cert(2).unwrap();
    second.install(&n.cert_file, &n.key_file).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(n.served().await, first, "swapped before the signal");
    let pid = n.cluster.nodes[0].child.id();
    signal(pid, "HUP");
    eventually(
        Duration::from_secs(3),
        "the new certificate after SIGHUP",
        || async { (n.served().await == second.der).then_some(()) },
    )
    .await
    .unwrap();
    let row = eventually(Duration::from_secs(15), "a config.reload row", || async {
        audit_rows(&n.cluster, "config.reload").into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(row["result"], "ok", "{row}");
    assert_eq!(
        row["actor"],
        format!("node:{}", n.cluster.nodes[0].id),
        "{row}"
    );
    let detail = warden_core::audit_detail::parse(row["detail"].as_str().unwrap());
    assert_eq!(detail["tls"], "ok", "{row}");
    assert_eq!(detail["log_level"], "fixed", "{row}");
    assert_eq!(detail["limits"], "from_control_plane", "{row}");

    // A bad pair on SIGHUP: refused, audited as failed, the previous certificate stays.
    std::fs::write(&n.cert_file, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    signal(pid, "HUP");
    let failed = eventually(
        Duration::from_secs(15),
        "a failed config.reload row",
        || async {
            audit_rows(&n.cluster, "config.reload")
                .into_iter()
                .find(|r| r["result"] == "failure")
        },
    )
    .await
    .unwrap();
    let detail = warden_core::audit_detail::parse(failed["detail"].as_str().unwrap());
    assert_eq!(detail["tls"], "failed", "{failed}");
    assert_eq!(n.served().await, second.der);
    assert!(n.cluster.nodes[0].child.id() == pid);
}

#[tokio::test]
async fn a_leader_given_sigterm_gives_its_lease_back_and_another_replica_leads_at_once() {
    let mut options = crate::cp_replicas::replicas_options(2);
    // A long lease: without the hand-over the other replica would wait up to 30 s.
    options.cp_lease_ttl = Some("30s".to_owned());
    let mut c = TestCluster::start_with(1, options).await.unwrap();
    let token = c.issue_token("svc-handover", "*").unwrap();
    let leader = eventually(Duration::from_secs(20), "a leader", || c.leader())
        .await
        .unwrap();
    // SIGHUP on a replica: one `config.reload` row (no TLS here: `tls=off`).
    let pid = if leader == 0 {
        c.cp.as_ref().unwrap().id()
    } else {
        c.replicas[leader].child.as_ref().unwrap().id()
    };
    signal(pid, "HUP");
    let row = eventually(
        Duration::from_secs(15),
        "the replica's config.reload row",
        || async {
            audit_rows(&c, "config.reload")
                .into_iter()
                .find(|r| r["actor"] == "system:signal")
        },
    )
    .await
    .unwrap();
    assert_eq!(row["result"], "ok", "{row}");
    let detail = warden_core::audit_detail::parse(row["detail"].as_str().unwrap());
    assert_eq!(detail["tls"], "off", "{row}");

    let child = if leader == 0 {
        c.cp.as_mut().unwrap()
    } else {
        c.replicas[leader].child.as_mut().unwrap()
    };
    signal(child.id(), "TERM");
    let signalled = Instant::now();
    let (status, _) = wait_exit(child, Duration::from_secs(20)).await;
    assert!(status.success(), "the replica exited with {status}");
    let pool = crate::cp_replicas::sql_pool(&c).await;
    let live: bool =
        sqlx::query_scalar("SELECT expires_at > clock_timestamp() FROM cp_lease WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!live, "the lease was not given back at shutdown");
    let next = eventually(Duration::from_secs(14), "another leader", || async {
        c.leader().await.filter(|l| *l != leader)
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    println!("replica {leader} stopped; replica {next} leads {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(15),
        "{took:?}: the lease was waited out"
    );
    // The node follows the survivor and serves.
    eventually(
        Duration::from_secs(20),
        "the node to serve after the hand-over",
        || async {
            let r = c
                .chat(0, &token, &TestCluster::chat_body(MODEL, "after", false))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_without_waiting_for_the_drain() {
    let mut c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--drain-timeout".to_owned(), "60s".to_owned()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-twice", "*").unwrap();
    c.mock.set_behavior(Behavior::GatedStream);
    let streams = open_streams(&c, &token, 1).await;
    let pid = c.nodes[0].child.id();
    signal(pid, "TERM");
    // Draining: the stream holds the node up (60 s deadline, 10 s gate).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.nodes[0].child.try_wait().unwrap().is_none(),
        "exited before the drain ended"
    );
    signal(pid, "TERM");
    let (status, took) = wait_exit(&mut c.nodes[0].child, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (_, text) = streams.into_iter().next().unwrap().await.unwrap();
    assert!(
        !text.contains("[DONE]"),
        "the stream cannot have completed: {text}"
    );
}
