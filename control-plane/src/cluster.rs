//! Several control-plane replicas on one PostgreSQL, with no consensus of our own: the
//! database allocates snapshot versions, carries `NOTIFY`s between replicas, and holds the
//! leader lease.
//!
//! - **Keeping in step.** Every replica `LISTEN`s on the `service::replicas` channels: a
//!   snapshot another replica published is rebuilt from the store and sent to this
//!   replica's watchers ([`ControlPlane::refresh`]), audit appends wake its followers, a
//!   credential revoked elsewhere ends its streams here. A version poll (`[cluster]
//!   poll_interval`) catches up after a lost notification or a reconnect.
//! - **The leader.** One row, `cp_lease`: holder, fencing token (one more at each takeover)
//!   and expiry by the database's clock. The leader renews every `lease_ttl / 3`; when a
//!   renewal is not confirmed it stops leader work at `sent + lease_ttl - margin` on its
//!   own monotonic clock, before the lease can expire in the database, so before another
//!   replica can take it. Leader work (checkpoint signing, retention, the JSONL and syslog
//!   exports, the rotation poll) writes through a store fenced with its token
//!   ([`SqlStore::fenced`]): a deposed leader's late write is refused in the same
//!   transaction.
//! - **The registry.** `cp_replicas`: one heartbeat per renewal. A replica whose config
//!   uses the `file` secret backend (a local file other replicas cannot read) refuses to
//!   start beside another live replica, and audits `cp.ha_misconfigured` if one appears.
//!
//! With SQLite the control plane is one replica and always the leader (a lock file in the
//! data directory refuses a second process).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warden_core::audit_detail::Detail;

use crate::RunError;
use crate::audit::jobs::{AuditConfig, AuditJobs, humantime_duration};
use crate::service::ControlPlane;
use crate::service::replicas::{
    AUDIT_CHANNEL, CREDENTIALS_CHANNEL, SECRETS_CHANNEL, SNAPSHOT_CHANNEL,
};
use crate::store::{Pool, SqlStore, StateStore};

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}

/// `[cluster]`: how replicas on one PostgreSQL share the work.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often a replica compares its snapshot version with the database's (the safety
    /// net under `NOTIFY`).
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "humantime_duration"
    )]
    pub poll_interval: Duration,
    /// How long the leader lease lasts without a renewal.
    #[serde(default = "default_lease_ttl", deserialize_with = "humantime_duration")]
    pub lease_ttl: Duration,
    /// This replica's id (default: hostname-pid-random).
    #[serde(default)]
    pub replica_id: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_poll_interval(),
            lease_ttl: default_lease_ttl(),
            replica_id: None,
        }
    }
}

impl ClusterConfig {
    /// The failing field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.poll_interval < Duration::from_millis(100) {
            return Err(("cluster.poll_interval", "must be at least 100ms".into()));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(("cluster.lease_ttl", "must be at least 1s".into()));
        }
        if let Some(id) = &self.replica_id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err((
                "cluster.replica_id",
                "1 to 128 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        Ok(())
    }

    /// The configured replica id, or hostname-pid-random.
    pub fn replica_id(&self) -> String {
        if let Some(id) = &self.replica_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "warden-cp".to_owned());
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    }

    /// How long before the lease's end (by the replica's own clock, counted from when the
    /// renewal was sent) the leader stops: a fifth of the lease, at least 200 ms.
    fn margin(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_millis(200))
    }
}

/// What leader work needs to start: the audit jobs' settings.
#[derive(Debug, Clone)]
pub struct LeaderJobs {
    pub audit: AuditConfig,
}

/// The replica's cluster tasks; [`Self::wait`] returns after `shutdown`, once the leader's
/// last work (the checkpoint at shutdown) is done and the lease is given back.
#[derive(Debug)]
pub struct Cluster {
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "cluster task failed");
        }
    }
}

/// Starts this replica's part: with SQLite, the leader work at once; with PostgreSQL, the
/// registry check, `LISTEN`, the version poll and the lease.
pub async fn start(
    cp: &Arc<ControlPlane>,
    store: &SqlStore,
    config: &ClusterConfig,
    file_backend: bool,
    jobs: LeaderJobs,
    shutdown: CancellationToken,
) -> Result<Cluster, RunError> {
    if matches!(store.pool(), Pool::Sqlite(_)) {
        cp.set_leader(true);
        let store: Arc<dyn StateStore> = Arc::new(store.clone());
        let running = crate::start_leader_work(cp, store, &jobs.audit, shutdown.clone()).await?;
        let task = tokio::spawn(async move {
            shutdown.cancelled().await;
            running.join().await;
        });
        return Ok(Cluster { task });
    }
    cp.set_leader(false);
    let replica = config.replica_id();
    cp.join_cluster(crate::service::replicas::ClusterView {
        store: store.clone(),
        replica_id: replica.clone(),
        live_within: config.lease_ttl,
    });
    store
        .replica_heartbeat(&replica, file_backend, cp.current_version())
        .await?;
    if file_backend && let Some(other) = live_beside(store, &replica, config.lease_ttl).await? {
        let _ = store.replica_leave(&replica).await;
        return Err(RunError::Cluster(format!(
            "[secrets] store = \"file\" keeps provider keys in a local file that other replicas cannot read, \
             and replica {other} is live on this database: store provider keys in vault, aws or azure to run several replicas"
        )));
    }
    tracing::info!(replica = %replica, lease_ttl = ?config.lease_ttl, "control-plane replica on PostgreSQL");
    spawn_listener(cp, store, shutdown.clone());
    spawn_poll(cp, store, config.poll_interval, shutdown.clone());
    let lease = Lease {
        cp: Arc::clone(cp),
        store: store.clone(),
        replica,
        config: config.clone(),
        file_backend,
        jobs,
    };
    let task = tokio::spawn(lease.run(shutdown));
    Ok(Cluster { task })
}

