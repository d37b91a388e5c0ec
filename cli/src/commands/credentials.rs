//! `wardenctl node credential issue`: the credentials (`wn_…`) data-plane nodes present to
//! the control plane. The admin and node credential lifecycle grows here.

use clap::Subcommand;
use serde_json::json;
use warden_proto::admin::v1 as pb;

use crate::output::Printer;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Data-plane node credentials (`wn_…`).
    #[command(subcommand)]
    Credential(NodeCredentialCommand),
}

#[derive(Debug, Subcommand)]
pub enum NodeCredentialCommand {
    /// Issue a node credential; prints only the `wn_…` credential on stdout.
    Issue {
        /// A label for the credential.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Runs one `node` subcommand.
pub async fn run(session: &Session, out: Printer, command: NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::Credential(NodeCredentialCommand::Issue { name }) = command;
    let request = pb::IssueNodeCredentialRequest {
        name: name.unwrap_or_default(),
    };
    let mut client = session.client.clone();
    let response = session.call(client.issue_node_credential(request)).await?;
    let json = json!({ "credential": response.credential, "id": response.id });
    out.secret(&response.credential, &[("id", response.id.clone())], &json)?;
    Ok(())
}
