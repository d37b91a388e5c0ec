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
use clap::{Args, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use warden_proto::admin::v1::{self as pb, admin_client::AdminClient};

use crate::output::{self, OutputFormat, Printer, Rows};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Issue, list and revoke JWT access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Create, list and revoke virtual keys (`wk_…`).
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
    /// Add an upstream key, read from stdin (never from the command line).
    Add { provider: String },
    /// Remove an upstream key by id.
    #[command(visible_alias = "rm")]
    Remove { provider: String, key_id: String },
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
    },
    /// List model aliases.
    #[command(visible_alias = "ls")]
    List,
    /// Remove a model alias.
    #[command(visible_alias = "rm")]
    Remove { alias: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a JWT; prints only the token on stdout.
    Issue {
        /// Who the token is for (the `sub` claim).
        #[arg(long)]
        subject: String,
        #[command(flatten)]
        grant: GrantArgs,
        /// Lifetime, e.g. `30d`, `12h` [default: the control plane's configured lifetime].
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
    },
    /// Revoke a token by its id (`jti`).
    Revoke { jti: String },
    /// List issued tokens.
    #[command(visible_alias = "ls")]
    List,
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
    },
    /// List virtual keys.
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a virtual key by id.
    Revoke { id: String },
}

/// What a token or virtual key may do.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Model aliases allowed, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_parser = list_item, num_args = 1)]
    models: Vec<String>,
    /// Scopes (`read`, `write`, `admin`), comma-separated [default: read,write].
    #[arg(long, value_delimiter = ',', value_parser = list_item, num_args = 1)]
    scopes: Vec<String>,
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
        AdminCommand::Provider(ProviderCommand::Key(ProviderKeyCommand::Add { provider })) => {
            Some(read_provider_key(provider)?)
        }
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
    }
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
        } => {
            let request = pb::AddProviderRequest {
                name,
                format: pb::ApiFormat::from(format).into(),
                base_url,
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
        ProviderCommand::Key(ProviderKeyCommand::Add { provider }) => {
            let key = key.ok_or_else(|| anyhow!("no provider key was read"))?;
            let request = pb::AddProviderKeyRequest {
                provider,
                secret: key.expose_secret().to_owned(),
            };
            let info = session.call(client.add_provider_key(request)).await?;
            let mut rows = Rows::new(&["ID", "PROVIDER", "FINGERPRINT", "CREATED"]);
            rows.push(vec![
                info.id.clone(),
                info.provider.clone(),
                info.fingerprint.clone(),
                output::timestamp(info.created_at),
            ]);
            out.table(&rows, &provider_key_json(&info))?;
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
    }
    Ok(())
}

async fn model(session: &Session, out: Printer, command: ModelCommand) -> anyhow::Result<()> {
    let mut client = session.client.clone();
    match command {
        ModelCommand::Add {
            alias,
            provider,
            upstream_model,
        } => {
            let request = pb::AddModelRequest {
                alias,
                provider,
                upstream_model: upstream_model.unwrap_or_default(),
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
        } => {
            let request = pb::IssueTokenRequest {
                subject,
                scopes: grant.scopes,
                models: grant.models,
                ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
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
            let json = response
                .tokens
                .iter()
                .map(|t| {
                    json!({
                        "jti": t.jti, "subject": t.subject, "scopes": t.scopes,
                        "models": t.models, "issued_at": t.issued_at,
                        "expires_at": t.expires_at, "revoked_at": t.revoked_at, "kid": t.kid,
                    })
                })
                .collect();
            out.table(&rows, &Value::Array(json))?;
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
        } => {
            let request = pb::CreateVirtualKeyRequest {
                name,
                owner: owner.unwrap_or_default(),
                models: grant.models,
                scopes: grant.scopes,
                ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
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
        VkeyCommand::Revoke { id } => {
            let request = pb::RevokeVirtualKeyRequest { id: id.clone() };
            session.call(client.revoke_virtual_key(request)).await?;
            out.done(
                &format!("virtual key {id:?} revoked"),
                &json!({ "id": id, "revoked": true }),
            )?;
        }
    }
    Ok(())
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
        let keys: Vec<String> = p
            .keys
            .iter()
            .map(|k| format!("{} (fp {})", k.id, k.fingerprint))
            .collect();
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
        "source": p.source, "keys": keys,
    })
}

fn provider_key_json(k: &pb::ProviderKeyInfo) -> Value {
    json!({
        "id": k.id, "provider": k.provider, "fingerprint": k.fingerprint,
        "created_at": k.created_at,
    })
}

fn model_rows(models: &[pb::ModelInfo]) -> Rows {
    let mut rows = Rows::new(&["ALIAS", "PROVIDER", "UPSTREAM MODEL", "SOURCE"]);
    for m in models {
        rows.push(vec![
            m.alias.clone(),
            m.provider.clone(),
            m.upstream_model.clone(),
            m.source.clone(),
        ]);
    }
    rows
}

fn model_json(m: &pb::ModelInfo) -> Value {
    json!({
        "alias": m.alias, "provider": m.provider, "upstream_model": m.upstream_model,
        "source": m.source,
    })
}

fn vkey_json(k: &pb::VirtualKeyInfo) -> Value {
    json!({
        "id": k.id, "name": k.name, "owner": k.owner, "models": k.models, "scopes": k.scopes,
        "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at,
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

/// A client for one control plane, and the address to name in errors.
struct Session {
    client: Client,
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
            client: AdminClient::with_interceptor(channel, Bearer(header)),
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
fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err("the ttl must be at least 1s; leave --ttl out for the default".to_owned());
    }
    Ok(ttl)
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
}
