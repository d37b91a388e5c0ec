//! `warden-dp`: the data-plane node binary. Parses flags and environment, sets up logging,
//! binds the API and ops listeners, then runs [`warden_data_plane::run_on`].

use std::collections::HashMap;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use warden_data_plane::config::Flags;
use warden_data_plane::{Listeners, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    warden_core::install_crypto_providers();
    let flags = Flags::parse();
    warden_core::telemetry::init(flags.log_format()?);
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = NodeConfig::from_flags(flags, &env)?;
    drop(env);
    let api = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let ops = match config.ops_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--ops-addr)"))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    warden_core::shutdown::cancel_on_signal(&shutdown);
    warden_data_plane::run_on(config, Listeners { api, ops }, shutdown).await?;
    Ok(())
}
