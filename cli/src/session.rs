//! The connection to the control plane's admin API: [`ConnectArgs`] (the global flags that
//! say where it is and which admin credential to present) and [`Session`], which owns the
//! clients and turns a failed call into a message that is safe and useful to show (it never
//! contains the admin credential).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use warden_core::plaintext::{Transport, authority_host, is_loopback_host};
use warden_proto::admin::v1::admin_client::AdminClient;
use warden_proto::audit::v1::audit_stream_client::AuditStreamClient;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach and authenticate to the control plane. Global: accepted before or after the
/// subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct ConnectArgs {
    /// Control plane gRPC address, or several replicas' addresses comma-separated;
    /// `host:port` means `https://host:port`, or `http://host:port` for a loopback host
    /// (`localhost`, 127.0.0.0/8, `::1`). With several, wardenctl uses the first that
    /// accepts a connection and tries the next only when a connection could not be made: a
    /// call that was sent and then failed or timed out is never sent again (check its
    /// outcome before repeating a change).
    #[arg(
        long,
        global = true,
        env = "WARDEN_CP_ADDR",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ',',
        value_parser = normalize_addr
    )]
    pub cp_addr: Vec<String>,

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

    /// Send the admin credential over plain `http://` to a control plane that is not on
    /// this machine (readable by anyone on the network path; a warning is printed).
    #[arg(long, global = true, env = "WARDEN_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,

    /// PEM client certificate to present to an https:// control plane that checks them: a
    /// second factor next to the admin credential, never a replacement. Before the
    /// subcommand (`credential issue --client-cert` names the certificate to bind).
    #[arg(
        long,
        env = "WARDEN_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "WARDEN_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,

    /// Items per call when listing [default: the control plane's, 500]; every page is
    /// read and shown.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: Option<u32>,
}

/// The `warden.admin.v1.Admin` client, carrying the admin credential.
pub type Client = AdminClient<InterceptedService<Channel, Bearer>>;
/// The `warden.audit.v1.AuditStream` client, carrying the admin credential.
pub type AuditClient = AuditStreamClient<InterceptedService<Channel, Bearer>>;

/// Clients for one control plane, and the address to name in errors.
pub struct Session {
    pub client: Client,
    pub audit: AuditClient,
    addr: String,
    /// `--page-size` (0 = the control plane's default).
    pub(crate) page_size: u32,
}

impl Session {
    /// Checks the flags and connects to the first control-plane address that accepts a
    /// connection (the next is tried only when one could not be made).
    pub async fn open(args: &ConnectArgs) -> anyhow::Result<Self> {
        if args.cp_addr.is_empty() {
            bail!("--cp-addr names no control plane address");
        }
        for addr in &args.cp_addr {
            check_transport(addr, args.allow_plaintext)?;
        }
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

        let https = args.cp_addr.iter().any(|a| a.starts_with("https://"));
        if https && args.cp_addr.iter().any(|a| !a.starts_with("https://")) {
            bail!(
                "--cp-addr mixes https:// and http:// addresses: give every replica the same scheme"
            );
        }
        let mut tls = None;
        match (&args.ca_file, https) {
            (Some(path), true) => {
                let pem = tokio::fs::read(path)
                    .await
                    .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
                let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                if let Some(identity) = client_identity(args).await? {
                    config = config.identity(identity);
                }
                tls = Some((config, path));
            }
            (Some(_), false) => bail!("--ca-file needs an https:// control plane address"),
            (None, true) => bail!(
                "an https:// control plane needs --ca-file (the CA that signed its certificate)"
            ),
            (None, false) => {}
        }
        if !https && args.client_cert.is_some() {
            bail!("--client-cert needs an https:// control plane address");
        }
        let mut failures = Vec::new();
        let mut connected = None;
        for addr in &args.cp_addr {
            let mut endpoint = Endpoint::from_shared(addr.clone())
                .with_context(|| format!("invalid control plane address {addr:?}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT);
            if let Some((config, path)) = &tls {
                endpoint = endpoint.tls_config(config.clone()).with_context(|| {
                    format!(
                        "--ca-file {} holds no usable CA certificate",
                        path.display()
                    )
                })?;
            }
            // Only the connection is retried elsewhere: no call has been sent yet.
            match endpoint.connect().await {
                Ok(channel) => {
                    connected = Some((channel, addr.clone()));
                    break;
                }
                Err(e) => failures.push((addr.clone(), connect_error(&e))),
            }
        }
        let Some((channel, addr)) = connected else {
            bail!(unreachable(&failures));
        };
        Ok(Self {
            client: AdminClient::with_interceptor(channel.clone(), Bearer(header.clone()))
                .max_decoding_message_size(warden_proto::GRPC_RESPONSE_MAX_BYTES)
                .max_encoding_message_size(warden_proto::GRPC_REQUEST_MAX_BYTES),
            audit: AuditStreamClient::with_interceptor(channel, Bearer(header))
                .max_decoding_message_size(warden_proto::GRPC_RESPONSE_MAX_BYTES)
                .max_encoding_message_size(warden_proto::GRPC_REQUEST_MAX_BYTES),
            addr,
            page_size: args.page_size.unwrap_or(0),
        })
    }

    /// Awaits one call, turning a failure into a message fit to show.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> anyhow::Result<T> {
        call.await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.error(&status))
    }

