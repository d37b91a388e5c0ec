//! The admin subcommands: one unary call of `warden.admin.v1.Admin` each, over a channel that
//! carries the admin credential as `authorization: Bearer …`.
//!
//! Start at [`run`]. [`ConnectArgs`] holds the global connection flags, [`AdminCommand`] the
//! command tree; [`Session`] owns the client and turns a failed call into a message that is
//! safe and useful to show (it never contains the admin credential).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use warden_proto::admin::v1::{self as pb, admin_client::AdminClient};

use crate::output::{self, Fields, OutputFormat, Printer, Rows};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The budget period sent when `--max-budget` is given without `--budget-period`.
const DEFAULT_BUDGET_PERIOD: Duration = Duration::from_secs(30 * 86_400);
/// The shortest `--budget-period` accepted.
const MIN_BUDGET_PERIOD: Duration = Duration::from_secs(60);

/// How to reach and authenticate to the control plane. Global: accepted before or after the
/// subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct ConnectArgs {
    /// Control plane gRPC address; `host:port` means `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "WARDEN_CP_ADDR",
        default_value = "http://127.0.0.1:50051",
        value_parser = normalize_addr
    )]
    pub cp_addr: String,

    /// Admin credential (`wa_…`). Prefer the WARDEN_ADMIN_TOKEN environment variable: a
    /// flag is visible to other users in the process list and stays in shell history.
    #[arg(
        long,
        global = true,
        env = "WARDEN_ADMIN_TOKEN",
        hide_env_values = true,
        value_parser = secret_arg
    )]
    pub admin_token: Option<SecretString>,

    /// PEM file with the CA certificate(s) that signed an https:// control plane's
    /// certificate.
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

/// The admin subcommands, flattened into `wardenctl`'s top level.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage upstream providers and their keys.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Manage model aliases.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Issue, list, inspect and revoke JWT access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Create, list, inspect and revoke virtual keys (`wk_…`).
    #[command(subcommand)]
    Vkey(VkeyCommand),
    /// Manage data-plane node credentials.
    #[command(subcommand)]
    Node(NodeCommand),
    /// List data-plane nodes and the snapshot version each has acknowledged.
    Nodes,
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Set and read limits (rate, concurrency, budget) and their current usage.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Rotate and list the keys JWTs are signed with.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Make a new key the signer; old keys stay on the nodes until the last token each
    /// signed has expired.
    Rotate,
    /// List signing keys: which one signs, and until when the others are needed.
    #[command(visible_alias = "ls")]
    List,
}

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

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Add a model alias routed to a provider.
    Add {
        alias: String,
        #[arg(long)]
        provider: String,
        /// Model name sent upstream [default: the alias].
        #[arg(long)]
        upstream_model: Option<String>,
        /// Model aliases tried in order when every key of this model's provider is
        /// unavailable, comma-separated.
        #[arg(
            long = "fallback",
            value_name = "ALIASES",
            value_delimiter = ',',
            value_parser = list_item,
            num_args = 1
        )]
        fallbacks: Vec<String>,
        /// Price of input tokens in USD per million tokens, for budgets, e.g. `2.50`.
        #[arg(
            long,
            value_name = "USD_PER_MTOK",
            value_parser = parse_usd,
            allow_negative_numbers = true
        )]
        input_price: Option<f64>,
        /// Price of output tokens in USD per million tokens, for budgets, e.g. `10`.
        #[arg(
            long,
            value_name = "USD_PER_MTOK",
            value_parser = parse_usd,
            allow_negative_numbers = true
        )]
        output_price: Option<f64>,
    },
    /// List model aliases.
    #[command(visible_alias = "ls")]
    List,
    /// Remove a model alias.
    #[command(visible_alias = "rm")]
    Remove { alias: String },
    /// Further deployments of an alias (other providers or upstream models answering for
    /// it), chosen per request by weight.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Add (or re-weight) a deployment; naming the alias's own provider and upstream model
    /// re-weights its first deployment.
    Add {
        alias: String,
        #[arg(long)]
        provider: String,
        /// Model name sent upstream [default: the alias].
        #[arg(long)]
        upstream_model: Option<String>,
        /// Relative weight, 1 to 1000 [default: 1].
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a further deployment.
    #[command(visible_alias = "rm")]
    Remove {
        alias: String,
        #[arg(long)]
        provider: String,
        #[arg(long)]
        upstream_model: Option<String>,
    },
}

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

#[derive(Debug, Subcommand)]
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

/// What a token or virtual key may do.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Model aliases allowed, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_parser = list_item, num_args = 1)]
    models: Vec<String>,
    /// Scopes (`read`, `write`, `admin`, `audit`), comma-separated [default: read,write].
    #[arg(long, value_delimiter = ',', value_parser = list_item, num_args = 1)]
    scopes: Vec<String>,
}

/// Limits of a virtual key, a subject, a model or the gateway. `0` means unlimited.
#[derive(Debug, Clone, Default, Args)]
#[group(id = "policy_flags", multiple = true)]
pub struct PolicyArgs {
    /// Requests per minute [default: unlimited].
    #[arg(long, value_name = "N")]
    rpm: Option<u64>,
    /// Tokens per minute [default: unlimited].
    #[arg(long, value_name = "N")]
    tpm: Option<u64>,
    /// Requests in flight at once [default: unlimited].
    #[arg(long, value_name = "N")]
    max_parallel: Option<u32>,
    /// Ceiling on the completion tokens one request may ask for; larger `max_tokens` are
    /// lowered to it [default: unlimited].
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    /// Spend ceiling in USD per budget period, e.g. `25` or `12.50` [default: unlimited].
    #[arg(
        long,
        value_name = "USD",
        value_parser = parse_usd,
        allow_negative_numbers = true
    )]
    max_budget: Option<f64>,
    /// The budget's period, e.g. `30d`, `7d`, `12h`; at least 1m [default: 30d].
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_period,
        requires = "max_budget"
    )]
    budget_period: Option<Duration>,
}

impl PolicyArgs {
    /// Whether any limit flag was given.
    fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_parallel.is_none()
            && self.max_tokens.is_none()
            && self.max_budget.is_none()
            && self.budget_period.is_none()
    }

    /// The policy to send: limits not given are `0` (unlimited); a budget without a period
    /// gets [`DEFAULT_BUDGET_PERIOD`].
    fn to_policy(&self) -> pb::Policy {
        let max_budget_usd = self.max_budget.unwrap_or(0.0);
        let period = match self.budget_period {
            Some(period) => period,
            None if max_budget_usd > 0.0 => DEFAULT_BUDGET_PERIOD,
            None => Duration::ZERO,
        };
        pb::Policy {
            rpm: self.rpm.unwrap_or(0),
            tpm: self.tpm.unwrap_or(0),
            max_parallel: self.max_parallel.unwrap_or(0),
            max_budget_usd,
            budget_period_seconds: period.as_secs(),
            max_tokens: self.max_tokens.unwrap_or(0),
        }
    }

    /// `Some(policy)` when any limit flag was given, for `token issue` and `vkey create`.
    fn to_optional_policy(&self) -> Option<pb::Policy> {
        (!self.is_empty()).then(|| self.to_policy())
    }
}

