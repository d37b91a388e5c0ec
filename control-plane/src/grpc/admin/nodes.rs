//! Data-plane nodes over the Admin API.

use tonic::Status;
use warden_proto::admin::v1 as pb;

use crate::service::{Actor, ControlPlane};

pub(super) async fn list(
    cp: &ControlPlane,
    _: Actor,
    _: pb::ListNodesRequest,
) -> Result<pb::ListNodesResponse, Status> {
    let nodes = cp
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| pb::NodeInfo {
            node_id: n.record.node_id,
            credential_id: n.record.credential_id,
            acked_version: n.record.acked_version,
            last_seen: n.record.last_seen,
            connected: n.connected,
            software_version: n.record.software_version,
        })
        .collect();
    Ok(pb::ListNodesResponse {
        nodes,
        current_version: cp.current_version(),
    })
}