    /// A failed call (or stream message) as an error fit to show.
    pub fn error(&self, status: &Status) -> anyhow::Error {
        anyhow!(describe(status, &self.addr))
    }
}

/// Why a connection could not be made: the error's causes (tonic's own message is only
/// "transport error").
fn connect_error(error: &tonic::transport::Error) -> String {
    let detail = chain(error);
    if detail.is_empty() {
        error.to_string()
    } else {
        detail
    }
}

/// The error when no address accepted a connection, naming each with its cause.
fn unreachable(failures: &[(String, String)]) -> String {
    match failures {
        [(addr, why)] => format!("cannot reach the control plane at {addr}: {why}"),
        _ => format!(
            "cannot reach the control plane at any of its {} addresses: {}",
            failures.len(),
            failures
                .iter()
                .map(|(addr, why)| format!("{addr}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// `--client-cert` and `--client-key`, read, when given.
async fn client_identity(args: &ConnectArgs) -> anyhow::Result<Option<Identity>> {
    let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) else {
        return Ok(None);
    };
    let cert_pem = tokio::fs::read(cert)
        .await
        .with_context(|| format!("cannot read --client-cert {}", cert.display()))?;
    let key_pem = tokio::fs::read(key)
        .await
        .with_context(|| format!("cannot read --client-key {}", key.display()))?;
    Ok(Some(Identity::from_pem(cert_pem, key_pem)))
}

/// Adds `authorization: Bearer <admin credential>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

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
        // Raised here after the call was sent (the connection broke): it is not sent again.
        _ if local => with_detail(
            &format!(
                "the call to the control plane at {addr} failed after it was sent; it was not repeated (check whether it took effect)"
            ),
            &chain(status),
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

/// Refuses to send the admin credential in clear off this machine unless `allow`; with
/// `allow`, says on stderr that it will. No name is resolved here.
fn check_transport(addr: &str, allow: bool) -> anyhow::Result<()> {
    if Transport::of(addr) != Transport::PlainRemote {
        return Ok(());
    }
    if !allow {
        bail!(
            "refusing to send the admin credential in clear to {addr}: it is not a loopback \
             address; use https:// (with --ca-file), or pass --allow-plaintext \
             (WARDEN_ALLOW_PLAINTEXT=true) on a network you trust"
        );
    }
    eprintln!(
        "warning: --allow-plaintext: the admin credential goes to {addr} unencrypted; anyone on \
         the network path can read and reuse it"
    );
    Ok(())
}

/// `--cp-addr`: adds a scheme when none is given — `http://` for a loopback host,
/// `https://` for any other; only http and https are accepted.
fn normalize_addr(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let default_scheme = if is_loopback_host(authority_host(raw.trim_end_matches('/'))) {
        "http"
    } else {
        "https"
    };
    let (scheme, rest) = raw.split_once("://").unwrap_or((default_scheme, raw));
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
        assert_eq!(
            normalize_addr("cp.invalid:50051").unwrap(),
            "https://cp.invalid:50051"
        );
        assert_eq!(normalize_addr("[::1]:50051").unwrap(), "http://[::1]:50051");
        assert_eq!(
            normalize_addr("http://cp.invalid:50051").unwrap(),
            "http://cp.invalid:50051"
        );
        assert!(normalize_addr("").is_err());
        assert!(normalize_addr("https://").is_err());
        assert!(normalize_addr("ftp://cp:21").is_err());
    }

    #[test]
    fn refuses_plaintext_off_loopback_unless_allowed() {
        assert!(check_transport("http://127.0.0.1:50051", false).is_ok());
        assert!(check_transport("https://cp.invalid:50051", false).is_ok());
        let refused = check_transport("http://cp.invalid:50051", false)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--allow-plaintext"), "{refused}");
        assert!(check_transport("http://cp.invalid:50051", true).is_ok());
    }

    #[test]
    fn takes_a_list_of_addresses_and_names_each_unreachable_one() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            connect: ConnectArgs,
        }
        let cli =
            Cli::try_parse_from(["t", "--cp-addr", "127.0.0.1:1, https://cp.example:2"]).unwrap();
        assert_eq!(
            cli.connect.cp_addr,
            vec!["http://127.0.0.1:1", "https://cp.example:2"]
        );
        assert!(Cli::try_parse_from(["t", "--cp-addr", "127.0.0.1:1,ftp://x:1"]).is_err());
        let one = unreachable(&[("http://a:1".into(), "refused".into())]);
        assert_eq!(one, "cannot reach the control plane at http://a:1: refused");
        let two = unreachable(&[
            ("http://a:1".into(), "refused".into()),
            ("http://b:2".into(), "timed out".into()),
        ]);
        assert!(
            two.contains("any of its 2 addresses")
                && two.contains("http://a:1: refused; http://b:2: timed out"),
            "{two}"
        );
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
}
