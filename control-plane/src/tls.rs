//! The gRPC listener's TLS (`[server]` in warden-cp.toml): the control plane's certificate
//! and key, re-read when their files change, and the client certificates nodes and admins
//! present (`client_ca_file`, `require_client_certs`).
//!
//! The handshake itself is done by the accept loop ([`crate::grpc::limits::incoming`]) with
//! the [`ServerTls`] here, so that the client certificate a connection presented reaches
//! every request on it: as a [`ClientCertificate`] in the request's extensions, which holds
//! the SHA-256 of the certificate's SubjectPublicKeyInfo — the key a credential can be
//! bound to ([`spki_sha256_of_pem`] at issue).
//!
//! Reload: every `tls_reload_interval` the three files are read again; when their content
//! changed and they still make a valid configuration, new connections get it. Open
//! connections (a node's `Sync.Watch`) keep the session they have. A bad file is logged
//! and the last good configuration stays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Default interval at which the certificate, key and client CA files are re-read.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest `tls_reload_interval` accepted.
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(500);
/// Default of `require_client_certs` once `client_ca_file` is set.
pub const DEFAULT_REQUIRE_CLIENT_CERTS: bool = true;

/// Client certificates, when the control plane checks them (`[server] client_ca_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSettings {
    /// PEM file with the CA certificate(s) that sign client certificates.
    pub ca_file: PathBuf,
    /// `true`: a connection without a certificate signed by that CA fails its handshake;
    /// `false`: a certificate is optional, verified when presented (nodes still need one:
    /// `Sync` refuses a node without it).
    pub required: bool,
}

/// The listener's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_certs: Option<ClientCertSettings>,
    pub reload_interval: Duration,
}

/// How the listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Not asked for (no `client_ca_file`).
    Off,
    /// Asked for, verified when presented.
    Optional,
    /// A handshake without one fails.
    Required,
}

/// A file that cannot be read or does not hold what it should (`field` is its `[server]`
/// key).
#[derive(Debug, thiserror::Error)]
#[error("{field} {path}: {message}")]
pub struct TlsError {
    pub field: &'static str,
    pub path: String,
    pub message: String,
}

/// A `[server]` TLS setting that does not parse or does not fit with the others (`field`
/// names it).
#[derive(Debug)]
pub struct SettingError {
    pub field: &'static str,
    pub message: String,
}

fn setting(field: &'static str, message: impl Into<String>) -> SettingError {
    SettingError {
        field,
        message: message.into(),
    }
}

/// `[server] client_ca_file`, `require_client_certs` and `tls_reload_interval` as written,
/// with `WARDEN_TLS_CLIENT_CA_FILE`, `WARDEN_TLS_REQUIRE_CLIENT_CERTS` and
/// `WARDEN_TLS_RELOAD_INTERVAL` in `env` over them. Client certificates need TLS (`tls`).
pub fn client_settings(
    env: &HashMap<String, String>,
    tls: bool,
    ca_file: Option<PathBuf>,
    required: Option<bool>,
    reload: Option<String>,
) -> Result<(Option<ClientCertSettings>, Duration), SettingError> {
    let ca_file = env
        .get("WARDEN_TLS_CLIENT_CA_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or(ca_file);
    let required = match env.get("WARDEN_TLS_REQUIRE_CLIENT_CERTS").map(|v| v.trim()) {
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(_) => {
            return Err(setting(
                "WARDEN_TLS_REQUIRE_CLIENT_CERTS",
                "expected true or false",
            ));
        }
        None => required,
    };
    let client_certs = match ca_file {
        Some(_) if !tls => {
            return Err(setting(
                "server.client_ca_file",
                "client certificates need TLS: set tls_cert_file and tls_key_file",
            ));
        }
        Some(ca_file) => Some(ClientCertSettings {
            ca_file,
            required: required.unwrap_or(DEFAULT_REQUIRE_CLIENT_CERTS),
        }),
        None if required.is_some() => {
            return Err(setting(
                "server.require_client_certs",
                "needs client_ca_file (the CA that signs client certificates)",
            ));
        }
        None => None,
    };
    let reload = match env.get("WARDEN_TLS_RELOAD_INTERVAL").cloned().or(reload) {
        None => DEFAULT_RELOAD_INTERVAL,
        Some(text) => {
            let d = humantime::parse_duration(text.trim())
                .map_err(|e| setting("server.tls_reload_interval", format!("`{text}`: {e}")))?;
            if d < MIN_RELOAD_INTERVAL || d > Duration::from_secs(86_400) {
                return Err(setting(
                    "server.tls_reload_interval",
                    "must be between 500ms and 24h",
                ));
            }
            d
        }
    };
    Ok((client_certs, reload))
}

/// The client certificate a connection presented, verified against `client_ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    spki_sha256: String,
}

impl ClientCertificate {
    /// The identity of the end-entity certificate `der`.
    pub fn from_der(der: &CertificateDer<'_>) -> Result<Self, String> {
        Ok(Self {
            spki_sha256: spki_sha256(der)?,
        })
    }

    /// SHA-256 (lowercase hex) of the certificate's SubjectPublicKeyInfo.
    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }
}

/// SHA-256 (lowercase hex) of the SubjectPublicKeyInfo of the certificate `der`.
pub fn spki_sha256(der: &CertificateDer<'_>) -> Result<String, String> {
    let parsed = ParsedCertificate::try_from(der).map_err(|e| format!("not a certificate: {e}"))?;
    let spki = parsed.subject_public_key_info();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    Ok(hex::encode(digest.as_ref()))
}

