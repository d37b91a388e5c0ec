//! [`RedisLink`]: one multiplexed connection to Redis shared by every request, plus a health
//! flag. A failed call marks the link unhealthy and starts a background probe; while it is
//! unhealthy callers skip Redis entirely (no per-request timeouts) and use per-node state.
//! The probe reconnects — re-resolving the master through Sentinel when configured — and
//! marks the link healthy again, so nodes return to shared state by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use secrecy::{ExposeSecret as _, SecretString};
use tokio_util::sync::CancellationToken;
use warden_core::backoff::Backoff;
use warden_core::shutdown::sleep_or_cancel;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One server: `redis://[user:pass@]host:port[/db]` or `rediss://…` (TLS, rustls).
    Single(SecretString),
    /// Sentinel: the sentinel URLs, the master's service name, and the master's ACL user
    /// and password (the sentinels' own credentials ride in their URLs).
    Sentinel {
        urls: Vec<SecretString>,
        service: String,
        master_username: Option<String>,
        master_password: Option<SecretString>,
    },
    /// Cluster: seed node URLs. Every Warden key carries one hash tag, so scripts touch
    /// a single slot.
    Cluster(Vec<SecretString>),
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub topology: Topology,
    /// Prefix of every key Warden writes (a hash tag is added: `{prefix}:…`).
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// PEM CA certificates trusted for `rediss://` instead of the system's roots
    /// (`--redis-ca-file`); single server and cluster only.
    pub root_ca: Option<Vec<u8>>,
}

impl RedisSettings {
    /// The TLS trust `rediss://` connections use when a CA bundle was given.
    fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        self.root_ca.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis handle that knows whether Redis is usable right now.
pub struct RedisLink {
    settings: RedisSettings,
    conn: ArcSwapOption<Conn>,
    healthy: AtomicBool,
    probing: AtomicBool,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("prefix", &self.settings.prefix)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a Redis call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis is unavailable")]
    Unavailable,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl RedisLink {
    /// Creates the link and tries to connect in the background; never fails at start-up, so
    /// a node starts (with per-node limits) even when Redis is down.
    pub fn start(settings: RedisSettings, shutdown: CancellationToken) -> Arc<Self> {
        let link = Arc::new(Self {
            settings,
            conn: ArcSwapOption::empty(),
            healthy: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            shutdown,
        });
        link.start_probe();
        link
    }

    /// The key prefix (without its hash-tag braces); key names are built with
    /// [`warden_core::shared_keys`].
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Cancelled when the node shuts down; background tasks on the link end with it.
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    /// Whether calls currently go to Redis.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs `f` with a connection. Fails fast while unhealthy; a connection or timeout error
    /// marks the link unhealthy and starts recovery.
    pub async fn with<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnHandle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_healthy() {
            return Err(LinkError::Unavailable);
        }
        let conn = self.conn.load_full().ok_or(LinkError::Unavailable)?;
        let deadline = self.settings.response_timeout + Duration::from_millis(50);
        match tokio::time::timeout(deadline, f(ConnHandle((*conn).clone()))).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    self.mark_down(&e.to_string());
                }
                Err(e.into())
            }
            Err(_) => {
                self.mark_down("timed out");
                Err(LinkError::Unavailable)
            }
        }
    }

    fn mark_down(self: &Arc<Self>, reason: &str) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason,
                "redis unreachable: switching to per-node limits and key state"
            );
            metrics::gauge!(crate::metrics::REDIS_UP).set(0.0);
            metrics::counter!(crate::metrics::REDIS_FAILURES).increment(1);
        }
        // Recovery is started by whoever notices first; `start_probe` is idempotent.
        self.start_probe();
    }

    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            let mut last_reason: Option<String> = None;
            loop {
                if this.shutdown.is_cancelled() {
                    break;
                }
                match this.connect().await {
                    Ok(conn) => {
                        this.conn.store(Some(Arc::new(conn)));
                        this.healthy.store(true, Ordering::Relaxed);
                        metrics::gauge!(crate::metrics::REDIS_UP).set(1.0);
                        tracing::info!("redis reachable: shared limits and key state in use");
                        break;
                    }
                    Err(e) => {
                        // Each new reason is said once (a refused connection, a certificate
                        // the CA did not sign, a wrong password); retries failing the same
                        // way stay quiet.
                        let reason = e.to_string();
                        if last_reason.as_deref() != Some(reason.as_str()) {
                            tracing::warn!(error = %reason, "cannot connect to redis: retrying in the background, shared limits and key state unavailable meanwhile");
                            last_reason = Some(reason);
                        } else {
                            tracing::debug!(error = %reason, "redis probe failed");
                        }
                    }
                }
                if !sleep_or_cancel(backoff.next_delay(), &this.shutdown).await {
                    break;
                }
            }
            this.probing.store(false, Ordering::Release);
            // A failure between connect and clearing the flag would be missed; re-check.
            if !this.healthy.load(Ordering::Relaxed) && !this.shutdown.is_cancelled() {
                this.start_probe();
            }
        });
    }

    async fn connect(&self) -> redis::RedisResult<Conn> {
        let s = &self.settings;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.connect_timeout))
            .set_response_timeout(Some(s.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = match &s.topology {
            Topology::Single(url) => {
                let client = self.client(url)?;
                Conn::Single(
                    tokio::time::timeout(
                        s.connect_timeout,
                        ConnectionManager::new_with_config(client, config),
                    )
                    .await
                    .map_err(|_| timeout_error())??,
                )
            }
            Topology::Sentinel { .. } => {
                let client = self.sentinel_master().await?;
                Conn::Single(ConnectionManager::new_with_config(client, config).await?)
            }
            Topology::Cluster(urls) => {
                let urls: Vec<&str> = urls.iter().map(|u| u.expose_secret()).collect();
                let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(s.connect_timeout)
                    .response_timeout(s.response_timeout);
                if let Some(certs) = s.tls_certificates() {
                    builder = builder.certs(certs);
                }
                let client = builder.build()?;
                Conn::Cluster(client.get_async_connection().await?)
            }
        };
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        if pong != "PONG" {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "unexpected PING answer",
            )));
        }
        Ok(conn)
    }
}