/// Whose policy: exactly one of these.
#[derive(Debug, Clone, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// A virtual key, by id.
    #[arg(long, value_name = "ID")]
    vkey: Option<String>,
    /// A JWT subject: all of its tokens share the policy.
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
    /// A model alias.
    #[arg(long, value_name = "ALIAS")]
    model: Option<String>,
    /// Every request through the gateway.
    #[arg(long)]
    global: bool,
}

impl TargetArgs {
    fn to_target(&self) -> pb::PolicyTarget {
        use pb::policy_target::Target;
        let target = if let Some(id) = &self.vkey {
            Target::VirtualKey(id.clone())
        } else if let Some(subject) = &self.subject {
            Target::Subject(subject.clone())
        } else if let Some(alias) = &self.model {
            Target::Model(alias.clone())
        } else {
            Target::Global(true)
        };
        pb::PolicyTarget {
            target: Some(target),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set the policy of a virtual key, a JWT subject, a model or the whole gateway.
    ///
    /// Replaces the target's whole policy: a limit left out is set to 0 = unlimited. At
    /// least one limit flag, or --clear, is required.
    #[command(group(
        ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["rpm", "tpm", "max_parallel", "max_tokens", "max_budget", "budget_period", "clear"])
    ))]
    Set {
        #[command(flatten, next_help_heading = "Target (exactly one)")]
        target: TargetArgs,
        #[command(
            flatten,
            next_help_heading = "Limits (a limit left out is set to 0 = unlimited)"
        )]
        policy: PolicyArgs,
        /// Remove every limit of the target (sends all zeros).
        #[arg(long, conflicts_with = "policy_flags")]
        clear: bool,
    },
    /// Show the policy of a target and its current usage.
    Get {
        #[command(flatten, next_help_heading = "Target (exactly one)")]
        target: TargetArgs,
    },
}

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
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// At most this many records [default: the control plane's default].
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
    fn to_wire(&self, until_ms: i64) -> warden_proto::audit::v1::Filter {
        warden_proto::audit::v1::Filter {
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

/// Streams records from `AuditStream/Subscribe` to stdout in `format`, at most `limit`.
async fn stream_audit(
    session: &Session,
    request: warden_proto::audit::v1::SubscribeRequest,
    format: ExportArg,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    use warden_control_plane::audit::export::{ExportFormat, ExportRecord, render};
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
        .map_err(|status| anyhow!(describe(&status, &session.addr)))?
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

/// Runs one admin command against the control plane.
pub async fn run(
    connect: &ConnectArgs,
    format: OutputFormat,
    command: AdminCommand,
) -> anyhow::Result<()> {
    // Read a provider key before connecting, so a refused value never touches the network.
    let provider_key = match &command {
        AdminCommand::Provider(ProviderCommand::Key(ProviderKeyCommand::Add {
            provider,
            reference: None,
            ..
        }))
        | AdminCommand::Provider(ProviderCommand::Key(ProviderKeyCommand::Rotate {
            provider,
            ..
        })) => Some(read_provider_key(provider)?),
        _ => None,
    };
    let session = Session::open(connect).await?;
    let out = Printer::new(format);
    match command {
        AdminCommand::Provider(command) => provider(&session, out, command, provider_key).await,
        AdminCommand::Model(command) => model(&session, out, command).await,
        AdminCommand::Token(command) => token(&session, out, command).await,
        AdminCommand::Vkey(command) => vkey(&session, out, command).await,
        AdminCommand::Node(NodeCommand::Credential(NodeCredentialCommand::Issue { name })) => {
            node_credential(&session, out, name).await
        }
        AdminCommand::Nodes => nodes(&session, out).await,
        AdminCommand::Audit(AuditCommand::List { limit, action }) => {
            audit(&session, out, limit, action).await
        }
        AdminCommand::Audit(AuditCommand::Tail {
            follow,
            since,
            after,
            lines,
            format,
            filter,
        }) => {
            let request = warden_proto::audit::v1::SubscribeRequest {
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
            stream_audit(&session, request, format, None).await
        }
        AdminCommand::Audit(AuditCommand::Query {
            since,
            until,
            limit,
            format,
            filter,
        }) => {
            let request = warden_proto::audit::v1::SubscribeRequest {
                after_seq: 0,
                since_ms: since.unwrap_or(0),
                tail: 0,
                history_only: true,
                filter: Some(filter.to_wire(until.unwrap_or(0))),
            };
            stream_audit(&session, request, format, Some(limit.max(1))).await
        }
        AdminCommand::Audit(AuditCommand::Verify { from }) => {
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
        AdminCommand::Policy(command) => policy(&session, out, command).await,
        AdminCommand::SigningKey(command) => signing_key(&session, out, command).await,
    }
}

async fn signing_key(
    session: &Session,
    out: Printer,
    command: SigningKeyCommand,
) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let keys = match command {
        SigningKeyCommand::Rotate => {
            vec![
                session
                    .call(client.rotate_signing_key(pb::RotateSigningKeyRequest {}))
                    .await?,
            ]
        }
        SigningKeyCommand::List => {
            session
                .call(client.list_signing_keys(pb::ListSigningKeysRequest {}))
                .await?
                .keys
        }
    };
    let mut rows = Rows::new(&["KID", "ALGORITHM", "CREATED", "ACTIVE", "NEEDED UNTIL"]);
    let mut json = Vec::new();
    for k in &keys {
        rows.push(vec![
            k.kid.clone(),
            k.algorithm.clone(),
            output::timestamp(k.created_at),
            if k.active { "yes" } else { "no" }.to_owned(),
            if k.needed_until > 0 {
                output::timestamp(k.needed_until)
            } else {
                "-".to_owned()
            },
        ]);
        json.push(json!({
            "kid": k.kid, "algorithm": k.algorithm, "created_at": k.created_at,
            "active": k.active, "needed_until": k.needed_until,
        }));
    }
    out.table(&rows, &Value::Array(json))?;
    Ok(())
}

async fn provider(
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
        } => {
            let request = pb::AddProviderRequest {
                name,
                format: pb::ApiFormat::from(format).into(),
                base_url,
                passthrough,
                drop_params,
            };
            let info = session.call(client.add_provider(request)).await?;
            out.table(
                &provider_rows(std::slice::from_ref(&info)),
                &provider_json(&info),
            )?;
        }
        ProviderCommand::List => {
            let response = session
                .call(client.list_providers(pb::ListProvidersRequest {}))
                .await?;
            let json = response.providers.iter().map(provider_json).collect();
            out.table(&provider_rows(&response.providers), &Value::Array(json))?;
        }
        ProviderCommand::Remove { name } => {
            let request = pb::RemoveProviderRequest { name: name.clone() };
            session.call(client.remove_provider(request)).await?;
            let json = json!({ "provider": name, "removed": true });
            out.done(&format!("provider {name:?} removed"), &json)?;
        }
        ProviderCommand::Key(ProviderKeyCommand::Add {
            provider,
            reference,
            ..
        }) => {
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
        ProviderCommand::Key(ProviderKeyCommand::Rotate {
            provider, key_id, ..
        }) => {
            let key = key.ok_or_else(|| anyhow!("no provider key was read"))?;
            let key_id = match key_id {
                Some(id) => id,
                None => {
                    let response = session
                        .call(client.list_providers(pb::ListProvidersRequest {}))
                        .await?;
                    let p = response
                        .providers
                        .iter()
                        .find(|p| p.name == provider)
                        .ok_or_else(|| anyhow!("no provider named {provider:?}"))?;
                    match p.keys.as_slice() {
                        [only] => only.id.clone(),
                        [] => bail!("provider {provider:?} has no keys"),
                        _ => bail!(
                            "provider {provider:?} has {} keys: name one with --key",
                            p.keys.len()
                        ),
                    }
                }
            };
            let request = pb::RotateProviderKeyRequest {
                provider,
                key_id,
                secret: key.expose_secret().to_owned(),
            };
            let info = session.call(client.rotate_provider_key(request)).await?;
            out.table(&provider_key_rows(&info), &provider_key_json(&info))?;
        }
        ProviderCommand::Key(ProviderKeyCommand::Remove { provider, key_id }) => {
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
        ProviderCommand::Key(ProviderKeyCommand::Quarantine {
            provider,
            key_id,
            reason,
        }) => {
            let request = key_state_request(
                provider,
                key_id,
                pb::set_provider_key_state_request::Action::Quarantine,
                reason.unwrap_or_default(),
            );
            let info = session.call(client.set_provider_key_state(request)).await?;
            out.done(&provider_key_line(&info), &provider_key_json(&info))?;
        }
        ProviderCommand::Key(ProviderKeyCommand::Enable { provider, key_id }) => {
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

async fn model(session: &Session, out: Printer, command: ModelCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        ModelCommand::Add {
            alias,
            provider,
            upstream_model,
            fallbacks,
            input_price,
            output_price,
        } => {
            let request = pb::AddModelRequest {
                alias,
                provider,
                upstream_model: upstream_model.unwrap_or_default(),
                fallbacks,
                input_price_per_mtok: input_price.unwrap_or(0.0),
                output_price_per_mtok: output_price.unwrap_or(0.0),
                weight: 0,
            };
            let info = session.call(client.add_model(request)).await?;
            out.table(&model_rows(std::slice::from_ref(&info)), &model_json(&info))?;
        }
        ModelCommand::List => {
            let response = session
                .call(client.list_models(pb::ListModelsRequest {}))
                .await?;
            let json = response.models.iter().map(model_json).collect();
            out.table(&model_rows(&response.models), &Value::Array(json))?;
        }
        ModelCommand::Remove { alias } => {
            let request = pb::RemoveModelRequest {
                alias: alias.clone(),
            };
            session.call(client.remove_model(request)).await?;
            let json = json!({ "alias": alias, "removed": true });
            out.done(&format!("model {alias:?} removed"), &json)?;
        }
        ModelCommand::Deployment(DeploymentCommand::Add {
            alias,
            provider,
            upstream_model,
            weight,
        }) => {
            let request = pb::AddDeploymentRequest {
                alias: alias.clone(),
                provider: provider.clone(),
                upstream_model: upstream_model.unwrap_or_default(),
                weight,
            };
            session.call(client.add_deployment(request)).await?;
            let json = json!({ "alias": alias, "provider": provider, "weight": weight });
            out.done(
                &format!("model {alias:?}: deployment on {provider:?} with weight {weight}"),
                &json,
            )?;
        }
        ModelCommand::Deployment(DeploymentCommand::Remove {
            alias,
            provider,
            upstream_model,
        }) => {
            let request = pb::RemoveDeploymentRequest {
                alias: alias.clone(),
                provider: provider.clone(),
                upstream_model: upstream_model.unwrap_or_default(),
            };
            session.call(client.remove_deployment(request)).await?;
            let json = json!({ "alias": alias, "provider": provider, "removed": true });
            out.done(
                &format!("model {alias:?}: deployment on {provider:?} removed"),
                &json,
            )?;
        }
    }
    Ok(())
}

async fn token(session: &Session, out: Printer, command: TokenCommand) -> anyhow::Result<()> {
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
        }
        TokenCommand::Revoke { jti } => {
            let request = pb::RevokeTokenRequest { jti: jti.clone() };
            session.call(client.revoke_token(request)).await?;
            out.done(
                &format!("token {jti:?} revoked"),
                &json!({ "jti": jti, "revoked": true }),
            )?;
        }
        TokenCommand::List => {
            let response = session
                .call(client.list_tokens(pb::ListTokensRequest {}))
                .await?;
            let now = warden_core::unix_now();
            let mut rows = Rows::new(&[
                "JTI", "SUBJECT", "SCOPES", "MODELS", "ISSUED", "EXPIRES", "STATUS",
            ]);
            for t in &response.tokens {
                rows.push(vec![
                    t.jti.clone(),
                    t.subject.clone(),
                    output::list(&t.scopes, "-"),
                    output::list(&t.models, "*"),
                    output::timestamp(t.issued_at),
                    output::timestamp(t.expires_at),
                    status(t.revoked_at, t.expires_at, now).to_owned(),
                ]);
            }
            let json = response.tokens.iter().map(token_json).collect();
            out.table(&rows, &Value::Array(json))?;
        }
        TokenCommand::Info { jti } => {
            let response = session
                .call(client.list_tokens(pb::ListTokensRequest {}))
                .await?;
            let token = response
                .tokens
                .into_iter()
                .find(|t| t.jti == jti)
                .ok_or_else(|| anyhow!("no token with id {jti:?}"))?;
            let target = pb::PolicyTarget {
                target: Some(pb::policy_target::Target::Subject(token.subject.clone())),
            };
            let request = pb::GetPolicyRequest {
                target: Some(target.clone()),
            };
            let info = session.call(client.get_policy(request)).await?;
            let now = warden_core::unix_now();
            let state = status(token.revoked_at, token.expires_at, now);
            let mut fields = Fields::new();
            fields.push("jti", token.jti.clone());
            fields.push("subject", token.subject.clone());
            fields.push("scopes", output::list(&token.scopes, "-"));
            fields.push("models", output::list(&token.models, "*"));
            fields.push("issued", output::timestamp(token.issued_at));
            fields.push("expires", output::timestamp(token.expires_at));
            fields.push("status", state);
            policy_fields(&mut fields, &info, &target);
            let mut json = token_json(&token);
            merge(&mut json, json!({ "status": state }));
            merge(&mut json, policy_json(&info, &target));
            out.fields(&fields, &json)?;
        }
    }
    Ok(())
}

async fn vkey(session: &Session, out: Printer, command: VkeyCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        VkeyCommand::Create {
            name,
            owner,
            grant,
            ttl,
            policy,
        } => {
            let request = pb::CreateVirtualKeyRequest {
                name,
                owner: owner.unwrap_or_default(),
                models: grant.models,
                scopes: grant.scopes,
                ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
                policy: policy.to_optional_policy(),
            };
            let response = session.call(client.create_virtual_key(request)).await?;
            let info = response.info.unwrap_or_default();
            let mut json = vkey_json(&info);
            if let Value::Object(fields) = &mut json {
                fields.insert("key".to_owned(), Value::String(response.key.clone()));
            }
            let notes = [
                ("id", info.id.clone()),
                ("expires", expiry(info.expires_at)),
            ];
            out.secret(&response.key, &notes, &json)?;
        }
        VkeyCommand::List => {
            let response = session
                .call(client.list_virtual_keys(pb::ListVirtualKeysRequest {}))
                .await?;
            let now = warden_core::unix_now();
            let mut rows = Rows::new(&[
                "ID", "NAME", "OWNER", "MODELS", "SCOPES", "CREATED", "EXPIRES", "STATUS",
            ]);
            for k in &response.keys {
                rows.push(vec![
                    k.id.clone(),
                    k.name.clone(),
                    k.owner.clone(),
                    output::list(&k.models, "*"),
                    output::list(&k.scopes, "-"),
                    output::timestamp(k.created_at),
                    expiry(k.expires_at),
                    status(k.revoked_at, k.expires_at, now).to_owned(),
                ]);
            }
            let json = response.keys.iter().map(vkey_json).collect();
            out.table(&rows, &Value::Array(json))?;
        }
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
        }
        VkeyCommand::Revoke { id } => {
            let request = pb::RevokeVirtualKeyRequest { id: id.clone() };
            session.call(client.revoke_virtual_key(request)).await?;
            out.done(
                &format!("virtual key {id:?} revoked"),
                &json!({ "id": id, "revoked": true }),
            )?;
        }
        VkeyCommand::Info { id } => {
            let response = session
                .call(client.list_virtual_keys(pb::ListVirtualKeysRequest {}))
                .await?;
            let key = response
                .keys
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| anyhow!("no virtual key with id {id:?}"))?;
            let target = pb::PolicyTarget {
                target: Some(pb::policy_target::Target::VirtualKey(key.id.clone())),
            };
            let request = pb::GetPolicyRequest {
                target: Some(target.clone()),
            };
            let info = session.call(client.get_policy(request)).await?;
            let now = warden_core::unix_now();
            let state = status(key.revoked_at, key.expires_at, now);
            let mut fields = Fields::new();
            fields.push("id", key.id.clone());
            fields.push("name", key.name.clone());
            fields.push("owner", key.owner.clone());
            fields.push("models", output::list(&key.models, "*"));
            fields.push("scopes", output::list(&key.scopes, "-"));
            fields.push("created", output::timestamp(key.created_at));
            fields.push("expires", expiry(key.expires_at));
            fields.push("status", state);
            policy_fields(&mut fields, &info, &target);
            let mut json = vkey_json(&key);
            merge(&mut json, json!({ "status": state }));
            merge(&mut json, policy_json(&info, &target));
            out.fields(&fields, &json)?;
        }
    }
    Ok(())
}

async fn policy(session: &Session, out: Printer, command: PolicyCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let (info, target) = match command {
        PolicyCommand::Set {
            target,
            policy,
            clear,
        } => {
            let target = target.to_target();
            let policy = if clear {
                pb::Policy::default()
            } else {
                policy.to_policy()
            };
            let request = pb::SetPolicyRequest {
                target: Some(target.clone()),
                policy: Some(policy),
            };
            (session.call(client.set_policy(request)).await?, target)
        }
        PolicyCommand::Get { target } => {
            let target = target.to_target();
            let request = pb::GetPolicyRequest {
                target: Some(target.clone()),
            };
            (session.call(client.get_policy(request)).await?, target)
        }
    };
    let mut fields = Fields::new();
    policy_fields(&mut fields, &info, &target);
    out.fields(&fields, &policy_json(&info, &target))?;
    Ok(())
}

/// The human view of a policy and its usage. `requested` names the target when the
/// response does not.
fn policy_fields(fields: &mut Fields, info: &pb::PolicyInfo, requested: &pb::PolicyTarget) {
    let target = info.target.as_ref().unwrap_or(requested);
    let policy = info.policy.unwrap_or_default();
    fields.push("policy of", target_name(target));
    fields.push("rpm", limit(policy.rpm));
    fields.push("tpm", limit(policy.tpm));
    fields.push("max parallel", limit(policy.max_parallel.into()));
    fields.push("max tokens", limit(policy.max_tokens));
    fields.push("budget", budget(&policy));
    let usage = info.usage.clone().unwrap_or_default();
    if !usage.available {
        let reason = usage.unavailable_reason.trim();
        let text = if reason.is_empty() {
            "unavailable".to_owned()
        } else {
            format!("unavailable ({reason})")
        };
        fields.push("usage", text);
        return;
    }
    let left = |limit: u64, remaining: u64| {
        if limit == 0 {
            "unlimited".to_owned()
        } else {
            remaining.to_string()
        }
    };
    fields.push("requests left", left(policy.rpm, usage.requests_remaining));
    fields.push("tokens left", left(policy.tpm, usage.tokens_remaining));
    fields.push("in flight", usage.in_flight.to_string());
    let ceiling = if policy.max_budget_usd > 0.0 {
        output::usd(policy.max_budget_usd)
    } else {
        "unlimited".to_owned()
    };
    fields.push(
        "spent",
        format!("{} of {ceiling}", output::usd(usage.spent_usd)),
    );
    fields.push("period ends", output::timestamp(usage.period_ends_at));
}

/// The JSON view of a policy and its usage: `target`, `policy` and `usage` objects with the
/// proto's field names, numbers as numbers.
fn policy_json(info: &pb::PolicyInfo, requested: &pb::PolicyTarget) -> Value {
    use pb::policy_target::Target;
    let target = match &info.target.as_ref().unwrap_or(requested).target {
        Some(Target::VirtualKey(id)) => json!({ "virtual_key": id }),
        Some(Target::Subject(subject)) => json!({ "subject": subject }),
        Some(Target::Model(alias)) => json!({ "model": alias }),
        Some(Target::Global(global)) => json!({ "global": global }),
        None => Value::Null,
    };
    let p = info.policy.unwrap_or_default();
    let u = info.usage.clone().unwrap_or_default();
    json!({
        "target": target,
        "policy": {
            "rpm": p.rpm, "tpm": p.tpm, "max_parallel": p.max_parallel, "max_tokens": p.max_tokens,
            "max_budget_usd": p.max_budget_usd,
            "budget_period_seconds": p.budget_period_seconds,
        },
        "usage": {
            "available": u.available, "unavailable_reason": u.unavailable_reason,
            "requests_remaining": u.requests_remaining,
            "tokens_remaining": u.tokens_remaining, "in_flight": u.in_flight,
            "spent_usd": u.spent_usd, "period_ends_at": u.period_ends_at,
        },
    })
}

/// `virtual key vk_…`, `subject alice`, `model gpt-4o`, `global`.
fn target_name(target: &pb::PolicyTarget) -> String {
    use pb::policy_target::Target;
    match &target.target {
        Some(Target::VirtualKey(id)) => format!("virtual key {id}"),
        Some(Target::Subject(subject)) => format!("subject {subject}"),
        Some(Target::Model(alias)) => format!("model {alias}"),
        Some(Target::Global(_)) => "global".to_owned(),
        None => "-".to_owned(),
    }
}

/// A limit cell: `unlimited` for `0`.
fn limit(value: u64) -> String {
    if value == 0 {
        "unlimited".to_owned()
    } else {
        value.to_string()
    }
}

/// `$25.00 per 30d`, or `unlimited`.
fn budget(policy: &pb::Policy) -> String {
    if policy.max_budget_usd > 0.0 {
        let period = match policy.budget_period_seconds {
            0 => DEFAULT_BUDGET_PERIOD.as_secs(),
            seconds => seconds,
        };
        format!(
            "{} per {}",
            output::usd(policy.max_budget_usd),
            output::span(period)
        )
    } else {
        "unlimited".to_owned()
    }
}

/// Adds the fields of `extra` (an object) to `json` (an object).
fn merge(json: &mut Value, extra: Value) {
    if let (Value::Object(fields), Value::Object(extra)) = (json, extra) {
        fields.extend(extra);
    }
}

async fn nodes(session: &Session, out: Printer) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    let response = session
        .call(client.list_nodes(pb::ListNodesRequest {}))
        .await?;
    let now = warden_core::unix_now();
    let mut rows = Rows::new(&[
        "NODE",
        "ACKED",
        "CURRENT",
        "CONNECTED",
        "LAST SEEN",
        "VERSION",
    ]);
    for n in &response.nodes {
        rows.push(vec![
            n.node_id.clone(),
            n.acked_version.to_string(),
            response.current_version.to_string(),
            if n.connected { "yes" } else { "no" }.to_owned(),
            output::ago(n.last_seen, now),
            n.software_version.clone(),
        ]);
    }
    let nodes: Vec<Value> = response
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id, "credential_id": n.credential_id,
                "acked_version": n.acked_version, "last_seen": n.last_seen,
                "connected": n.connected, "software_version": n.software_version,
            })
        })
        .collect();
    let json = json!({ "current_version": response.current_version, "nodes": nodes });
    out.table(&rows, &json)?;
    Ok(())
}

