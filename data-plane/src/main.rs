//! `warden-dp`: the data-plane node binary. Parses flags and environment, sets up logging,
//! binds the API and ops listeners, then runs [`warden_data_plane::run_on`]. `warden-dp
//! healthcheck [--live]` asks a running node's ops listener instead
//! ([`warden_data_plane::healthcheck`]).

use std::collections::HashMap;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use warden_data_plane::config::Flags;
use warden_data_plane::healthcheck::HealthcheckArgs;
use warden_data_plane::{Listeners, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    warden_core::install_crypto_providers();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "healthcheck")
    {
        let args = HealthcheckArgs::parse_from(std::env::args_os().skip(1));
        if let Err(why) = warden_data_plane::healthcheck::check(&args).await {
            #[allow(clippy::print_stderr, reason = "the healthcheck's one line on stderr")]
            {
                eprintln!("unhealthy: {why}");
            }
            std::process::exit(1);
        }
        return Ok(());
    }
    let flags = Flags::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let otlp = flags.trace.otlp(&env).map_err(anyhow::Error::msg)?;
    let log_filter = flags.trace.log_filter().map_err(anyhow::Error::msg)?;
    let telemetry = warden_core::telemetry::init_with(
        flags.log_format()?,
        log_filter.as_deref(),
        otlp.as_ref(),
    )?;
    if let Some(otlp) = &otlp {
        tracing::info!(endpoint = %otlp.endpoint, service = %otlp.service_name, sample_ratio = otlp.sample_ratio, "traces exported over OTLP");
    }
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
    stop_on_signal_exit_on_second(&shutdown);
    let ran = warden_data_plane::run_on(config, Listeners { api, ops }, shutdown).await;
    // The spans of the last requests go out before the exit.
    telemetry.shutdown().await;
    ran?;
    Ok(())
}

/// Cancels `stop` on the first SIGINT or SIGTERM (the node then drains); on a second one,
/// exits at once with status 1 (the audit spool is durable: the next start sends the rest).
fn stop_on_signal_exit_on_second(stop: &CancellationToken) {
    let first = warden_core::shutdown::signal();
    let stop = stop.clone();
    tokio::spawn(async move {
        first.await;
        tracing::info!("stop signal received; draining (a second SIGTERM or SIGINT exits at once)");
        let second = warden_core::shutdown::signal();
        stop.cancel();
        second.await;
        tracing::warn!("second stop signal: exiting now without draining");
        std::process::exit(1);
    });
}
