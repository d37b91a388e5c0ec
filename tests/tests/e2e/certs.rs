//! `wardenctl certs dev`: the files it writes (a CA, a server certificate for
//! localhost/127.0.0.1, node and admin client certificates; keys 0600), that it never
//! overwrites without `--force`, that the certificates are what TLS verifiers expect (chain,
//! names, extended key usage), and that a real `warden-cp` serving `server.pem` is reached by
//! `wardenctl --ca-file ca.pem` over https — and refused with another CA.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use warden_tests::cluster::{bin, eventually, free_port};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const FILES: [&str; 8] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "node.pem",
    "node.key",
    "admin.pem",
    "admin.key",
];

fn certs_dev(out: &Path, extra: &[&str]) -> Output {
    Command::new(bin("wardenctl").unwrap())
        .args(["certs", "dev", "--out"])
        .arg(out)
        .args(extra)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn der(dir: &Path, name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(dir.join(name)).unwrap()
}

fn parse<'a>(der: &'a CertificateDer<'a>) -> X509Certificate<'a> {
    x509_parser::parse_x509_certificate(der.as_ref()).unwrap().1
}

/// (serverAuth, clientAuth) of a leaf certificate's extended key usage.
fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let ext = cert
        .extended_key_usage()
        .unwrap()
        .expect("an EKU extension");
    (ext.value.server_auth, ext.value.client_auth)
}

#[test]
fn certs_dev_writes_a_ca_a_server_and_two_client_certificates() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let out = certs_dev(&dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in FILES {
        assert!(stdout.contains(name), "names {name}: {stdout}");
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        if name.ends_with(".key") {
            assert_eq!(mode, 0o600, "{name}");
            let key = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(key.contains("BEGIN PRIVATE KEY"), "{name}");
        }
    }
    assert!(
        stdout.contains("--cp-ca-file") && stdout.contains("--ca-file"),
        "prints the flags to use: {stdout}"
    );
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);

    // What each certificate says.
    let (ca_der, server_der, node_der, admin_der) = (
        der(&dir, "ca.pem"),
        der(&dir, "server.pem"),
        der(&dir, "node.pem"),
        der(&dir, "admin.pem"),
    );
    let ca = parse(&ca_der);
    assert!(ca.is_ca(), "ca.pem has CA:TRUE");
    let server = parse(&server_der);
    assert!(!server.is_ca());
    assert_eq!(server.issuer(), ca.subject());
    let sans = server
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN extension")
        .value
        .general_names
        .clone();
    assert!(
        sans.contains(&GeneralName::DNSName("localhost")),
        "{sans:?}"
    );
    assert!(
        sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
        "{sans:?}"
    );
    assert_eq!(
        eku(&server),
        (true, false),
        "server.pem is for servers only"
    );
    for client in [&node_der, &admin_der] {
        let cert = parse(client);
        assert!(!cert.is_ca());
        assert_eq!(cert.issuer(), ca.subject());
        assert_eq!(
            eku(&cert),
            (false, true),
            "client certificates are for clients only"
        );
    }

    // And what a TLS verifier makes of them, with ca.pem as the only root.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).unwrap();
    let roots = Arc::new(roots);
    let servers = rustls::client::WebPkiServerVerifier::builder(Arc::clone(&roots))
        .build()
        .unwrap();
    let now = UnixTime::now();
    for name in ["localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        servers
            .verify_server_cert(&server_der, &[], &name, &[], now)
            .unwrap();
        assert!(
            servers
                .verify_server_cert(&node_der, &[], &name, &[], now)
                .is_err(),
            "a client certificate does not serve"
        );
    }
    let other = ServerName::try_from("warden.invalid").unwrap();
    assert!(
        servers
            .verify_server_cert(&server_der, &[], &other, &[], now)
            .is_err()
    );
    let clients = rustls::server::WebPkiClientVerifier::builder(roots)
        .build()
        .unwrap();
    clients.verify_client_cert(&node_der, &[], now).unwrap();
    clients.verify_client_cert(&admin_der, &[], now).unwrap();
    assert!(
        clients.verify_client_cert(&server_der, &[], now).is_err(),
        "the server certificate does not authenticate a client"
    );

    // Never overwritten without --force; with it, every file is new (a new CA).
    let before = std::fs::read(dir.join("ca.pem")).unwrap();
    let again = certs_dev(&dir, &[]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
    let forced = certs_dev(&dir, &["--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
    assert_eq!(
        std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

/// A `warden-cp` serving `cert`/`key` on a free port; returns the child, the port and the
/// admin credential it printed.
async fn start_tls_cp(dir: &Path, cert: &Path, key: &Path) -> (std::process::Child, u16, String) {
    let port = free_port().unwrap();
    let stdout = dir.join("cp-stdout");
    let child = Command::new(bin("warden-cp").unwrap())
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("cp-data"))
        .env_clear()
        .env(
            "WARDEN_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env("WARDEN_TLS_CERT_FILE", cert)
        .env("WARDEN_TLS_KEY_FILE", key)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.join("cp-stderr")).unwrap())
        .spawn()
        .unwrap();
    let text = eventually(Duration::from_secs(20), "warden-cp to be ready", || {
        let path = stdout.clone();
        async move {
            let t = std::fs::read_to_string(&path).ok()?;
            t.contains("WARDEN_CP_ADDR=").then_some(t)
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(dir.join("cp-stderr")).unwrap_or_default()
        )
    });
    let admin = text
        .lines()
        .find_map(|l| l.strip_prefix("WARDEN_ADMIN_TOKEN="))
        .expect("the first start prints an admin credential")
        .to_owned();
    (child, port, admin)
}

fn ctl(addr: &str, ca: &Path, admin: &str, args: &[&str]) -> Output {
    Command::new(bin("wardenctl").unwrap())
        .arg("--cp-addr")
        .arg(addr)
        .arg("--ca-file")
        .arg(ca)
        .args(args)
        .env_clear()
        .env("WARDEN_ADMIN_TOKEN", admin)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_serving_the_dev_certificate_is_reached_with_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let other = tmp.path().join("other");
    assert!(certs_dev(&certs, &[]).status.success());
    assert!(certs_dev(&other, &[]).status.success());
    let (mut cp, port, admin) = start_tls_cp(
        tmp.path(),
        &certs.join("server.pem"),
        &certs.join("server.key"),
    )
    .await;
    let ca = certs.join("ca.pem");
    for host in ["localhost", "127.0.0.1"] {
        let addr = format!("https://{host}:{port}");
        let out = tokio::task::block_in_place(|| ctl(&addr, &ca, &admin, &["nodes"]));
        assert!(
            out.status.success(),
            "{addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A CA that did not sign the server's certificate: the handshake fails.
    let addr = format!("https://localhost:{port}");
    let out = tokio::task::block_in_place(|| ctl(&addr, &other.join("ca.pem"), &admin, &["nodes"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(&admin), "{stderr}");
    let _ = cp.kill();
    let _ = cp.wait();
}