async fn node_credential(
    session: &Session,
    out: Printer,
    name: Option<String>,
) -> anyhow::Result<()> {
    let request = pb::IssueNodeCredentialRequest {
        name: name.unwrap_or_default(),
    };
    let mut client = session.client.clone();
    let response = session.call(client.issue_node_credential(request)).await?;
    let json = json!({ "credential": response.credential, "id": response.id });
    out.secret(&response.credential, &[("id", response.id.clone())], &json)?;
    Ok(())
}

async fn audit(
    session: &Session,
    out: Printer,
    limit: Option<u32>,
    action: Option<String>,
) -> anyhow::Result<()> {
    let request = pb::ListAuditRequest {
        limit: limit.unwrap_or(0),
        action: action.unwrap_or_default(),
    };
    let mut client = session.client.clone();
    let response = session.call(client.list_audit(request)).await?;
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

fn provider_rows(providers: &[pb::ProviderInfo]) -> Rows {
    let mut rows = Rows::new(&["NAME", "FORMAT", "BASE URL", "SOURCE", "KEYS"]);
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

fn model_rows(models: &[pb::ModelInfo]) -> Rows {
    let mut rows = Rows::new(&[
        "ALIAS",
        "PROVIDER",
        "UPSTREAM MODEL",
        "SOURCE",
        "FALLBACKS",
        "PRICE",
    ]);
    for m in models {
        rows.push(vec![
            m.alias.clone(),
            m.provider.clone(),
            m.upstream_model.clone(),
            m.source.clone(),
            output::list(&m.fallbacks, "-"),
            prices(m.input_price_per_mtok, m.output_price_per_mtok),
        ]);
    }
    rows
}

/// `$2.50/$10.00 per Mtok` (input/output), or `-` when neither price is set.
fn prices(input: f64, output: f64) -> String {
    if input == 0.0 && output == 0.0 {
        "-".to_owned()
    } else {
        format!("{}/{} per Mtok", output::usd(input), output::usd(output))
    }
}

fn model_json(m: &pb::ModelInfo) -> Value {
    json!({
        "alias": m.alias, "provider": m.provider, "upstream_model": m.upstream_model,
        "source": m.source, "fallbacks": m.fallbacks,
        "input_price_per_mtok": m.input_price_per_mtok,
        "output_price_per_mtok": m.output_price_per_mtok,
        "weight": m.weight,
        "deployments": m.deployments.iter().map(|d| json!({
            "provider": d.provider, "upstream_model": d.upstream_model, "weight": d.weight,
        })).collect::<Vec<_>>(),
    })
}

fn token_json(t: &pb::TokenInfo) -> Value {
    json!({
        "jti": t.jti, "subject": t.subject, "scopes": t.scopes,
        "models": t.models, "issued_at": t.issued_at,
        "expires_at": t.expires_at, "revoked_at": t.revoked_at, "kid": t.kid,
    })
}

fn vkey_json(k: &pb::VirtualKeyInfo) -> Value {
    json!({
        "id": k.id, "name": k.name, "owner": k.owner, "models": k.models, "scopes": k.scopes,
        "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at,
        "previous_expires_at": k.previous_expires_at,
    })
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

/// An expiry cell: `never` for `0`.
fn expiry(expires_at: i64) -> String {
    if expires_at == 0 {
        "never".to_owned()
    } else {
        output::timestamp(expires_at)
    }
}

/// `revoked`, `expired` or `active`.
fn status(revoked_at: i64, expires_at: i64, now: i64) -> &'static str {
    if revoked_at != 0 {
        "revoked"
    } else if expires_at != 0 && expires_at <= now {
        "expired"
    } else {
        "active"
    }
}

type Client = AdminClient<InterceptedService<Channel, Bearer>>;
type AuditClient = warden_proto::audit::v1::audit_stream_client::AuditStreamClient<
    InterceptedService<Channel, Bearer>,
>;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;

/// A client for one control plane, and the address to name in errors.
struct Session {
    client: Client,
    audit: AuditClient,
    addr: String,
}

impl Session {
    async fn open(args: &ConnectArgs) -> anyhow::Result<Self> {
        let token = args
            .admin_token
            .as_ref()
            .map(|t| t.expose_secret().trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("no admin credential: set WARDEN_ADMIN_TOKEN (or pass --admin-token)")
            })?;
        let mut header = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            anyhow!("the admin credential contains characters that cannot be sent in a header")
        })?;
        header.set_sensitive(true);

        let addr = args.cp_addr.clone();
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .with_context(|| format!("invalid control plane address {addr:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let https = addr.starts_with("https://");
        match (&args.ca_file, https) {
            (Some(path), true) => {
                let pem = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
                let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                endpoint = endpoint.tls_config(tls).with_context(|| {
                    format!(
                        "--ca-file {} holds no usable CA certificate",
                        path.display()
                    )
                })?;
            }
            (Some(_), false) => bail!("--ca-file needs an https:// control plane address"),
            (None, true) => bail!(
                "an https:// control plane needs --ca-file (the CA that signed its certificate)"
            ),
            (None, false) => {}
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: AdminClient::with_interceptor(channel.clone(), Bearer(header.clone())),
            audit: AuditStreamClient::with_interceptor(channel, Bearer(header)),
            addr,
        })
    }

    /// Awaits one call, turning a failure into a message fit to show.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> anyhow::Result<T> {
        call.await
            .map(tonic::Response::into_inner)
            .map_err(|status| anyhow!(describe(&status, &self.addr)))
    }
}

