//! grpc.health.v1 on a real `warden-cp` and the `healthcheck` subcommands of both binaries
//! (#15: every replica serves the health service; #16: container HEALTHCHECKs). A tonic
//! health client gets SERVING for the server and each API without a credential, NOT_FOUND
//! for an unknown service, and a Watch stream NOT_SERVING on SIGTERM; `warden-cp
//! healthcheck` and `warden-dp healthcheck [--live]` exit 0 against running planes and 1,
//! with one line on stderr, against a stopped control plane, a node that is up but not
//! ready, and a stopped node. Under mTLS the probe needs the CA and a client certificate.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use warden_tests::cluster::{TestCluster, bin, eventually};

use super::mtls::{Pki, cluster, s};

const SERVICES: [&str; 4] = [
    "",
    "warden.admin.v1.Admin",
    "warden.sync.v1.Sync",
    "warden.audit.v1.AuditStream",
];

/// Runs `binary args`, with no WARDEN_* variable from this process, bounded.
fn run(binary: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(bin(binary).unwrap());
    command.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("WARDEN_") {
            command.env_remove(&k);
        }
    }
    let started = Instant::now();
    let out = command.output().unwrap();
    // The check is bounded by 3 s; the process start adds little.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{binary} {args:?} took {:?}",
        started.elapsed()
    );
    out
}

fn assert_exit(out: &Output, code: i32, stderr_has: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(stderr_has),
        "stderr {stderr:?} lacks {stderr_has:?}"
    );
    if code == 1 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_service_and_healthcheck_subcommands_follow_both_planes() {
    let mut c = TestCluster::start(1).await.unwrap();
    let grpc = format!("127.0.0.1:{}", c.cp_port);

    // Every service SERVING, no credential sent; an unknown name is NOT_FOUND.
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in SERVICES {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "warden.nope.v1.Nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Running planes: exit 0, by flag and by environment.
    assert_exit(
        &run("warden-cp", &["healthcheck", "--grpc-addr", &grpc]),
        0,
        "",
    );
    let mut by_env = std::process::Command::new(bin("warden-cp").unwrap());
    let out = by_env
        .arg("healthcheck")
        .env("WARDEN_GRPC_ADDR", &grpc)
        .output()
        .unwrap();
    assert_exit(&out, 0, "");
    // And from the config file's server.grpc_addr (no master key needed).
    let config = c.dir.path().join("healthcheck.toml");
    std::fs::write(&config, format!("[server]\ngrpc_addr = \"{grpc}\"\n")).unwrap();
    assert_exit(
        &run("warden-cp", &["--config", &s(&config), "healthcheck"]),
        0,
        "",
    );
    let ops = format!("127.0.0.1:{}", c.nodes[0].ops_port);
    assert_exit(
        &run("warden-dp", &["healthcheck", "--ops-addr", &ops]),
        0,
        "",
    );
    assert_exit(
        &run("warden-dp", &["healthcheck", "--live", "--ops-addr", &ops]),
        0,
        "",
    );
    // A service that is not there is not healthy.
    assert_exit(
        &run(
            "warden-cp",
            &["healthcheck", "--grpc-addr", &grpc, "--service", "x.Y"],
        ),
        1,
        "NotFound",
    );

    // SIGTERM: a Watch stream sees NOT_SERVING as shutdown begins, then ends.
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let mut cp = c.cp.take().unwrap();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &cp.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("no NOT_SERVING within 10 s of SIGTERM");
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    let exited = tokio::task::spawn_blocking(move || cp.wait())
        .await
        .unwrap();
    assert!(exited.is_ok());

    // The control plane stopped: its check fails; a node started now is alive, not ready.
    assert_exit(
        &run("warden-cp", &["healthcheck", "--grpc-addr", &grpc]),
        1,
        "cannot connect",
    );
    let fresh = c.spawn_node_unready().unwrap();
    let fresh_ops = format!("127.0.0.1:{}", c.nodes[fresh].ops_port);
    let http = c.http.clone();
    let live = c.nodes[fresh].ops_url("/healthz");
    eventually(Duration::from_secs(20), "the new node's /healthz", || {
        let (http, live) = (http.clone(), live.clone());
        async move {
            http.get(&live)
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        }
    })
    .await
    .unwrap();
    assert_exit(
        &run("warden-dp", &["healthcheck", "--ops-addr", &fresh_ops]),
        1,
        "503",
    );
    assert_exit(
        &run(
            "warden-dp",
            &["healthcheck", "--live", "--ops-addr", &fresh_ops],
        ),
        0,
        "",
    );
    // A stopped node: nothing answers.
    c.nodes[fresh].child.kill().unwrap();
    c.nodes[fresh].child.wait().unwrap();
    assert_exit(
        &run(
            "warden-dp",
            &["healthcheck", "--live", "--ops-addr", &fresh_ops],
        ),
        1,
        "/healthz",
    );
    assert_exit(
        &run("warden-dp", &["healthcheck", "--ops-addr", "nonsense"]),
        1,
        "not host:port",
    );
}

/// With required client certificates the health service is behind the same TLS: the probe
/// needs the CA and a client certificate, and says so when it lacks them.
#[tokio::test(flavor = "multi_thread")]
async fn under_mtls_the_health_check_needs_the_ca_and_a_client_certificate() {
    let pki = Pki::new("warden health CA");
    pki.server();
    pki.client("admin");
    pki.client("probe");
    let c = cluster(&pki, Some(true)).await;
    let grpc = format!("127.0.0.1:{}", c.cp_port);
    let (cert, key) = pki.identity("probe");
    let ca = s(&pki.ca_file());

    // A tonic client with the probe's certificate: SERVING.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(pki.ca_file()).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&cert).unwrap(),
            std::fs::read(&key).unwrap(),
        ));
    let channel = Endpoint::from_shared(format!("https://{grpc}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let with_cert = ["healthcheck", "--grpc-addr", &grpc, "--ca-file", &ca];
    let mut full = with_cert.to_vec();
    let (cert_s, key_s) = (s(&cert), s(&key));
    full.extend(["--client-cert", &cert_s, "--client-key", &key_s]);
    assert_exit(&run("warden-cp", &full), 0, "");
    // Without a client certificate the handshake fails; without the CA it cannot start.
    assert_exit(&run("warden-cp", &with_cert), 1, "unhealthy");
    let mut no_ca = std::process::Command::new(bin("warden-cp").unwrap());
    let out = no_ca
        .args(["healthcheck", "--grpc-addr", &grpc])
        .env("WARDEN_TLS_CERT_FILE", s(Path::new(&cert)))
        .env_remove("WARDEN_HEALTHCHECK_CA_FILE")
        .output()
        .unwrap();
    assert_exit(&out, 1, "--ca-file");
}
