//! `wardenctl vkey create|list|revoke|rotate|info`: virtual keys (`wk_…`). What they share
//! with JWT access tokens (the grant flags, listing, `info`, revocation) is in
//! [`super::grants`].

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::commands::grants::{self, Grant, GrantArgs, parse_ttl};
use crate::commands::policies::PolicyArgs;
use crate::output::{self, Printer};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing flattened clap args buys nothing"
)]
pub enum VkeyCommand {
    /// Create a virtual key; prints only the `wk_…` key on stdout.
    Create {
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// Who the key is for.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        grant: GrantArgs,
        /// Lifetime, e.g. `90d` [default: never expires].
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[command(flatten, next_help_heading = "Limits of the key")]
        policy: PolicyArgs,
        /// Accept the key only from these networks: CIDRs or addresses, IPv4 or IPv6
        /// (repeat, or comma-separate) [default: anywhere the gateway allows].
        #[arg(long = "allow-ip", value_name = "CIDR", value_delimiter = ',')]
        allow_ip: Vec<String>,
        /// Accept the key from browser pages of these origins only
        /// (`https://app.example.com`; requests without `Origin` are not held to it)
        /// [default: any origin the gateway's CORS allows].
        #[arg(long = "allow-origin", value_name = "ORIGIN", value_delimiter = ',')]
        allow_origin: Vec<String>,
    },
    /// List virtual keys.
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a virtual key by id.
    Revoke { id: String },
    /// Issue a new secret for a virtual key (same id, limits and usage); prints only the
    /// new `wk_…` key. The old secret keeps working for `--grace`, then every node refuses it.
    Rotate {
        id: String,
        /// How long the old secret stays valid, e.g. `1h` [default: 0 = refused at once].
        #[arg(long, value_parser = parse_grace, default_value = "0s")]
        grace: Duration,
    },
    /// Show a virtual key with its policy and usage.
    Info { id: String },
}

impl Grant for pb::VirtualKeyInfo {
    const NOUN: &'static str = "virtual key";
    const ID_FIELD: &'static str = "id";
    const COLUMNS: &'static [&'static str] = &[
        "id", "name", "owner", "models", "scopes", "created", "expires",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn revoked_at(&self) -> i64 {
        self.revoked_at
    }

    fn expires_at(&self) -> i64 {
        self.expires_at
    }

    fn policy_target(&self) -> pb::policy_target::Target {
        pb::policy_target::Target::VirtualKey(self.id.clone())
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.owner.clone(),
            output::list(&self.models, "*"),
            output::list(&self.scopes, "-"),
            output::timestamp(self.created_at),
            expiry(self.expires_at),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "owner": self.owner, "models": self.models,
            "scopes": self.scopes, "created_at": self.created_at,
            "expires_at": self.expires_at, "revoked_at": self.revoked_at,
            "previous_expires_at": self.previous_expires_at,
        })
    }
}

/// Runs one `vkey` subcommand.
pub async fn run(session: &Session, out: Printer, command: VkeyCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        VkeyCommand::Create {
            name,
            owner,
            grant,
            ttl,
            policy,
            allow_ip,
            allow_origin,
        } => {
            let request = pb::CreateVirtualKeyRequest {
                name,
                owner: owner.unwrap_or_default(),
                models: grant.models,
                scopes: grant.scopes,
                ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
                policy: policy.to_optional_policy(),
                allowed_ips: allow_ip,
                allowed_origins: allow_origin,
            };
            let response = session.call(client.create_virtual_key(request)).await?;
            let info = response.info.unwrap_or_default();
            let mut json = info.json();
            if let Value::Object(fields) = &mut json {
                fields.insert("key".to_owned(), Value::String(response.key.clone()));
            }
            let notes = [
                ("id", info.id.clone()),
                ("expires", expiry(info.expires_at)),
            ];
            out.secret(&response.key, &notes, &json)?;
            Ok(())
        }
        VkeyCommand::List => grants::table(out, &list(session).await?),
        VkeyCommand::Rotate { id, grace } => {
            let request = pb::RotateVirtualKeyRequest {
                id,
                grace_seconds: grace.as_secs(),
            };
            let response = session.call(client.rotate_virtual_key(request)).await?;
            let info = response.info.unwrap_or_default();
            let until = if info.previous_expires_at > 0 {
                output::timestamp(info.previous_expires_at)
            } else {
                "now (refused)".to_owned()
            };
            let notes = [("id", info.id.clone()), ("old key valid until", until)];
            let json = json!({
                "key": response.key, "id": info.id,
                "previous_expires_at": info.previous_expires_at,
            });
            out.secret(&response.key, &notes, &json)?;
            Ok(())
        }
        VkeyCommand::Revoke { id } => {
            let request = pb::RevokeVirtualKeyRequest { id: id.clone() };
            session.call(client.revoke_virtual_key(request)).await?;
            grants::revoked::<pb::VirtualKeyInfo>(out, &id)
        }
        VkeyCommand::Info { id } => grants::info(session, out, list(session).await?, &id).await,
    }
}

async fn list(session: &Session) -> anyhow::Result<Vec<pb::VirtualKeyInfo>> {
    let response = list_all!(
        session,
        list_virtual_keys,
        pb::ListVirtualKeysRequest::default()
    )
    .await?;
    Ok(response.keys)
}

/// An expiry cell: `never` for `0`.
fn expiry(expires_at: i64) -> String {
    if expires_at == 0 {
        "never".to_owned()
    } else {
        output::timestamp(expires_at)
    }
}

/// `--grace`: a humantime duration; `0s` means the old secret is refused at once.
fn parse_grace(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn parse(args: &[&str]) -> Result<VkeyCommand, clap::Error> {
        probe::subcommand(args)
    }

    #[test]
    fn create_takes_limits() {
        let argv = ["create", "--name", "n", "--max-parallel", "2"];
        match parse(&argv).unwrap() {
            VkeyCommand::Create { policy, .. } => {
                assert_eq!(policy.to_optional_policy().unwrap().max_parallel, 2);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["rotate", "vk_1"]).unwrap() {
            VkeyCommand::Rotate { grace, .. } => assert_eq!(grace, Duration::ZERO),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn shows_virtual_keys() {
        let key = pb::VirtualKeyInfo {
            id: "vk_1".into(),
            name: "ci".into(),
            models: vec!["a".into(), "b".into()],
            created_at: 1_700_000_000,
            ..pb::VirtualKeyInfo::default()
        };
        assert_eq!(
            key.cells(),
            [
                "vk_1",
                "ci",
                "",
                "a,b",
                "-",
                "2023-11-14T22:13:20Z",
                "never"
            ]
        );
        assert_eq!(key.cells().len(), pb::VirtualKeyInfo::COLUMNS.len());
        assert_eq!(key.json()["previous_expires_at"], 0);
        assert_eq!(
            key.policy_target(),
            pb::policy_target::Target::VirtualKey("vk_1".into())
        );
    }
}