/// Adds `authorization: Bearer <admin credential>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(warden_proto::AUTHORIZATION, self.0.clone());
        Ok(request)
    }
}

/// What to tell the user about a failed call. Statuses raised on the client side (no
/// connection, timeout) carry a `source`; those from the control plane carry its message,
/// which it keeps safe to show.
fn describe(status: &Status, addr: &str) -> String {
    let local = std::error::Error::source(status).is_some();
    match status.code() {
        Code::Unauthenticated => {
            "the control plane rejected the admin credential (check WARDEN_ADMIN_TOKEN)".to_owned()
        }
        Code::PermissionDenied => with_detail(
            "the admin credential is not allowed to do this",
            status.message(),
        ),
        Code::Unavailable if local => with_detail(
            &format!("cannot reach the control plane at {addr}"),
            &chain(status),
        ),
        Code::Cancelled | Code::DeadlineExceeded if local => format!(
            "the control plane at {addr} did not answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        ),
        Code::Unimplemented => with_detail(
            "the control plane does not support this call (is it an older version?)",
            status.message(),
        ),
        code if status.message().is_empty() => code.description().to_owned(),
        _ => status.message().to_owned(),
    }
}

fn with_detail(summary: &str, detail: &str) -> String {
    if detail.is_empty() {
        summary.to_owned()
    } else {
        format!("{summary}: {detail}")
    }
}

/// The messages of an error's sources, `: `-separated, skipping repeats (tonic's wrappers
/// often display their source's message as their own).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Reads a provider key from stdin: one line at a terminal (after a prompt on stderr),
/// otherwise all of stdin. Trailing whitespace is dropped; empty and multi-line values are
/// refused.
fn read_provider_key(provider: &str) -> anyhow::Result<SecretString> {
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

/// `--cp-addr`: adds `http://` when no scheme is given; only http and https are accepted.
fn normalize_addr(raw: &str) -> Result<String, String> {
    let (scheme, rest) = raw.trim().split_once("://").unwrap_or(("http", raw.trim()));
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "unsupported scheme {scheme:?}: use http:// or https://"
        ));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err("the control plane address has no host".to_owned());
    }
    Ok(format!("{scheme}://{rest}"))
}

