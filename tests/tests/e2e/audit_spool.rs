//! Audit delivery from nodes: no answered request goes unaudited or is audited twice when
//! the control plane is killed under load, or when a node restarts while it is away; and a
//! node whose audit spool is full refuses requests (fail-closed) until it has room again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, Options, TestCluster, eventually};

/// The `x-request-id` of a response.
pub(crate) fn request_id(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every response carries x-request-id")
        .to_owned()
}

/// How many request records the control plane holds for each request id.
fn audited_request_ids(c: &TestCluster) -> Option<HashMap<String, usize>> {
    let out = c
        .ctl_ok(
            &[
                "audit", "list", "--action", "request", "--limit", "1000", "-o", "json",
            ],
            None,
        )
        .ok()?;
    let rows: Value = serde_json::from_str(&out).ok()?;
    let mut seen = HashMap::new();
    for row in rows.as_array()? {
        let detail = warden_core::audit_detail::parse(row["detail"].as_str()?);
        if let Some(id) = detail.get("request_id") {
            *seen.entry(id.clone()).or_insert(0) += 1;
        }
    }
    Some(seen)
}

/// Waits until every id in `ids` is audited, then asserts each exactly once.
pub(crate) async fn assert_each_audited_once(c: &TestCluster, ids: &[String]) {
    let seen = eventually(
        Duration::from_secs(30),
        "every answered request in the audit log",
        || async {
            let seen = audited_request_ids(c)?;
            ids.iter().all(|id| seen.contains_key(id)).then_some(seen)
        },
    )
    .await
    .unwrap_or_else(|e| {
        let seen = audited_request_ids(c).unwrap_or_default();
        let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
        panic!(
            "{e}: {missing} of {} requests have no audit record\n{}",
            ids.len(),
            c.logs()
                .lines()
                .filter(|l| l.contains("audit") || l.contains("ERROR"))
                .take(50)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let doubled: Vec<_> = ids.iter().filter(|id| seen[*id] != 1).collect();
    assert!(doubled.is_empty(), "audited more than once: {doubled:?}");
}

/// A value of the node's Prometheus text (`name` without labels).
async fn metric(c: &TestCluster, node: usize, name: &str) -> Option<f64> {
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
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn every_answered_request_is_audited_once_when_the_control_plane_is_killed_under_load() {
    let mut c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-load", "*").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (http, url, token, stop) = (
            c.http.clone(),
            c.nodes[0].url("/v1/chat/completions"),
            token.clone(),
            Arc::clone(&stop),
        );
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            // At most 200 each: the audit list shows the last 1000 records.
            for i in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = TestCluster::chat_body(MODEL, &format!("client {client} #{i}"), false);
                if let Ok(r) = http.post(&url).bearer_auth(&token).json(&body).send().await {
                    assert_eq!(r.status(), 200, "the node must serve through the outage");
                    let id = request_id(&r);
                    let _ = r.bytes().await;
                    ids.push((std::time::Instant::now(), id));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.kill_cp().unwrap();
    let killed = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let restarting = std::time::Instant::now();
    c.start_cp().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    for client in clients {
        answered.extend(client.await.unwrap());
    }
    let during = answered
        .iter()
        .filter(|(at, _)| (killed..restarting).contains(at))
        .count();
    assert!(
        during > 20 && answered.len() > during,
        "too little load: {} requests, {during} during the outage",
        answered.len()
    );
    let ids: Vec<String> = answered.into_iter().map(|(_, id)| id).collect();
    assert_each_audited_once(&c, &ids).await;
}

#[tokio::test]
async fn events_spooled_before_a_node_restart_arrive_once_when_the_control_plane_returns() {
    let mut c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-restart", "*").unwrap();
    c.kill_cp().unwrap();
    // Every event is spooled before it is delivered, the node's own start-up events too: count
    // from here, so that those cannot stand in for a request's event still in flight.
    let before = metric(&c, 0, "warden_audit_events_spooled_total")
        .await
        .unwrap_or(0.0);
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = c
            .chat(
                0,
                &token,
                &TestCluster::chat_body(MODEL, &format!("before restart {i}"), false),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r));
    }
    // A request's event is written just after its answer: wait until all 20 are on disk.
    eventually(
        Duration::from_secs(10),
        "the 20 events in the spool",
        || async {
            let n = metric(&c, 0, "warden_audit_events_spooled_total").await?;
            (n >= before + 20.0).then_some(())
        },
    )
    .await
    .unwrap();
    c.restart_node(0).unwrap();
    // Without the control plane the new process has no snapshot, so it cannot serve; the
    // spooled events of the old one are still waiting on disk.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.start_cp().await.unwrap();
    c.wait_node_ready(0).await.unwrap();
    for i in 0..5 {
        let r = c
            .chat(
                0,
                &token,
                &TestCluster::chat_body(MODEL, &format!("after restart {i}"), false),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r));
    }
    assert_each_audited_once(&c, &ids).await;
    assert!(
        c.logs()
            .contains("audit spool holds events of a previous run"),
        "the restarted node did not find the old spool"
    );
}

#[tokio::test]
async fn a_full_audit_spool_refuses_requests_until_the_control_plane_takes_the_events() {
    let mut c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--audit-spool-max-bytes".into(), "16384".into()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let token = c.issue_token("svc-full", "*").unwrap();
    c.kill_cp().unwrap();
    let mut served = 0;
    let refused = loop {
        assert!(served < 500, "the spool never filled");
        let r = c
            .chat(0, &token, &TestCluster::chat_body(MODEL, "fill", false))
            .await
            .unwrap();
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(served > 5, "refused after {served} requests");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Audit log unavailable"),
        "{body}"
    );
    // The Anthropic endpoint answers in its own shape.
    let r = c
        .http
        .post(c.nodes[0].url("/v1/messages"))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": CLAUDE_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Audit log unavailable"),
        "{body}"
    );
    let ready = c
        .http
        .get(c.nodes[0].ops_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["reason"]
            .as_str()
            .unwrap()
            .starts_with("audit log unavailable"),
        "{ready}"
    );
    assert_eq!(metric(&c, 0, "warden_audit_unavailable").await, Some(1.0));

    c.start_cp().await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the node to serve again",
        || async {
            let r = c
                .chat(0, &token, &TestCluster::chat_body(MODEL, "again", false))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    c.wait_node_ready(0).await.unwrap();
    // The node serves again as soon as the spool has room for one more request's event,
    // while the control plane is still taking the backlog (the spool may hold ~15 of its
    // 16 KiB then): one more event can close admission again for a moment. The gauge
    // settles at 0 once the backlog is delivered.
    eventually(
        Duration::from_secs(30),
        "warden_audit_unavailable to read 0 once the backlog is delivered",
        || async { (metric(&c, 0, "warden_audit_unavailable").await == Some(0.0)).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(
        metric(&c, 0, "warden_audit_events_dropped_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "fail-closed must not drop events"
    );
}

/// The node keeps its spool in a `segments/` directory it creates inside the configured
/// path, mode 0700 with files 0600, and refuses to start on one it finds owned by another
/// user (as root: a directory chowned to `nobody`; otherwise: a symlink put in its place),
/// naming it.
#[tokio::test]
async fn the_spool_is_private_and_a_directory_of_another_user_is_refused() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mut c = TestCluster::start(1).await.unwrap();
    let token = c.issue_token("svc-private", "*").unwrap();
    c.kill_cp().unwrap(); // events stay on disk
    let r = c
        .chat(0, &token, &TestCluster::chat_body(MODEL, "kept", false))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let private = c.spool_dir("node-1").join("segments");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    eventually(Duration::from_secs(10), "a segment on disk", || async {
        std::fs::read_dir(&private)
            .ok()?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(mode(&private), 0o700);
    for entry in std::fs::read_dir(&private).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(
        std::fs::read_dir(c.spool_dir("node-1"))
            .unwrap()
            .filter_map(Result::ok)
            .all(|e| e.file_name() == "segments"),
        "nothing of the spool outside its private directory"
    );

    // Another user's directory where the node's private one belongs.
    let theirs = c.spool_dir("node-other");
    std::fs::create_dir_all(&theirs).unwrap();
    let planted = theirs.join("segments");
    let euid = std::fs::metadata("/proc/self").unwrap().uid();
    let want = if euid == 0 {
        std::fs::create_dir(&planted).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        "is owned by uid 65534"
    } else {
        std::os::unix::fs::symlink(c.dir.path(), &planted).unwrap();
        "is not a plain directory"
    };
    let node = tokio::process::Command::new(warden_tests::cluster::bin("warden-dp").unwrap())
        .arg("--http-addr")
        .arg(format!(
            "127.0.0.1:{}",
            warden_tests::cluster::free_port().unwrap()
        ))
        .arg("--cp-addr")
        .arg(c.cp_addr())
        .arg("--node-id")
        .arg("node-other")
        .arg("--audit-spool-dir")
        .arg(&theirs)
        .env_clear()
        .env("WARDEN_NODE_TOKEN", &c.node_token)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), node)
        .await
        .expect("the node must refuse at start-up, not run")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&planted.display().to_string()) && stderr.contains(want),
        "the refusal names the directory: {stderr}"
    );
    if euid == 0 {
        assert_eq!(
            std::fs::metadata(&planted).unwrap().uid(),
            65534,
            "left alone"
        );
        assert_eq!(mode(&planted), 0o777, "left alone");
    }
}
