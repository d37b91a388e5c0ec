//! `wardenctl audit list|tail|query|verify`: reading the audit log. `list` and `verify` are
//! unary Admin calls; `tail` and `query` stream from `warden.audit.v1.AuditStream` and
//! print one record per line as JSON, OCSF or CEF.

use std::io::Write as _;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use warden_control_plane::audit::export::{ExportFormat, ExportRecord, render};
use warden_proto::admin::v1 as pb;
use warden_proto::audit::v1 as audit_pb;

use crate::output::{self, Printer, Rows};
use crate::paging::list_all;
use crate::session::Session;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// At most this many records in all (read in pages of --page-size) [default: the
        /// control plane's default, 100].
        #[arg(long)]
        limit: Option<u32>,
        /// Only records with this action.
        #[arg(long)]
        action: Option<String>,
    },
    /// Print the newest records, and with --follow every new one as it is committed
    /// (one per line). Resumable: `--after SEQ` continues after a record seen before.
    Tail {
        /// Keep printing new records until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Start with records at or after this time: `15m`, `2h`, `7d` ago or RFC 3339.
        #[arg(long, value_parser = parse_since, conflicts_with = "after")]
        since: Option<i64>,
        /// Start after this record (`seq` of a record already seen).
        #[arg(long)]
        after: Option<u64>,
        /// How many past records to start with [default: 20; ignored with --since/--after].
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        #[arg(long, value_enum, default_value_t = ExportArg::Json)]
        format: ExportArg,
        #[command(flatten)]
        filter: AuditFilterArgs,
    },
    /// Search the audit log (history only), oldest first.
    Query {
        /// From this time: `15m`, `2h`, `7d` ago or RFC 3339 [default: the oldest record].
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Before this time (same forms).
        #[arg(long, value_parser = parse_since)]
        until: Option<i64>,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = ExportArg::Json)]
        format: ExportArg,
        #[command(flatten)]
        filter: AuditFilterArgs,
    },
    /// Check the audit log's hash chain; exits with status 1 and names the first edited,
    /// deleted, inserted or reordered row when it was tampered with.
    Verify {
        /// Start at this row sequence number [default: the first stored row].
        #[arg(long)]
        from: Option<u64>,
    },
}

/// Which records `audit tail|query` print.
#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Only these actions (repeatable; `provider.*` matches a prefix).
    #[arg(long = "action", value_name = "ACTION")]
    actions: Vec<String>,
    /// Only actors containing this text (`jwt:svc-a`, `admin:`, `node:`).
    #[arg(long)]
    actor: Option<String>,
    /// Only subjects containing this text.
    #[arg(long)]
    subject: Option<String>,
    /// Only this result (`ok`, `failure`, `denied`, …).
    #[arg(long)]
    result: Option<String>,
}

impl AuditFilterArgs {
    fn to_wire(&self, until_ms: i64) -> audit_pb::Filter {
        audit_pb::Filter {
            actions: self.actions.clone(),
            actor: self.actor.clone().unwrap_or_default(),
            subject: self.subject.clone().unwrap_or_default(),
            result: self.result.clone().unwrap_or_default(),
            until_ms,
        }
    }
}

/// Output format of `audit tail|query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportArg {
    /// One JSON object per line.
    Json,
    /// OCSF 1.3 API Activity, one object per line.
    Ocsf,
    /// ArcSight CEF, one line per record.
    Cef,
}

/// Runs one `audit` subcommand.
pub async fn run(session: &Session, out: Printer, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List { limit, action } => list(session, out, limit, action).await,
        AuditCommand::Tail {
            follow,
            since,
            after,
            lines,
            format,
            filter,
        } => {
            let request = audit_pb::SubscribeRequest {
                after_seq: after.unwrap_or(0),
                since_ms: since.unwrap_or(0),
                tail: if since.is_none() && after.is_none() {
                    lines.max(1)
                } else {
                    0
                },
                history_only: !follow,
                filter: Some(filter.to_wire(0)),
            };
            stream(session, request, format, None).await
        }
        AuditCommand::Query {
            since,
            until,
            limit,
            format,
            filter,
        } => {
            let request = audit_pb::SubscribeRequest {
                after_seq: 0,
                since_ms: since.unwrap_or(0),
                tail: 0,
                history_only: true,
                filter: Some(filter.to_wire(until.unwrap_or(0))),
            };
            stream(session, request, format, Some(limit.max(1))).await
        }
        AuditCommand::Verify { from } => verify(session, out, from).await,
    }
}

