//! Secret storage. The control plane keeps provider keys, and its own secrets (JWT signing
//! keys, the credential pepper, the audit checkpoint key), in a [`SecretStore`], addressed
//! by name; configuration refers to a secret by a [`reference::SecretReference`]
//! (`file://name`, `vault://mount/path#field`, `aws-sm://name#field`,
//! `azure-kv://vault/name`, `env://VAR`), never by value.
//!
//! Backends, one module each, all behind the same trait:
//! - [`file::FileSecretStore`]: the embedded default, AES-256-GCM values in one file
//!   ([`cipher`]);
//! - [`vault::VaultSecretStore`]: HashiCorp Vault / OpenBao KV v2 (token or AppRole auth,
//!   renewal);
//! - [`aws::AwsSecretStore`]: AWS Secrets Manager (default credential chain, JSON fields);
//! - [`azure::AzureKeyVaultStore`]: Azure Key Vault secrets over its REST API;
//! - [`memory::MemorySecretStore`]: in memory, for tests;
//! - [`own::OwnSecrets`]: Warden's own secrets (signing keys, pepper, checkpoint key) in the
//!   state store's `warden_secrets` table, `enc:v2:` under the master key;
//! - [`reference::EnvSecretStore`]: read-only `env://VAR` values, optionally encrypted (`enc:…`).
//!
//! Start reading at [`config`]: [`config::SecretBackendConfig`] is the typed configuration
//! and [`config::build`] turns it into a store; [`config::SecretResolver`] reads any
//! reference from the backends that are configured.
//!
//! [`policy`] decides which references Warden reads at all: never its own secrets
//! (`warden/…`) or credentials, and over the Admin API only under `[secrets]
//! allowed_ref_prefixes`.
//!
//! Every error names the reference, never the value; no `Debug` impl prints a value, token
//! or client secret.

pub mod aws;
pub mod azure;
pub mod cipher;
pub mod config;
pub mod file;
pub mod manager;
pub mod memory;
pub mod own;
pub mod policy;
pub mod reference;
pub mod rotation;
pub mod vault;

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

/// Default timeout of every network call a backend makes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from a secret backend. Messages name the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {reference} not found")]
    NotFound { reference: String },
    #[error("secret reference {reference} is not valid: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("secret {reference} could not be decrypted (wrong master key or corrupted value)")]
    Decrypt { reference: String },
    /// The value is sealed under a master key this control plane does not hold (rotated
    /// away, or not yet given to this replica); names the key id, never a key.
    #[error(
        "secret {reference} is encrypted under master key {kid}, which this control plane does not hold: \
         configure that key (as the master key or in previous_master_key_files) or re-encrypt with \
         `warden-cp migrate rotate-master-key`"
    )]
    UnknownMasterKey { reference: String, kid: String },
    #[error("secret store i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("secret store file is malformed: {0}")]
    Malformed(String),
    /// The backend could not be reached or did not answer in time; retrying may help.
    #[error("secret backend unavailable for {reference}: {reason}")]
    Unavailable { reference: String, reason: String },
    /// The backend refused the credential Warden presented for this secret.
    #[error("permission denied for secret {reference}")]
    PermissionDenied { reference: String },
    /// The backend answered, but not with what was asked (bad request, unexpected shape).
    #[error("secret backend rejected the request for {reference}: {reason}")]
    Backend { reference: String, reason: String },
    /// The reference points at something Warden refuses to read (see [`policy`]); names
    /// the rule.
    #[error("secret reference {reference} is refused: {rule}")]
    Refused {
        reference: String,
        rule: &'static str,
    },
    /// The backend configuration is invalid; names the field.
    #[error("secret backend config: `{field}`: {reason}")]
    Config { field: String, reason: String },
}

impl SecretError {
    /// A low-cardinality label for metrics and audit reason codes.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::BadReference { .. } => "bad_reference",
            Self::Decrypt { .. } => "decrypt",
            Self::UnknownMasterKey { .. } => "unknown_master_key",
            Self::Io(_) => "io",
            Self::Malformed(_) => "malformed",
            Self::Unavailable { .. } => "unavailable",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::Backend { .. } => "backend",
            Self::Config { .. } => "config",
            Self::Refused { .. } => "refused",
        }
    }

    /// Whether trying again later can help (the backend was down or slow).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Io(_))
    }

    /// The error for a value under `reference` that `cipher` could not open.
    pub(crate) fn from_cipher(reference: String, e: cipher::CipherError) -> Self {
        match e {
            cipher::CipherError::UnknownKey(kid) => Self::UnknownMasterKey { reference, kid },
            _ => Self::Decrypt { reference },
        }
    }

    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A place secrets are kept, addressed by name.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Reads the current value of `name`.
    async fn get(&self, name: &str) -> Result<SecretString, SecretError>;
    /// Writes `value` under `name`, replacing any earlier value.
    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError>;
    /// Writes `value` under `name` only when nothing is stored there yet, and returns what
    /// is stored afterwards: `value`, or the value another writer stored first. Stores that
    /// several control planes share override it with one atomic step
    /// ([`own::OwnSecrets`]); the default reads, then writes.
    async fn put_if_absent(
        &self,
        name: &str,
        value: &SecretString,
    ) -> Result<SecretString, SecretError> {
        match self.get(name).await {
            Ok(existing) => Ok(existing),
            Err(SecretError::NotFound { .. }) => {
                self.put(name, value).await?;
                Ok(value.clone())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes `name`; deleting a missing name is not an error.
    async fn delete(&self, name: &str) -> Result<(), SecretError>;
    /// The reference under which `name` is addressed (`file://name`).
    fn reference(&self, name: &str) -> String;

    /// Reads the current value of `name` with an opaque version id that changes whenever
    /// the value does, so the control plane can poll for rotation.
    ///
    /// Backends with versions return theirs (Vault KV v2 metadata version, AWS
    /// `VersionId`, Azure Key Vault version). The default, for backends without versions,
    /// is [`content_version`]: `sha256:` + the value's 12-hex-character fingerprint
    /// ([`warden_core::fingerprint`]), which is stable across restarts, safe to log and
    /// changes when the value changes.
    async fn get_versioned(&self, name: &str) -> Result<(SecretString, String), SecretError> {
        let value = self.get(name).await?;
        let version = content_version(&value);
        Ok((value, version))
    }
}

/// The version id of a value in a backend without versions: `sha256:` followed by the
/// value's fingerprint (first 12 hex characters of its SHA-256, see
/// [`warden_core::fingerprint::of`]). As safe to show as a key fingerprint.
pub fn content_version(value: &SecretString) -> String {
    format!(
        "sha256:{}",
        warden_core::fingerprint::of(value.expose_secret().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_version_changes_with_the_value_and_hides_it() {
        let a = content_version(&SecretString::from("sk-canary-aaaa"));
        let b = content_version(&SecretString::from("sk-canary-bbbb"));
        assert_ne!(a, b);
        assert_eq!(a, content_version(&SecretString::from("sk-canary-aaaa")));
        assert!(a.starts_with("sha256:") && !a.contains("canary"));
    }

    #[test]
    fn error_messages_carry_references_only() {
        let e = SecretError::Unavailable {
            reference: "vault://secret/x#k".into(),
            reason: "timed out after 5s".into(),
        };
        assert_eq!(
            e.to_string(),
            "secret backend unavailable for vault://secret/x#k: timed out after 5s"
        );
        assert!(e.is_retryable());
        assert_eq!(
            SecretError::PermissionDenied {
                reference: "aws-sm://a".into()
            }
            .metric_label(),
            "permission_denied"
        );
    }
}
