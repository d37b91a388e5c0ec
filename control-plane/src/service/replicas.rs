//! What keeps several replicas on one PostgreSQL in step (the `cluster` module calls
//! these on `NOTIFY` and on its version poll): rebuilding the snapshot another replica
//! published, re-reading the signer and rotated provider keys, waking audit followers on
//! appends made elsewhere, and ending streams of credentials revoked elsewhere.

use std::sync::Arc;
use std::time::Duration;

use super::ControlPlane;
use crate::error::ServiceError;
use crate::secrets::reference::SecretReference;
use crate::store::{SqlStore, StateStore};

/// This replica among several on PostgreSQL: its id, the store's cluster tables, and how
/// young a heartbeat must be for a replica to count as live (the lease's length).
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub store: SqlStore,
    pub replica_id: String,
    pub live_within: Duration,
}

/// `NOTIFY` channels (payloads are hints: a receiver always re-reads the store).
pub const SNAPSHOT_CHANNEL: &str = "warden_snapshot";
pub const AUDIT_CHANNEL: &str = "warden_audit";
pub const SECRETS_CHANNEL: &str = "warden_secrets";
pub const CREDENTIALS_CHANNEL: &str = "warden_credentials";

/// A control-plane replica as `wardenctl cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub replica_id: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub leader: bool,
    pub fencing_token: i64,
    pub snapshot_version: u64,
    pub nodes_attached: u64,
}

impl ControlPlane {
    /// The live replicas (heartbeat within the lease's length) with the leader and the
    /// nodes attached to each; with SQLite, this one replica.
    pub async fn list_replicas(&self) -> Result<Vec<ReplicaStatus>, ServiceError> {
        let Some(view) = self.cluster_view() else {
            let attached = self.connections.lock().map(|c| c.len()).unwrap_or(0);
            return Ok(vec![ReplicaStatus {
                replica_id: String::new(),
                started_at_ms: 0,
                heartbeat_at_ms: 0,
                leader: self.is_leader(),
                fencing_token: 0,
                snapshot_version: self.current_version(),
                nodes_attached: u64::try_from(attached).unwrap_or(u64::MAX),
            }]);
        };
        let lease = view.store.lease().await?;
        let attached = view.store.nodes_per_replica(view.live_within).await?;
        Ok(view
            .store
            .live_replicas(view.live_within)
            .await?
            .into_iter()
            .map(|r| {
                let leader = lease.live && lease.holder == r.replica_id;
                ReplicaStatus {
                    nodes_attached: attached.get(&r.replica_id).copied().unwrap_or(0),
                    leader,
                    fencing_token: if leader { lease.fencing_token } else { 0 },
                    replica_id: r.replica_id,
                    started_at_ms: r.started_at_ms,
                    heartbeat_at_ms: r.heartbeat_at_ms,
                    snapshot_version: r.snapshot_version,
                }
            })
            .collect())
    }

    /// Catches up with the database: when another replica allocated a newer snapshot
    /// version than this one sends, re-reads the signer and any provider key the rotation
    /// poll saw change, rebuilds the snapshot from the store under that version and sends
    /// it to this replica's watchers. Returns the version now current.
    pub async fn refresh(&self) -> Result<u64, ServiceError> {
        let _guard = self.publish_lock.lock().await;
        // Read before building: whatever was committed before this version was allocated
        // is in the store by now, so the snapshot built next holds it.
        let stored = self.store.snapshot_version().await?;
        if stored <= self.current_version() {
            return Ok(self.current_version());
        }
        self.sync_secret_versions().await?;
        self.reload_signer().await?;
        let data = self.build_snapshot(stored).await?;
        self.snapshot_tx.send_replace(Arc::new(data));
        self.metrics.snapshot_version(stored);
        tracing::info!(version = stored, "snapshot published by another replica");
        Ok(stored)
    }

