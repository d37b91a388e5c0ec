//! The node's HTTP clients to providers: one default client, which verifies providers'
//! TLS with the public web roots, and one per distinct provider CA bundle
//! (`wardenctl provider add --ca-file`, `[[providers]] ca_file`), which trusts that bundle
//! *instead of* the public roots — a private upstream is then reachable only with a
//! certificate from its own CA, and a public CA cannot vouch for it. Every other setting
//! (timeouts, pool, user agent, no redirects, the egress resolver and proxy) is the same
//! for all of them: each is made by [`UpstreamClients::builder`].
//!
//! A bundle's client is built once, when a snapshot first names the bundle, and kept by the
//! SHA-256 of its PEM across snapshots, so a new snapshot does not drop its pooled
//! connections; a client no compiled snapshot names any more is dropped when the next
//! snapshot compiles. A request of a provider without a bundle only reads an `Option`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::egress::EgressSettings;

/// Why a provider's CA bundle gives no client.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("the CA bundle {0}")]
    Bundle(String),
    #[error("cannot build a client with the CA bundle: {0}")]
    Build(#[from] reqwest::Error),
}

/// The default client and the clients of provider CA bundles (see the module docs).
#[derive(Debug)]
pub struct UpstreamClients {
    connect_timeout: Duration,
    read_timeout: Duration,
    egress: EgressSettings,
    default: reqwest::Client,
    /// By SHA-256 (hex) of the bundle's PEM text as the snapshot carries it.
    by_ca: Mutex<HashMap<String, reqwest::Client>>,
}

impl UpstreamClients {
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        egress: &EgressSettings,
    ) -> Result<Self, reqwest::Error> {
        let mut clients = Self {
            connect_timeout,
            read_timeout,
            egress: egress.clone(),
            default: reqwest::Client::new(),
            by_ca: Mutex::new(HashMap::new()),
        };
        clients.default = clients.builder()?.build()?;
        Ok(clients)
    }

    /// The settings every upstream client has, whatever roots it trusts.
    fn builder(&self) -> Result<reqwest::ClientBuilder, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
        self.egress.apply(builder)
    }

    /// The client of providers without a CA bundle: the public web roots.
    pub fn default_client(&self) -> &reqwest::Client {
        &self.default
    }

    /// The client that trusts only the certificates of `pem` (a provider's bundle), and
    /// the bundle's key: the cached one, or a new one (checked by
    /// [`warden_core::ca_bundle::parse`] first).
    pub fn for_ca(&self, pem: &str) -> Result<(String, reqwest::Client), CaClientError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem.as_bytes());
        let key = hex::encode(digest.as_ref());
        if let Some(client) = self.cache().get(&key) {
            return Ok((key, client.clone()));
        }
        let bundle =
            warden_core::ca_bundle::parse(pem.as_bytes()).map_err(CaClientError::Bundle)?;
        let roots = reqwest::Certificate::from_pem_bundle(bundle.pem.as_bytes())?;
        let client = self.builder()?.tls_certs_only(roots).build()?;
        tracing::info!(ca_sha256 = %bundle.fingerprints(), "built an upstream client for a provider CA bundle");
        self.cache().insert(key.clone(), client.clone());
        Ok((key, client))
    }

    /// Drops the clients of bundles not in `in_use` (the keys the compiled snapshot holds).
    pub fn retain(&self, in_use: &HashSet<String>) {
        self.cache().retain(|key, _| in_use.contains(key));
    }

    /// How many bundle clients are kept.
    pub fn cached(&self) -> usize {
        self.cache().len()
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, reqwest::Client>> {
        // Held only for a lookup or an insert; a poisoned map is still a valid map.
        self.by_ca.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why TLS with the provider failed, if that is why `error` happened (an unknown issuer,
/// a name mismatch, an expired certificate…): rustls's error, found in the chain of
/// sources. An I/O error is looked into (its `source()` skips the error it wraps, and the
/// TLS connector wraps rustls's error in an I/O error, itself in another).
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        current = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn clients() -> UpstreamClients {
        UpstreamClients::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            &EgressSettings::default(),
        )
        .unwrap()
    }

    #[test]
    fn one_client_per_distinct_bundle_kept_until_no_snapshot_names_it() {
        let clients = clients();
        let (a, b) = (ca_pem("A"), ca_pem("B"));
        let (key_a, _) = clients.for_ca(&a).unwrap();
        let (again, _) = clients.for_ca(&a).unwrap();
        assert_eq!(key_a, again);
        assert_eq!(clients.cached(), 1, "the same bundle is built once");
        let (key_b, _) = clients.for_ca(&b).unwrap();
        assert_ne!(key_a, key_b);
        assert_eq!(clients.cached(), 2);
        clients.retain(&HashSet::from([key_b.clone()]));
        assert_eq!(clients.cached(), 1);
        clients.retain(&HashSet::new());
        assert_eq!(clients.cached(), 0);
    }

    #[test]
    fn a_malformed_bundle_gives_no_client_and_is_not_kept() {
        let clients = clients();
        for bad in ["", "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            let err = clients.for_ca(bad).unwrap_err();
            assert!(matches!(err, CaClientError::Bundle(_)), "{bad}: {err}");
        }
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = clients.for_ca(&key).unwrap_err().to_string();
        assert!(err.contains("CERTIFICATE blocks only"), "{err}");
        assert!(!err.contains("PRIVATE KEY-----"), "{err}");
        assert_eq!(clients.cached(), 0);
    }

    #[test]
    fn a_tls_error_is_found_inside_an_io_error() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        #[derive(Debug, thiserror::Error)]
        #[error("connect")]
        struct Outer(#[source] std::io::Error);
        let found = tls_failure(&Outer(io)).unwrap();
        assert!(found.contains("UnknownIssuer"), "{found}");
        // As the HTTPS connector hands it on: an I/O error around the TLS connector's one.
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        let found = tls_failure(&Outer(outer)).unwrap();
        assert!(found.contains("NotValidForName"), "{found}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(tls_failure(&Outer(plain)).is_none());
    }
}
