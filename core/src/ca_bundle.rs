//! A PEM bundle of CA certificates read from a file the operator names (`--redis-ca-file`,
//! `[redis] ca_file`): read once at start-up and checked to hold at least one certificate,
//! so a wrong path or a key file given by mistake stops the process with the flag's name
//! instead of failing every connection later.
//!
//! A provider's own CA bundle (`wardenctl provider add --ca-file`, `[[providers]] ca_file`)
//! travels as PEM text through the Admin API, the state store and the snapshot: [`parse`]
//! checks it wherever it arrives and describes it (subject and SHA-256 of each
//! certificate) for listings and audit, never showing the PEM.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Why a CA bundle cannot be used; each message names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("cannot read {setting} {path}: {source}")]
    Read {
        setting: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting} {path} is not a PEM file of CA certificates: {reason}")]
    Invalid {
        setting: &'static str,
        path: String,
        reason: String,
    },
}

/// The PEM text of the CA certificates in `path`, which `setting` (a flag or field name, for
/// the error) names. Fails when the file cannot be read, holds a malformed PEM block or no
/// certificate at all.
pub fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, CaBundleError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| CaBundleError::Read {
        setting,
        path: shown(),
        source,
    })?;
    let invalid = |reason: String| CaBundleError::Invalid {
        setting,
        path: shown(),
        reason,
    };
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| invalid(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("no CERTIFICATE block in it".to_owned()));
    }
    Ok(pem)
}

/// Largest provider CA bundle accepted (a few dozen certificates fit easily).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;
/// Most certificates in one provider CA bundle.
pub const MAX_BUNDLE_CERTIFICATES: usize = 64;

/// One certificate of a bundle, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// The subject's distinguished name (RFC 4514 style, e.g. `CN=Example Root CA`).
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex (what `openssl x509 -fingerprint
    /// -sha256` shows, without the colons).
    pub sha256: String,
}

/// A checked CA bundle: the certificates alone, PEM-encoded again (whatever else the text
/// held — comments, `openssl x509 -text` output — is dropped), and their descriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub pem: String,
    pub certificates: Vec<CaCertificate>,
}

impl CaBundle {
    /// The fingerprints, comma-separated (for an audit subject or a log line).
    pub fn fingerprints(&self) -> String {
        self.certificates
            .iter()
            .map(|c| c.sha256.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Checks the PEM text of a CA bundle: at most [`MAX_BUNDLE_BYTES`], only `CERTIFICATE`
/// blocks (a private key given by mistake is refused rather than stored and sent to every
/// node), between one and [`MAX_BUNDLE_CERTIFICATES`] of them, each an X.509 certificate.
/// The error says why, without quoting the text.
pub fn parse(pem: &[u8]) -> Result<CaBundle, String> {
    use base64::Engine as _;
    use rustls_pki_types::pem::SectionKind;

    if pem.len() > MAX_BUNDLE_BYTES {
        return Err(format!("is larger than {} KiB", MAX_BUNDLE_BYTES / 1024));
    }
    let mut out = String::new();
    let mut certificates = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| format!("is not PEM: {e}"))?;
        if kind != SectionKind::Certificate {
            return Err(format!(
                "holds a {kind:?} block: a CA bundle holds CERTIFICATE blocks only"
            ));
        }
        if certificates.len() == MAX_BUNDLE_CERTIFICATES {
            return Err(format!(
                "holds more than {MAX_BUNDLE_CERTIFICATES} certificates"
            ));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("certificate {} is not X.509: {e}", certificates.len() + 1))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        certificates.push(CaCertificate {
            subject: cert.subject().to_string(),
            sha256: hex::encode(digest.as_ref()),
        });
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    if certificates.is_empty() {
        return Err("holds no CERTIFICATE block".to_owned());
    }
    Ok(CaBundle {
        pem: out,
        certificates,
    })
}

/// [`parse`] of the file at `path`; the error names the file.
pub fn read_bundle(path: &Path) -> Result<CaBundle, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{} {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_needs_a_certificate() {
        let dir = std::env::temp_dir().join(format!("warden-ca-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = read("--x-ca-file", &dir.join("absent.pem")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read --x-ca-file"),
            "{missing}"
        );
        let key = dir.join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = read("--x-ca-file", &key).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_provider_bundle_is_described_and_only_certificates_are_kept() {
        let (a, b) = (ca_pem("Private Root A"), ca_pem("Private Root B"));
        let text = format!("# comment\n{a}\nsome text between\n{b}");
        let bundle = parse(text.as_bytes()).unwrap();
        assert_eq!(bundle.certificates.len(), 2);
        assert_eq!(bundle.certificates[0].subject, "CN=Private Root A");
        assert_eq!(bundle.certificates[1].subject, "CN=Private Root B");
        assert_eq!(bundle.certificates[0].sha256.len(), 64);
        assert_ne!(bundle.certificates[0].sha256, bundle.certificates[1].sha256);
        assert!(!bundle.pem.contains("comment") && !bundle.pem.contains("between"));
        // Canonical: parsing the kept text again gives the same text and fingerprints.
        assert_eq!(parse(bundle.pem.as_bytes()).unwrap(), bundle);
        assert_eq!(
            bundle.fingerprints(),
            format!(
                "{},{}",
                bundle.certificates[0].sha256, bundle.certificates[1].sha256
            )
        );
    }

    #[test]
    fn a_provider_bundle_without_certificates_or_with_a_key_is_refused() {
        assert_eq!(
            parse(b"not pem at all").unwrap_err(),
            "holds no CERTIFICATE block"
        );
        assert_eq!(parse(b"").unwrap_err(), "holds no CERTIFICATE block");
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(parse(broken).unwrap_err().starts_with("is not PEM"));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse(garbage).unwrap_err().contains("not X.509"));
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let with_key = format!("{}{key}", ca_pem("Root"));
        let err = parse(with_key.as_bytes()).unwrap_err();
        assert!(err.contains("CERTIFICATE blocks only"), "{err}");
        assert!(!err.contains("PRIVATE KEY-----"), "{err}");
        let huge = "x".repeat(MAX_BUNDLE_BYTES + 1);
        assert!(parse(huge.as_bytes()).unwrap_err().contains("larger"));
    }
}
