//! Secret storage. The control plane keeps provider keys, JWT signing keys and the
//! credential pepper in a [`SecretStore`], addressed by reference (`file://name`). The
//! embedded default is the encrypted file store ([`file::FileSecretStore`]); Vault, AWS
//! Secrets Manager and Azure Key Vault implement the same trait (a later issue).

pub mod cipher;
pub mod file;

use secrecy::SecretString;

/// Errors from a secret backend. Messages name the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {reference} not found")]
    NotFound { reference: String },
    #[error("secret reference {reference} is not valid: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("secret {reference} could not be decrypted (wrong master key or corrupted value)")]
    Decrypt { reference: String },
    #[error("secret store i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("secret store file is malformed: {0}")]
    Malformed(String),
}

/// A place secrets are kept, addressed by name.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Reads the current value of `name`.
    async fn get(&self, name: &str) -> Result<SecretString, SecretError>;
    /// Writes `value` under `name`, replacing any earlier value.
    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError>;
    /// Deletes `name`; deleting a missing name is not an error.
    async fn delete(&self, name: &str) -> Result<(), SecretError>;
    /// The reference under which `name` is addressed (`file://name`).
    fn reference(&self, name: &str) -> String;
}
