//! mTLS between the planes on a real `warden-cp` (#13 item 2): with `client_ca_file`, a
//! connection without a client certificate from that CA fails its TLS handshake; a node
//! with one syncs; a node credential bound to a certificate key (`node credential issue
//! --client-cert`) is refused over a connection presenting another valid certificate
//! (`certificate_mismatch`, audited) and accepted with its own; with client certificates
//! optional, an admin may come without one but a node may not; and the control plane's own
//! certificate reloads when its files change, for new connections, while an open
//! `Sync.Watch` stream stays up. Certificates are made here with `rcgen`; everything runs on
//! 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use warden_proto::sync::v1 as sync_pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{CpTls, Options, TestCluster, eventually};

/// A throwaway CA and the files of the certificates it signed, in a temporary directory.
pub(super) struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(super) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    pub(super) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(super) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes `<name>.pem` and `<name>.key` (a certificate for `sans`, signed by the CA,
    /// for `usage`); returns the certificate's DER.
    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Written whole, then renamed: a reader never sees half a file.
        for (file, text) in [
            (format!("{name}.key"), key.serialize_pem()),
            (format!("{name}.pem"), cert.pem()),
        ] {
            let tmp = self.path(&format!("{file}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(&file)).unwrap();
        }
        cert.der().to_vec()
    }

    pub(super) fn server(&self) -> Vec<u8> {
        self.issue(
            "server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub(super) fn client(&self, name: &str) {
        self.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth);
    }

    pub(super) fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }
}

pub(super) fn s(path: &Path) -> String {
    path.display().to_string()
}

