//! `wardenctl nodes`: the data-plane nodes and the snapshot version each has acknowledged.

use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

/// Lists the nodes.
pub async fn run(session: &Session, out: Printer) -> anyhow::Result<()> {
    let response = list_all!(session, list_nodes, pb::ListNodesRequest::default()).await?;
    let now = warden_core::unix_now();
    let mut rows = Rows::new(&[
        "NODE",
        "ACKED",
        "CURRENT",
        "CONNECTED",
        "LAST SEEN",
        "VERSION",
    ]);
    for n in &response.nodes {
        rows.push(vec![
            n.node_id.clone(),
            n.acked_version.to_string(),
            response.current_version.to_string(),
            if n.connected { "yes" } else { "no" }.to_owned(),
            output::ago(n.last_seen, now),
            n.software_version.clone(),
        ]);
    }
    let nodes: Vec<Value> = response
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id, "credential_id": n.credential_id,
                "acked_version": n.acked_version, "last_seen": n.last_seen,
                "connected": n.connected, "software_version": n.software_version,
            })
        })
        .collect();
    let json = json!({ "current_version": response.current_version, "nodes": nodes });
    out.table(&rows, &json)?;
    Ok(())
}
