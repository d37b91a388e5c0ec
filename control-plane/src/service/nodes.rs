//! Data-plane nodes: their connections, the snapshot version each acknowledged (which an
//! admin change waits on, here and, through the `nodes` table, on the other live
//! replicas), and their listing for `wardenctl nodes`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use warden_core::unix_now;

use super::ControlPlane;
use crate::domain::NodeRecord;
use crate::error::ServiceError;

/// How often a propagation wait reads the acknowledgements of nodes attached to other
/// replicas (only while it waits).
const REMOTE_POLL: Duration = Duration::from_millis(50);

/// A node's live connection state, for `wardenctl nodes`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub record: NodeRecord,
    pub connected: bool,
}

impl ControlPlane {
    /// Records that a node connected (or reconnected).
    pub async fn node_connected(
        &self,
        node_id: &str,
        credential_id: &str,
        software_version: &str,
        have_version: u64,
    ) -> Result<(), ServiceError> {
        if let Ok(mut c) = self.connections.lock() {
            *c.entry(node_id.to_owned()).or_default() += 1;
        }
        self.store
            .upsert_node(&NodeRecord {
                node_id: node_id.to_owned(),
                credential_id: credential_id.to_owned(),
                acked_version: have_version,
                last_seen: unix_now(),
                software_version: software_version.to_owned(),
                replica_id: self.replica_id().to_owned(),
            })
            .await?;
        self.audit(
            "node.connect",
            &format!("node:{credential_id}"),
            node_id,
            "ok",
            "",
        )
        .await;
        Ok(())
    }

    /// Nodes with a Watch stream open to this replica.
    pub fn connected_nodes(&self) -> usize {
        self.connections.lock().map_or(0, |c| c.len())
    }

    /// Records that a node's watch stream ended.
    pub fn node_disconnected(&self, node_id: &str) {
        let mut gone = false;
        if let Ok(mut c) = self.connections.lock()
            && let Some(n) = c.get_mut(node_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(node_id);
                gone = true;
            }
        }
        // The other replicas stop waiting for it too.
        if gone && let Some(view) = self.cluster_view() {
            let (view, node_id) = (view.clone(), node_id.to_owned());
            tokio::spawn(async move {
                if let Err(e) = view.store.detach_node(&node_id, &view.replica_id).await {
                    tracing::warn!(node = %node_id, error = %e, "could not record that a node left this replica");
                }
            });
        }
        // Wake propagation waits: a node that left no longer holds them up.
        self.acked.send_modify(|_| {});
    }

    /// Records the snapshot version a node applied.
    pub async fn node_acked(
        &self,
        node_id: &str,
        credential_id: &str,
        version: u64,
    ) -> Result<(), ServiceError> {
        let existing = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| n.node_id == node_id);
        let software_version = existing.map(|n| n.software_version).unwrap_or_default();
        self.acked.send_modify(|acks| {
            acks.insert(node_id.to_owned(), version);
        });
        self.store
            .upsert_node(&NodeRecord {
                node_id: node_id.to_owned(),
                credential_id: credential_id.to_owned(),
                acked_version: version,
                last_seen: unix_now(),
                software_version,
                replica_id: self.replica_id().to_owned(),
            })
            .await?;
        Ok(())
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeStatus>, ServiceError> {
        Ok(self.node_statuses(self.store.list_nodes().await?))
    }

    /// `records` with whether each node is connected to this replica now.
    pub(super) fn node_statuses(&self, records: Vec<NodeRecord>) -> Vec<NodeStatus> {
        let connected: HashSet<String> = self
            .connections
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        records
            .into_iter()
            .map(|record| NodeStatus {
                connected: connected.contains(&record.node_id),
                record,
            })
            .collect()
    }

    /// Waits until every node connected here has acknowledged `version`, then (several
    /// replicas) until every node attached to another live replica has, polling the
    /// `nodes` table every 50 ms while it waits; false on timeout.
    pub async fn await_propagation(&self, version: u64, timeout: Duration) -> bool {
        let mut acks = self.acked.subscribe();
        let all_acked = |acks: &HashMap<String, u64>| {
            self.connections
                .lock()
                .map(|c| {
                    c.keys()
                        .all(|node| acks.get(node).is_some_and(|v| *v >= version))
                })
                .unwrap_or(true)
        };
        tokio::time::timeout(timeout, async {
            loop {
                if all_acked(&acks.borrow_and_update()) || acks.changed().await.is_err() {
                    break;
                }
            }
            let Some(view) = self.cluster_view() else {
                return;
            };
            loop {
                match view
                    .store
                    .nodes_behind_elsewhere(version, &view.replica_id, view.live_within)
                    .await
                {
                    Ok(behind) if behind.is_empty() => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the other replicas' nodes; not waiting for them");
                        return;
                    }
                }
                tokio::time::sleep(REMOTE_POLL).await;
            }
        })
        .await
        .is_ok()
    }
}
