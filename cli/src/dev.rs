//! `wardenctl dev`: the whole gateway in one process on one machine — the control plane and
//! one data-plane node with embedded defaults (encrypted file secret store, SQLite, a
//! generated master key under the data dir) and the built-in offline `echo` model. With
//! `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` set it also configures those providers.
//!
//! When ready it prints, each alone on a line, `WARDEN_URL=…`, `WARDEN_TOKEN=…`,
//! `WARDEN_CP_ADDR=…` and `WARDEN_ADMIN_TOKEN=…`, then a curl to paste. State survives a
//! restart with the same `--data-dir`; each start issues a fresh admin credential and client
//! token (revoking the previous dev admin credential).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use warden_control_plane::config::{RawConfig, RawModel, RawProvider};
use warden_control_plane::domain::CredentialTable;
use warden_control_plane::service::Actor;

/// Flags of `wardenctl dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where state is kept (database, encrypted secrets, master key).
    #[arg(long, default_value = "./.warden")]
    data_dir: PathBuf,
    /// Address of the OpenAI-compatible HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Address of the control plane's gRPC API (for wardenctl).
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Address of the node's ops listener (`/metrics`, `/readyz`, `/healthz`).
    #[arg(long, default_value = warden_data_plane::config::DEFAULT_OPS_ADDR)]
    ops_addr: SocketAddr,
}

/// Providers `dev` configures when their key is in the environment.
const CLOUD_PROVIDERS: [(&str, &str, &str, &str, &[&str]); 2] = [
    (
        "openai",
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"],
    ),
    (
        "anthropic",
        "anthropic",
        "https://api.anthropic.com/v1",
        "ANTHROPIC_API_KEY",
        &["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"],
    ),
];

fn raw_config(env: &HashMap<String, String>) -> RawConfig {
    let mut raw = RawConfig::default();
    for (name, format, base_url, var, models) in CLOUD_PROVIDERS {
        if env.get(var).is_none_or(|v| v.trim().is_empty()) {
            continue;
        }
        raw.providers.push(RawProvider {
            name: name.to_owned(),
            format: format.to_owned(),
            base_url: base_url.to_owned(),
            keys: vec![format!("env://{var}")],
            passthrough: false,
            drop_params: Vec::new(),
            ca_file: None,
        });
        for m in models {
            raw.models.push(RawModel {
                alias: (*m).to_owned(),
                provider: name.to_owned(),
                upstream_model: None,
                fallbacks: Vec::new(),
            });
        }
    }
    raw
}

/// Runs the gateway until Ctrl-C (SIGINT) or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    warden_core::telemetry::init(warden_core::telemetry::LogFormat::Text);
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("WARDEN_DEV".into(), "true".into());
    env.insert("WARDEN_GRPC_ADDR".into(), args.grpc_addr.to_string());
    env.insert(
        "WARDEN_DATA_DIR".into(),
        args.data_dir.display().to_string(),
    );
    let config = raw_config(&env).build_and_validate(&env)?;
    drop(env);

    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another Warden running?)",
                config.grpc_addr
            )
        })?;
    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another Warden running?)",
                args.http_addr
            )
        })?;
    let http_addr = http.local_addr()?;
    let ops = tokio::net::TcpListener::bind(args.ops_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another Warden running?)",
                args.ops_addr
            )
        })?;
    let ops_addr = ops.local_addr()?;

    let shutdown = CancellationToken::new();
    let control_plane = warden_control_plane::start(&config, grpc, shutdown.clone()).await?;
    let grpc_addr = control_plane.local_addr();
    let cp = control_plane.control_plane();
    let admin = cp
        .replace_credential(CredentialTable::Admin, "dev-session")
        .await?;
    let node_token = cp
        .replace_credential(CredentialTable::Node, "dev-node")
        .await?;
    let actor = Actor("system:dev".to_owned());
    let (client_token, _) = cp
        .issue_token(&actor, "dev", &[], &["*".to_owned()], None, None)
        .await?;

    let mut node_config = warden_data_plane::NodeConfig::new(
        http_addr,
        format!("http://{grpc_addr}"),
        "dev-node".to_owned(),
        node_token,
    );
    // The node's audit spool lives with the rest of the dev state.
    node_config.audit_spool.dir = args.data_dir.join("audit-spool");
    node_config.ops_addr = Some(ops_addr);
    // Providers on this machine (a local model server, a mock) are the point of dev.
    node_config.egress.policy.allow_loopback = true;
    let dp_task = tokio::spawn(warden_data_plane::run_on(
        node_config,
        warden_data_plane::Listeners {
            api: http,
            ops: Some(ops),
        },
        shutdown.clone(),
    ));
    wait_ready(ops_addr).await?;

    let url = format!("http://{http_addr}/v1");
    println!("WARDEN_URL={url}");
    println!("WARDEN_TOKEN={}", client_token.expose_secret());
    println!("WARDEN_CP_ADDR=http://{grpc_addr}");
    println!("WARDEN_ADMIN_TOKEN={}", admin.expose_secret());
    println!();
    println!(
        "# Warden is ready (state in {}). Try:",
        args.data_dir.display()
    );
    println!(
        "curl -s {url}/chat/completions -H \"Authorization: Bearer $WARDEN_TOKEN\" \
         -H 'content-type: application/json' \
         -d '{{\"model\":\"echo\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'"
    );
    println!("# (export the four variables above first; Ctrl-C stops Warden)");
    println!("# metrics and readiness: http://{ops_addr}/metrics and http://{ops_addr}/readyz");

    warden_core::shutdown::cancel_on_signal(&shutdown);
    shutdown.cancelled().await;
    let _ = dp_task.await;
    control_plane.wait().await?;
    Ok(())
}

/// Waits until the node's ops listener at `addr` answers `/readyz` with 200.
async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/readyz");
    for _ in 0..200 {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the data-plane node did not become ready within 5 s")
}
