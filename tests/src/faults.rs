//! Pieces of the fault tests (`tests/e2e/faults.rs`, `limits.rs`): a private
//! `redis-server` that can be SIGKILLed and restarted on its port, and a load generator
//! that records what every client saw of every request.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::Value;

use crate::cluster::{TestCluster, free_port};

/// A `redis-server` of one test, on its own loopback port, without persistence (a restart
/// comes back empty, as a cache-only Redis does).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port and waits until it answers `PING`; fails loudly
    /// when the binary is missing.
    pub async fn start(log_dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?,
            child: None,
            log: log_dir.join("private-redis.log"),
        };
        redis.restart().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server and waits for it to exit.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("redis-server is needed for the fault test (Debian package redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the private redis-server on port {} did not answer within 10 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        tcp.write_all(b"PING\r\n").await.is_ok()
            && tcp.read_exact(&mut buf).await.is_ok()
            && &buf == b"+PONG\r\n"
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// What a client saw of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole answer: a chat completion, or a stream up to `data: [DONE]` without an
    /// error event.
    Complete,
    /// An answer that began (status 200) but did not end well.
    Cut,
    /// No answer, or an error status.
    Failed,
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which load: `0` the main key, `1` the tight key.
    pub load: usize,
    pub node: usize,
    pub stream: bool,
    pub sent: Instant,
    pub done: Instant,
    pub outcome: Outcome,
    /// The status of the answer (0: none).
    pub status: u16,
    /// The gateway's `x-request-id`, when an answer came.
    pub request_id: Option<String>,
}

/// The nodes' chat URLs, updated when a node restarts on a new port.
pub type NodeUrls = Arc<RwLock<Vec<String>>>;

/// The chat URLs of the cluster's nodes.
pub fn node_urls(c: &TestCluster) -> NodeUrls {
    Arc::new(RwLock::new(
        c.nodes
            .iter()
            .map(|n| n.url("/v1/chat/completions"))
            .collect(),
    ))
}

/// A load of `workers` clients with `credential`, round robin over the nodes, each pausing
/// `pause` between requests; streaming every other request when `streams`.
pub struct Load {
    pub load: usize,
    /// The model alias asked for.
    pub model: String,
    pub credential: String,
    pub workers: usize,
    pub pause: Duration,
    pub streams: bool,
}

/// Runs `load` until `stop`; returns every request's record.
pub fn spawn_load(
    http: &reqwest::Client,
    urls: &NodeUrls,
    load: Load,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Record>>> {
    let load = Arc::new(load);
    (0..load.workers)
        .map(|worker| {
            let (http, urls, load, stop) = (
                http.clone(),
                Arc::clone(urls),
                Arc::clone(&load),
                Arc::clone(stop),
            );
            tokio::spawn(async move {
                let mut records = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let node = (worker + i) % 3;
                    let stream = load.streams && i.is_multiple_of(2);
                    let url = urls.read().map(|u| u[node].clone()).unwrap_or_default();
                    let text = format!("fault load {} w{worker} #{i}", load.load);
                    let body = TestCluster::chat_body(&load.model, &text, stream);
                    let sent = Instant::now();
                    let (outcome, status, request_id) = tokio::time::timeout(
                        Duration::from_secs(20),
                        one_request(&http, &url, &load.credential, &body, stream),
                    )
                    .await
                    .unwrap_or((Outcome::Failed, 0, None));
                    records.push(Record {
                        load: load.load,
                        node,
                        stream,
                        sent,
                        done: Instant::now(),
                        outcome,
                        status,
                        request_id,
                    });
                    i += 1;
                    // A node that is down refuses at once: do not spin on it.
                    let pause = if outcome == Outcome::Failed && status == 0 {
                        load.pause.max(Duration::from_millis(50))
                    } else {
                        load.pause
                    };
                    tokio::time::sleep(pause).await;
                }
                records
            })
        })
        .collect()
}

/// Sends one chat completion and reads its whole answer.
async fn one_request(
    http: &reqwest::Client,
    url: &str,
    credential: &str,
    body: &Value,
    stream: bool,
) -> (Outcome, u16, Option<String>) {
    let Ok(r) = http
        .post(url)
        .bearer_auth(credential)
        .json(body)
        .send()
        .await
    else {
        return (Outcome::Failed, 0, None);
    };
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status != 200 {
        let _ = r.bytes().await;
        return (Outcome::Failed, status, id);
    }
    let mut bytes = Vec::new();
    let mut body_stream = r.bytes_stream();
    while let Some(chunk) = body_stream.next().await {
        match chunk {
            Ok(c) => bytes.extend_from_slice(&c),
            Err(_) => return (Outcome::Cut, status, id),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let complete = if stream {
        text.contains("data: [DONE]") && !text.contains("\"error\"")
    } else {
        serde_json::from_str::<Value>(&text).is_ok_and(|v| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("mock: "))
        })
    };
    let outcome = if complete {
        Outcome::Complete
    } else {
        Outcome::Cut
    };
    (outcome, status, id)
}
