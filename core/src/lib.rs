//! What both planes share and that belongs to no single plane: the formats of the opaque
//! credentials Warden issues ([`credential`]), JWT claims, signing and verification
//! ([`jwt`]), redaction of secrets from text and logs ([`redact`], [`telemetry`]), escaping
//! of control characters in log lines and terminal output ([`escape`]), which control-plane
//! addresses would carry a credential in clear ([`plaintext`]),
//! safe-to-show fingerprints ([`fingerprint`]), which addresses an upstream may never be
//! ([`address_class`]), the syntax of client access lists (CIDRs, browser origins:
//! [`access`]), the sealing of snapshot secrets to one node's key ([`seal`]), CA
//! bundles named by the operator ([`ca_bundle`]), the `enc:v1`/`enc:v2` encryption of
//! values at rest ([`cipher`]), and when a process should stop
//! ([`shutdown`]).
//!
//! Start with [`credential`] and [`jwt`]: they define what a caller presents.

pub mod access;
pub mod address_class;
pub mod audit_detail;
pub mod backoff;
pub mod ca_bundle;
pub mod cipher;
pub mod credential;
pub mod dlp;
pub mod escape;
pub mod fingerprint;
pub mod jwt;
pub mod otlp;
pub mod pem;
pub mod plaintext;
pub mod redact;
pub mod seal;
pub mod shared_keys;
pub mod shutdown;
pub mod telemetry;

/// Installs the process-wide crypto providers (rustls is configured by its own crate; this
/// covers jsonwebtoken, which panics on first use if two backends get unified). Call once in
/// every `main` and test harness before any JWT is signed or verified.
pub fn install_crypto_providers() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// Current time as Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
