//! `wardenctl`'s commands, one module per resource — the same names as the control plane's
//! `service/` and `grpc/admin/`: [`providers`], [`models`], [`tokens`], [`vkeys`],
//! [`signing_keys`], [`credentials`], [`nodes`], [`policies`], [`dlp`], [`audit`], [`secrets`]
//! (which runs beside the control plane's config rather than over the Admin API) and
//! [`certs`] (throwaway TLS certificates, offline), [`incident`] (suspensions, lockdown,
//! revoke-all) and [`ip_blocks`] (`wardenctl ip`).
//! [`grants`] holds what tokens and virtual keys share.
//!
//! Start at [`run`]: it reads what must be read before connecting, opens a
//! [`Session`](crate::session::Session) and hands the command to its resource. Each
//! resource module owns its flags, its calls and how it shows the results.

pub mod access;
pub mod audit;
pub mod certs;
pub mod credentials;
pub mod dlp;
pub mod grants;
pub mod incident;
pub mod ip_blocks;
pub mod models;
pub mod nodes;
pub mod policies;
#[cfg(test)]
mod probe;
pub mod providers;
pub mod secrets;
pub mod signing_keys;
pub mod tokens;
pub mod vkeys;

use clap::Subcommand;

use crate::output::{OutputFormat, Printer};
use crate::session::{ConnectArgs, Session};

/// The admin subcommands, flattened into `wardenctl`'s top level.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage upstream providers and their keys.
    #[command(subcommand)]
    Provider(providers::ProviderCommand),
    /// Manage model aliases.
    #[command(subcommand)]
    Model(models::ModelCommand),
    /// Issue, list, inspect and revoke JWT access tokens.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Create, list, inspect and revoke virtual keys (`wk_…`).
    #[command(subcommand)]
    Vkey(vkeys::VkeyCommand),
    /// Manage data-plane node credentials.
    #[command(subcommand)]
    Node(credentials::NodeCommand),
    /// Manage admin credentials.
    #[command(subcommand)]
    Admin(credentials::AdminCredentialCommand),
    /// List data-plane nodes and the snapshot version each has acknowledged.
    Nodes,
    /// The control-plane replicas (`status`): leader, snapshot version, nodes attached.
    #[command(subcommand)]
    Cluster(nodes::ClusterCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Set and read limits (rate, concurrency, budget) and their current usage.
    #[command(subcommand)]
    Policy(policies::PolicyCommand),
    /// Rotate and list the keys JWTs are signed with.
    #[command(subcommand)]
    SigningKey(signing_keys::SigningKeyCommand),
    /// Incident response for client credentials: suspend, resume, revoke all.
    #[command(subcommand)]
    Credentials(incident::CredentialsCommand),
    /// Lock the gateway down (every client request refused, no provider key used), `lift`
    /// it, or show its `status`.
    Lockdown(incident::LockdownArgs),
    /// Block and unblock client addresses; list the blocks.
    #[command(subcommand)]
    Ip(ip_blocks::IpCommand),
    /// Data loss prevention rules on request content (block, redact, flag).
    #[command(subcommand)]
    Dlp(dlp::DlpCommand),
}

/// Runs one admin command against the control plane.
pub async fn run(
    connect: &ConnectArgs,
    format: OutputFormat,
    command: AdminCommand,
) -> anyhow::Result<()> {
    // Read a provider key before connecting, so a refused value never touches the network.
    let provider_key = match &command {
        AdminCommand::Provider(command) => providers::key_to_read(command)
            .map(providers::read_provider_key)
            .transpose()?,
        _ => None,
    };
    let session = Session::open(connect).await?;
    let out = Printer::new(format);
    match command {
        AdminCommand::Provider(command) => {
            providers::run(&session, out, command, provider_key).await
        }
        AdminCommand::Model(command) => models::run(&session, out, command).await,
        AdminCommand::Token(command) => tokens::run(&session, out, command).await,
        AdminCommand::Vkey(command) => vkeys::run(&session, out, command).await,
        AdminCommand::Node(command) => credentials::run(&session, out, command).await,
        AdminCommand::Admin(command) => credentials::run_admin(&session, out, command).await,
        AdminCommand::Nodes => nodes::run(&session, out).await,
        AdminCommand::Cluster(command) => nodes::run_cluster(&session, out, command).await,
        AdminCommand::Audit(command) => audit::run(&session, out, command).await,
        AdminCommand::Policy(command) => policies::run(&session, out, command).await,
        AdminCommand::SigningKey(command) => signing_keys::run(&session, out, command).await,
        AdminCommand::Credentials(command) => {
            incident::run_credentials(&session, out, command).await
        }
        AdminCommand::Lockdown(args) => incident::run_lockdown(&session, out, args).await,
        AdminCommand::Ip(command) => ip_blocks::run(&session, out, command).await,
        AdminCommand::Dlp(command) => dlp::run(&session, out, command).await,
    }
}
