//! `wardenctl nodes`: the data-plane nodes, the snapshot version each has acknowledged and
//! the control-plane replica each is attached to; `wardenctl cluster status`: the replicas.

use clap::Subcommand;
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
        "REPLICA",
    ]);
    for n in &response.nodes {
        rows.push(vec![
            n.node_id.clone(),
            n.acked_version.to_string(),
            response.current_version.to_string(),
            if n.connected { "yes" } else { "no" }.to_owned(),
            output::ago(n.last_seen, now),
            n.software_version.clone(),
            dash(&n.replica_id),
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
                "replica_id": n.replica_id,
            })
        })
        .collect();
    let json = json!({ "current_version": response.current_version, "nodes": nodes });
    out.table(&rows, &json)?;
    Ok(())
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_owned()
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The live control-plane replicas: which one leads (and its fencing token), the
    /// snapshot version each sends and how many nodes are attached to each.
    Status,
}

/// Runs one `cluster` subcommand.
pub async fn run_cluster(
    session: &Session,
    out: Printer,
    command: ClusterCommand,
) -> anyhow::Result<()> {
    let ClusterCommand::Status = command;
    let mut client = session.client.clone();
    let response = session
        .call(client.list_replicas(pb::ListReplicasRequest {}))
        .await?;
    let now = warden_core::unix_now();
    let mut rows = Rows::new(&[
        "REPLICA",
        "LEADER",
        "FENCING TOKEN",
        "SNAPSHOT",
        "NODES",
        "STARTED",
        "HEARTBEAT",
    ]);
    let mut json = Vec::new();
    for r in &response.replicas {
        let seen = |at: i64| {
            if at > 0 {
                output::ago(at, now)
            } else {
                "-".to_owned()
            }
        };
        rows.push(vec![
            dash(&r.replica_id),
            if r.leader { "yes" } else { "no" }.to_owned(),
            if r.leader {
                r.fencing_token.to_string()
            } else {
                "-".to_owned()
            },
            r.snapshot_version.to_string(),
            r.nodes_attached.to_string(),
            seen(r.started_at),
            seen(r.heartbeat_at),
        ]);
        json.push(json!({
            "replica_id": r.replica_id, "leader": r.leader, "fencing_token": r.fencing_token,
            "snapshot_version": r.snapshot_version, "nodes_attached": r.nodes_attached,
            "started_at": r.started_at, "heartbeat_at": r.heartbeat_at,
        }));
    }
    out.table(&rows, &json!({ "replicas": json }))?;
    Ok(())
}