    /// Makes the active signing key (recorded by whichever replica made it) the signer
    /// when another replica rotated it.
    pub(super) async fn reload_signer(&self) -> Result<(), ServiceError> {
        let Some(active) =
            Self::active_signing_key(self.store.as_ref(), self.auth.algorithm).await?
        else {
            return Ok(());
        };
        if active.kid == self.signing_key().kid {
            return Ok(());
        }
        let material = Self::load_key(self.secrets.as_ref(), &active).await?;
        tracing::info!(kid = %material.kid, "signing key rotated by another replica");
        *self.signer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
        Ok(())
    }

    /// Reads every provider key this replica has not cached yet (added through another
    /// replica), and re-reads every reference whose recorded fingerprint (the leader's
    /// rotation poll, `secret_versions`) differs from this replica's cache, so no replica
    /// keeps sending an old key. A failed read keeps the old value and is logged.
    pub(super) async fn sync_secret_versions(&self) -> Result<(), ServiceError> {
        // A key added through another replica is not in this replica's cache yet.
        for k in self.store.list_provider_keys().await? {
            let reference = crate::secrets::manager::canonical(&k.secret_name);
            if self.keys.value(&reference).is_some() {
                continue;
            }
            let Ok(parsed) = k.parsed_reference() else {
                continue;
            };
            if let Err(e) = self.keys.refresh(&parsed).await {
                tracing::warn!(provider = %k.provider, key = %k.id, reference = %reference, error = %e, "cannot read a provider key added through another replica yet");
            }
        }
        for (reference, fingerprint) in self.store.list_secret_versions().await? {
            if self.keys.fingerprint(&reference).as_deref() == Some(fingerprint.as_str()) {
                continue;
            }
            let parsed = match SecretReference::parse(&reference) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(reference = %reference, error = %e, "recorded secret version names no valid reference");
                    continue;
                }
            };
            if let Err(e) = self.keys.refresh(&parsed).await {
                tracing::error!(reference = %reference, error = %e, "cannot re-read a provider key rotated on the leader; the last value keeps serving");
            }
        }
        Ok(())
    }

    /// Another replica appended audit rows up to `seq`: wakes this replica's followers and
    /// exporters.
    pub fn audit_appended_elsewhere(&self, seq: u64) {
        self.audit_appended(seq);
    }

    /// Another replica revoked `credential_id`: ends this replica's streams of it.
    pub fn credential_revoked_elsewhere(&self, credential_id: &str) {
        self.live.revoke(credential_id);
    }

    /// Sends a `NOTIFY` to the other replicas; a failure is logged (the version poll
    /// catches up).
    pub(super) async fn tell_replicas(&self, channel: &str, payload: &str) {
        if let Err(e) = self.store.notify(channel, payload).await {
            tracing::warn!(channel, error = %e, "could not notify the other replicas; their poll will catch up");
        }
    }

    /// Keeps `lock` (the SQLite data directory's lock file) for as long as the control
    /// plane lives.
    pub fn hold_lock(&self, lock: std::fs::File) {
        *self.data_dir_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(lock);
    }
}

impl ControlPlane {
    /// Records whether this replica does the leader's work now (the rotation poll reads it;
    /// `warden_cp_leader` shows it). Leaving the lead forgets the leader's store.
    pub fn set_leader(&self, on: bool) {
        self.leader.store(on, std::sync::atomic::Ordering::SeqCst);
        self.metrics.leader(on);
        if !on {
            *self.leader_store.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The store the leader's work writes through from now on (fenced with its lease).
    pub(crate) fn set_leader_store(&self, store: Arc<dyn StateStore>) {
        *self.leader_store.write().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// The leader's (fenced) store while this replica leads.
    pub(super) fn leader_store(&self) -> Option<Arc<dyn StateStore>> {
        self.leader_store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records this replica's place among several on PostgreSQL (once, at start).
    pub fn join_cluster(&self, view: ClusterView) {
        let _ = self.cluster.set(view);
    }

    /// This replica's place among several; `None` with SQLite.
    pub fn cluster_view(&self) -> Option<&ClusterView> {
        self.cluster.get()
    }

    /// This replica's id ('' with SQLite, one replica).
    pub fn replica_id(&self) -> &str {
        self.cluster.get().map_or("", |c| c.replica_id.as_str())
    }

    /// Whether this replica is the leader (always, with SQLite).
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }
}
