//! The control plane as `warden-cp` and `wardenctl dev` start it: in process through
//! [`warden_control_plane::start`] on `127.0.0.1:0`, answering the Admin API and stopping
//! cleanly on shutdown; and the `warden-cp` binary's `validate`, whose flags stand on
//! either side of the subcommand.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail by panicking"
)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use warden_control_plane::config::{Config, RawConfig};
use warden_proto::admin::v1 as pb;

/// A dev-mode config (generated master key, the `echo` model) on a free loopback port.
fn dev_config(dir: &Path) -> Config {
    let env: HashMap<String, String> = [
        ("WARDEN_DEV", "true".to_owned()),
        ("WARDEN_DATA_DIR", dir.display().to_string()),
        ("WARDEN_GRPC_ADDR", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    RawConfig::default().build_and_validate(&env).unwrap()
}

#[tokio::test]
async fn starts_in_process_serves_the_admin_api_and_stops_on_shutdown() {
    warden_core::install_crypto_providers();
    let dir = tempfile::tempdir().unwrap();
    let config = dev_config(dir.path());
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = warden_control_plane::start(&config, listener, shutdown.clone())
        .await
        .unwrap();
    assert_ne!(running.local_addr().port(), 0);
    assert_eq!(running.url(), format!("http://{}", running.local_addr()));
    let admin = running
        .control_plane()
        .bootstrap_admin()
        .await
        .unwrap()
        .expect("a first start issues an admin credential");

    let channel = tonic::transport::Endpoint::from_shared(running.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::admin_client::AdminClient::new(channel);
    let mut request = tonic::Request::new(pb::ListModelsRequest::default());
    request.metadata_mut().insert(
        warden_proto::AUTHORIZATION,
        format!("Bearer {}", admin.expose_secret()).parse().unwrap(),
    );
    let models = client.list_models(request).await.unwrap().into_inner();
    assert!(
        models
            .models
            .iter()
            .any(|m| m.alias == warden_control_plane::ECHO),
        "{models:?}"
    );
    let refused = client
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the control plane did not stop within 10 s")
        .unwrap();
}

fn warden_cp(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warden-cp"))
        .args(args.iter().map(|a| {
            if *a == "CONFIG" {
                config.as_os_str()
            } else {
                a.as_ref()
            }
        }))
        .env_clear()
        .env(
            "WARDEN_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .output()
        .unwrap()
}

#[test]
fn validate_takes_the_config_flag_on_either_side_of_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden-cp.toml");
    std::fs::write(&config, "[server]\ngrpc_addr = \"127.0.0.1:1\"\n").unwrap();
    for args in [
        ["--config", "CONFIG", "validate"],
        ["validate", "--config", "CONFIG"],
        ["validate", "-c", "CONFIG"],
    ] {
        let out = warden_cp(&args, &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "config ok\n",
            "{args:?}"
        );
    }

    // The file named after the subcommand is the one read: its error names the field.
    std::fs::write(&config, "[server]\ngrpc_adress = \"127.0.0.1:1\"\n").unwrap();
    for args in [
        ["--config", "CONFIG", "validate"],
        ["validate", "--config", "CONFIG"],
    ] {
        let out = warden_cp(&args, &config);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("grpc_adress"), "{args:?}: {stderr}");
    }
}
