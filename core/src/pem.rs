//! Certificates and private keys in PEM, as the operator's files hold them: one reading for
//! every TLS endpoint Warden configures from files (the node's HTTPS listener, the control
//! plane's gRPC listener and client CA, the syslog forwarder), so each refuses the same bad
//! file with the same words.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in `pem`, in order (for a chain: leaf first). Refused: a malformed PEM
/// block, or no certificate at all.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no certificate".to_owned());
    }
    Ok(certificates)
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_or_key_is_refused_with_its_reason() {
        assert_eq!(certificates(b"").unwrap_err(), "holds no certificate");
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(certificates(broken).unwrap_err().starts_with("not PEM: "));
        assert!(
            private_key(b"")
                .unwrap_err()
                .starts_with("no private key: ")
        );
    }
}
