//! HTTPS on the node's API listener (`--http-tls-cert-file`, `--http-tls-key-file`):
//! rustls with TLS 1.3 and 1.2 only, ALPN `h2` and `http/1.1`, and a certificate that is
//! swapped in place when its files change.
//!
//! [`Https::start`] loads the certificate chain and key once (a bad pair fails the start)
//! and spawns a task that reads both files every [`TlsSettings::reload_interval`]. When
//! their content has changed and the new pair is good (PEM parses, the key matches the
//! leaf certificate), it replaces the served one in a [`Resolver`] (an `ArcSwap`): new
//! handshakes get it, established connections keep theirs and go on. A bad new pair is
//! logged once and counted; the previous certificate keeps being served.
//!
//! The handshake itself happens in the connection's task (see [`super`]), bounded by the
//! header-read timeout, never in the accept loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::HeaderValue;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// How often the certificate and key files are read for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// ALPN protocols offered, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the API listener's certificate comes from, and the HTTPS-only answer header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: PathBuf,
    /// How often both files are read for changes.
    pub reload_interval: Duration,
    /// `Strict-Transport-Security: max-age=…` on every HTTPS answer; `None`: no header.
    pub hsts_max_age: Option<Duration>,
}

/// Why a certificate and key cannot be served. Messages name the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate chain: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    Key { path: PathBuf },
    #[error("the key in {} does not fit the certificate in {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The served certificate, swapped whole when the files change.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The API listener's TLS side: what each connection's task needs.
#[derive(Clone)]
pub struct Https {
    pub(super) acceptor: TlsAcceptor,
    /// The `Strict-Transport-Security` value, when HSTS is on.
    pub(super) hsts: Option<HeaderValue>,
    resolver: Arc<Resolver>,
    settings: TlsSettings,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("hsts", &self.hsts)
            .finish_non_exhaustive()
    }
}

impl Https {
    /// Loads the certificate and key named in `settings` and starts watching them until
    /// `shutdown`.
    pub fn start(settings: &TlsSettings, shutdown: CancellationToken) -> Result<Self, TlsError> {
        let files = Files::read(&settings.cert_file, &settings.key_file)?;
        let key = files.certified_key(&settings.cert_file, &settings.key_file)?;
        tracing::info!(
            cert_file = %settings.cert_file.display(),
            certificate = %fingerprint(&key),
            "serving the API over HTTPS (TLS 1.3 and 1.2, ALPN h2 and http/1.1)"
        );
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(key),
        });
        let config = server_config(Arc::clone(&resolver))?;
        tokio::spawn(watch(
            settings.clone(),
            files,
            Arc::clone(&resolver),
            shutdown,
        ));
        let hsts = settings
            .hsts_max_age
            .map(|age| HeaderValue::from_str(&format!("max-age={}", age.as_secs())))
            .transpose()
            .ok()
            .flatten();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            hsts,
            resolver,
            settings: settings.clone(),
        })
    }

    /// Reads the certificate and key files now (SIGHUP) and serves a good pair to new
    /// connections; returns its fingerprint. A bad pair is refused and the served one stays.
    pub async fn reload_now(&self) -> Result<String, TlsError> {
        let (cert_file, key_file) = (
            self.settings.cert_file.clone(),
            self.settings.key_file.clone(),
        );
        let key = tokio::task::spawn_blocking(move || {
            Files::read(&cert_file, &key_file)?.certified_key(&cert_file, &key_file)
        })
        .await
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        let key = match key {
            Ok(key) => key,
            Err(e) => {
                metrics::counter!(crate::metrics::HTTP_TLS_RELOADS, "result" => "refused")
                    .increment(1);
                return Err(e);
            }
        };
        let served = fingerprint(&key);
        self.resolver.current.store(Arc::new(key));
        metrics::counter!(crate::metrics::HTTP_TLS_RELOADS, "result" => "ok").increment(1);
        Ok(served)
    }
}

/// TLS 1.3 and 1.2 (nothing older exists in rustls), aws-lc-rs, no client certificates,
/// ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<Resolver>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A short SHA-256 fingerprint of the leaf certificate, for logs.
fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| warden_core::fingerprint::of(c.as_ref()))
        .unwrap_or_default()
}

