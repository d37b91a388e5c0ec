//! `warden-cp healthcheck`: asks the gRPC listener's `grpc.health.v1.Health/Check` (see
//! [`crate::grpc::health`]) and answers whether the replica is SERVING, within
//! [`TIMEOUT`]. Meant for container HEALTHCHECKs and probes that run a command: it needs no
//! master key and no credential, only the listener's address and, when the listener serves
//! TLS, the CA that signed its certificate (and a client certificate when it requires one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The whole check (connection, TLS handshake, call) gives up after this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how to ask.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The gRPC listener's address; an unspecified one (`0.0.0.0`, `[::]`) is asked on
    /// the loopback address.
    pub addr: Option<SocketAddr>,
    /// The listener serves TLS: the CA file that signed its certificate.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate is checked against (default: the address).
    pub server_name: Option<String>,
    /// Client certificate and key, for a listener that requires one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The service asked about: `""` (the default) is the whole server.
    pub service: String,
}

/// Asks `probe.addr`; `Ok` when it answers SERVING, else one line saying why.
pub async fn check(probe: &Probe) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, ask(probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs_f32())),
    }
}

async fn ask(probe: &Probe) -> Result<(), String> {
    let mut addr = probe
        .addr
        .ok_or_else(|| "no gRPC address (--grpc-addr or WARDEN_GRPC_ADDR)".to_owned())?;
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        addr.set_ip(loopback);
    }
    let scheme = if probe.ca_file.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("invalid address {addr}: {e}"))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT);
    if let Some(ca) = &probe.ca_file {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(name) = &probe.server_name {
            tls = tls.domain_name(name.clone());
        }
        if let Some((cert, key)) = &probe.client_cert {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", chain(&e)))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: probe.service.clone(),
        })
        .await
        .map_err(|s| {
            format!(
                "{addr}: health check failed: {:?}: {}",
                s.code(),
                s.message()
            )
        })?;
    let status =
        ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(format!("{addr}: {}", status.as_str_name()))
    }
}

/// `e` and its sources on one line (a connection error's cause is in its source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
