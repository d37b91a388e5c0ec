//! `wardenctl dlp`: data loss prevention rules on request content — add (or replace) a
//! rule, switch the six built-in detectors on with one action, remove, list.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use warden_proto::admin::v1 as pb;
use warden_proto::admin::v1::dlp_scope::Target;

use crate::output::{Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

/// The built-in detectors, each added by `enable-builtin` as a rule of the same name.
const BUILTIN: [&str; 6] = [
    "card",
    "ssn",
    "openai_key",
    "anthropic_key",
    "aws_access_key",
    "warden_credential",
];

#[derive(Debug, Subcommand)]
pub enum DlpCommand {
    /// Add a rule, or replace the rule of the same name.
    Add {
        /// 1 to 64 characters of a-z, 0-9, `_`, `-`; shown as `[REDACTED:<name>]`.
        #[arg(long)]
        name: String,
        #[command(flatten, next_help_heading = "What it finds (exactly one)")]
        detector: DetectorArgs,
        /// block (400 naming the rule), redact (`[REDACTED:<name>]`) or flag (audit only).
        #[arg(long, value_parser = ["block", "redact", "flag"])]
        action: String,
        #[command(
            flatten,
            next_help_heading = "Scope (at most one; none: every request)"
        )]
        scope: ScopeArgs,
    },
    /// Add the built-in detectors (card, ssn, openai_key, anthropic_key, aws_access_key,
    /// warden_credential) as gateway-wide rules with one action.
    EnableBuiltin {
        #[arg(long, value_parser = ["block", "redact", "flag"])]
        action: String,
    },
    /// Remove a rule.
    Remove { name: String },
    /// List the rules.
    List,
}

#[derive(Debug, Clone, Args)]
#[group(id = "detector_flags", required = true, multiple = false)]
pub struct DetectorArgs {
    /// A built-in detector: card, ssn, openai_key, anthropic_key, aws_access_key,
    /// warden_credential.
    #[arg(long, value_parser = BUILTIN)]
    builtin: Option<String>,
    /// A regular expression (Rust `regex` syntax, at most 1024 bytes).
    #[arg(long, value_name = "PATTERN")]
    regex: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
#[group(id = "scope_flags", multiple = false)]
pub struct ScopeArgs {
    /// Requests for this model alias.
    #[arg(long, value_name = "ALIAS")]
    model: Option<String>,
    /// Requests made with this virtual key (by id, `vk_…`).
    #[arg(long, value_name = "ID")]
    vkey: Option<String>,
    /// Requests made with a JWT of this subject.
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
}

impl ScopeArgs {
    fn to_scope(&self) -> pb::DlpScope {
        let target = if let Some(m) = &self.model {
            Some(Target::Model(m.clone()))
        } else if let Some(v) = &self.vkey {
            Some(Target::VirtualKey(v.clone()))
        } else {
            self.subject.clone().map(Target::Subject)
        };
        pb::DlpScope { target }
    }
}

fn scope_text(s: Option<&pb::DlpScope>) -> String {
    match s.and_then(|s| s.target.as_ref()) {
        None => "gateway".to_owned(),
        Some(Target::Model(m)) => format!("model:{m}"),
        Some(Target::VirtualKey(v)) => format!("vkey:{v}"),
        Some(Target::Subject(s)) => format!("subject:{s}"),
    }
}

fn rule_json(r: &pb::DlpRuleInfo) -> Value {
    json!({
        "name": r.name, "detector": r.detector, "pattern": r.pattern, "action": r.action,
        "scope": scope_text(r.scope.as_ref()), "source": r.source, "updated_at": r.updated_at,
    })
}

/// Runs one `dlp` subcommand.
pub async fn run(session: &Session, out: Printer, command: DlpCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        DlpCommand::Add {
            name,
            detector,
            action,
            scope,
        } => {
            let (detector, pattern) = match (detector.builtin, detector.regex) {
                (Some(b), _) => (b, String::new()),
                (None, Some(p)) => ("regex".to_owned(), p),
                (None, None) => anyhow::bail!("give --builtin or --regex"),
            };
            let r = session
                .call(client.add_dlp_rule(pb::AddDlpRuleRequest {
                    name,
                    detector,
                    pattern,
                    action,
                    scope: Some(scope.to_scope()),
                }))
                .await?;
            out.done(
                &format!("DLP rule {:?} set ({} → {})", r.name, r.detector, r.action),
                &rule_json(&r),
            )?;
        }
        DlpCommand::EnableBuiltin { action } => {
            let mut added = Vec::new();
            for detector in BUILTIN {
                let r = session
                    .call(client.add_dlp_rule(pb::AddDlpRuleRequest {
                        name: detector.to_owned(),
                        detector: detector.to_owned(),
                        pattern: String::new(),
                        action: action.clone(),
                        scope: None,
                    }))
                    .await?;
                added.push(rule_json(&r));
            }
            out.done(
                &format!("built-in DLP rules set to {action}: {}", BUILTIN.join(", ")),
                &json!({ "rules": added }),
            )?;
        }
        DlpCommand::Remove { name } => {
            session
                .call(client.remove_dlp_rule(pb::RemoveDlpRuleRequest { name: name.clone() }))
                .await?;
            out.done(
                &format!("DLP rule {name:?} removed"),
                &json!({ "name": name, "removed": true }),
            )?;
        }
        DlpCommand::List => {
            let response =
                list_all!(session, list_dlp_rules, pb::ListDlpRulesRequest::default()).await?;
            let mut rows = Rows::new(&["NAME", "DETECTOR", "ACTION", "SCOPE", "SOURCE", "PATTERN"]);
            for r in &response.rules {
                rows.push(vec![
                    r.name.clone(),
                    r.detector.clone(),
                    r.action.clone(),
                    scope_text(r.scope.as_ref()),
                    r.source.clone(),
                    r.pattern.clone(),
                ]);
            }
            let json = json!({ "rules": response.rules.iter().map(rule_json).collect::<Vec<_>>() });
            out.table(&rows, &json)?;
        }
    }
    Ok(())
}
