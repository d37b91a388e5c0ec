//! Where Warden's own secrets live: the JWT signing keys (`warden/jwt/<kid>`), the
//! credential pepper (`warden/credential-pepper`) and the audit checkpoint key
//! (`warden/audit/checkpoint-key`) are rows of the state store's `warden_secrets` table,
//! each value `enc:v2:` under the master key with its name bound in as associated data
//! ([`super::cipher`]). Control-plane replicas share the database, not a filesystem, so
//! they share these secrets; the store itself never sees a plaintext value.
//!
//! [`OwnSecrets`] is a [`SecretStore`] over that table: the signing keys, the pepper and the
//! checkpoint key are read and written through it and nothing else. No provider-key
//! reference reaches it (the [`super::policy`] rules refuse `warden/…` names anywhere).
//!
//! Data directories from before the table kept these in `secrets.json`; at start-up
//! [`OwnSecrets::import_from_file`] copies each `warden/…` entry into the table when it is
//! absent there, and [`FileImport::remove_from`] then deletes from the file the entries the
//! table holds with the same value. Insert first, remove after: a crash in between leaves
//! both copies, and the next start finishes the move.

use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};

use super::cipher::{MasterKey, Resealed};
use super::file::FileSecretStore;
use super::{SecretError, SecretStore};
use crate::store::{StateStore, StoreError};

/// Names under this prefix are Warden's own secrets.
pub const OWN_PREFIX: &str = "warden/";

/// Warden's own secrets in the state store, encrypted under the master key.
pub struct OwnSecrets {
    store: Arc<dyn StateStore>,
    master: Arc<MasterKey>,
}

impl std::fmt::Debug for OwnSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnSecrets(warden_secrets)")
    }
}

/// What [`OwnSecrets::import_from_file`] found in a secret file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileImport {
    /// Copied into the table by this import.
    pub copied: Vec<String>,
    /// Already in the table with the same value (an earlier import stopped before it
    /// removed them from the file).
    pub already: Vec<String>,
    /// In the table with a different value: the table's is used, the file's is left where
    /// it is (not deleted) for an operator to look at.
    pub conflicting: Vec<String>,
}

impl FileImport {
    /// Whether the file held nothing to move.
    pub fn is_empty(&self) -> bool {
        self.copied.is_empty() && self.already.is_empty() && self.conflicting.is_empty()
    }

    /// The names whose values the table now holds: those to delete from the file.
    pub fn moved(&self) -> impl Iterator<Item = &String> {
        self.copied.iter().chain(self.already.iter())
    }

    /// Deletes the moved names from `file` (call once the move is recorded).
    pub async fn remove_from(&self, file: &FileSecretStore) -> Result<(), SecretError> {
        for name in self.moved() {
            file.delete(name).await?;
        }
        Ok(())
    }
}

fn store_error(reference: String, e: &StoreError) -> SecretError {
    SecretError::Unavailable {
        reference,
        reason: e.to_string(),
    }
}

impl OwnSecrets {
    /// Own secrets in `store`'s `warden_secrets` table, sealed with `master`.
    pub fn new(store: Arc<dyn StateStore>, master: Arc<MasterKey>) -> Self {
        Self { store, master }
    }

    fn seal(&self, name: &str, value: &SecretString) -> Result<String, SecretError> {
        self.master
            .encrypt(name, value.expose_secret().as_bytes())
            .map_err(|_| SecretError::Malformed("encryption failed".into()))
    }

    /// The names held (never the values).
    pub async fn names(&self) -> Result<Vec<String>, SecretError> {
        self.store
            .list_warden_secret_names()
            .await
            .map_err(|e| store_error("warden_secrets".into(), &e))
    }