/// `--admin-token`: wrapped at once so that no `Debug` output can show it.
fn secret_arg(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

/// One item of a comma-separated list, trimmed; empty items are refused.
fn list_item(raw: &str) -> Result<String, String> {
    let item = raw.trim();
    if item.is_empty() {
        Err("empty list item".to_owned())
    } else {
        Ok(item.to_owned())
    }
}

/// `--ttl`: a humantime duration of at least one second (`0` would mean "the default" to the
/// control plane, or "never expires" for a virtual key).
fn parse_grace(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| e.to_string())
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err("the ttl must be at least 1s; leave --ttl out for the default".to_owned());
    }
    Ok(ttl)
}

/// `--max-budget`, `--input-price`, `--output-price`: a finite, non-negative amount in USD,
/// e.g. `25`, `12.50` or `$12.50`.
fn parse_usd(raw: &str) -> Result<f64, String> {
    let text = raw.trim();
    let text = text.strip_prefix('$').unwrap_or(text).trim();
    let amount: f64 = text
        .parse()
        .map_err(|_| format!("{raw:?} is not an amount in USD (e.g. 25 or 12.50)"))?;
    if !amount.is_finite() {
        return Err("the amount must be a finite number".to_owned());
    }
    if amount < 0.0 {
        return Err("the amount cannot be negative".to_owned());
    }
    // `-0` parses as negative zero; send a plain zero.
    Ok(amount.abs())
}

