//! `wardenctl provider …`: upstream providers and their keys. A key's value is read from
//! stdin before anything connects ([`key_to_read`], [`read_provider_key`]), so a refused
//! value never touches the network; a key kept elsewhere is added by reference (`--ref`).

use std::io::{IsTerminal, Read};

use anyhow::{Context, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::flags::list_item;
use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Add a provider.
    Add {
        name: String,
        /// The API the provider speaks.
        #[arg(long, value_enum)]
        format: FormatArg,
        /// Base URL; https:// unless the host is loopback.
        #[arg(long)]
        base_url: String,
        /// Each client brings its own provider key in the `x-warden-upstream-key` header;
        /// the provider then has no stored keys.
        #[arg(long)]
        passthrough: bool,
        /// Request parameters the provider does not accept, dropped before sending
        /// (comma-separated, e.g. `seed,logit_bias`).
        #[arg(long = "drop-param", value_delimiter = ',', value_parser = list_item, num_args = 1)]
        drop_params: Vec<String>,
        /// A PEM file of CA certificates (one or more) that nodes verify this provider's
        /// TLS with, instead of the public web roots (a private upstream; https:// only).
        /// Not `--ca-file`: that global flag names the control plane's CA.
        #[arg(long, value_name = "FILE")]
        upstream_ca_file: Option<std::path::PathBuf>,
    },
    /// List providers with their keys (ids and fingerprints only).
    #[command(visible_alias = "ls")]
    List,
    /// Remove a provider.
    #[command(visible_alias = "rm")]
    Remove { name: String },
    /// Manage a provider's upstream keys.
    #[command(subcommand)]
    Key(ProviderKeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum ProviderKeyCommand {
    /// Add an upstream key: its value read from stdin (never from the command line) and
    /// written to the configured secret backend, or `--ref` to a secret kept elsewhere.
    Add {
        provider: String,
        /// A reference instead of a value: `vault://mount/path#field`,
        /// `aws-sm://name-or-arn#field`, `azure-kv://vault/name`, `file://name`, `env://VAR`.
        #[arg(long = "ref", value_name = "REFERENCE")]
        reference: Option<String>,
        /// Read the value from stdin (the default without --ref).
        #[arg(long, conflicts_with = "reference")]
        from_stdin: bool,
    },
    /// Write a new value (from stdin) for an upstream key into the backend its reference
    /// points to, and roll it out to every node.
    Rotate {
        provider: String,
        /// The key to rotate [default: the provider's only key].
        #[arg(long = "key", value_name = "KEY_ID")]
        key_id: Option<String>,
        /// Read the new value from stdin (the only source; accepted for clarity).
        #[arg(long)]
        from_stdin: bool,
    },
    /// Remove an upstream key by id.
    #[command(visible_alias = "rm")]
    Remove { provider: String, key_id: String },
    /// Take an upstream key out of service on every node (e.g. a suspected leak).
    Quarantine {
        provider: String,
        key_id: String,
        /// Why, shown in `provider list` and kept in the audit log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Put a quarantined or provider-rejected upstream key back into service.
    Enable { provider: String, key_id: String },
}

/// `--format` of `provider add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Openai,
    Anthropic,
    /// The built-in echo upstream, for tests.
    #[value(hide = true)]
    Echo,
}

impl From<FormatArg> for pb::ApiFormat {
    fn from(format: FormatArg) -> Self {
        match format {
            FormatArg::Openai => Self::Openai,
            FormatArg::Anthropic => Self::Anthropic,
            FormatArg::Echo => Self::Echo,
        }
    }
}

/// The provider whose key `command` reads from stdin, if it reads one.
pub fn key_to_read(command: &ProviderCommand) -> Option<&str> {
    match command {
        ProviderCommand::Key(ProviderKeyCommand::Add {
            provider,
            reference: None,
            ..
        })
        | ProviderCommand::Key(ProviderKeyCommand::Rotate { provider, .. }) => Some(provider),
        _ => None,
    }
}

/// Runs one `provider` subcommand; `key` is the value read by [`read_provider_key`] for
/// the commands [`key_to_read`] names.
pub async fn run(
    session: &Session,
    out: Printer,
    command: ProviderCommand,
    key: Option<SecretString>,
) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        ProviderCommand::Add {
            name,
            format,
            base_url,
            passthrough,
            drop_params,
            upstream_ca_file,
        } => {
            let ca_pem = match upstream_ca_file {
                Some(path) => read_ca_file(&path)?,
                None => String::new(),
            };
            let request = pb::AddProviderRequest {
                name,
                format: pb::ApiFormat::from(format).into(),
                base_url,
                passthrough,
                drop_params,
                ca_pem,
            };
            let info = session.call(client.add_provider(request)).await?;
            out.table(
                &provider_rows(std::slice::from_ref(&info)),
                &provider_json(&info),
            )?;
        }
        ProviderCommand::List => {
            let response =
                list_all!(session, list_providers, pb::ListProvidersRequest::default()).await?;
            let json = response.providers.iter().map(provider_json).collect();
            out.table(&provider_rows(&response.providers), &Value::Array(json))?;
        }
        ProviderCommand::Remove { name } => {
            let request = pb::RemoveProviderRequest { name: name.clone() };
            session.call(client.remove_provider(request)).await?;
            let json = json!({ "provider": name, "removed": true });
            out.done(&format!("provider {name:?} removed"), &json)?;
        }
        ProviderCommand::Key(command) => key_command(session, out, command, key).await?,
    }
    Ok(())
}

