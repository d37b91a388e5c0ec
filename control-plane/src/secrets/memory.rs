//! An in-memory [`SecretStore`] for tests: nothing persists, every `put` makes a new
//! version (`1`, `2`, …) so rotation polling can be exercised without a real backend.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::SecretString;

use super::{SecretError, SecretStore};

/// Secrets in a map, with a version counter per name.
#[derive(Default)]
pub struct MemorySecretStore {
    entries: Mutex<HashMap<String, (SecretString, u64)>>,
}

impl std::fmt::Debug for MemorySecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.entries.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("MemorySecretStore")
            .field("secrets", &count)
            .finish_non_exhaustive()
    }
}

impl MemorySecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SecretString, u64)>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl SecretStore for MemorySecretStore {
    async fn get(&self, name: &str) -> Result<SecretString, SecretError> {
        self.get_versioned(name).await.map(|(v, _)| v)
    }

    async fn get_versioned(&self, name: &str) -> Result<(SecretString, String), SecretError> {
        self.lock()
            .get(name)
            .map(|(v, version)| (v.clone(), version.to_string()))
            .ok_or_else(|| SecretError::NotFound {
                reference: self.reference(name),
            })
    }

    async fn put(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let mut map = self.lock();
        let next = map.get(name).map_or(1, |(_, v)| v + 1);
        map.insert(name.to_owned(), (value.clone(), next));
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.lock().remove(name);
        Ok(())
    }

    fn reference(&self, name: &str) -> String {
        format!("memory://{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[tokio::test]
    async fn versions_count_up_and_deleted_names_are_gone() {
        let s = MemorySecretStore::new();
        s.put("a", &SecretString::from("sk-canary-1"))
            .await
            .unwrap();
        let (v1, n1) = s.get_versioned("a").await.unwrap();
        s.put("a", &SecretString::from("sk-canary-2"))
            .await
            .unwrap();
        let (v2, n2) = s.get_versioned("a").await.unwrap();
        assert_eq!((v1.expose_secret(), n1.as_str()), ("sk-canary-1", "1"));
        assert_eq!((v2.expose_secret(), n2.as_str()), ("sk-canary-2", "2"));
        assert!(!format!("{s:?}").contains("canary"));
        s.delete("a").await.unwrap();
        let err = s.get("a").await.unwrap_err();
        assert_eq!(err.to_string(), "secret memory://a not found");
    }
}
