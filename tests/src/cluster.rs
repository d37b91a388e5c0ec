//! [`TestCluster`]: a real Warden on loopback for end-to-end tests — a `warden-cp` process,
//! any number of `warden-dp` processes, a [`MockUpstream`] provider and `wardenctl` — so
//! that tests read like sentences. Every process logs to a file in the cluster's temporary
//! directory; [`TestCluster::find_everywhere`] searches those logs and every stored file
//! for a value (the canary search for secrets).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;

use crate::mock::MockUpstream;

/// The upstream key the cluster configures for the mock provider: a canary that must never
/// appear in any log, response or stored file.
pub const CANARY_UPSTREAM_KEY: &str = "sk-canary-UPSTREAM-4f1c9e7a2b3d5e6f";
/// The alias of the mock provider's model.
pub const MODEL: &str = "gpt-mock";
/// A second alias on the same provider, for allow-list tests.
pub const OTHER_MODEL: &str = "gpt-other";
/// The upstream key of the mock's Anthropic-format side (provider `mock-anthropic`).
pub const CANARY_ANTHROPIC_KEY: &str = "sk-ant-canary-UPSTREAM-8e7d6c5b4a39";
/// An alias served by the Anthropic-format provider.
pub const CLAUDE_MODEL: &str = "claude-mock";

/// Directory holding the workspace's binaries (`target/debug`), next to the test binary;
/// `WARDEN_BIN_DIR` overrides it (e.g. `target/release` to measure release binaries).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARDEN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; fails loudly when it has not been built.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// The Python interpreter with the official SDKs (`WARDEN_TEST_PYTHON`, set by
/// scripts/test.sh); panics with a clear message when it is not set.
pub fn python() -> String {
    std::env::var("WARDEN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs the \
             official SDKs into .venv (or point it at a python with `openai` and `anthropic`)"
        )
    })
}

/// Runs `tests/python/<script>` with `env` and returns the JSON object it prints.
pub async fn run_python_script(
    script: &str,
    env: HashMap<String, String>,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let python = python();
    let out =
        tokio::task::spawn_blocking(move || Command::new(python).arg(path).envs(env).output())
            .await??;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `check` returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One `warden-dp` process.
#[derive(Debug)]
pub struct Node {
    pub child: Child,
    pub port: u16,
    /// The ops listener's port (`/metrics`, `/readyz`, `/healthz`).
    pub ops_port: u16,
    pub id: String,
    /// The API listener's host: `127.0.0.1`, or `[::1]` (see [`Options::node_http_host`]).
    pub host: String,
}

impl Node {
    /// A URL on the node's API listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    /// A URL on the node's ops listener (`/metrics`, `/readyz`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }
}

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Shared state for the nodes (and usage for the control plane); each cluster uses a
    /// fresh key prefix in it.
    pub redis_url: Option<String>,
    /// `--node-count` given to every node.
    pub node_count: Option<u32>,
    /// Run the control plane on this PostgreSQL database (in a fresh schema) instead of
    /// the embedded SQLite.
    pub database_url: Option<String>,
    /// A config file for the control plane (TOML text), passed with `--config`.
    pub cp_config: Option<String>,
    /// Extra environment for the control plane (backend credentials, `env://` keys).
    pub cp_env: Vec<(String, String)>,
    /// `WARDEN_JWT_ALGORITHM` for the control plane (`EdDSA` when unset).
    pub jwt_algorithm: Option<String>,
    /// Extra arguments for every node (e.g. `--audit-spool-max-bytes`). Each node already
    /// gets `--audit-spool-dir` (see [`TestCluster::spool_dir`]).
    pub node_args: Vec<String>,
    /// Start nodes without `--egress-allow-loopback`, which they otherwise get since the
    /// mock provider is on 127.0.0.1 (see `tests/e2e/egress.rs`).
    pub strict_egress: bool,
    /// The control plane serves TLS (its files given in `cp_env`): the cluster's address is
    /// `https://127.0.0.1:PORT`; `wardenctl` trusts this and presents its client
    /// certificate. Nodes need their own flags in `node_args` (`--cp-ca-file`, …).
    pub cp_tls: Option<CpTls>,
    /// The host nodes serve their API on (`[::1]` for IPv6 tests) [default: 127.0.0.1].
    pub node_http_host: Option<String>,
    /// The `--cp-addr` nodes get (e.g. a list of replicas) instead of [`TestCluster::cp_addr`].
    pub node_cp_addr: Option<String>,
    /// Control-plane replicas on `database_url` (0 and 1: one control plane, as before).
    /// Each replica has its own data dir, ops listener and `[cluster]` settings (a 2 s
    /// lease, a 500 ms version poll, 3 database connections); replica 0 is `cp`.
    pub cp_replicas: usize,
    /// The replicas' `[cluster] lease_ttl` (default `2s`).
    pub cp_lease_ttl: Option<String>,
    /// Extra environment for every node.
    pub node_env: Vec<(String, String)>,
}

