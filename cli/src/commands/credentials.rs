//! `wardenctl node credential issue|list|revoke` and `wardenctl admin credential
//! issue|list|revoke`: the credentials data-plane nodes (`wn_…`) and administrators (`wa_…`)
//! present to the control plane. Revoking one ends every stream it holds open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::commands::grants::parse_ttl;
use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
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
        /// Bind the credential to the key of this PEM client certificate (the node's
        /// --cp-client-cert-file): it is then accepted only over a connection presenting a
        /// certificate of that key, so the `wn_…` alone is useless.
        #[arg(long, value_name = "PEM")]
        client_cert: Option<PathBuf>,
    },
    /// List node credentials (ids, names, when created, last used, revoked).
    List,
    /// Revoke a node credential: its Watch streams end at once, its node cannot reconnect.
    Revoke(RevokeArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdminCredentialCommand {
    /// Admin credentials (`wa_…`).
    #[command(subcommand)]
    Credential(AdminCredentialSubcommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCredentialSubcommand {
    /// Issue an admin credential of a role; prints only the `wa_…` credential on stdout.
    Issue {
        /// A label for the credential.
        #[arg(long)]
        name: String,
        /// What it may do: `admin` (everything), `operator` (models, deployments, policies,
        /// client credentials without `admin`/`audit`) or `auditor` (the audit log).
        #[arg(long, value_parser = ["admin", "operator", "auditor"])]
        role: String,
        /// How long it is valid (e.g. `30d`); default: until revoked.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Bind the credential to the key of this PEM client certificate, a second factor:
        /// it is then accepted only from a `wardenctl --client-cert` of that key.
        #[arg(long, value_name = "PEM")]
        client_cert: Option<PathBuf>,
    },
    /// List admin credentials (ids, names, when created, revoked).
    List,
    /// Revoke an admin credential: its next call is refused, its audit streams end.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The credential's id.
    #[arg(required_unless_present = "all", conflicts_with_all = ["name", "all"])]
    id: Option<String>,
    /// With `--all`: every live credential of this name (names are not unique).
    #[arg(long, requires = "all")]
    name: Option<String>,
    /// Revoke every live credential named `--name`.
    #[arg(long, requires = "name")]
    all: bool,
}

impl RevokeArgs {
    fn request(self) -> pb::RevokeCredentialRequest {
        pb::RevokeCredentialRequest {
            id: self.id.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
        }
    }
}

/// Runs one `node` subcommand.
pub async fn run(session: &Session, out: Printer, command: NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::Credential(command) = command;
    let mut client = session.client.clone();
    match command {
        NodeCredentialCommand::Issue { name, client_cert } => {
            let request = pb::IssueNodeCredentialRequest {
                name: name.unwrap_or_default(),
                client_certificate_pem: read_cert(client_cert.as_deref()).await?,
            };
            let response = session.call(client.issue_node_credential(request)).await?;
            let json = json!({ "credential": response.credential, "id": response.id });
            out.secret(&response.credential, &[("id", response.id.clone())], &json)?;
        }
        NodeCredentialCommand::List => {
            let response = list_all!(
                session,
                list_node_credentials,
                pb::ListCredentialsRequest::default()
            )
            .await?;
            show(&out, &response.credentials, true)?;
        }
        NodeCredentialCommand::Revoke(args) => {
            let response = session
                .call(client.revoke_node_credential(args.request()))
                .await?;
            revoked(&out, "node", &response.revoked_ids)?;
        }
    }
    Ok(())
}

/// Runs one `admin` subcommand.
pub async fn run_admin(
    session: &Session,
    out: Printer,
    command: AdminCredentialCommand,
) -> anyhow::Result<()> {
    let AdminCredentialCommand::Credential(command) = command;
    let mut client = session.client.clone();
    match command {
        AdminCredentialSubcommand::Issue {
            name,
            role,
            ttl,
            client_cert,
        } => {
            let request = pb::IssueAdminCredentialRequest {
                name,
                role: role.clone(),
                ttl_seconds: ttl.map_or(0, |t| t.as_secs()),
                client_certificate_pem: read_cert(client_cert.as_deref()).await?,
            };
            let response = session.call(client.issue_admin_credential(request)).await?;
            let json =
                json!({ "credential": response.credential, "id": response.id, "role": role });
            out.secret(
                &response.credential,
                &[("id", response.id.clone()), ("role", role)],
                &json,
            )?;
        }
        AdminCredentialSubcommand::List => {
            let response = list_all!(
                session,
                list_admin_credentials,
                pb::ListCredentialsRequest::default()
            )
            .await?;
            show(&out, &response.credentials, false)?;
        }
        AdminCredentialSubcommand::Revoke(args) => {
            let response = session
                .call(client.revoke_admin_credential(args.request()))
                .await?;
            revoked(&out, "admin", &response.revoked_ids)?;
        }
    }
    Ok(())
}

/// The PEM text of `--client-cert`, or empty without one.
async fn read_cert(path: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("cannot read --client-cert {}", path.display()))
}

fn show(out: &Printer, credentials: &[pb::CredentialInfo], last_used: bool) -> anyhow::Result<()> {
    let now = warden_core::unix_now();
    let mut header = vec!["ID", "NAME", "CREATED", "REVOKED", "CERT KEY"];
    if last_used {
        header.push("LAST USED");
    } else {
        header.extend(["ROLE", "EXPIRES"]);
    }
    let mut rows = Rows::new(&header);
    for c in credentials {
        let mut row = vec![
            c.id.clone(),
            c.name.clone(),
            output::timestamp(c.created_at),
            output::timestamp(c.revoked_at),
            bound_key(&c.cert_spki_sha256),
        ];
        if last_used {
            row.push(output::ago(c.last_used_at, now));
        } else {
            row.extend([c.role.clone(), output::timestamp(c.expires_at)]);
        }
        rows.push(row);
    }
    let json: Vec<Value> = credentials
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "name": c.name, "created_at": c.created_at,
                "revoked_at": c.revoked_at, "last_used_at": c.last_used_at,
                "role": c.role, "expires_at": c.expires_at,
                "cert_spki_sha256": c.cert_spki_sha256,
            })
        })
        .collect();
    out.table(&rows, &json!({ "credentials": json }))?;
    Ok(())
}

/// A bound key as listed: the start of its SPKI hash, `-` when unbound.
fn bound_key(spki_sha256: &str) -> String {
    if spki_sha256.is_empty() {
        "-".to_owned()
    } else {
        format!(
            "sha256:{}",
            spki_sha256.chars().take(16).collect::<String>()
        )
    }
}

fn revoked(out: &Printer, kind: &str, ids: &[String]) -> anyhow::Result<()> {
    out.done(
        &format!("revoked {kind} credential {}", ids.join(", ")),
        &json!({ "revoked_ids": ids }),
    )?;
    Ok(())
}
