//! Data-plane nodes over the Admin API.

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
        })
        .collect();
    Ok(pb::ListNodesResponse {
        nodes,
        current_version: cp.current_version(),
        next_page_token: page.next_token,
    })
}
