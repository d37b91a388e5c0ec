//! `wardenctl secrets migrate`: moves provider keys kept in plain environment variables
//! into a secret backend and prints the references to use instead. It runs where the
//! control plane's config and backend credentials are (it reads the same config file and
//! environment), not over the Admin API: the values never cross the network to Warden.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use warden_control_plane::config::RawConfig;
use warden_control_plane::secrets::reference::Scheme;

use crate::output::{Printer, Rows};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Copy plain environment keys into a backend; prints the references to use.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where the keys are now (only `env` is supported).
    #[arg(long, value_enum)]
    from: FromArg,
    /// The backend to move them into (configured in the config's `[[secrets.backends]]`).
    #[arg(long, value_enum)]
    to: ToArg,
    /// The control plane's config file (for its backends and `env://` keys).
    #[arg(long, short = 'c', env = "WARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Variables to move [default: every `env://VAR` the config's providers name].
    #[arg(long = "var", value_name = "VAR")]
    vars: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FromArg {
    Env,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ToArg {
    Vault,
    Aws,
    Azure,
    File,
}

impl From<ToArg> for Scheme {
    fn from(t: ToArg) -> Self {
        match t {
            ToArg::Vault => Self::Vault,
            ToArg::Aws => Self::AwsSm,
            ToArg::Azure => Self::AzureKv,
            ToArg::File => Self::File,
        }
    }
}

pub async fn run(out: Printer, command: SecretsCommand) -> anyhow::Result<()> {
    let SecretsCommand::Migrate(args) = command;
    let FromArg::Env = args.from;
    let raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    let env = std::env::vars().collect();
    let config = raw
        .build_and_validate(&env)
        .context("the control plane's config")?;
    let moved = warden_control_plane::migrate_env(&config, args.to.into(), &args.vars).await?;
    if moved.is_empty() {
        anyhow::bail!("nothing to migrate: no provider names an env:// key; pass --var VAR");
    }
    let mut rows = Rows::new(&["VARIABLE", "PROVIDER", "REFERENCE", "FINGERPRINT"]);
    let mut json = Vec::new();
    for m in &moved {
        rows.push(vec![
            m.var.clone(),
            m.provider.clone().unwrap_or_else(|| "-".into()),
            m.reference.clone(),
            m.fingerprint.clone(),
        ]);
        json.push(json!({
            "variable": m.var, "provider": m.provider, "reference": m.reference,
            "fingerprint": m.fingerprint,
        }));
    }
    out.table(&rows, &Value::Array(json))?;
    eprintln!(
        "replace each env://VAR in the providers' `keys` with its reference (or \
         `wardenctl provider key add NAME --ref REFERENCE`), then unset the variables"
    );
    Ok(())
}