/// [`spki_sha256`] of the first certificate in the PEM text `pem` (a client certificate
/// file as `wardenctl … credential issue --client-cert` sends it).
pub fn spki_sha256_of_pem(pem: &[u8]) -> Result<String, String> {
    let der = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| "holds no PEM certificate".to_owned())?
        .map_err(|e| format!("not PEM: {e}"))?;
    spki_sha256(&der)
}

/// The listener's TLS configuration, swapped whole when its files change.
pub struct ServerTls {
    settings: TlsSettings,
    current: RwLock<Loaded>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

struct Loaded {
    config: Arc<ServerConfig>,
    /// SHA-256 over the files' contents, to notice a change.
    digest: Vec<u8>,
}

/// The three files as read.
struct Files {
    cert: Vec<u8>,
    key: zeroize::Zeroizing<Vec<u8>>,
    ca: Option<Vec<u8>>,
}

impl Files {
    async fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        let read = |field: &'static str, path: PathBuf| async move {
            tokio::fs::read(&path).await.map_err(|e| TlsError {
                field,
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        Ok(Self {
            cert: read("tls_cert_file", settings.cert_file.clone()).await?,
            key: zeroize::Zeroizing::new(read("tls_key_file", settings.key_file.clone()).await?),
            ca: match &settings.client_certs {
                Some(c) => Some(read("client_ca_file", c.ca_file.clone()).await?),
                None => None,
            },
        })
    }

    fn digest(&self) -> Vec<u8> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [
            Some(&self.cert[..]),
            Some(&self.key[..]),
            self.ca.as_deref(),
        ] {
            let part = part.unwrap_or_default();
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.finish().as_ref().to_vec()
    }
}

impl ServerTls {
    /// Reads the files and builds the configuration; a bad file fails here, naming it.
    pub async fn load(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let files = Files::read(&settings).await?;
        let config = build(&settings, &files)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Loaded {
                config,
                digest: files.digest(),
            }),
            settings,
        }))
    }

    /// How client certificates are treated.
    pub fn client_cert_mode(&self) -> ClientCertMode {
        match &self.settings.client_certs {
            None => ClientCertMode::Off,
            Some(c) if c.required => ClientCertMode::Required,
            Some(_) => ClientCertMode::Optional,
        }
    }

    /// An acceptor with the current configuration, for one connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(loaded) => Arc::clone(&loaded.config),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().config),
        };
        TlsAcceptor::from(config)
    }

    /// Re-reads the files; swaps in a new configuration when they changed and are valid.
    /// Returns whether it swapped.
    pub async fn reload(&self) -> Result<bool, TlsError> {
        let files = Files::read(&self.settings).await?;
        let digest = files.digest();
        let same = match self.current.read() {
            Ok(loaded) => loaded.digest == digest,
            Err(poisoned) => poisoned.into_inner().digest == digest,
        };
        if same {
            return Ok(false);
        }
        let config = build(&self.settings, &files)?;
        let mut loaded = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *loaded = Loaded { config, digest };
        Ok(true)
    }

    /// Polls the files every `reload_interval` until `shutdown`.
    pub fn spawn_reload(self: &Arc<Self>, shutdown: CancellationToken) {
        let weak = Arc::downgrade(self);
        let interval = self.settings.reload_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                let Some(tls) = weak.upgrade() else { return };
                match tls.reload().await {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(
                        cert = %tls.settings.cert_file.display(),
                        "TLS files changed: new connections use the new certificate"
                    ),
                    Err(error) => tracing::error!(
                        %error,
                        "TLS files changed but cannot be used; keeping the last good certificate"
                    ),
                }
            }
        });
    }
}

fn bad(field: &'static str, path: &std::path::Path, message: impl Into<String>) -> TlsError {
    TlsError {
        field,
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The rustls configuration for `files`: TLS 1.2 and 1.3, ALPN `h2`, and the client
/// certificate verifier when client certificates are configured.
fn build(settings: &TlsSettings, files: &Files) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = &settings.cert_file;
    let chain = warden_core::pem::certificates(&files.cert)
        .map_err(|e| bad("tls_cert_file", cert_path, e))?;
    let key = warden_core::pem::private_key(&files.key)
        .map_err(|e| bad("tls_key_file", &settings.key_file, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad("tls_cert_file", cert_path, e.to_string()))?;
    let builder = match (&settings.client_certs, &files.ca) {
        (Some(client), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates = warden_core::pem::certificates(pem)
                .map_err(|e| bad("client_ca_file", &client.ca_file, e))?;
            for cert in certificates {
                roots.add(cert).map_err(|e| {
                    bad(
                        "client_ca_file",
                        &client.ca_file,
                        format!("unusable CA certificate: {e}"),
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if client.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| bad("client_ca_file", &client.ca_file, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad("tls_key_file", &settings.key_file, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_hash_is_the_keys_not_the_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let a = rcgen::CertificateParams::new(vec!["a.invalid".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let b = rcgen::CertificateParams::new(vec!["b.invalid".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["a.invalid".to_owned()]).unwrap();
        let hash = |pem: String| spki_sha256_of_pem(pem.as_bytes()).unwrap();
        assert_eq!(hash(a.pem()), hash(b.pem()));
        assert_ne!(hash(a.pem()), hash(other.cert.pem()));
        assert_eq!(hash(a.pem()).len(), 64);
        assert!(spki_sha256_of_pem(b"not a certificate").is_err());
    }
}