/// A control-plane replica beyond the first ([`Options::cp_replicas`]).
#[derive(Debug)]
pub struct CpReplica {
    pub child: Option<Child>,
    pub port: u16,
    pub ops_port: u16,
}

/// How `wardenctl` reaches a control plane that serves TLS.
#[derive(Debug, Clone, Default)]
pub struct CpTls {
    /// The CA that signed the control plane's certificate (`--ca-file`).
    pub ca_file: PathBuf,
    /// Client certificate and key (`--client-cert`, `--client-key`).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A running Warden.
#[derive(Debug)]
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub master_key: String,
    pub cp: Option<Child>,
    pub cp_port: u16,
    pub admin_token: String,
    pub node_token: String,
    pub nodes: Vec<Node>,
    pub mock: MockUpstream,
    pub http: reqwest::Client,
    pub options: Options,
    /// The Redis key prefix of this cluster.
    pub redis_prefix: String,
    /// Every control-plane replica's ports (index 0 is `cp`, `cp_port`) when
    /// [`Options::cp_replicas`] > 1; the processes of replicas 1.. are here too.
    pub replicas: Vec<CpReplica>,
    /// The replica new nodes are started against ([`TestCluster::add_node_on`]).
    node_replica: usize,
    log_seq: usize,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(cp) = self.cp.as_mut() {
            let _ = cp.kill();
            let _ = cp.wait();
        }
        for r in &mut self.replicas {
            if let Some(c) = r.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

impl TestCluster {
    /// Starts a control plane, the mock provider (provider `mock` with one key and models
    /// [`MODEL`] and [`OTHER_MODEL`]) and `nodes` data-plane nodes, all ready.
    pub async fn start(nodes: usize) -> anyhow::Result<Self> {
        Self::start_with(nodes, Options::default()).await
    }

    /// [`TestCluster::start`] with options (shared state in Redis, node count).
    pub async fn start_with(nodes: usize, options: Options) -> anyhow::Result<Self> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        warden_core::install_crypto_providers();
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        let master_key = base64::engine::general_purpose::STANDARD.encode(uuid_bytes());
        let mock = MockUpstream::start().await?;
        let mut cluster = Self {
            dir,
            master_key,
            cp: None,
            cp_port: free_port()?,
            admin_token: String::new(),
            node_token: String::new(),
            nodes: Vec::new(),
            mock,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            options,
            redis_prefix: format!("wt-{}", uuid::Uuid::new_v4().simple()),
            replicas: Vec::new(),
            node_replica: 0,
            log_seq: 0,
        };
        if cluster.options.cp_replicas > 1 {
            for i in 0..cluster.options.cp_replicas {
                cluster.replicas.push(CpReplica {
                    child: None,
                    port: if i == 0 {
                        cluster.cp_port
                    } else {
                        free_port()?
                    },
                    ops_port: free_port()?,
                });
            }
        }
        let admin = cluster.start_cp().await?;
        for i in 1..cluster.replicas.len() {
            cluster.start_cp_replica(i).await?;
        }
        cluster.admin_token = admin.context("first start printed no admin credential")?;
        let base = cluster.mock.base_url();
        cluster.ctl_ok(
            &[
                "provider",
                "add",
                "mock",
                "--format",
                "openai",
                "--base-url",
                &base,
            ],
            None,
        )?;
        cluster.ctl_ok(
            &["provider", "key", "add", "mock"],
            Some(CANARY_UPSTREAM_KEY),
        )?;
        cluster.ctl_ok(
            &[
                "model",
                "add",
                MODEL,
                "--provider",
                "mock",
                "--upstream-model",
                "mock-model",
            ],
            None,
        )?;
        cluster.ctl_ok(&["model", "add", OTHER_MODEL, "--provider", "mock"], None)?;
        cluster.ctl_ok(
            &[
                "provider",
                "add",
                "mock-anthropic",
                "--format",
                "anthropic",
                "--base-url",
                &base,
            ],
            None,
        )?;
        cluster.ctl_ok(
            &["provider", "key", "add", "mock-anthropic"],
            Some(CANARY_ANTHROPIC_KEY),
        )?;
        cluster.ctl_ok(
            &[
                "model",
                "add",
                CLAUDE_MODEL,
                "--provider",
                "mock-anthropic",
                "--upstream-model",
                "claude-mock-model",
            ],
            None,
        )?;
        cluster.node_token =
            cluster.ctl_ok(&["node", "credential", "issue", "--name", "test"], None)?;
        for _ in 0..nodes {
            cluster.add_node().await?;
        }
        Ok(cluster)
    }

    fn log_file(&mut self, name: &str) -> anyhow::Result<std::fs::File> {
        self.log_seq += 1;
        let path = self
            .dir
            .path()
            .join("logs")
            .join(format!("{:02}-{name}.log", self.log_seq));
        Ok(std::fs::File::create(path)?)
    }

    /// One of the control plane's own secrets (`warden/…`), read from its state store
    /// (`warden_secrets`) with the master key, as someone holding both could.
    pub async fn own_secret(&self, name: &str) -> anyhow::Result<secrecy::SecretString> {
        use warden_control_plane::secrets::SecretStore as _;
        use warden_control_plane::store::{StateStore, postgres, sqlite};
        let store: std::sync::Arc<dyn StateStore> = match &self.options.database_url {
            Some(url) => std::sync::Arc::new(
                postgres::PostgresStore::connect(
                    &secrecy::SecretString::from(url.clone()),
                    &postgres::PostgresSettings {
                        schema: Some(self.database_schema()),
                        ..postgres::PostgresSettings::default()
                    },
                )
                .await?,
            ),
            None => std::sync::Arc::new(
                sqlite::SqliteStore::open(&self.dir.path().join("cp-data").join("state.db"))
                    .await?,
            ),
        };
        let master = warden_control_plane::secrets::cipher::MasterKey::from_base64(
            &secrecy::SecretBox::from(self.master_key.as_str()),
        )?;
        let own =
            warden_control_plane::secrets::own::OwnSecrets::new(store, std::sync::Arc::new(master));
        Ok(own.get(name).await?)
    }

    /// The PostgreSQL schema of this cluster (used only with `database_url`).
    pub fn database_schema(&self) -> String {
        format!("e2e_{}", self.redis_prefix.trim_start_matches("wt-"))
    }

    pub fn cp_addr(&self) -> String {
        let scheme = if self.options.cp_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.cp_port)
    }

