//! Data-plane nodes and control-plane replicas over the Admin API.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::service::{Actor, ControlPlane};

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    r: pb::ListNodesRequest,
) -> Result<pb::ListNodesResponse, Status> {
    let page = cp.nodes_page(r.page_size, &r.page_token).await?;
    let nodes = page
        .items
        .into_iter()
        .map(|n| pb::NodeInfo {
            node_id: n.record.node_id,
            credential_id: n.record.credential_id,
            acked_version: n.record.acked_version,
            last_seen: n.record.last_seen,
            connected: n.connected,
            software_version: n.record.software_version,
            replica_id: n.record.replica_id,
        })
        .collect();
    Ok(pb::ListNodesResponse {
        nodes,
        current_version: cp.current_version(),
        next_page_token: page.next_token,
    })
}

pub(super) async fn list_replicas(
    cp: &ControlPlane,
    _: Actor,
    _: pb::ListReplicasRequest,
) -> Result<pb::ListReplicasResponse, Status> {
    let replicas = cp
        .list_replicas()
        .await?
        .into_iter()
        .map(|r| pb::ReplicaInfo {
            replica_id: r.replica_id,
            started_at: r.started_at_ms / 1000,
            heartbeat_at: r.heartbeat_at_ms / 1000,
            leader: r.leader,
            fencing_token: r.fencing_token,
            snapshot_version: r.snapshot_version,
            nodes_attached: r.nodes_attached,
        })
        .collect();
    Ok(pb::ListReplicasResponse { replicas })
}