impl RedisLink {
    /// A client of one server, with the CA bundle for `rediss://`.
    fn client(&self, url: &SecretString) -> redis::RedisResult<redis::Client> {
        match self.settings.tls_certificates() {
            Some(certs) => redis::Client::build_with_tls(url.expose_secret(), certs),
            None => redis::Client::open(url.expose_secret()),
        }
    }

    /// A client of the master the sentinels name now.
    async fn sentinel_master(&self) -> redis::RedisResult<redis::Client> {
        let s = &self.settings;
        let Topology::Sentinel {
            urls,
            service,
            master_username,
            master_password,
        } = &s.topology
        else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "not a sentinel topology",
            )));
        };
        let urls: Vec<&str> = urls.iter().map(|u| u.expose_secret()).collect();
        let mut sentinel = redis::sentinel::Sentinel::build(urls)?;
        let mut info = redis::RedisConnectionInfo::default();
        if let Some(user) = master_username {
            info = info.set_username(user);
        }
        if let Some(password) = master_password {
            info = info.set_password(password.expose_secret());
        }
        let node =
            redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        tokio::time::timeout(
            s.connect_timeout,
            sentinel.async_master_for(service, Some(&node)),
        )
        .await
        .map_err(|_| timeout_error())?
    }

    /// A new pub/sub connection of its own (outside the shared one): to the server, to the
    /// master the sentinels name, or to a Cluster's first seed node (Cluster pub/sub
    /// messages reach every node of the cluster).
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let client = match &self.settings.topology {
            Topology::Single(url) => self.client(url)?,
            Topology::Sentinel { .. } => self.sentinel_master().await?,
            Topology::Cluster(urls) => match urls.first() {
                Some(url) => self.client(url)?,
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "no cluster seed",
                    )));
                }
            },
        };
        tokio::time::timeout(self.settings.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| timeout_error())?
    }
}

fn timeout_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connect timed out",
    ))
}

/// A connection lent to one call.
pub struct ConnHandle(Conn);

impl ConnHandle {
    pub fn conn(&mut self) -> &mut impl ConnectionLike {
        &mut self.0
    }
}
