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
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::id::ResourceId;
use crate::model::Inventory;
use crate::source::BoxError;
use crate::sync::LockExt as _;

// The records a store writes, defined below the store in `record`; named
// here too because every `StateStore` signature speaks of them.
pub use crate::record::{
    AuditAction, AuditRecord, EngineRecord, FORMAT_VERSION, HistoryEntry, NotConverging,
    OLDEST_READABLE_FORMAT, readable,
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

/// How long audit records are kept, per application. Every store applies
/// it as records are appended, reading only the oldest records: those
/// beyond `max_records` go, and so do those older than `max_age`, whichever
/// keeps less. Records are appended in time order, so trimming by age
/// stops at the first record young enough to keep.
///
/// The default keeps 90 days and at most 100,000 records per application.
///
/// ```
/// use std::time::Duration;
/// use gitops_core::store::AuditRetention;
/// let keep = AuditRetention::default();
/// assert_eq!(keep.max_age, Duration::from_secs(90 * 24 * 60 * 60));
/// assert_eq!(keep.max_records, 100_000);
/// let a_year = AuditRetention::default().max_age(Duration::from_secs(365 * 24 * 60 * 60));
/// assert_eq!(a_year.max_records, 100_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    /// Records older than this go (`Duration::MAX`: kept whatever their age).
    pub max_age: Duration,
    /// At most this many records per application; the oldest go first
    /// (`u64::MAX`: no limit).
    pub max_records: u64,
}

impl AuditRetention {
    /// The default age limit: 90 days.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 60 * 60);
    /// The default count limit: 100,000 records per application.
    pub const DEFAULT_MAX_RECORDS: u64 = 100_000;
    /// Keeps every record forever (audit logs kept elsewhere by law, or
    /// tests). The store then grows without bound.
    pub const KEEP_ALL: AuditRetention = AuditRetention {
        max_age: Duration::MAX,
        max_records: u64::MAX,
    };

    /// The same retention with another age limit.
    pub fn max_age(self, max_age: Duration) -> Self {
        Self { max_age, ..self }
    }

    /// The same retention with another count limit.
    pub fn max_records(self, max_records: u64) -> Self {
        Self {
            max_records,
            ..self
        }
    }

    /// Records made before this instant are dropped (`None`: no age limit
    /// reaches back that far).
    pub fn cutoff(&self, now: SystemTime) -> Option<SystemTime> {
        now.checked_sub(self.max_age)
    }

    /// Whether a record made at `at` is too old to keep at `now`.
    pub fn expired(&self, at: SystemTime, now: SystemTime) -> bool {
        self.cutoff(now).is_some_and(|cutoff| at < cutoff)
    }
}

impl Default for AuditRetention {
    fn default() -> Self {
        Self {
            max_age: Self::DEFAULT_MAX_AGE,
            max_records: Self::DEFAULT_MAX_RECORDS,
        }
    }
}

/// Durable engine state.
///
/// Stores keep audit records within an [`AuditRetention`] (by default 90
/// days and 100,000 records per application), trimmed as records are
/// appended.
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

    /// The newest audit records matching `query`, newest first: at most
    /// `query.limit` of them, the most recent.
    ///
    /// The default reads every matching record oldest first and keeps the
    /// end; a store that can walk its records backwards (the memory and
    /// redb stores do) reads only the records it returns.
    async fn audit_newest(
        &self,
        app: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let all = AuditQuery {
            limit: None,
            ..query.clone()
        };
        let mut records = self.audit(app, &all).await?;
        let keep = query.limit.unwrap_or(usize::MAX).min(records.len());
        let mut newest = records.split_off(records.len() - keep);
        newest.reverse();
        Ok(newest)
    }

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
    audit: VecDeque<AuditRecord>,
}

/// A [`StateStore`] in memory: the default when no durable store is given,
/// and handy in tests. Forgets everything when dropped. Audit records are
/// kept within an [`AuditRetention`] (default: 90 days, 100,000 records per
/// application).
#[derive(Default)]
pub struct MemoryStore {
    apps: Mutex<HashMap<String, AppState>>,
    retention: AuditRetention,
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

    /// Keeps audit records within `retention` instead of the default.
    pub fn with_audit_retention(mut self, retention: AuditRetention) -> Self {
        self.retention = retention;
        self
    }

    /// The audit retention in force.
    pub fn audit_retention(&self) -> AuditRetention {
        self.retention
    }

    fn with<T>(&self, app: &str, f: impl FnOnce(&mut AppState) -> T) -> T {
        let mut apps = self.apps.locked();
        f(apps.entry(app.to_owned()).or_default())
    }
}

/// Drops the oldest records beyond the count limit, then those too old,
/// looking at the head only.
fn trim_audit(audit: &mut VecDeque<AuditRecord>, retention: &AuditRetention, now: SystemTime) {
    let max = usize::try_from(retention.max_records).unwrap_or(usize::MAX);
    while audit.len() > max || audit.front().is_some_and(|r| retention.expired(r.at, now)) {
        audit.pop_front();
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
            s.audit.extend(audit.iter().cloned());
            trim_audit(&mut s.audit, &self.retention, SystemTime::now());
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

    async fn audit_newest(
        &self,
        app: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self.with(app, |s| {
            s.audit
                .iter()
                .rev()
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
