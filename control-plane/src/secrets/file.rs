//! The encrypted file secret store, Warden's embedded default: one JSON file mapping names
//! to `enc:v2:` values (`enc:v1:` from before key ids still read; see [`super::cipher`]). Writes go to a temporary file that is
//! renamed over the old one, so a crash never leaves a half-written store; the file is
//! created with mode 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::cipher::{MasterKey, Resealed, is_encrypted};
use super::{SecretError, SecretStore};

/// Secrets encrypted under the master key in one file.
pub struct FileSecretStore {
    path: PathBuf,
    master: Arc<MasterKey>,
    /// Serialises read-modify-write cycles within this process.
    lock: Mutex<()>,
}

impl std::fmt::Debug for FileSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSecretStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileSecretStore {
    /// A store in `path` (created on first write).
    pub fn new(path: PathBuf, master: MasterKey) -> Self {
        Self::with_shared_key(path, Arc::new(master))
    }

    /// A store in `path` using a master key shared with other users (`env://` decryption).
    pub fn with_shared_key(path: PathBuf, master: Arc<MasterKey>) -> Self {
        Self {
            path,
            master,
            lock: Mutex::new(()),
        }
    }

    async fn load(&self) -> Result<BTreeMap<String, String>, SecretError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| SecretError::Malformed(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn save(&self, map: &BTreeMap<String, String>) -> Result<(), SecretError> {
        let bytes =
            serde_json::to_vec_pretty(map).map_err(|e| SecretError::Malformed(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        write_private(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &self.path).await?;
        Ok(())
    }
}

/// How many values of a file store are encrypted, and the names of plaintext ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncryptionStatus {
    pub encrypted: usize,
    pub plaintext: Vec<String>,
}

impl FileSecretStore {
    /// The file this store keeps its values in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names this file holds (never their values), in order.
    pub async fn names(&self) -> Result<Vec<String>, SecretError> {
        Ok(self.load().await?.into_keys().collect())
    }

    /// Counts encrypted values and names plaintext ones (never their values).
    pub async fn encryption_status(&self) -> Result<EncryptionStatus, SecretError> {
        let map = self.load().await?;
        let mut status = EncryptionStatus::default();
        for (name, value) in &map {
            if is_encrypted(value) {
                status.encrypted += 1;
            } else {
                status.plaintext.push(name.clone());
            }
        }
        Ok(status)
    }

    /// Re-encrypts every value not yet under the current master key (`warden-cp migrate
    /// rotate-master-key`), in one atomic rewrite of the file; idempotent. Plaintext values
    /// are counted and left alone. A value no key held opens fails the whole file, naming it.
    pub async fn reseal_all(&self) -> Result<Resealed, SecretError> {
        let _guard = self.lock.lock().await;
        let mut map = self.load().await?;
        let mut counts = Resealed::default();
        for (name, value) in &mut map {
            if !is_encrypted(value) {
                counts.plaintext += 1;
                continue;
            }
            match self.master.reseal(name, value) {
                Ok(None) => counts.current += 1,
                Ok(Some(sealed)) => {
                    *value = sealed;
                    counts.resealed += 1;
                }
                Err(e) => return Err(SecretError::from_cipher(self.reference(name), e)),
            }
        }
        if counts.resealed > 0 {
            self.save(&map).await?;
        }
        Ok(counts)
    }

    /// Encrypts every plaintext value in place (idempotent: encrypted values are left as
    /// they are); returns how many were encrypted.
    pub async fn encrypt_plaintext(&self) -> Result<usize, SecretError> {
        let _guard = self.lock.lock().await;
        let mut map = self.load().await?;
        let mut count = 0;
        for (name, value) in &mut map {
            if is_encrypted(value) {
                continue;
            }
            let plain = zeroize::Zeroizing::new(std::mem::take(value));
            *value = self
                .master
                .encrypt(name, plain.as_bytes())
                .map_err(|_| SecretError::Malformed("encryption failed".into()))?;
            count += 1;
        }
        if count > 0 {
            self.save(&map).await?;
        }
        Ok(count)
    }
}

async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    Ok(())
}

#[async_trait::async_trait]
impl SecretStore for FileSecretStore {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        let map = self.load().await?;
        let value = map.get(name).ok_or_else(|| SecretError::NotFound {
            reference: self.reference(name),
        })?;
        if !is_encrypted(value) {
            // Written by hand or by an older tool: read transparently, loudly, until
            // `warden-cp migrate encrypt` encrypts it.
            tracing::warn!(reference = %self.reference(name), "plaintext value in the secret file: run `warden-cp migrate encrypt`");
            return Ok(SecretString::from(value.clone()));
        }
        let plain = self
            .master
            .decrypt(name, value)
            .map_err(|e| SecretError::from_cipher(self.reference(name), e))?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Decrypt {
            reference: self.reference(name),
        })?;
        Ok(SecretString::from(text))
    }

    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let _guard = self.lock.lock().await;
        let mut map = self.load().await?;
        let sealed = self
            .master
            .encrypt(name, value.expose_secret().as_bytes())
            .map_err(|_| SecretError::Malformed("encryption failed".into()))?;
        map.insert(name.to_owned(), sealed);
        self.save(&map).await
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        let _guard = self.lock.lock().await;
        let mut map = self.load().await?;
        if map.remove(name).is_some() {
            self.save(&map).await?;
        }
        Ok(())
    }

    fn reference(&self, name: &str) -> String {
        format!("file://{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretBox;

    fn master() -> (MasterKey, String) {
        let b64 = MasterKey::generate_base64().to_string();
        (
            MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap(),
            b64,
        )
    }

    #[tokio::test]
    async fn stores_encrypted_and_reads_back_across_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let (k, b64) = master();
        let store = FileSecretStore::new(path.clone(), k);
        store
            .put(
                "providers/openai/k1",
                &SecretString::from("sk-canary-123456"),
            )
            .await
            .unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("sk-canary"), "plaintext on disk");
        assert!(raw.contains("enc:v2:"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = FileSecretStore::new(
            path.clone(),
            MasterKey::from_base64(&SecretBox::from(b64.as_str())).unwrap(),
        );
        let v = again.get("providers/openai/k1").await.unwrap();
        assert_eq!(v.expose_secret(), "sk-canary-123456");
        let (other, _) = master();
        let wrong = FileSecretStore::new(path, other);
        let err = wrong.get("providers/openai/k1").await.unwrap_err();
        assert!(matches!(err, SecretError::UnknownMasterKey { .. }), "{err}");
        assert!(!err.to_string().contains("sk-canary"));
    }

    #[tokio::test]
    async fn missing_and_deleted_names_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (k, _) = master();
        let store = FileSecretStore::new(dir.path().join("s.json"), k);
        assert!(matches!(
            store.get("nope").await,
            Err(SecretError::NotFound { .. })
        ));
        store.put("a", &SecretString::from("v")).await.unwrap();
        store.delete("a").await.unwrap();
        store.delete("a").await.unwrap();
        assert!(matches!(
            store.get("a").await,
            Err(SecretError::NotFound { .. })
        ));
    }
}

