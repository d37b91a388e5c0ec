//! Incident response: `wardenctl credentials suspend|resume|suspensions|revoke-all` and
//! `wardenctl lockdown [--reason TEXT] | lift | status`. Each is in force on every
//! connected node when the command returns.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;

use crate::output::{self, Fields, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Refuse (403 `credential_suspended`) every client credential of a JWT subject, or
    /// every JWT whose subject and every virtual key whose id or owner starts with a
    /// prefix, until resumed.
    Suspend {
        #[command(flatten)]
        target: Target,
        /// Why (kept with the suspension and in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a suspension made with the same `--subject` or `--prefix`.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// List the suspensions in force.
    Suspensions,
    /// Revoke every client credential for good: every JWT (a new signing key; every older
    /// one retired, so no token it signed verifies again) and every virtual key. Admin and
    /// node credentials are kept. Asks for confirmation unless `--yes`.
    RevokeAll {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// Exactly one of `--subject` and `--prefix`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A JWT subject, exactly.
    #[arg(long)]
    subject: Option<String>,
    /// A prefix of JWT subjects, virtual key ids (`vk_…`) and virtual key owners.
    #[arg(long)]
    prefix: Option<String>,
}

impl Target {
    fn parts(self) -> (String, String) {
        (
            self.subject.unwrap_or_default(),
            self.prefix.unwrap_or_default(),
        )
    }
}

/// `wardenctl lockdown`: with no subcommand, turns it on.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LockdownArgs {
    #[command(subcommand)]
    command: Option<LockdownCommand>,
    /// Why (kept with the lockdown and in the audit log; never shown to clients).
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Debug, Subcommand)]
pub enum LockdownCommand {
    /// Lift the lockdown: nodes serve again.
    Lift,
    /// Whether the gateway is locked down, since when, by whom and why.
    Status,
}

/// Runs one `credentials` subcommand.
pub async fn run_credentials(
    session: &Session,
    out: Printer,
    command: CredentialsCommand,
) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        CredentialsCommand::Suspend { target, reason } => {
            let (subject, prefix) = target.parts();
            let s = session
                .call(client.suspend_credentials(pb::SuspendCredentialsRequest {
                    subject,
                    prefix,
                    reason,
                }))
                .await?;
            let message = format!("{} {:?} suspended", s.kind, s.value);
            out.done(&message, &suspension_json(&s))?;
        }
        CredentialsCommand::Resume { target } => {
            let (subject, prefix) = target.parts();
            let shown = if subject.is_empty() {
                format!("prefix {prefix:?}")
            } else {
                format!("subject {subject:?}")
            };
            session
                .call(client.resume_credentials(pb::ResumeCredentialsRequest {
                    subject: subject.clone(),
                    prefix: prefix.clone(),
                }))
                .await?;
            out.done(
                &format!("{shown} resumed"),
                &json!({"subject": subject, "prefix": prefix, "resumed": true}),
            )?;
        }
        CredentialsCommand::Suspensions => {
            let list = list_all!(
                session,
                list_suspensions,
                pb::ListSuspensionsRequest::default()
            )
            .await?
            .suspensions;
            let mut rows = Rows::new(&["KIND", "VALUE", "SINCE", "BY", "REASON"]);
            for s in &list {
                rows.push(vec![
                    s.kind.clone(),
                    s.value.clone(),
                    output::timestamp(s.created_at),
                    s.created_by.clone(),
                    s.reason.clone(),
                ]);
            }
            let json: Vec<Value> = list.iter().map(suspension_json).collect();
            out.table(&rows, &json!({ "suspensions": json }))?;
        }
        CredentialsCommand::RevokeAll { yes } => {
            if !yes {
                confirm_revoke_all()?;
            }
            let r =
                session
                    .call(client.revoke_all_client_credentials(
                        pb::RevokeAllClientCredentialsRequest { confirm: true },
                    ))
                    .await?;
            let mut fields = Fields::new();
            fields.push("tokens revoked", r.tokens_revoked.to_string());
            fields.push("virtual keys revoked", r.virtual_keys_revoked.to_string());
            fields.push("signing keys retired", r.signing_keys_retired.to_string());
            fields.push("new signing key", r.new_kid.clone());
            out.fields(
                &fields,
                &json!({
                    "tokens_revoked": r.tokens_revoked,
                    "virtual_keys_revoked": r.virtual_keys_revoked,
                    "signing_keys_retired": r.signing_keys_retired,
                    "new_kid": r.new_kid,
                }),
            )?;
        }
    }
    Ok(())
}

/// Runs `lockdown`, `lockdown lift` or `lockdown status`.
pub async fn run_lockdown(
    session: &Session,
    out: Printer,
    args: LockdownArgs,
) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let info = match args.command {
        None => {
            session
                .call(client.lockdown(pb::LockdownRequest {
                    reason: args.reason,
                }))
                .await?
        }
        Some(LockdownCommand::Lift) => {
            session
                .call(client.lift_lockdown(pb::LiftLockdownRequest {}))
                .await?
        }
        Some(LockdownCommand::Status) => {
            session
                .call(client.get_lockdown(pb::GetLockdownRequest {}))
                .await?
        }
    };
    let json = json!({
        "locked_down": info.active,
        "reason": info.reason,
        "created_by": info.created_by,
        "created_at": info.created_at,
    });
    let mut fields = Fields::new();
    fields.push("locked down", if info.active { "yes" } else { "no" });
    if info.created_at > 0 {
        fields.push("since", output::timestamp(info.created_at));
        fields.push("by", info.created_by.clone());
        fields.push("reason", info.reason.clone());
    }
    out.fields(&fields, &json)?;
    Ok(())
}

fn suspension_json(s: &pb::SuspensionInfo) -> Value {
    json!({
        "kind": s.kind, "value": s.value, "reason": s.reason,
        "created_by": s.created_by, "created_at": s.created_at,
    })
}

/// Asks at a terminal for `revoke all` to be typed; refuses without one (use `--yes`).
fn confirm_revoke_all() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("revoke-all cannot be undone: confirm at a terminal, or pass --yes");
    }
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "This revokes EVERY client credential (all JWTs and virtual keys) for good."
    )?;
    write!(err, "Type `revoke all` to go on: ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != "revoke all" {
        bail!("not confirmed; nothing was revoked");
    }
    Ok(())
}