/// A cluster whose control plane serves TLS with `pki`'s server certificate, checks client
/// certificates against its CA when `client_ca` says so (`Some(required)`), and re-reads
/// its files every second; `wardenctl` presents the `admin` certificate.
pub(super) async fn cluster(pki: &Pki, client_ca: Option<bool>) -> TestCluster {
    let mut cp_env = vec![
        (
            "WARDEN_TLS_CERT_FILE".to_owned(),
            s(&pki.path("server.pem")),
        ),
        ("WARDEN_TLS_KEY_FILE".to_owned(), s(&pki.path("server.key"))),
        ("WARDEN_TLS_RELOAD_INTERVAL".to_owned(), "1s".to_owned()),
    ];
    if let Some(required) = client_ca {
        cp_env.push(("WARDEN_TLS_CLIENT_CA_FILE".to_owned(), s(&pki.ca_file())));
        cp_env.push((
            "WARDEN_TLS_REQUIRE_CLIENT_CERTS".to_owned(),
            required.to_string(),
        ));
    }
    TestCluster::start_with(
        0,
        Options {
            cp_env,
            cp_tls: Some(CpTls {
                ca_file: pki.ca_file(),
                client: client_ca.is_some().then(|| pki.identity("admin")),
            }),
            node_args: vec!["--cp-ca-file".to_owned(), s(&pki.ca_file())],
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// A gRPC channel to the control plane, trusting `pki`'s CA and presenting the client
/// certificate `client` when given.
async fn channel(c: &TestCluster, pki: &Pki, client: Option<&str>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(pki.ca_file()).unwrap()));
    if let Some(name) = client {
        let (cert, key) = pki.identity(name);
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Endpoint::from_shared(c.cp_addr())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// `Sync.Watch` as node `node_id` with `credential` over `channel`: the stream, or the
/// status it was refused with.
async fn watch(
    channel: Channel,
    credential: &str,
    node_id: &str,
) -> Result<tonic::Streaming<sync_pb::Snapshot>, tonic::Status> {
    let keys = warden_core::seal::NodeKeyPair::generate().unwrap();
    let mut request = tonic::Request::new(sync_pb::NodeHello {
        node_id: node_id.to_owned(),
        software_version: "e2e".into(),
        have_version: 0,
        seal_public_key: keys.public_key().to_bytes().to_vec(),
        accepts_deltas: false,
    });
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    SyncClient::new(channel)
        .watch(request)
        .await
        .map(tonic::Response::into_inner)
}

/// A raw TLS session with the control plane, trusting `pki`'s CA and presenting the client
/// certificate `client` when given: the server's certificate (DER), and whether the
/// server then speaks (its HTTP/2 SETTINGS) rather than ending the session.
async fn raw_tls(port: u16, pki: &Pki, client: Option<&str>) -> (Vec<u8>, bool) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_file()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        Some(name) => {
            let (cert, key) = pki.identity(name);
            builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(cert).unwrap()],
                    rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return (Vec::new(), false);
    };
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    // The HTTP/2 client preface: a server that accepted the session answers with SETTINGS.
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
    (server_cert, matches!(read, Ok(Ok(n)) if n > 0))
}

/// The denied `auth.node` audit rows' details.
fn node_denials(c: &TestCluster) -> Vec<BTreeMap<String, String>> {
    let rows = c
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "auth.node",
                "--format",
                "json",
            ],
            None,
        )
        .unwrap();
    rows.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["result"] == "denied")
        .map(|r| warden_core::audit_detail::parse(r["detail"].as_str().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_bound_node_credential_needs_its_certificate_and_every_connection_a_client_certificate() {
    let pki = Pki::new("warden e2e CA");
    pki.server();
    for name in ["admin", "node-a", "node-b"] {
        pki.client(name);
    }
    let mut c = cluster(&pki, Some(true)).await;

    // Without a client certificate, or with one from another CA, the handshake fails: the
    // server ends the session instead of speaking HTTP/2.
    let (_, speaks) = raw_tls(c.cp_port, &pki, None).await;
    assert!(!speaks, "a session without a client certificate went on");
    let stranger = Pki::new("another CA");
    stranger.client("node-a");
    std::fs::copy(stranger.path("node-a.pem"), pki.path("stranger.pem")).unwrap();
    std::fs::copy(stranger.path("node-a.key"), pki.path("stranger.key")).unwrap();
    let (_, speaks) = raw_tls(c.cp_port, &pki, Some("stranger")).await;
    assert!(!speaks, "a client certificate from another CA was accepted");
    let (_, speaks) = raw_tls(c.cp_port, &pki, Some("node-a")).await;
    assert!(speaks, "a client certificate from the CA was refused");
    // A gRPC call without a certificate never reaches a handler (nothing is audited).
    let no_cert = match channel(&c, &pki, None).await {
        Ok(ch) => watch(ch, &c.node_token, "no-cert")
            .await
            .err()
            .map(|s| s.code()),
        Err(_) => Some(Code::Unavailable),
    };
    assert!(
        matches!(no_cert, Some(code) if code != Code::Unauthenticated && code != Code::PermissionDenied),
        "{no_cert:?}"
    );

    // A node credential bound to node-a's key.
    let bound = c
        .ctl_ok(
            &[
                "node",
                "credential",
                "issue",
                "--name",
                "edge-a",
                "--client-cert",
                &s(&pki.path("node-a.pem")),
            ],
            None,
        )
        .unwrap();
    let listed = c
        .ctl_ok(&["-o", "json", "node", "credential", "list"], None)
        .unwrap();
    assert!(listed.contains("cert_spki_sha256"), "{listed}");

    // A node process with node-a's certificate syncs with it.
    let (cert, key) = pki.identity("node-a");
    c.options.node_args.extend([
        "--cp-client-cert-file".to_owned(),
        s(&cert),
        "--cp-client-key-file".to_owned(),
        s(&key),
    ]);
    let unbound = std::mem::replace(&mut c.node_token, bound.clone());
    c.add_node().await.unwrap();

    // The same wn_ over a connection with node-b's (valid) certificate is refused…
    let refused = watch(
        channel(&c, &pki, Some("node-b")).await.unwrap(),
        &bound,
        "thief",
    )
    .await
    .expect_err("a bound credential was accepted with another certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(!refused.message().contains(&bound));
    // …and audited as such.
    let rows = eventually(
        Duration::from_secs(10),
        "the certificate_mismatch row",
        || {
            let rows = node_denials(&c);
            async move {
                rows.into_iter()
                    .find(|r| r.get("reason").map(String::as_str) == Some("certificate_mismatch"))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(rows.get("client_ip").map(String::as_str), Some("127.0.0.1"));
    // With node-a's certificate it works (the unbound cluster credential too, with any
    // certificate from the CA).
    let mut stream = watch(
        channel(&c, &pki, Some("node-a")).await.unwrap(),
        &bound,
        "edge-a-2",
    )
    .await
    .unwrap();
    assert!(stream.message().await.unwrap().is_some());
    let mut stream = watch(
        channel(&c, &pki, Some("node-b")).await.unwrap(),
        &unbound,
        "edge-a-3",
    )
    .await
    .unwrap();
    assert!(stream.message().await.unwrap().is_some());
    assert!(
        c.find_everywhere(&bound).is_empty(),
        "the credential was stored or logged"
    );
}

#[tokio::test]
async fn with_optional_client_certificates_admins_may_come_without_one_but_nodes_may_not() {
    let pki = Pki::new("warden e2e CA");
    pki.server();
    for name in ["admin", "node-a"] {
        pki.client(name);
    }
    let mut c = cluster(&pki, Some(false)).await;
    // An admin credential bound to the admin certificate's key: a second factor.
    let bound_admin = c
        .ctl_ok(
            &[
                "admin",
                "credential",
                "issue",
                "--name",
                "ops",
                "--role",
                "admin",
                "--client-cert",
                &s(&pki.path("admin.pem")),
            ],
            None,
        )
        .unwrap();
    let as_bound = |c: &TestCluster| {
        c.ctl_with(
            &["provider", "list"],
            None,
            &[("WARDEN_ADMIN_TOKEN", &bound_admin)],
        )
        .unwrap()
        .status
        .success()
    };
    assert!(
        as_bound(&c),
        "a bound admin credential with its certificate"
    );
    c.options.cp_tls.as_mut().unwrap().client = Some(pki.identity("node-a"));
    assert!(
        !as_bound(&c),
        "a bound admin credential with another certificate"
    );
    // wardenctl without a client certificate: the bootstrap (unbound) credential works, the
    // bound one does not.
    c.options.cp_tls.as_mut().unwrap().client = None;
    assert!(
        !as_bound(&c),
        "a bound admin credential without a certificate"
    );
    c.ctl_ok(&["provider", "list"], None).unwrap();
    let admin_rows = c
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "auth.admin",
                "--format",
                "json",
            ],
            None,
        )
        .unwrap();
    for reason in ["certificate_mismatch", "certificate_required"] {
        assert!(admin_rows.contains(reason), "{reason}: {admin_rows}");
    }
    assert!(!admin_rows.contains(&bound_admin));

    // A node without a certificate: its sealing key is not taken.
    let refused = watch(
        channel(&c, &pki, None).await.unwrap(),
        &c.node_token,
        "bare",
    )
    .await
    .expect_err("a node without a client certificate was served");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );
    let rows = node_denials(&c);
    assert!(
        rows.iter()
            .any(|r| r.get("reason").map(String::as_str) == Some("certificate_required")),
        "{rows:?}"
    );
    // With one it is.
    let mut stream = watch(
        channel(&c, &pki, Some("node-a")).await.unwrap(),
        &c.node_token,
        "edge",
    )
    .await
    .unwrap();
    assert!(stream.message().await.unwrap().is_some());
}

#[tokio::test]
async fn the_control_planes_certificate_reloads_and_open_watch_streams_stay_up() {
    let pki = Pki::new("warden e2e CA");
    let first = pki.server();
    let c = cluster(&pki, None).await;
    let (seen, _) = raw_tls(c.cp_port, &pki, None).await;
    assert_eq!(seen, first);

    // A Watch stream open across the swap.
    let mut stream = watch(
        channel(&c, &pki, None).await.unwrap(),
        &c.node_token,
        "steady",
    )
    .await
    .unwrap();
    let before = stream.message().await.unwrap().unwrap().version;

    let second = pki.server();
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(15),
        "a new connection to see the new certificate",
        || {
            let (port, pki, second) = (c.cp_port, &pki, &second);
            async move { (raw_tls(port, pki, None).await.0 == *second).then_some(()) }
        },
    )
    .await
    .unwrap();

    // The stream opened before still delivers the next snapshot.
    c.ctl_ok(
        &["model", "add", "after-reload", "--provider", "mock"],
        None,
    )
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no snapshot on the old stream")
        .unwrap()
        .expect("the old stream ended");
    assert!(next.version > before);

    // A bad file is not taken: the last good certificate stays, and an error is logged.
    let errors = |c: &TestCluster| c.logs().matches("cannot be used").count();
    let errors_before = errors(&c);
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(raw_tls(c.cp_port, &pki, None).await.0, second);
    assert!(errors(&c) > errors_before, "no error logged");
}
