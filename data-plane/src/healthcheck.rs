//! `warden-dp healthcheck`: GETs the ops listener's `/readyz` (or `/healthz` with
//! `--live`) and answers whether the node is ready (alive), within [`TIMEOUT`]. Meant for
//! container HEALTHCHECKs; it reads only the ops address (`--ops-addr` /
//! `WARDEN_OPS_ADDR`, the same setting the node listens on), nothing secret.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::DEFAULT_OPS_ADDR;

/// The whole check (connection, request, body) gives up after this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `warden-dp healthcheck` flags.
#[derive(Debug, clap::Parser)]
#[command(name = "warden-dp healthcheck")]
pub struct HealthcheckArgs {
    /// The node's ops listener (host:port), as given to the node.
    #[arg(long, env = "WARDEN_OPS_ADDR", default_value = DEFAULT_OPS_ADDR)]
    pub ops_addr: String,
    /// Ask `/healthz` (the process answers) instead of `/readyz` (it can serve requests:
    /// a snapshot loaded, not stale, the audit log writable).
    #[arg(long)]
    pub live: bool,
}

/// Asks the ops listener; `Ok` on a 2xx answer, else one line saying why.
pub async fn check(args: &HealthcheckArgs) -> Result<(), String> {
    let text = args.ops_addr.trim();
    if text == "off" {
        return Err("the ops listener is off (WARDEN_OPS_ADDR=off): nothing to ask".to_owned());
    }
    let mut addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("--ops-addr `{text}` is not host:port"))?;
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        addr.set_ip(loopback);
    }
    let path = if args.live { "/healthz" } else { "/readyz" };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let url = format!("http://{addr}{path}");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Err(format!("{url}: {status} {reason}").trim_end().to_owned())
}

/// `e` and its sources on one line.
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