/// Another replica that is alive beside `replica`: one whose heartbeat moves within a
/// renewal period. A predecessor killed moments ago (a restart) has a young heartbeat too,
/// but it does not move.
async fn live_beside(
    store: &SqlStore,
    replica: &str,
    ttl: Duration,
) -> Result<Option<String>, crate::store::StoreError> {
    let before = store.live_replicas(ttl).await?;
    if !before.iter().any(|r| r.replica_id != replica) {
        return Ok(None);
    }
    tokio::time::sleep(ttl / 3 + Duration::from_millis(300)).await;
    let after = store.live_replicas(ttl).await?;
    Ok(after
        .into_iter()
        .filter(|r| r.replica_id != replica)
        .find(|r| {
            before
                .iter()
                .find(|b| b.replica_id == r.replica_id)
                .is_none_or(|b| b.heartbeat_at_ms < r.heartbeat_at_ms)
        })
        .map(|r| r.replica_id))
}

/// `LISTEN`s on the replicas' channels until `shutdown`; the listener reconnects by
/// itself, and the poll covers what is lost meanwhile.
fn spawn_listener(cp: &Arc<ControlPlane>, store: &SqlStore, shutdown: CancellationToken) {
    let Pool::Postgres(pool) = store.pool().clone() else {
        return;
    };
    let weak = Arc::downgrade(cp);
    let store = store.clone();
    tokio::spawn(async move {
        let schema = loop {
            match store.schema().await {
                Ok(s) => break s,
                Err(e) => tracing::warn!(error = %e, "cannot read the schema; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let mut listener = loop {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => {
                    match l
                        .listen_all([
                            SNAPSHOT_CHANNEL,
                            AUDIT_CHANNEL,
                            SECRETS_CHANNEL,
                            CREDENTIALS_CHANNEL,
                        ])
                        .await
                    {
                        Ok(()) => break l,
                        Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot open the LISTEN connection; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                r = listener.recv() => r,
            };
            let Some(cp) = weak.upgrade() else { return };
            match received {
                Ok(n) => match n.payload().split_once(':') {
                    // Another deployment on another schema of this database.
                    Some((from, _)) if from != schema => {}
                    None => {}
                    Some((_, payload)) => match n.channel() {
                        AUDIT_CHANNEL => {
                            if let Ok(seq) = payload.parse() {
                                cp.audit_appended_elsewhere(seq);
                            }
                        }
                        CREDENTIALS_CHANNEL => cp.credential_revoked_elsewhere(payload),
                        _ => {
                            if let Err(e) = cp.refresh().await {
                                tracing::warn!(error = %e, "could not catch up with another replica's snapshot");
                            }
                        }
                    },
                },
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; the version poll covers the gap");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// Every `every`: catches up with the database's snapshot version and audit head.
fn spawn_poll(
    cp: &Arc<ControlPlane>,
    store: &SqlStore,
    every: Duration,
    shutdown: CancellationToken,
) {
    let weak = Arc::downgrade(cp);
    let store = store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(cp) = weak.upgrade() else { return };
            if let Err(e) = cp.refresh().await {
                tracing::warn!(error = %e, "version poll failed");
            }
            match store.audit_head().await {
                Ok(head) => cp.audit_appended_elsewhere(head.seq),
                Err(e) => tracing::warn!(error = %e, "audit head poll failed"),
            }
        }
    });
}

/// The leader work running under one fencing token.
struct Term {
    token: i64,
    /// Stop leader work when this passes without a confirmed renewal.
    deadline: Instant,
    stop: CancellationToken,
    jobs: Option<AuditJobs>,
}

struct Lease {
    cp: Arc<ControlPlane>,
    store: SqlStore,
    replica: String,
    config: ClusterConfig,
    file_backend: bool,
    jobs: LeaderJobs,
}

impl Lease {
    async fn run(self, shutdown: CancellationToken) {
        let ttl = self.config.lease_ttl;
        let period = ttl / 3;
        let mut term: Option<Term> = None;
        let mut misconfigured_audited = false;
        let mut seen = std::collections::HashMap::new();
        loop {
            let sent = Instant::now();
            let renewal =
                tokio::time::timeout(period, self.store.acquire_lease(&self.replica, ttl)).await;
            match renewal {
                Ok(Ok(Some(token))) => {
                    if term.as_ref().is_some_and(|t| t.token != token)
                        && let Some(old) = term.take()
                    {
                        self.end(old, "fencing token changed", false).await;
                    }
                    let deadline = sent + ttl - self.config.margin();
                    if let Some(t) = term.as_mut() {
                        t.deadline = deadline;
                    } else {
                        term = self.begin(token, deadline).await;
                    }
                }
                Ok(Ok(None)) => {
                    if let Some(old) = term.take() {
                        self.end(old, "another replica holds the lease", false)
                            .await;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader lease renewal failed"),
                Err(_) => tracing::warn!("leader lease renewal timed out"),
            }
            self.heartbeat(&mut misconfigured_audited, &mut seen, term.is_some())
                .await;
            let next = sent + period;
            let wake = term.as_ref().map_or(next, |t| next.min(t.deadline));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
            }
            if term.as_ref().is_some_and(|t| Instant::now() >= t.deadline)
                && let Some(old) = term.take()
            {
                self.end(old, "renewal not confirmed in time", false).await;
            }
        }
        if let Some(t) = term.take() {
            let token = t.token;
            self.end(t, "shutdown", true).await;
            if let Err(e) = self.store.release_lease(&self.replica, token).await {
                tracing::warn!(error = %e, "could not give the leader lease back");
            }
        }
        if let Err(e) = self.store.replica_leave(&self.replica).await {
            tracing::warn!(error = %e, "could not leave the replica registry");
        }
    }

    fn detail(&self, token: i64) -> Detail {
        Detail::new()
            .with("replica_id", &self.replica)
            .with("fencing_token", token)
    }

    /// Becomes the leader under `token`: starts the leader work on a store fenced with it.
    async fn begin(&self, token: i64, deadline: Instant) -> Option<Term> {
        let stop = CancellationToken::new();
        let fenced: Arc<dyn StateStore> = Arc::new(self.store.fenced(token));
        let jobs = match crate::start_leader_work(&self.cp, fenced, &self.jobs.audit, stop.clone())
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the leader's work; giving the lease back");
                let _ = self.store.release_lease(&self.replica, token).await;
                return None;
            }
        };
        self.cp.set_leader(true);
        tracing::info!(replica = %self.replica, fencing_token = token, "leader lease acquired");
        self.cp
            .audit(
                "cp.leader_acquired",
                "system:cluster",
                &self.replica,
                "ok",
                &self.detail(token).build(),
            )
            .await;
        Some(Term {
            token,
            deadline,
            stop,
            jobs: Some(jobs),
        })
    }

    /// Stops the leader work of `term` at once; at `shutdown` waits for its last checkpoint,
    /// otherwise lets it finish in the background (its writes are fenced).
    async fn end(&self, mut term: Term, reason: &str, shutdown: bool) {
        self.cp.set_leader(false);
        term.stop.cancel();
        if let Some(jobs) = term.jobs.take() {
            if shutdown {
                jobs.join().await;
            } else {
                tokio::spawn(jobs.join());
            }
        }
        if shutdown {
            tracing::info!(replica = %self.replica, fencing_token = term.token, "leader lease given back at shutdown");
            return;
        }
        tracing::warn!(replica = %self.replica, fencing_token = term.token, reason, "leader lease lost; leader work stopped");
        self.cp
            .audit(
                "cp.leader_lost",
                "system:cluster",
                &self.replica,
                "lost",
                &self.detail(term.token).with("reason", reason).build(),
            )
            .await;
    }

    /// Records this replica alive (the leader also forgets replicas silent for ten
    /// leases); a `file`-backend replica that sees another replica's heartbeat move logs an
    /// error and audits `cp.ha_misconfigured` once.
    async fn heartbeat(
        &self,
        audited: &mut bool,
        seen: &mut std::collections::HashMap<String, i64>,
        leader: bool,
    ) {
        if let Err(e) = self
            .store
            .replica_heartbeat(&self.replica, self.file_backend, self.cp.current_version())
            .await
        {
            tracing::warn!(error = %e, "replica heartbeat failed");
            return;
        }
        if leader && let Err(e) = self.store.prune_replicas(self.config.lease_ttl * 10).await {
            tracing::warn!(error = %e, "could not prune silent replicas");
        }
        if !self.file_backend || *audited {
            return;
        }
        let rows = match self.store.live_replicas(self.config.lease_ttl).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the live replicas");
                return;
            }
        };
        let mut other = None;
        for r in rows.into_iter().filter(|r| r.replica_id != self.replica) {
            let moved = seen
                .insert(r.replica_id.clone(), r.heartbeat_at_ms)
                .is_some_and(|before| before < r.heartbeat_at_ms);
            if moved {
                other = Some(r.replica_id);
            }
        }
        if let Some(other) = other {
            *audited = true;
            tracing::error!(replica = %self.replica, other = %other, "another replica runs beside this one, whose provider keys are in the `file` secret backend that it cannot read");
            self.cp
                .audit(
                    "cp.ha_misconfigured",
                    "system:cluster",
                    &self.replica,
                    "file_backend",
                    &Detail::new()
                        .with("replica_id", &self.replica)
                        .with("other_replica", &other)
                        .build(),
                )
                .await;
        }
    }
}