async fn key_command(
    session: &Session,
    out: Printer,
    command: ProviderKeyCommand,
    key: Option<SecretString>,
) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        ProviderKeyCommand::Add {
            provider,
            reference,
            ..
        } => {
            let request = match reference {
                Some(reference) => pb::AddProviderKeyRequest {
                    provider,
                    reference,
                    ..Default::default()
                },
                None => pb::AddProviderKeyRequest {
                    provider,
                    secret: key
                        .ok_or_else(|| anyhow!("no provider key was read"))?
                        .expose_secret()
                        .to_owned(),
                    ..Default::default()
                },
            };
            let info = session.call(client.add_provider_key(request)).await?;
            out.table(&provider_key_rows(&info), &provider_key_json(&info))?;
        }
        ProviderKeyCommand::Rotate {
            provider, key_id, ..
        } => {
            let key = key.ok_or_else(|| anyhow!("no provider key was read"))?;
            let key_id = match key_id {
                Some(id) => id,
                None => only_key(session, &provider).await?,
            };
            let request = pb::RotateProviderKeyRequest {
                provider,
                key_id,
                secret: key.expose_secret().to_owned(),
            };
            let info = session.call(client.rotate_provider_key(request)).await?;
            out.table(&provider_key_rows(&info), &provider_key_json(&info))?;
        }
        ProviderKeyCommand::Remove { provider, key_id } => {
            let request = pb::RemoveProviderKeyRequest {
                provider: provider.clone(),
                key_id: key_id.clone(),
            };
            session.call(client.remove_provider_key(request)).await?;
            let json = json!({ "provider": provider, "key_id": key_id, "removed": true });
            out.done(
                &format!("key {key_id:?} of provider {provider:?} removed"),
                &json,
            )?;
        }
        ProviderKeyCommand::Quarantine {
            provider,
            key_id,
            reason,
        } => {
            let request = key_state_request(
                provider,
                key_id,
                pb::set_provider_key_state_request::Action::Quarantine,
                reason.unwrap_or_default(),
            );
            let info = session.call(client.set_provider_key_state(request)).await?;
            out.done(&provider_key_line(&info), &provider_key_json(&info))?;
        }
        ProviderKeyCommand::Enable { provider, key_id } => {
            let request = key_state_request(
                provider,
                key_id,
                pb::set_provider_key_state_request::Action::Enable,
                String::new(),
            );
            let info = session.call(client.set_provider_key_state(request)).await?;
            out.done(&provider_key_line(&info), &provider_key_json(&info))?;
        }
    }
    Ok(())
}

/// The id of `provider`'s only key (`provider key rotate` without `--key`).
async fn only_key(session: &Session, provider: &str) -> anyhow::Result<String> {
    let response = list_all!(session, list_providers, pb::ListProvidersRequest::default()).await?;
    let p = response
        .providers
        .iter()
        .find(|p| p.name == provider)
        .ok_or_else(|| anyhow!("no provider named {provider:?}"))?;
    match p.keys.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => bail!("provider {provider:?} has no keys"),
        _ => bail!(
            "provider {provider:?} has {} keys: name one with --key",
            p.keys.len()
        ),
    }
}

