//! A PEM bundle of CA certificates read from a file the operator names (`--redis-ca-file`,
//! `[redis] ca_file`): read once at start-up and checked to hold at least one certificate,
//! so a wrong path or a key file given by mistake stops the process with the flag's name
//! instead of failing every connection later.

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
}
