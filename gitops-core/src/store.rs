//! The [`StateStore`] trait: what an engine remembers between syncs and
//! across restarts — inventory, history, audit log and engine record.
//!
//! Records are keyed by an application name, so one store holds many
//! engines' state. The inventory and the engine record are written with
//! compare-and-swap on a version: a writer that lost track of the current
//! version is refused instead of silently overwriting (the etcd store relies
//! on this for fencing). Audit records are appended in the same atomic write
//! as the inventory change they describe.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::id::ResourceId;
use crate::model::Inventory;
use crate::source::BoxError;
use crate::sync::LockExt as _;

// The records a store writes, defined below the store in `record`; named
// here too because every `StateStore` signature speaks of them.
pub use crate::record::{
    AuditAction, AuditRecord, EngineRecord, FORMAT_VERSION, HistoryEntry, NotConverging,
};

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
    #[error("state store {location}: unavailable: {message}")]
    Unavailable {
        /// The store (a directory, an endpoint).
        location: String,
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The stored data is unreadable.
    #[error("state store {location}: {message}")]
    Corrupt {
        /// The store and record.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The store was written by a newer or unknown format; it is left untouched.
    #[error(
        "state store {location}: record set {record} has format version {found}, this build reads {supported}; refusing to open it (no rewrite)"
    )]
    UnsupportedFormat {
        /// The store.
        location: String,
        /// The record set.
        record: String,
        /// The version found.
        found: u32,
        /// The version supported.
        supported: u32,
    },
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Which audit records to return; all filters are optional and combine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this resource.
    pub id: Option<ResourceId>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records before this time.
    pub until: Option<SystemTime>,
    /// At most this many (the oldest first).
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// Whether `record` passes the id and time filters.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.id.as_ref().is_none_or(|id| *id == record.id)
            && self.since.is_none_or(|t| record.at >= t)
            && self.until.is_none_or(|t| record.at < t)
    }
}

/// Durable engine state.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The inventory of `app` (empty at version 0 when never written).
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError>;

    /// Writes the inventory if the stored version is still `expected`, and
    /// appends `audit` in the same atomic write; returns the new version.
    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
        audit: &[AuditRecord],
    ) -> Result<u64, StoreError>;

    /// Appends a history entry, keeping at most `retain` entries for `app`.
    async fn append_history(
        &self,
        app: &str,
        entry: &HistoryEntry,
        retain: usize,
    ) -> Result<(), StoreError>;

    /// The newest `limit` history entries, newest first.
    async fn history(&self, app: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Audit records matching `query`, oldest first.
    async fn audit(&self, app: &str, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// The engine record of `app` (default at version 0 when never written).
    async fn load_record(&self, app: &str) -> Result<Versioned<EngineRecord>, StoreError>;

    /// Writes the engine record if the stored version is still `expected`.
    async fn save_record(
        &self,
        app: &str,
        record: &EngineRecord,
        expected: u64,
    ) -> Result<u64, StoreError>;

    /// Every application with state in this store.
    async fn apps(&self) -> Result<Vec<String>, StoreError>;
}

#[derive(Default)]
struct AppState {
    inventory: Versioned<Inventory>,
    record: Versioned<EngineRecord>,
    history: VecDeque<HistoryEntry>,
    audit: Vec<AuditRecord>,
}

/// A [`StateStore`] in memory: the default when no durable store is given,
/// and handy in tests. Forgets everything when dropped.
#[derive(Default)]
pub struct MemoryStore {
    apps: Mutex<HashMap<String, AppState>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, app: &str, f: impl FnOnce(&mut AppState) -> T) -> T {
        let mut apps = self.apps.locked();
        f(apps.entry(app.to_owned()).or_default())
    }
}

fn check_version(app: &str, expected: u64, found: u64) -> Result<(), StoreError> {
    if expected == found {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            app: app.to_owned(),
            expected,
            found,
        })
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError> {
        Ok(self.with(app, |s| s.inventory.clone()))
    }

    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
        audit: &[AuditRecord],
    ) -> Result<u64, StoreError> {
        self.with(app, |s| {
            check_version(app, expected, s.inventory.version)?;
            s.inventory.version += 1;
            s.inventory.value = inventory.clone();
            s.audit.extend_from_slice(audit);
            Ok(s.inventory.version)
        })
    }

    async fn append_history(
        &self,
        app: &str,
        entry: &HistoryEntry,
        retain: usize,
    ) -> Result<(), StoreError> {
        self.with(app, |s| {
            s.history.push_back(entry.clone());
            while s.history.len() > retain {
                s.history.pop_front();
            }
        });
        Ok(())
    }

    async fn history(&self, app: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self.with(app, |s| {
            s.history.iter().rev().take(limit).cloned().collect()
        }))
    }

    async fn audit(&self, app: &str, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self.with(app, |s| {
            s.audit
                .iter()
                .filter(|r| query.matches(r))
                .take(query.limit.unwrap_or(usize::MAX))
                .cloned()
                .collect()
        }))
    }

    async fn load_record(&self, app: &str) -> Result<Versioned<EngineRecord>, StoreError> {
        Ok(self.with(app, |s| s.record.clone()))
    }

    async fn save_record(
        &self,
        app: &str,
        record: &EngineRecord,
        expected: u64,
    ) -> Result<u64, StoreError> {
        self.with(app, |s| {
            check_version(app, expected, s.record.version)?;
            s.record.version += 1;
            s.record.value = record.clone();
            Ok(s.record.version)
        })
    }

    async fn apps(&self) -> Result<Vec<String>, StoreError> {
        let apps = self.apps.locked();
        let mut names: Vec<String> = apps.keys().cloned().collect();
        names.sort();
        Ok(names)
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
            .save_inventory("web", &Inventory::new(), 0, &[])
            .await
            .unwrap();
        assert_eq!(v1, 1);
        let err = store
            .save_inventory("web", &Inventory::new(), 0, &[])
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
