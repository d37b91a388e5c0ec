//! `wardenctl`: Warden's admin CLI. It talks to the control plane's `warden.admin.v1` gRPC
//! API over a `session`; `commands` holds one module per resource, `output` renders the
//! results as tables or JSON, and `dev` runs the whole gateway on this machine.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a CLI prints")]

mod commands;
mod dev;
mod flags;
mod output;
mod paging;
mod session;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::OutputFormat;

/// Administer a Warden LLM gateway through its control plane.
#[derive(Debug, Parser)]
#[command(name = "wardenctl", version)]
struct Cli {
    #[command(flatten)]
    connect: session::ConnectArgs,

    /// Output format.
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table,
        help_heading = "Global options"
    )]
    output: OutputFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Admin(commands::AdminCommand),
    /// Run the whole gateway on this machine (control plane + one node, embedded defaults).
    Dev(dev::DevArgs),
    /// Move provider keys between secret stores (runs beside the control plane's config).
    #[command(subcommand)]
    Secrets(commands::secrets::SecretsCommand),
    /// Make throwaway TLS certificates for trying TLS and mTLS on one machine (offline).
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    warden_core::install_crypto_providers();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // Usage errors exit with status 2 inside `parse`.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Admin(command) => commands::run(&cli.connect, cli.output, command).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Secrets(command) => {
            commands::secrets::run(output::Printer::new(cli.output), command).await
        }
        Command::Certs(command) => commands::certs::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