/// `--budget-period`: a humantime duration of at least one minute.
fn parse_period(raw: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if period < MIN_BUDGET_PERIOD {
        return Err("the budget period must be at least 1m".to_owned());
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_addresses() {
        assert_eq!(
            normalize_addr("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(normalize_addr("localhost:1").unwrap(), "http://localhost:1");
        assert_eq!(
            normalize_addr("http://127.0.0.1:50051/").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize_addr("https://cp.example:443").unwrap(),
            "https://cp.example:443"
        );
        assert!(normalize_addr("").is_err());
        assert!(normalize_addr("https://").is_err());
        assert!(normalize_addr("ftp://cp:21").is_err());
    }

    #[test]
    fn parses_ttls() {
        assert_eq!(parse_ttl("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_ttl("1h 30m").unwrap(), Duration::from_secs(5_400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("500ms").is_err());
        assert!(parse_ttl("soon").is_err());
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
    fn describes_statuses_without_leaking() {
        let addr = "http://127.0.0.1:1";
        assert_eq!(
            describe(&Status::unauthenticated("bad token wa_secret"), addr),
            "the control plane rejected the admin credential (check WARDEN_ADMIN_TOKEN)"
        );
        assert_eq!(
            describe(&Status::not_found("no provider \"x\""), addr),
            "no provider \"x\""
        );
        assert_eq!(
            describe(&Status::already_exists(""), addr),
            Code::AlreadyExists.description()
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(subcommand)]
        command: AdminCommand,
    }

    fn grant(args: &[&str]) -> GrantArgs {
        use clap::Parser as _;
        let argv = ["wardenctl", "token", "issue", "--subject", "s"];
        let probe = Probe::try_parse_from(argv.iter().chain(args)).unwrap();
        match probe.command {
            AdminCommand::Token(TokenCommand::Issue { grant, .. }) => grant,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_comma_separated_lists() {
        let g = grant(&["--models", "a,b", "--scopes", "read, write"]);
        assert_eq!(g.models, ["a", "b"]);
        assert_eq!(g.scopes, ["read", "write"]);
        let g = grant(&["--models", "a", "--models", "b,c"]);
        assert_eq!(g.models, ["a", "b", "c"]);
        let g = grant(&[]);
        assert!(g.models.is_empty() && g.scopes.is_empty());
        let argv = [
            "wardenctl",
            "token",
            "issue",
            "--subject",
            "s",
            "--models",
            "a,,b",
        ];
        assert!(<Probe as clap::Parser>::try_parse_from(argv).is_err());
    }

    #[test]
    fn derives_status() {
        assert_eq!(status(0, 0, 100), "active");
        assert_eq!(status(0, 200, 100), "active");
        assert_eq!(status(0, 50, 100), "expired");
        assert_eq!(status(10, 200, 100), "revoked");
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        use clap::Parser as _;
        Probe::try_parse_from(["wardenctl"].iter().chain(args)).map(|p| p.command)
    }

    fn issued_policy(args: &[&str]) -> Option<pb::Policy> {
        let argv: Vec<&str> = ["token", "issue", "--subject", "s"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        match parse(&argv).unwrap() {
            AdminCommand::Token(TokenCommand::Issue { policy, .. }) => policy.to_optional_policy(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_budgets() {
        assert_eq!(parse_usd("25"), Ok(25.0));
        assert_eq!(parse_usd("12.50"), Ok(12.5));
        assert_eq!(parse_usd(" $3.5 "), Ok(3.5));
        assert_eq!(parse_usd("0"), Ok(0.0));
        assert!(parse_usd("-0").unwrap().is_sign_positive());
        for bad in [
            "-1", "-0.01", "NaN", "nan", "inf", "-inf", "", "$", "12,50", "ten",
        ] {
            assert!(parse_usd(bad).is_err(), "{bad:?} was accepted");
        }
        // A negative amount reaches the parser (and its message), not clap's "unexpected
        // argument".
        let err = parse(&["policy", "set", "--global", "--max-budget", "-3"]).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn parses_budget_periods() {
        assert_eq!(
            parse_period("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_period("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_period("12h").unwrap(), Duration::from_secs(43_200));
        assert!(parse_period("59s").is_err());
        assert!(parse_period("0s").is_err());
        assert!(parse_period("monthly").is_err());
    }

    #[test]
    fn sends_a_policy_only_when_a_limit_flag_is_given() {
        assert_eq!(issued_policy(&[]), None);
        assert_eq!(
            issued_policy(&["--rpm", "0"]),
            Some(pb::Policy::default()),
            "an explicit 0 still sends a policy"
        );
        let p = issued_policy(&["--rpm", "60", "--tpm", "1000", "--max-parallel", "4"]).unwrap();
        assert_eq!((p.rpm, p.tpm, p.max_parallel), (60, 1000, 4));
        assert_eq!(p.budget_period_seconds, 0);
        let p = issued_policy(&["--max-budget", "25"]).unwrap();
        assert!((p.max_budget_usd - 25.0).abs() < f64::EPSILON);
        assert_eq!(p.budget_period_seconds, 30 * 86_400);
        let p = issued_policy(&["--max-budget", "12.50", "--budget-period", "7d"]).unwrap();
        assert!((p.max_budget_usd - 12.5).abs() < f64::EPSILON);
        assert_eq!(p.budget_period_seconds, 7 * 86_400);
        // A period without a budget means nothing.
        assert!(parse(&["token", "issue", "--subject", "s", "--budget-period", "7d"]).is_err());
        let argv = ["vkey", "create", "--name", "n", "--max-parallel", "2"];
        match parse(&argv).unwrap() {
            AdminCommand::Vkey(VkeyCommand::Create { policy, .. }) => {
                assert_eq!(policy.to_optional_policy().unwrap().max_parallel, 2);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    fn set(args: &[&str]) -> Result<(pb::PolicyTarget, pb::Policy), clap::Error> {
        let argv: Vec<&str> = ["policy", "set"].iter().chain(args).copied().collect();
        match parse(&argv)? {
            AdminCommand::Policy(PolicyCommand::Set {
                target,
                policy,
                clear,
            }) => {
                let policy = if clear {
                    pb::Policy::default()
                } else {
                    policy.to_policy()
                };
                Ok((target.to_target(), policy))
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn policy_commands_need_exactly_one_target() {
        use pb::policy_target::Target;
        let target = |args: &[&str]| set(args).map(|(t, _)| t.target);
        assert_eq!(
            target(&["--vkey", "vk_1", "--rpm", "5"]).unwrap(),
            Some(Target::VirtualKey("vk_1".into()))
        );
        assert_eq!(
            target(&["--subject", "alice", "--rpm", "5"]).unwrap(),
            Some(Target::Subject("alice".into()))
        );
        assert_eq!(
            target(&["--model", "gpt", "--rpm", "5"]).unwrap(),
            Some(Target::Model("gpt".into()))
        );
        assert_eq!(
            target(&["--global", "--rpm", "5"]).unwrap(),
            Some(Target::Global(true))
        );
        assert!(set(&["--rpm", "5"]).is_err(), "no target");
        assert!(set(&["--vkey", "a", "--global", "--rpm", "5"]).is_err());
        assert!(set(&["--vkey", "a", "--subject", "b", "--rpm", "5"]).is_err());
        match parse(&["policy", "get", "--model", "m"]).unwrap() {
            AdminCommand::Policy(PolicyCommand::Get { target }) => {
                assert_eq!(target.to_target().target, Some(Target::Model("m".into())));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["policy", "get"]).is_err());
        assert!(parse(&["policy", "get", "--global", "--model", "m"]).is_err());
    }

    #[test]
    fn policy_set_needs_a_limit_or_clear() {
        assert!(set(&["--global"]).is_err());
        let (_, policy) = set(&["--global", "--clear"]).unwrap();
        assert_eq!(policy, pb::Policy::default());
        assert!(set(&["--global", "--clear", "--rpm", "1"]).is_err());
        let (_, policy) = set(&["--subject", "s", "--tpm", "100"]).unwrap();
        assert_eq!(
            policy,
            pb::Policy {
                tpm: 100,
                ..pb::Policy::default()
            },
            "limits left out are sent as 0"
        );
    }

    fn sample_info() -> pb::PolicyInfo {
        pb::PolicyInfo {
            target: Some(pb::PolicyTarget {
                target: Some(pb::policy_target::Target::VirtualKey("vk_1".into())),
            }),
            policy: Some(pb::Policy {
                rpm: 60,
                tpm: 0,
                max_parallel: 4,
                max_budget_usd: 25.0,
                budget_period_seconds: 30 * 86_400,
                max_tokens: 0,
            }),
            usage: Some(pb::Usage {
                available: true,
                unavailable_reason: String::new(),
                requests_remaining: 58,
                tokens_remaining: 0,
                in_flight: 1,
                spent_usd: 1.5,
                period_ends_at: 1_700_000_000,
            }),
        }
    }

    #[test]
    fn renders_policies() {
        let info = sample_info();
        let requested = pb::PolicyTarget::default();
        let mut fields = Fields::new();
        policy_fields(&mut fields, &info, &requested);
        assert_eq!(
            fields.render(),
            "policy of:      virtual key vk_1\n\
             rpm:            60\n\
             tpm:            unlimited\n\
             max parallel:   4\nmax tokens:     unlimited\n\
             budget:         $25.00 per 30d\n\
             requests left:  58\n\
             tokens left:    unlimited\n\
             in flight:      1\n\
             spent:          $1.50 of $25.00\n\
             period ends:    2023-11-14T22:13:20Z\n"
        );

        let info = pb::PolicyInfo {
            target: None,
            policy: Some(pb::Policy::default()),
            usage: Some(pb::Usage {
                unavailable_reason: "redis not configured".into(),
                ..pb::Usage::default()
            }),
        };
        let requested = pb::PolicyTarget {
            target: Some(pb::policy_target::Target::Global(true)),
        };
        let mut fields = Fields::new();
        policy_fields(&mut fields, &info, &requested);
        assert_eq!(
            fields.render(),
            "policy of:     global\n\
             rpm:           unlimited\n\
             tpm:           unlimited\n\
             max parallel:  unlimited\n\
             max tokens:    unlimited\n\
             budget:        unlimited\n\
             usage:         unavailable (redis not configured)\n"
        );
    }

    #[test]
    fn policy_json_has_numbers() {
        let json = policy_json(&sample_info(), &pb::PolicyTarget::default());
        assert_eq!(json["target"], json!({ "virtual_key": "vk_1" }));
        assert_eq!(json["policy"]["rpm"], 60);
        assert_eq!(json["policy"]["max_parallel"], 4);
        assert_eq!(json["policy"]["max_budget_usd"], 25.0);
        assert_eq!(json["policy"]["budget_period_seconds"], 2_592_000);
        assert_eq!(json["usage"]["available"], true);
        assert_eq!(json["usage"]["requests_remaining"], 58);
        assert_eq!(json["usage"]["spent_usd"], 1.5);
        assert_eq!(json["usage"]["period_ends_at"], 1_700_000_000);
        let mut merged = json!({ "id": "vk_1" });
        merge(&mut merged, json);
        assert_eq!(merged["id"], "vk_1");
        assert_eq!(merged["policy"]["rpm"], 60);
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
        match parse(&[
            "provider",
            "key",
            "quarantine",
            "p",
            "pk_1",
            "--reason",
            "x",
        ])
        .unwrap()
        {
            AdminCommand::Provider(ProviderCommand::Key(ProviderKeyCommand::Quarantine {
                reason,
                ..
            })) => assert_eq!(reason.as_deref(), Some("x")),
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["provider", "key", "enable", "p", "pk_1", "--reason", "x"]).is_err());
    }

    #[test]
    fn parses_and_shows_model_prices_and_fallbacks() {
        let argv = [
            "model",
            "add",
            "gpt",
            "--provider",
            "p",
            "--fallback",
            "a, b",
            "--input-price",
            "2.50",
            "--output-price",
            "10",
        ];
        match parse(&argv).unwrap() {
            AdminCommand::Model(ModelCommand::Add {
                fallbacks,
                input_price,
                output_price,
                ..
            }) => {
                assert_eq!(fallbacks, ["a", "b"]);
                assert_eq!(input_price, Some(2.5));
                assert_eq!(output_price, Some(10.0));
            }
            other => panic!("parsed as {other:?}"),
        }
        let bad = [
            "model",
            "add",
            "m",
            "--provider",
            "p",
            "--input-price",
            "-1",
        ];
        assert!(parse(&bad).is_err());
        assert_eq!(prices(2.5, 10.0), "$2.50/$10.00 per Mtok");
        assert_eq!(prices(0.075, 0.3), "$0.075/$0.30 per Mtok");
        assert_eq!(prices(0.0, 0.0), "-");
        let model = pb::ModelInfo {
            alias: "gpt".into(),
            fallbacks: vec!["a".into(), "b".into()],
            input_price_per_mtok: 2.5,
            ..pb::ModelInfo::default()
        };
        let json = model_json(&model);
        assert_eq!(json["fallbacks"], json!(["a", "b"]));
        assert_eq!(json["input_price_per_mtok"], 2.5);
        assert_eq!(json["output_price_per_mtok"], 0.0);
        let text = model_rows(&[model]).render();
        assert!(text.contains("FALLBACKS  PRICE"), "{text}");
        assert!(text.contains("a,b        $2.50/$0.00 per Mtok"), "{text}");
    }
}
