//! `wardenctl token issue|revoke|list|info`: JWT access tokens. What they share with
//! virtual keys (the grant flags, listing, `info`, revocation) is in [`super::grants`].

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
pub enum TokenCommand {
    /// Issue a JWT; prints only the token on stdout.
    ///
    /// Limit flags set the policy of the subject, not of this token alone: it is shared by
    /// all of the subject's tokens and replaces the policy the subject had (a limit left out
    /// becomes unlimited). Without limit flags the subject's policy is left as it is.
    Issue {
        /// Who the token is for (the `sub` claim).
        #[arg(long)]
        subject: String,
        #[command(flatten)]
        grant: GrantArgs,
        /// Lifetime, e.g. `30d`, `12h` [default: the control plane's configured lifetime].
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[command(
            flatten,
            next_help_heading = "Limits of the subject (shared by all its tokens)"
        )]
        policy: PolicyArgs,
    },
    /// Revoke a token by its id (`jti`).
    Revoke { jti: String },
    /// List issued tokens.
    #[command(visible_alias = "ls")]
    List,
    /// Show a token and the policy and usage of its subject.
    Info { jti: String },
}

impl Grant for pb::TokenInfo {
    const NOUN: &'static str = "token";
    const ID_FIELD: &'static str = "jti";
    const COLUMNS: &'static [&'static str] =
        &["jti", "subject", "scopes", "models", "issued", "expires"];

    fn id(&self) -> &str {
        &self.jti
    }

    fn revoked_at(&self) -> i64 {
        self.revoked_at
    }

    fn expires_at(&self) -> i64 {
        self.expires_at
    }

    fn policy_target(&self) -> pb::policy_target::Target {
        pb::policy_target::Target::Subject(self.subject.clone())
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.jti.clone(),
            self.subject.clone(),
            output::list(&self.scopes, "-"),
            output::list(&self.models, "*"),
            output::timestamp(self.issued_at),
            output::timestamp(self.expires_at),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "jti": self.jti, "subject": self.subject, "scopes": self.scopes,
            "models": self.models, "issued_at": self.issued_at,
            "expires_at": self.expires_at, "revoked_at": self.revoked_at, "kid": self.kid,
        })
    }
}

/// Runs one `token` subcommand.
pub async fn run(session: &Session, out: Printer, command: TokenCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        TokenCommand::Issue {
            subject,
            grant,
            ttl,
            policy,
        } => {
            let request = pb::IssueTokenRequest {
                subject,
                scopes: grant.scopes,
                models: grant.models,
                ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
                policy: policy.to_optional_policy(),
            };
            let response = session.call(client.issue_token(request)).await?;
            let json = json!({
                "token": response.token, "jti": response.jti, "expires_at": response.expires_at,
            });
            let notes = [
                ("jti", response.jti.clone()),
                ("expires", output::timestamp(response.expires_at)),
            ];
            out.secret(&response.token, &notes, &json)?;
            Ok(())
        }
        TokenCommand::Revoke { jti } => {
            let request = pb::RevokeTokenRequest { jti: jti.clone() };
            session.call(client.revoke_token(request)).await?;
            grants::revoked::<pb::TokenInfo>(out, &jti)
        }
        TokenCommand::List => grants::table(out, &list(session).await?),
        TokenCommand::Info { jti } => grants::info(session, out, list(session).await?, &jti).await,
    }
}

async fn list(session: &Session) -> anyhow::Result<Vec<pb::TokenInfo>> {
    let response = list_all!(session, list_tokens, pb::ListTokensRequest::default()).await?;
    Ok(response.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe;

    fn parse(args: &[&str]) -> Result<TokenCommand, clap::Error> {
        probe::subcommand(args)
    }

    #[test]
    fn issue_takes_grant_ttl_and_limits() {
        let argv = [
            "issue",
            "--subject",
            "s",
            "--models",
            "a,b",
            "--ttl",
            "1h",
            "--rpm",
            "5",
        ];
        match parse(&argv).unwrap() {
            TokenCommand::Issue {
                subject,
                grant,
                ttl,
                policy,
            } => {
                assert_eq!(subject, "s");
                assert_eq!(grant.models, ["a", "b"]);
                assert_eq!(ttl, Some(Duration::from_secs(3_600)));
                assert_eq!(policy.to_optional_policy().unwrap().rpm, 5);
            }
            other => panic!("parsed as {other:?}"),
        }
        let argv = ["issue", "--subject", "s", "--budget-period", "7d"];
        assert!(parse(&argv).is_err());
    }

    #[test]
    fn shows_tokens() {
        let token = pb::TokenInfo {
            jti: "j1".into(),
            subject: "alice".into(),
            scopes: vec!["read".into()],
            expires_at: 1_700_000_000,
            ..pb::TokenInfo::default()
        };
        assert_eq!(
            token.cells(),
            ["j1", "alice", "read", "*", "-", "2023-11-14T22:13:20Z"]
        );
        assert_eq!(token.cells().len(), pb::TokenInfo::COLUMNS.len());
        assert_eq!(token.json()["subject"], "alice");
        assert_eq!(
            token.policy_target(),
            pb::policy_target::Target::Subject("alice".into())
        );
    }
}
