//! [`TestCa`]: a throwaway certificate authority (rcgen) for tests and `warden-bench`, and
//! clients that trust it: server certificates for `127.0.0.1`, `localhost` and
//! `node.warden.invalid`, each with the serial number asked for, written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};

/// Names every test server certificate holds.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "node.warden.invalid"];

/// A CA that lives as long as the test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM, and the certificate's DER (what a client sees).
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl ServerCert {
    /// Writes the certificate and key to `cert` and `key`, each replaced at once (written
    /// beside and renamed), as a certificate manager would.
    pub fn install(&self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        for (path, text) in [(key, &self.key_pem), (cert, &self.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden test CA");
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns the path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.pem())?;
        Ok(path)
    }

    /// A new server certificate (new key) with serial number `serial`.
    pub fn server_cert(&self, serial: u64) -> anyhow::Result<ServerCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(
            SERVER_NAMES
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<Vec<_>>(),
        )?;
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden test node");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    /// A rustls client configuration that trusts this CA, offering `versions` and `alpn`.
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.as_ref().der().clone())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The CA certificate for a reqwest client.
    pub fn reqwest_certificate(&self) -> anyhow::Result<reqwest::Certificate> {
        Ok(reqwest::Certificate::from_pem(self.pem().as_bytes())?)
    }

    /// A reqwest client for `https://` only, trusting this CA and no other.
    pub fn reqwest_client(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        Ok(reqwest::Client::builder()
            .tls_certs_only([self.reqwest_certificate()?])
            .https_only(true))
    }
}

/// What one TLS handshake with a node showed.
#[derive(Debug)]
pub struct Handshake {
    /// The leaf certificate the node served.
    pub certificate: CertificateDer<'static>,
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
}

/// Makes one TLS handshake with `127.0.0.1:port` under `config` (server name `127.0.0.1`)
/// and reports it; the connection is closed.
pub async fn handshake(port: u16, config: rustls::ClientConfig) -> anyhow::Result<Handshake> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        connector.connect(name, tcp),
    )
    .await??;
    let conn = stream.get_ref().1;
    Ok(Handshake {
        certificate: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no certificate served"))?,
        version: conn.protocol_version(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
    })
}