    /// Starts (or restarts) the control plane on its port and data dir; returns the admin
    /// credential it printed, if any (first start only).
    pub async fn start_cp(&mut self) -> anyhow::Result<Option<String>> {
        let (child, text) = self.spawn_cp(0).await?;
        self.cp = Some(child);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("WARDEN_ADMIN_TOKEN="))
            .map(str::to_owned))
    }

    /// Starts (or restarts) control-plane replica `i` ([`Options::cp_replicas`]); 0 is
    /// [`TestCluster::start_cp`].
    pub async fn start_cp_replica(&mut self, i: usize) -> anyhow::Result<()> {
        if i == 0 {
            self.start_cp().await?;
            return Ok(());
        }
        let (child, _) = self.spawn_cp(i).await?;
        self.replicas[i].child = Some(child);
        Ok(())
    }

    /// Kills control-plane replica `i` (SIGKILL) and waits for it to exit.
    pub fn kill_cp_replica(&mut self, i: usize) -> anyhow::Result<()> {
        if i == 0 {
            return self.kill_cp();
        }
        if let Some(mut c) = self.replicas[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Every replica's gRPC address (just [`TestCluster::cp_addr`] with one control plane).
    pub fn cp_addrs(&self) -> Vec<String> {
        if self.replicas.is_empty() {
            return vec![self.cp_addr()];
        }
        self.replicas
            .iter()
            .map(|r| format!("http://127.0.0.1:{}", r.port))
            .collect()
    }

    /// `path` on replica `i`'s ops listener (only with several replicas).
    pub fn cp_ops_url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.replicas[i].ops_port)
    }

    /// The replica whose `warden_cp_leader` metric is 1, if any answers so.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.replicas.len() {
            let Ok(r) = self.http.get(self.cp_ops_url(i, "/metrics")).send().await else {
                continue;
            };
            let text = r.text().await.unwrap_or_default();
            if text
                .lines()
                .any(|l| l.starts_with("warden_cp_leader ") && l.trim_end().ends_with(" 1"))
            {
                return Some(i);
            }
        }
        None
    }

    /// Starts one more node against replica `replica`'s address.
    pub async fn add_node_on(&mut self, replica: usize) -> anyhow::Result<usize> {
        self.node_replica = replica;
        let added = self.add_node().await;
        self.node_replica = 0;
        added
    }

    /// Spawns control-plane replica `i` and waits until it prints its address; returns the
    /// process and what it printed.
    async fn spawn_cp(&mut self, i: usize) -> anyhow::Result<(Child, String)> {
        let stdout_path = self
            .dir
            .path()
            .join("logs")
            .join(format!("cp-stdout-{}.log", self.log_seq + 1));
        let stderr = self.log_file(&format!("cp{i}"))?;
        let mut command = Command::new(bin("warden-cp")?);
        let several = self.replicas.len() > 1;
        let mut text = self.options.cp_config.clone();
        if several {
            let mut t = text.unwrap_or_default();
            let ttl = self.options.cp_lease_ttl.as_deref().unwrap_or("2s");
            t.push_str(&format!(
                "\n[cluster]\nlease_ttl = \"{ttl}\"\npoll_interval = \"500ms\"\nreplica_id = \"replica-{i}\"\n"
            ));
            if !t.contains("[store]") {
                t.push_str("\n[store]\nmax_connections = 3\n");
            }
            text = Some(t);
        }
        if let Some(text) = &text {
            let name = if i == 0 {
                "cp.toml".to_owned()
            } else {
                format!("cp-{i}.toml")
            };
            let path = self.dir.path().join(name);
            std::fs::write(&path, text)?;
            command.arg("--config").arg(path);
        }
        let (port, data_dir) = if i == 0 {
            (self.cp_port, self.dir.path().join("cp-data"))
        } else {
            (
                self.replicas[i].port,
                self.dir.path().join(format!("cp-data-{i}")),
            )
        };
        if several {
            command
                .arg("--ops-addr")
                .arg(format!("127.0.0.1:{}", self.replicas[i].ops_port));
        }
        let child = command
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WARDEN_MASTER_KEY", &self.master_key)
            .env(
                "WARDEN_REDIS_URL",
                self.options.redis_url.clone().unwrap_or_default(),
            )
            .env("WARDEN_REDIS_PREFIX", &self.redis_prefix)
            .env(
                "WARDEN_DATABASE_URL",
                self.options.database_url.clone().unwrap_or_default(),
            )
            .env("WARDEN_DATABASE_SCHEMA", self.database_schema())
            .env(
                "WARDEN_JWT_ALGORITHM",
                self.options.jwt_algorithm.as_deref().unwrap_or("EdDSA"),
            )
            .env("RUST_LOG", "info")
            .envs(self.options.cp_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(stderr)
            .spawn()
            .context("spawning warden-cp")?;
        let text = eventually(Duration::from_secs(30), "warden-cp to be ready", || {
            let path = stdout_path.clone();
            async move {
                let t = std::fs::read_to_string(&path).ok()?;
                t.contains("WARDEN_CP_ADDR=").then_some(t)
            }
        })
        .await?;
        Ok((child, text))
    }

    /// Kills the control plane (SIGKILL) and waits for it to exit.
    pub fn kill_cp(&mut self) -> anyhow::Result<()> {
        if let Some(mut cp) = self.cp.take() {
            cp.kill()?;
            cp.wait()?;
        }
        Ok(())
    }

    /// Starts one more data-plane node and waits until it is ready.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let id = format!("node-{}", self.nodes.len() + 1);
        let node = self.spawn_node(&id)?;
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        self.wait_node_ready(index).await?;
        Ok(index)
    }

    /// Starts one more data-plane node without waiting for it (several start at once);
    /// see [`TestCluster::wait_node_ready`].
    pub fn spawn_node_unready(&mut self) -> anyhow::Result<usize> {
        let id = format!("node-{}", self.nodes.len() + 1);
        let node = self.spawn_node(&id)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// The audit spool directory of the node with id `id`.
    pub fn spool_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("spool").join(id)
    }

    fn spawn_node(&mut self, id: &str) -> anyhow::Result<Node> {
        let port = free_port()?;
        let ops_port = free_port()?;
        let stderr = self.log_file(id)?;
        let host = self
            .options
            .node_http_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let child = Command::new(bin("warden-dp")?)
            .arg("--http-addr")
            .arg(format!("{host}:{port}"))
            .arg("--ops-addr")
            .arg(format!("127.0.0.1:{ops_port}"))
            .arg("--cp-addr")
            .arg(
                self.options
                    .node_cp_addr
                    .clone()
                    .or_else(|| self.cp_addrs().get(self.node_replica).cloned())
                    .unwrap_or_else(|| self.cp_addr()),
            )
            .arg("--node-id")
            .arg(id)
            .arg("--audit-spool-dir")
            .arg(self.spool_dir(id))
            .args(&self.options.node_args)
            .args((!self.options.strict_egress).then_some("--egress-allow-loopback"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WARDEN_NODE_TOKEN", &self.node_token)
            .env(
                "WARDEN_REDIS_URL",
                self.options.redis_url.clone().unwrap_or_default(),
            )
            .env("WARDEN_REDIS_PREFIX", &self.redis_prefix)
            .env(
                "WARDEN_NODE_COUNT",
                self.options.node_count.unwrap_or(1).to_string(),
            )
            .env("RUST_LOG", "info")
            .envs(self.options.node_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning warden-dp")?;
        Ok(Node {
            child,
            port,
            ops_port,
            id: id.to_owned(),
            host,
        })
    }

    /// Waits until node `index` answers `/readyz` (on its ops listener) with 200.
    pub async fn wait_node_ready(&self, index: usize) -> anyhow::Result<()> {
        let url = self.nodes[index].ops_url("/readyz");
        let http = self.http.clone();
        eventually(Duration::from_secs(20), "warden-dp to be ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await
    }

    /// Kills node `index` (SIGKILL) and starts a new process with the same id and audit
    /// spool (on a new port) without waiting for it: while the control plane is down it
    /// cannot become ready. See [`TestCluster::wait_node_ready`].
    pub fn restart_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].child.kill()?;
        self.nodes[index].child.wait()?;
        let id = self.nodes[index].id.clone();
        self.nodes[index] = self.spawn_node(&id)?;
        Ok(())
    }

    /// The snapshot version a node reports on `/readyz`.
    pub async fn node_version(&self, node: usize) -> Option<u64> {
        let r = self
            .http
            .get(self.nodes[node].ops_url("/readyz"))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        v["snapshot_version"].as_u64()
    }

    /// Runs `wardenctl` with the cluster's address and admin credential.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<std::process::Output> {
        self.ctl_with(args, stdin, &[("WARDEN_ADMIN_TOKEN", &self.admin_token)])
    }

    /// Runs `wardenctl` with extra environment.
    pub fn ctl_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<std::process::Output> {
        use std::io::Write as _;
        let mut cmd = Command::new(bin("wardenctl")?);
        if let Some(tls) = &self.options.cp_tls {
            cmd.arg("--ca-file").arg(&tls.ca_file);
            if let Some((cert, key)) = &tls.client {
                cmd.arg("--client-cert").arg(cert);
                cmd.arg("--client-key").arg(key);
            }
        }
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WARDEN_CP_ADDR", self.cp_addr())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let mut log = String::new();
        log.push_str(&format!("$ wardenctl {}\n", args.join(" ")));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        let path = self.dir.path().join("logs").join("wardenctl-stderr.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(log.as_bytes())?;
        Ok(out)
    }

    /// Runs `wardenctl`, requires success, returns trimmed stdout.
    pub fn ctl_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.ctl(args, stdin)?;
        if !out.status.success() {
            bail!(
                "wardenctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Issues a JWT for `subject` allowed `models` (comma-separated; `*` = all).
    pub fn issue_token(&self, subject: &str, models: &str) -> anyhow::Result<String> {
        self.ctl_ok(
            &[
                "token",
                "issue",
                "--subject",
                subject,
                "--models",
                models,
                "--ttl",
                "1h",
            ],
            None,
        )
    }

    /// A chat completion request body for `model`.
    pub fn chat_body(model: &str, text: &str, stream: bool) -> serde_json::Value {
        serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        })
    }

    /// POSTs a chat completion to `node` with `token`.
    pub async fn chat(
        &self,
        node: usize,
        token: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.nodes[node].url("/v1/chat/completions"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?)
    }

    /// Every place `needle` occurs: process logs, and every file under the cluster's
    /// directory (state database, WAL, secret store).
    pub fn find_everywhere(&self, needle: &str) -> Vec<String> {
        let mut hits = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path)
                    && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                {
                    hits.push(path.display().to_string());
                }
            }
        }
        hits
    }

    /// All process logs concatenated (for assertions and failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            out.push_str(&format!("==> {}\n", f.display()));
            out.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
        }
        out
    }

    /// Environment map for child processes that need the cluster (Python SDK tests).
    pub fn env_for(&self, node: usize, token: &str) -> HashMap<String, String> {
        self.env_for_model(node, token, MODEL, "/v1")
    }

    /// Environment for an SDK script: the node's URL with `base_path` (`/v1` for the
    /// OpenAI SDK, empty for the Anthropic SDK, which appends `/v1/messages` itself).
    pub fn env_for_model(
        &self,
        node: usize,
        token: &str,
        model: &str,
        base_path: &str,
    ) -> HashMap<String, String> {
        HashMap::from([
            ("WARDEN_URL".to_owned(), self.nodes[node].url(base_path)),
            ("WARDEN_TOKEN".to_owned(), token.to_owned()),
            ("WARDEN_MODEL".to_owned(), model.to_owned()),
        ])
    }
}

fn uuid_bytes() -> [u8; 32] {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(a.as_bytes());
    out[16..].copy_from_slice(b.as_bytes());
    out
}
