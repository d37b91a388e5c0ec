//! Several control-plane addresses (issue #15 items 1 and 2): a node given `--cp-addr
//! dead,live,…` attaches to one that answers and moves to another replica when it goes
//! away, serving throughout; `wardenctl` skips an address it cannot connect to but never
//! sends a call twice; and `--max-snapshot-age` makes a node cut off from every replica
//! refuse client credentials (fail-closed) until it reconnects, then audit the episode once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, TestCluster, eventually, free_port};

/// Audit rows of `action`, newest first.
fn audit_rows(c: &TestCluster, action: &str) -> Vec<Value> {
    let out = c
        .ctl_ok(&["audit", "list", "--action", action, "-o", "json"], None)
        .unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of an unlabelled gauge on node `node`'s `/metrics`.
async fn gauge(c: &TestCluster, node: usize, name: &str) -> Option<f64> {
    let text = c
        .http
        .get(c.nodes[node].ops_url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_node_skips_a_dead_address_and_fails_over_to_a_replica_on_another_port() {
    let mut c = TestCluster::start(0).await.unwrap();
    let dead = free_port().unwrap();
    let next = free_port().unwrap();
    c.options.node_cp_addr = Some(format!(
        "http://127.0.0.1:{dead},{},http://localhost:{next}",
        c.cp_addr()
    ));
    c.add_node().await.unwrap();
    let token = c.issue_token("failover", "*").unwrap();
    let hi = TestCluster::chat_body(MODEL, "hi", false);
    assert_eq!(c.chat(0, &token, &hi).await.unwrap().status(), 200);
    assert_eq!(gauge(&c, 0, "warden_cp_connected").await, Some(1.0));
    assert_eq!(gauge(&c, 0, "warden_cp_replica_index").await, Some(1.0));

    // Requests all along, while the control plane moves to another port (the node knows it
    // by a name, resolved at each round).
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (http, url, token) = (
            c.http.clone(),
            c.nodes[0].url("/v1/chat/completions"),
            token.clone(),
        );
        let (stop, served, failed) = (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&TestCluster::chat_body(MODEL, "during the move", false))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    c.kill_cp().unwrap();
    c.cp_port = next;
    c.start_cp().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the node on the new replica",
        || async { (gauge(&c, 0, "warden_cp_replica_index").await == Some(2.0)).then_some(()) },
    )
    .await
    .unwrap();
    // An admin change through the new replica reaches the node.
    c.ctl_ok(&["model", "add", "gpt-moved", "--provider", "mock"], None)
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the new model on the node",
        || async {
            let r = c
                .chat(0, &token, &TestCluster::chat_body("gpt-moved", "hi", false))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{}", c.logs());
    assert!(served.load(Ordering::Relaxed) > 0);
    assert!(
        c.logs().contains("trying the next"),
        "the dead address was tried"
    );
}

/// A TCP front for the control plane that forwards everything a client sends, and back
/// only the HTTP/2 frames of the connection itself (stream 0: settings, pings); at the
/// first frame of an answer it drops the connection. So the call arrives and is carried out,
/// and the client sees it fail after it was sent (not a connection failure).
async fn answer_dropping_front(cp_port: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(cp) = tokio::net::TcpStream::connect(("127.0.0.1", cp_port)).await else {
                    return;
                };
                let (mut cp_read, mut cp_write) = cp.into_split();
                let (mut client_read, mut client_write) = client.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut cp_write).await;
                });
                loop {
                    let mut head = [0u8; 9];
                    if cp_read.read_exact(&mut head).await.is_err() {
                        break;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
                    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
                    if cp_read.read_exact(&mut payload).await.is_err() {
                        break;
                    }
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    if stream & 0x7fff_ffff != 0 {
                        break;
                    }
                    if client_write.write_all(&head).await.is_err()
                        || client_write.write_all(&payload).await.is_err()
                    {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    port
}

// Multi-threaded: the front runs on the runtime while `wardenctl` blocks the test's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wardenctl_skips_an_address_it_cannot_connect_to_and_never_sends_a_call_twice() {
    let c = TestCluster::start(0).await.unwrap();
    let dead = free_port().unwrap();
    let list = format!("http://127.0.0.1:{dead},{}", c.cp_addr());
    let ctl = |args: &[&str], addrs: &str| {
        c.ctl_with(
            args,
            None,
            &[
                ("WARDEN_ADMIN_TOKEN", &c.admin_token),
                ("WARDEN_CP_ADDR", addrs),
            ],
        )
        .unwrap()
    };
    let out = ctl(&["model", "add", "via-second", "--provider", "mock"], &list);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        audit_rows(&c, "model.add")
            .iter()
            .filter(|r| r["subject"] == "via-second")
            .count(),
        1
    );

    // Every address dead: each is named in the error.
    let other = free_port().unwrap();
    let out = ctl(
        &["model", "list"],
        &format!("http://127.0.0.1:{dead},http://127.0.0.1:{other}"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("any of its 2 addresses")
            && err.contains(&format!("127.0.0.1:{dead}"))
            && err.contains(&format!("127.0.0.1:{other}")),
        "{err}"
    );

    // The first address connects, the call reaches the control plane, and its answer never
    // comes back: wardenctl fails and does not send it again to the second address.
    let front = answer_dropping_front(c.cp_port).await;
    let started = Instant::now();
    let out = ctl(
        &["model", "add", "sent-once", "--provider", "mock"],
        &format!("http://127.0.0.1:{front},{}", c.cp_addr()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the answer was dropped: {err}");
    assert!(started.elapsed() < Duration::from_secs(25), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{front}")) && err.contains("not repeated"),
        "{err}"
    );
    assert!(!err.contains(&c.cp_addr()), "{err}");
    let rows = eventually(Duration::from_secs(10), "the model.add row", || async {
        let rows: Vec<Value> = audit_rows(&c, "model.add")
            .into_iter()
            .filter(|r| r["subject"] == "sent-once")
            .collect();
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = audit_rows(&c, "model.add")
        .into_iter()
        .filter(|r| r["subject"] == "sent-once")
        .count();
    assert_eq!((rows.len(), again), (1, 1), "sent once: {err}");
}

/// Status and body of a request with `credential` on `path` (`/v1/chat/completions` in the
/// OpenAI shape, `/v1/messages` in the Anthropic one).
async fn call(c: &TestCluster, path: &str, credential: &str) -> (u16, Value) {
    let body = if path == "/v1/messages" {
        serde_json::json!({
            "model": CLAUDE_MODEL, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        })
    } else {
        TestCluster::chat_body(MODEL, "hi", false)
    };
    let r = c
        .http
        .post(c.nodes[0].url(path))
        .bearer_auth(credential)
        .header("x-api-key", credential)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn past_max_snapshot_age_a_cut_off_node_refuses_credentials_until_it_reconnects() {
    let mut c = TestCluster::start(0).await.unwrap();
    c.options.node_args = vec!["--max-snapshot-age".into(), "2s".into()];
    c.add_node().await.unwrap();
    let jwt = c.issue_token("stale", "*").unwrap();
    let key: Value = serde_json::from_str(
        &c.ctl_ok(
            &[
                "vkey",
                "create",
                "--name",
                "stale-key",
                "--owner",
                "t",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    for credential in [&jwt, &key] {
        eventually(
            Duration::from_secs(10),
            "the credential on the node",
            || async {
                (call(&c, "/v1/chat/completions", credential).await.0 == 200).then_some(())
            },
        )
        .await
        .unwrap();
    }

    c.kill_cp().unwrap();
    let cut = Instant::now();
    // Within the bound: served from the snapshot.
    assert_eq!(call(&c, "/v1/chat/completions", &jwt).await.0, 200);
    assert_eq!(call(&c, "/v1/messages", &key).await.0, 200);
    assert!(cut.elapsed() < Duration::from_secs(2), "too slow to test");
    // Past it: refused, in each endpoint's shape.
    let (status, body) = eventually(
        Duration::from_secs(10),
        "refusal past the bound",
        || async {
            let answer = call(&c, "/v1/chat/completions", &jwt).await;
            (answer.0 == 503).then_some(answer)
        },
    )
    .await
    .unwrap();
    assert!(cut.elapsed() >= Duration::from_secs(2));
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "control_plane_unreachable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot confirm that credentials are unrevoked"),
        "{body}"
    );
    let (status, body) = call(&c, "/v1/messages", &key).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unrevoked"),
        "{body}"
    );
    let (status, _) = call(&c, "/v1/chat/completions", &key).await;
    assert_eq!(status, 503);
    let ready = c
        .http
        .get(c.nodes[0].ops_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["reason"].as_str().unwrap().contains("snapshot stale"),
        "{ready}"
    );
    let stale = eventually(Duration::from_secs(5), "the stale gauge", || async {
        (gauge(&c, 0, "warden_snapshot_stale").await == Some(1.0)).then_some(())
    });
    stale.await.unwrap();
    assert!(gauge(&c, 0, "warden_snapshot_age_seconds").await.unwrap() >= 2.0);

    // Back: served again, and the episode audited once.
    c.start_cp().await.unwrap();
    c.wait_node_ready(0).await.unwrap();
    assert_eq!(call(&c, "/v1/chat/completions", &jwt).await.0, 200);
    assert_eq!(call(&c, "/v1/messages", &key).await.0, 200);
    assert_eq!(gauge(&c, 0, "warden_snapshot_stale").await, Some(0.0));
    let rows = eventually(
        Duration::from_secs(15),
        "the node.snapshot_stale row",
        || async {
            let rows = audit_rows(&c, "node.snapshot_stale");
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await
    .unwrap();
    let detail = warden_core::audit_detail::parse(rows[0]["detail"].as_str().unwrap());
    let refused: u64 = detail["requests_refused"].parse().unwrap();
    assert!(refused >= 3, "{detail:?}");
    assert!(
        detail["seconds_offline"].parse::<u64>().unwrap() >= 2,
        "{detail:?}"
    );
    assert!(detail.contains_key("seconds_stale"), "{detail:?}");
    // The refused requests have their request rows, like any refused request.
    let refused_rows = eventually(
        Duration::from_secs(10),
        "request rows of the refusals",
        || async {
            let rows: Vec<Value> = audit_rows(&c, "request")
                .into_iter()
                .filter(|r| {
                    warden_core::audit_detail::parse(r["detail"].as_str().unwrap_or(""))
                        .get("error")
                        .map(String::as_str)
                        == Some("control_plane_unreachable")
                })
                .collect();
            (u64::try_from(rows.len()).unwrap() >= refused).then_some(rows)
        },
    );
    refused_rows.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        audit_rows(&c, "node.snapshot_stale").len(),
        1,
        "exactly one episode row"
    );
}
