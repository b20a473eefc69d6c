//! The [`StateStore`] trait: what an engine remembers between syncs.
//!
//! Records are keyed by an application name, so one store holds many
//! engines' state, and every write is a compare-and-swap on the record's
//! version: a writer that lost track of the current version is refused
//! instead of silently overwriting (the etcd store relies on this).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::model::Inventory;
use crate::source::BoxError;

/// A record and the version it was read at (0: never written).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versioned<T> {
    /// Version to pass back as `expected` on the next write.
    pub version: u64,
    /// The record.
    pub value: T,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read (another writer). Not transient:
    /// re-read and decide again.
    #[error("state of {app}: version conflict (expected {expected}, found {found})")]
    Conflict {
        /// The application.
        app: String,
        /// The version the writer expected.
        expected: u64,
        /// The version in the store.
        found: u64,
    },
    /// The store could not be reached or written; may succeed later.
    #[error("state of {app}: store unavailable: {message}")]
    Unavailable {
        /// The application.
        app: String,
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The stored data is unreadable or of an unknown format version.
    #[error("state of {app}: {message}")]
    Corrupt {
        /// The application.
        app: String,
        /// What is wrong.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Durable engine state with compare-and-swap writes.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The inventory of `app` (empty at version 0 when never written).
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError>;

    /// Writes the inventory if the stored version is still `expected`;
    /// returns the new version.
    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
    ) -> Result<u64, StoreError>;
}

/// A [`StateStore`] in memory: the default until a durable store is given,
/// and handy in tests. Forgets everything when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inventories: Mutex<HashMap<String, Versioned<Inventory>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError> {
        let map = self.inventories.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(app).cloned().unwrap_or_default())
    }

    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let mut map = self.inventories.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(app.to_owned()).or_default();
        if slot.version != expected {
            return Err(StoreError::Conflict {
                app: app.to_owned(),
                expected,
                found: slot.version,
            });
        }
        slot.version += 1;
        slot.value = inventory.clone();
        Ok(slot.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap() {
        let store = MemoryStore::new();
        let first = store.load_inventory("web").await.unwrap();
        assert_eq!(first.version, 0);
        let v1 = store
            .save_inventory("web", &Inventory::new(), 0)
            .await
            .unwrap();
        assert_eq!(v1, 1);
        let err = store
            .save_inventory("web", &Inventory::new(), 0)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    expected: 0,
                    found: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.load_inventory("other").await.unwrap().version, 0);
    }
}