/// The bytes of both files as last read.
#[derive(PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl Files {
    fn read(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            cert: read(cert)?,
            key: Zeroizing::new(read(key)?),
        })
    }

    /// The chain and key, parsed and checked against each other.
    fn certified_key(&self, cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
        let chain =
            warden_core::pem::certificates(&self.cert).map_err(|reason| TlsError::Certificate {
                path: cert_file.to_owned(),
                reason,
            })?;
        let key = warden_core::pem::private_key(&self.key).map_err(|_| TlsError::Key {
            path: key_file.to_owned(),
        })?;
        let signing_key =
            rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|_| {
                TlsError::Key {
                    path: key_file.to_owned(),
                }
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        // Also parses the leaf: a corrupt certificate is refused here, not at a handshake.
        certified.keys_match().map_err(|e| TlsError::Mismatch {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(certified)
    }
}

/// Every `reload_interval`, reads both files; a changed, good pair replaces the served
/// one. `seen` is the content last acted on, so a bad pair is reported once.
async fn watch(
    settings: TlsSettings,
    mut seen: Files,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(settings.reload_interval) => {}
            () = shutdown.cancelled() => return,
        }
        let (cert_file, key_file) = (settings.cert_file.clone(), settings.key_file.clone());
        let read = tokio::task::spawn_blocking(move || {
            let files = Files::read(&cert_file, &key_file)?;
            let key = files.certified_key(&cert_file, &key_file);
            Ok::<_, TlsError>((files, key))
        })
        .await;
        let (files, key) = match read {
            Ok(Ok(read)) => read,
            // Unreadable for now (being replaced, or gone): the served pair stays.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "certificate files not readable; keeping the served certificate");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate reload task failed");
                continue;
            }
        };
        if files == seen {
            continue;
        }
        seen = files;
        match key {
            Ok(key) => {
                tracing::info!(
                    cert_file = %settings.cert_file.display(),
                    certificate = %fingerprint(&key),
                    "certificate reloaded; new connections get it"
                );
                resolver.current.store(Arc::new(key));
                metrics::counter!(crate::metrics::HTTP_TLS_RELOADS, "result" => "ok").increment(1);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    certificate = %fingerprint(&resolver.current.load()),
                    "new certificate or key refused; still serving the previous certificate"
                );
                metrics::counter!(crate::metrics::HTTP_TLS_RELOADS, "result" => "refused")
                    .increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_1_3_and_1_2_are_offered_and_alpn_prefers_h2() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["node.warden.invalid".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = Files {
            cert: cert.pem().into_bytes(),
            key: Zeroizing::new(key.serialize_pem().into_bytes()),
        };
        let certified = files
            .certified_key(Path::new("c.pem"), Path::new("k.pem"))
            .unwrap();
        let config = server_config(Arc::new(Resolver {
            current: ArcSwap::from_pointee(certified),
        }))
        .unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // A client that offers TLS 1.2 only is served; rustls has nothing older to offer.
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert.der().clone()).unwrap();
            let client = rustls::ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots)
                .with_no_client_auth();
            let mut client = rustls::ClientConnection::new(
                Arc::new(client),
                "node.warden.invalid".try_into().unwrap(),
            )
            .unwrap();
            let mut server = rustls::ServerConnection::new(Arc::new(config.clone())).unwrap();
            for _ in 0..8 {
                if client.wants_write() {
                    let mut wire = Vec::new();
                    client.write_tls(&mut wire).unwrap();
                    server.read_tls(&mut wire.as_slice()).unwrap();
                    server.process_new_packets().unwrap();
                }
                if server.wants_write() {
                    let mut wire = Vec::new();
                    server.write_tls(&mut wire).unwrap();
                    client.read_tls(&mut wire.as_slice()).unwrap();
                    client.process_new_packets().unwrap();
                }
            }
            assert!(!server.is_handshaking() && !client.is_handshaking());
            assert_eq!(server.protocol_version(), Some(version.version));
        }
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused_without_showing_it() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["node.warden.invalid".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = other.serialize_pem();
        let files = Files {
            cert: cert.pem().into_bytes(),
            key: Zeroizing::new(pem.clone().into_bytes()),
        };
        let e = files
            .certified_key(Path::new("c.pem"), Path::new("k.pem"))
            .unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        let files = Files {
            cert: b"garbage".to_vec(),
            key: Zeroizing::new(pem.clone().into_bytes()),
        };
        let e = files
            .certified_key(Path::new("c.pem"), Path::new("k.pem"))
            .unwrap_err();
        assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        let files = Files {
            cert: cert.pem().into_bytes(),
            key: Zeroizing::new(pem.replace(&body, &body[..body.len() / 2]).into_bytes()),
        };
        let e = files
            .certified_key(Path::new("c.pem"), Path::new("k.pem"))
            .unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
        assert!(!e.to_string().contains(&body[..16]), "{e}");
    }
}