fn key_state_request(
    provider: String,
    key_id: String,
    action: pb::set_provider_key_state_request::Action,
    reason: String,
) -> pb::SetProviderKeyStateRequest {
    pb::SetProviderKeyStateRequest {
        provider,
        key_id,
        action: action.into(),
        reason,
    }
}

/// The certificates of `--upstream-ca-file`, checked here (PEM, only certificates, at least one)
/// so that a wrong file is refused before anything is sent.
fn read_ca_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read --upstream-ca-file {}", path.display()))?;
    let bundle = warden_core::ca_bundle::parse(&text)
        .map_err(|e| anyhow!("--upstream-ca-file {}: the CA bundle {e}", path.display()))?;
    Ok(bundle.pem)
}

/// `subject (sha256 …)` of each certificate of a provider's CA bundle, or `-`.
fn ca_line(p: &pb::ProviderInfo) -> String {
    if p.ca_certificates.is_empty() {
        return "-".to_owned();
    }
    p.ca_certificates
        .iter()
        .map(|c| format!("{} (sha256 {})", c.subject, c.sha256))
        .collect::<Vec<_>>()
        .join(", ")
}

fn provider_rows(providers: &[pb::ProviderInfo]) -> Rows {
    let mut rows = Rows::new(&["NAME", "FORMAT", "BASE URL", "SOURCE", "KEYS", "CA"]);
    for p in providers {
        let keys: Vec<String> = p.keys.iter().map(provider_key_line).collect();
        rows.push(vec![
            p.name.clone(),
            format_name(p.format),
            p.base_url.clone(),
            p.source.clone(),
            if keys.is_empty() {
                "-".to_owned()
            } else {
                keys.join(", ")
            },
            ca_line(p),
        ]);
    }
    rows
}

fn provider_json(p: &pb::ProviderInfo) -> Value {
    let keys: Vec<Value> = p.keys.iter().map(provider_key_json).collect();
    json!({
        "name": p.name, "format": format_name(p.format), "base_url": p.base_url,
        "source": p.source, "keys": keys, "passthrough": p.passthrough,
        "drop_params": p.drop_params,
        "ca_certificates": p.ca_certificates.iter()
            .map(|c| json!({"subject": c.subject, "sha256": c.sha256}))
            .collect::<Vec<_>>(),
    })
}

/// `id (fp …)`, plus ` DISABLED: <reason>` when the key is out of service.
fn provider_key_line(k: &pb::ProviderKeyInfo) -> String {
    let line = if k.reference.is_empty() {
        format!("{} (fp {})", k.id, k.fingerprint)
    } else {
        format!("{} (fp {}, {})", k.id, k.fingerprint, k.reference)
    };
    if k.disabled_reason.is_empty() {
        line
    } else {
        format!("{line} DISABLED: {}", k.disabled_reason)
    }
}

fn provider_key_json(k: &pb::ProviderKeyInfo) -> Value {
    json!({
        "id": k.id, "provider": k.provider, "fingerprint": k.fingerprint,
        "created_at": k.created_at, "disabled_reason": k.disabled_reason,
        "disabled_at": k.disabled_at, "reference": k.reference,
    })
}

fn provider_key_rows(info: &pb::ProviderKeyInfo) -> Rows {
    let mut rows = Rows::new(&["ID", "PROVIDER", "FINGERPRINT", "REFERENCE", "CREATED"]);
    rows.push(vec![
        info.id.clone(),
        info.provider.clone(),
        info.fingerprint.clone(),
        info.reference.clone(),
        output::timestamp(info.created_at),
    ]);
    rows
}