    /// Re-encrypts every row not yet under the current master key (`warden-cp migrate
    /// rotate-master-key`), each by a compare-and-swap, so a row another replica rewrote
    /// meanwhile is read again rather than overwritten. Idempotent and resumable: rows
    /// already under the current key are left alone. A row no key held opens fails the
    /// rotation, naming it and (for `enc:v2:`) its key id.
    pub async fn reseal_all(&self) -> Result<Resealed, SecretError> {
        const ATTEMPTS: usize = 5;
        let mut counts = Resealed::default();
        for name in self.names().await? {
            let reference = self.reference(&name);
            let mut done = false;
            for _ in 0..ATTEMPTS {
                let Some(sealed) = self
                    .store
                    .get_warden_secret(&name)
                    .await
                    .map_err(|e| store_error(reference.clone(), &e))?
                else {
                    done = true; // deleted meanwhile
                    break;
                };
                let Some(resealed) = self
                    .master
                    .reseal(&name, &sealed)
                    .map_err(|e| SecretError::from_cipher(reference.clone(), e))?
                else {
                    counts.current += 1;
                    done = true;
                    break;
                };
                if self
                    .store
                    .replace_warden_secret(&name, &sealed, &resealed, warden_core::unix_now())
                    .await
                    .map_err(|e| store_error(reference.clone(), &e))?
                {
                    counts.resealed += 1;
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(SecretError::Unavailable {
                    reference,
                    reason: format!("changed under the rotation {ATTEMPTS} times; run it again"),
                });
            }
        }
        Ok(counts)
    }

    /// Copies every `warden/…` entry of `file` into the table where the table has none
    /// (idempotent; nothing is deleted here, see [`FileImport::remove_from`]). A file value
    /// that does not decrypt fails the import, naming the entry.
    pub async fn import_from_file(
        &self,
        file: &FileSecretStore,
    ) -> Result<FileImport, SecretError> {
        let mut import = FileImport::default();
        for name in file.names().await? {
            if !name.starts_with(OWN_PREFIX) {
                continue;
            }
            let value = file.get(&name).await?;
            let sealed = self.seal(&name, &value)?;
            let inserted = self
                .store
                .insert_warden_secret(&name, &sealed, warden_core::unix_now())
                .await
                .map_err(|e| store_error(self.reference(&name), &e))?;
            if inserted {
                import.copied.push(name);
            } else if self.get(&name).await?.expose_secret() == value.expose_secret() {
                import.already.push(name);
            } else {
                import.conflicting.push(name);
            }
        }
        Ok(import)
    }
}

#[async_trait::async_trait]
impl SecretStore for OwnSecrets {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        let sealed = self
            .store
            .get_warden_secret(name)
            .await
            .map_err(|e| store_error(self.reference(name), &e))?
            .ok_or_else(|| SecretError::NotFound {
                reference: self.reference(name),
            })?;
        let decrypt = || SecretError::Decrypt {
            reference: self.reference(name),
        };
        let plain = self
            .master
            .decrypt(name, &sealed)
            .map_err(|e| SecretError::from_cipher(self.reference(name), e))?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| decrypt())?;
        Ok(SecretString::from(text))
    }

    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let sealed = self.seal(name, value)?;
        self.store
            .put_warden_secret(name, &sealed, warden_core::unix_now())
            .await
            .map_err(|e| store_error(self.reference(name), &e))
    }

    /// One `INSERT … ON CONFLICT DO NOTHING`, then a read: replicas starting together on
    /// one database agree on the first value written (the pepper, the checkpoint key).
    async fn put_if_absent(
        &self,
        name: &str,
        value: &SecretString,
    ) -> Result<SecretString, SecretError> {
        let sealed = self.seal(name, value)?;
        let inserted = self
            .store
            .insert_warden_secret(name, &sealed, warden_core::unix_now())
            .await
            .map_err(|e| store_error(self.reference(name), &e))?;
        if inserted {
            Ok(value.clone())
        } else {
            self.get(name).await
        }
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.store
            .delete_warden_secret(name)
            .await
            .map_err(|e| store_error(self.reference(name), &e))?;
        Ok(())
    }

    fn reference(&self, name: &str) -> String {
        format!("warden_secrets:{name}")
    }
}