#[cfg(test)]
mod migrate_tests {
    use super::*;

    #[tokio::test]
    async fn plaintext_values_are_read_and_then_encrypted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let master = MasterKey::from_base64(&secrecy::SecretBox::from(
            MasterKey::generate_base64().as_str(),
        ))
        .unwrap();
        let store = FileSecretStore::new(path.clone(), master);
        store
            .put("sealed", &SecretString::from("sk-canary-sealed"))
            .await
            .unwrap();
        // An older tool left a plaintext value behind.
        let mut map: BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        map.insert("legacy".into(), "sk-canary-plain".into());
        std::fs::write(&path, serde_json::to_vec(&map).unwrap()).unwrap();

        let status = store.encryption_status().await.unwrap();
        assert_eq!(status.encrypted, 1);
        assert_eq!(status.plaintext, vec!["legacy".to_owned()]);
        assert_eq!(
            store.get("legacy").await.unwrap().expose_secret(),
            "sk-canary-plain"
        );

        assert_eq!(store.encrypt_plaintext().await.unwrap(), 1);
        assert_eq!(store.encrypt_plaintext().await.unwrap(), 0, "idempotent");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("sk-canary"), "no plaintext left on disk");
        assert_eq!(
            store.get("legacy").await.unwrap().expose_secret(),
            "sk-canary-plain"
        );
        assert_eq!(
            store.get("sealed").await.unwrap().expose_secret(),
            "sk-canary-sealed"
        );
        let status = store.encryption_status().await.unwrap();
        assert_eq!((status.encrypted, status.plaintext.len()), (2, 0));
    }
}