/// `ApiFormat` as shown to people and in JSON.
fn format_name(raw: i32) -> String {
    match pb::ApiFormat::try_from(raw) {
        Ok(pb::ApiFormat::Openai) => "openai".to_owned(),
        Ok(pb::ApiFormat::Anthropic) => "anthropic".to_owned(),
        Ok(pb::ApiFormat::Echo) => "echo".to_owned(),
        Ok(pb::ApiFormat::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown ({raw})"),
    }
}

/// Reads a provider key from stdin: one line at a terminal (after a prompt on stderr),
/// otherwise all of stdin. Trailing whitespace is dropped; empty and multi-line values are
/// refused.
pub fn read_provider_key(provider: &str) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    let mut value = String::new();
    if stdin.is_terminal() {
        eprint!("upstream key for provider {provider:?} (input is shown; end with Enter): ");
        stdin
            .read_line(&mut value)
            .context("cannot read the key from stdin")?;
    } else {
        stdin
            .lock()
            .read_to_string(&mut value)
            .context("cannot read the key from stdin")?;
    }
    let value = SecretString::from(value);
    check_provider_key(value.expose_secret())?;
    Ok(SecretString::from(value.expose_secret().trim_end()))
}

/// Refuses key values that are surely a mistake, without echoing them.
fn check_provider_key(raw: &str) -> anyhow::Result<()> {
    let key = raw.trim_end();
    if key.is_empty() {
        bail!("no key on stdin: pipe the key in, e.g. `wardenctl provider key add NAME < key.txt`");
    }
    if key.contains(['\n', '\r']) {
        bail!("the key on stdin spans several lines; pass exactly one key");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn parse(args: &[&str]) -> Result<ProviderCommand, clap::Error> {
        probe::subcommand(args)
    }

    #[test]
    fn maps_format_names() {
        assert_eq!(format_name(pb::ApiFormat::Openai.into()), "openai");
        assert_eq!(format_name(pb::ApiFormat::Anthropic.into()), "anthropic");
        assert_eq!(format_name(pb::ApiFormat::Echo.into()), "echo");
        assert_eq!(format_name(42), "unknown (42)");
        assert_eq!(
            pb::ApiFormat::from(FormatArg::Anthropic),
            pb::ApiFormat::Anthropic
        );
    }

    #[test]
    fn checks_provider_keys() {
        assert!(check_provider_key("sk-abc\n").is_ok());
        assert!(check_provider_key(" \n\t").is_err());
        assert!(check_provider_key("").is_err());
        assert!(check_provider_key("sk-a\nsk-b\n").is_err());
    }

    #[test]
    fn reads_a_key_only_for_add_without_ref_and_rotate() {
        let read = |args: &[&str]| key_to_read(&parse(args).unwrap()).map(str::to_owned);
        assert_eq!(read(&["key", "add", "p"]).as_deref(), Some("p"));
        assert_eq!(read(&["key", "add", "p", "--ref", "env://K"]), None);
        assert_eq!(read(&["key", "rotate", "p"]).as_deref(), Some("p"));
        assert_eq!(read(&["key", "rm", "p", "pk_1"]), None);
        assert_eq!(read(&["list"]), None);
    }

    #[test]
    fn shows_disabled_provider_keys() {
        let mut key = pb::ProviderKeyInfo {
            id: "pk_1".into(),
            provider: "openai".into(),
            fingerprint: "ab12".into(),
            created_at: 1,
            ..pb::ProviderKeyInfo::default()
        };
        assert_eq!(provider_key_line(&key), "pk_1 (fp ab12)");
        key.disabled_reason = "leaked".into();
        key.disabled_at = 2;
        assert_eq!(provider_key_line(&key), "pk_1 (fp ab12) DISABLED: leaked");
        let json = provider_key_json(&key);
        assert_eq!(json["disabled_reason"], "leaked");
        assert_eq!(json["disabled_at"], 2);
        let request = key_state_request(
            "openai".into(),
            "pk_1".into(),
            pb::set_provider_key_state_request::Action::Quarantine,
            "leaked".into(),
        );
        assert_eq!(
            request.action(),
            pb::set_provider_key_state_request::Action::Quarantine
        );
        match parse(&["key", "quarantine", "p", "pk_1", "--reason", "x"]).unwrap() {
            ProviderCommand::Key(ProviderKeyCommand::Quarantine { reason, .. }) => {
                assert_eq!(reason.as_deref(), Some("x"));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["key", "enable", "p", "pk_1", "--reason", "x"]).is_err());
    }
}
