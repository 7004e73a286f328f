use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::{Credential, CredentialStore, SecretPath, StoreError};

/// A store that keeps credentials in memory, for tests of code that takes a
/// [`CredentialStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    secrets: Mutex<BTreeMap<SecretPath, Credential>>,
}

impl MemoryStore {
    fn secrets(&self) -> MutexGuard<'_, BTreeMap<SecretPath, Credential>> {
        // Every operation is a single map call, so a panic elsewhere while the
        // lock was held cannot have left the map half-updated.
        self.secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl CredentialStore for MemoryStore {
    async fn get(&self, path: &SecretPath) -> Result<Option<Credential>, StoreError> {
        Ok(self.secrets().get(path).cloned())
    }

    async fn put(&self, path: &SecretPath, credential: &Credential) -> Result<(), StoreError> {
        self.secrets().insert(path.clone(), credential.clone());
        Ok(())
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        self.secrets().remove(path);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SecretPath>, StoreError> {
        Ok(self.secrets().keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(password: &str) -> Credential {
        Credential {
            username: "app".into(),
            password: password.into(),
            endpoint: "localhost".into(),
            port: 5432,
            dbname: "orders".into(),
            pooler: None,
            scram_iterations: None,
        }
    }

    #[tokio::test]
    async fn round_trip() {
        let store = MemoryStore::default();
        let b = SecretPath::for_role("shop", "orders", "b");
        let a = SecretPath::for_role("shop", "orders", "a");
        assert_eq!(store.get(&a).await.unwrap(), None);

        store.put(&b, &credential("1")).await.unwrap();
        store.put(&a, &credential("2")).await.unwrap();
        store.put(&a, &credential("3")).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap(), Some(credential("3")));
        assert_eq!(store.list().await.unwrap(), vec![a.clone(), b.clone()]);

        store.delete(&a).await.unwrap();
        store.delete(&a).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert_eq!(store.list().await.unwrap(), vec![b]);
    }
}