async fn list(
    session: &Session,
    out: Printer,
    limit: Option<u32>,
    action: Option<String>,
) -> anyhow::Result<()> {
    // `limit` bounds the whole listing; the control plane ends the pages there.
    let request = pb::ListAuditRequest {
        limit: limit.unwrap_or(0),
        action: action.unwrap_or_default(),
        ..Default::default()
    };
    let response = list_all!(session, list_audit, request).await?;
    let mut rows = Rows::new(&["TIME", "ACTION", "ACTOR", "SUBJECT", "RESULT", "DETAIL"]);
    for r in &response.records {
        rows.push(vec![
            output::timestamp_ms(r.timestamp_ms),
            r.action.clone(),
            r.actor.clone(),
            r.subject.clone(),
            r.result.clone(),
            r.detail.clone(),
        ]);
    }
    let json: Vec<Value> = response
        .records
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "timestamp_ms": r.timestamp_ms, "action": r.action,
                "actor": r.actor, "subject": r.subject, "result": r.result,
                "detail": r.detail,
            })
        })
        .collect();
    out.table(&rows, &Value::Array(json))?;
    Ok(())
}

/// `audit verify`: a failed verification is an error (exit status 1) after the report.
async fn verify(session: &Session, out: Printer, from: Option<u64>) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let report = session
        .call(client.verify_audit(pb::VerifyAuditRequest {
            from_seq: from.unwrap_or(0),
        }))
        .await?;
    let json = json!({
        "valid": report.valid, "rows_checked": report.rows_checked,
        "checkpoints_checked": report.checkpoints_checked, "last_seq": report.last_seq,
        "problem": report.problem,
    });
    let message = if report.valid {
        format!(
            "audit log intact: {} rows checked (up to row {})",
            report.rows_checked, report.last_seq
        )
    } else {
        format!("AUDIT LOG TAMPERED: {}", report.problem)
    };
    out.done(&message, &json)?;
    if !report.valid {
        anyhow::bail!("the audit log failed verification");
    }
    Ok(())
}

/// Streams records from `AuditStream/Subscribe` to stdout in `format`, at most `limit`.
async fn stream(
    session: &Session,
    request: audit_pb::SubscribeRequest,
    format: ExportArg,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let format = match format {
        ExportArg::Json => ExportFormat::Json,
        ExportArg::Ocsf => ExportFormat::Ocsf,
        ExportArg::Cef => ExportFormat::Cef,
    };
    let mut client = session.audit.clone();
    let mut stream = session.call(client.subscribe(request)).await?;
    let mut printed = 0usize;
    while let Some(r) = stream
        .message()
        .await
        .map_err(|status| session.error(&status))?
    {
        let line = render(
            &ExportRecord {
                seq: Some(r.seq),
                id: &r.id,
                timestamp_ms: r.timestamp_ms,
                action: &r.action,
                actor: &r.actor,
                subject: &r.subject,
                result: &r.result,
                detail: &r.detail,
                prev_hash: Some(&r.prev_hash),
                hash: Some(&r.hash),
                client_ip: r.attributes.get("client_ip").and_then(|ip| ip.parse().ok()),
            },
            format,
        );
        // One record, one line, nothing a terminal acts on (JSON keeps its own escapes).
        let line = match format {
            ExportFormat::Cef => warden_core::escape::control(&line),
            _ => warden_core::escape::json_line(&line),
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        printed += 1;
        if limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    Ok(())
}

/// `--since`/`--until`: a duration ago (`15m`, `7d`) or an RFC 3339 time, as Unix ms.
fn parse_since(raw: &str) -> Result<i64, String> {
    if let Ok(ago) = humantime::parse_duration(raw) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let at = now.saturating_sub(ago);
        return i64::try_from(at.as_millis()).map_err(|e| e.to_string());
    }
    let at = humantime::parse_rfc3339_weak(raw)
        .map_err(|_| format!("`{raw}`: expected a duration ago (15m, 7d) or an RFC 3339 time"))?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    i64::try_from(ms).map_err(|e| e.to_string())
}
