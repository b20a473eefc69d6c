//! [`RedbStore`]: the embedded, crash-safe [`StateStore`] on `redb`.
//!
//! One file, `state.redb`, in a state directory. Every write is one ACID
//! transaction, so a process killed at any point leaves either the old or
//! the new records, never a mix. Values are JSON (readable with any redb
//! tool); keys are `(app, ...)` tuples, so one store holds many engines.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase as _, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::Inventory;
use crate::store::{
    AuditQuery, AuditRecord, AuditRetention, EngineRecord, FORMAT_VERSION, HistoryEntry,
    StateStore, StoreError, Versioned, readable,
};

/// Record-set name -> format version.
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// app -> (version, inventory JSON).
const INVENTORY: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("inventory");
/// app -> (version, engine record JSON).
const RECORD: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("record");
/// (app, sequence) -> history entry JSON.
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
/// (app, sequence) -> audit record JSON.
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
/// (app, resource id, sequence) -> () : the per-resource audit index.
const AUDIT_BY_ID: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("audit_by_id");

const RECORD_SETS: [&str; 4] = ["inventory", "record", "history", "audit"];

/// The embedded state store.
///
/// ```
/// use gitops_core::store::StateStore;
/// use gitops_core::RedbStore;
/// use gitops_core::model::Inventory;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir()?;
/// let store = RedbStore::open(dir.path())?;
/// let v = store.save_inventory("web", &Inventory::new(), 0, &[]).await?;
/// assert_eq!(store.load_inventory("web").await?.version, v);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// Audit records are kept within an [`AuditRetention`] (default: 90 days
/// and 100,000 records per application), trimmed in the transaction that
/// appends them; sequences are contiguous, so the count is the distance
/// between the first and the last key and only the oldest records are read.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    retention: AuditRetention,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish()
    }
}

fn unavailable(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    StoreError::Unavailable {
        location: path.display().to_string(),
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// Creates a new, empty database at `path` whole: made beside it under
/// another name, then renamed into place. A process killed while redb writes
/// a new file's header leaves a file that never opens again ("not a redb
/// database"), and every later start of the agent would fail; killed here,
/// it leaves only `state.redb.new`, replaced on the next open. (Found by
/// the crash test under load: a kill landed inside the first open.)
fn create_whole(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let fresh = dir.join("state.redb.new");
    let io = |e: std::io::Error| StoreError::Unavailable {
        location: fresh.display().to_string(),
        message: format!("cannot create the store: {e}"),
        source: Some(Box::new(e)),
    };
    match std::fs::remove_file(&fresh) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    drop(Database::create(&fresh).map_err(|e| unavailable(&fresh, e))?);
    std::fs::rename(&fresh, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the directory if needed.
    ///
    /// Fails with [`StoreError::UnsupportedFormat`] if any record set was
    /// written by a newer or unknown format version; nothing is rewritten.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable {
            location: dir.display().to_string(),
            message: format!("cannot create state directory: {e}"),
            source: Some(Box::new(e)),
        })?;
        let path = dir.join("state.redb");
        if !path.exists() {
            create_whole(dir, &path)?;
        }
        let db = Database::create(&path).map_err(|e| unavailable(&path, e))?;
        // Check every record set's format before writing anything.
        {
            let txn = db.begin_read().map_err(|e| unavailable(&path, e))?;
            match txn.open_table(META) {
                Ok(meta) => {
                    for set in RECORD_SETS {
                        let found = meta
                            .get(set)
                            .map_err(|e| unavailable(&path, e))?
                            .map(|v| v.value());
                        if let Some(found) = found.filter(|v| !readable(*v)) {
                            return Err(StoreError::UnsupportedFormat {
                                location: path.display().to_string(),
                                record: set.to_owned(),
                                found,
                                supported: FORMAT_VERSION,
                            });
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(unavailable(&path, e)),
            }
        }
        let txn = db.begin_write().map_err(|e| unavailable(&path, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| unavailable(&path, e))?;
            for set in RECORD_SETS {
                let found = meta
                    .get(set)
                    .map_err(|e| unavailable(&path, e))?
                    .map(|v| v.value());
                match found {
                    Some(FORMAT_VERSION) => {}
                    Some(found) if !readable(found) => {
                        return Err(StoreError::UnsupportedFormat {
                            location: path.display().to_string(),
                            record: set.to_owned(),
                            found,
                            supported: FORMAT_VERSION,
                        });
                    }
                    // New, or an older format this build reads: from now on
                    // it writes this format, and an older build refuses the
                    // store instead of misreading what this one wrote.
                    Some(_) | None => {
                        meta.insert(set, FORMAT_VERSION)
                            .map_err(|e| unavailable(&path, e))?;
                    }
                }
            }
            txn.open_table(INVENTORY)
                .map_err(|e| unavailable(&path, e))?;
            txn.open_table(RECORD).map_err(|e| unavailable(&path, e))?;
            txn.open_table(HISTORY).map_err(|e| unavailable(&path, e))?;
            txn.open_table(AUDIT).map_err(|e| unavailable(&path, e))?;
            txn.open_table(AUDIT_BY_ID)
                .map_err(|e| unavailable(&path, e))?;
        }
        txn.commit().map_err(|e| unavailable(&path, e))?;
        Ok(Self {
            db: Arc::new(db),
            path,
            retention: AuditRetention::default(),
        })
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs blocking redb work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || work(&db, &path))
            .await
            .map_err(|e| StoreError::Unavailable {
                location: self.path.display().to_string(),
                message: format!("store task failed: {e}"),
                source: None,
            })?
    }
}

fn encode<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        location: path.display().to_string(),
        message: format!("cannot encode record: {e}"),
    })
}

fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        location: format!("{} ({what})", path.display()),
        message: format!("unreadable record: {e}"),
    })
}

fn load_versioned<T: DeserializeOwned + Default>(
    db: &Database,
    path: &Path,
    table: TableDefinition<&str, (u64, &[u8])>,
    app: &str,
) -> Result<Versioned<T>, StoreError> {
    let txn = db.begin_read().map_err(|e| unavailable(path, e))?;
    let table = txn.open_table(table).map_err(|e| unavailable(path, e))?;
    match table.get(app).map_err(|e| unavailable(path, e))? {
        None => Ok(Versioned::default()),
        Some(guard) => {
            let (version, bytes) = guard.value();
            Ok(Versioned {
                version,
                value: decode(path, app, bytes)?,
            })
        }
    }
}

/// Compare-and-swap write of a versioned record inside `txn`.
fn write_versioned(
    txn: &redb::WriteTransaction,
    path: &Path,
    definition: TableDefinition<&str, (u64, &[u8])>,
    app: &str,
    expected: u64,
    bytes: &[u8],
) -> Result<u64, StoreError> {
    let mut table = txn
        .open_table(definition)
        .map_err(|e| unavailable(path, e))?;
    let found = table
        .get(app)
        .map_err(|e| unavailable(path, e))?
        .map_or(0, |g| g.value().0);
    if found != expected {
        return Err(StoreError::Conflict {
            app: app.to_owned(),
            expected,
            found,
        });
    }
    table
        .insert(app, (found + 1, bytes))
        .map_err(|e| unavailable(path, e))?;
    Ok(found + 1)
}

fn next_sequence(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    path: &Path,
    app: &str,
) -> Result<u64, StoreError> {
    let last = table
        .range((app, 0)..=(app, u64::MAX))
        .map_err(|e| unavailable(path, e))?
        .next_back()
        .transpose()
        .map_err(|e| unavailable(path, e))?
        .map(|(k, _)| k.value().1);
    Ok(last.map_or(0, |s| s + 1))
}

/// Drops the oldest audit records of `app` beyond the count limit, then
/// those older than the age limit, with their index entries. Reads the
/// head only: the first and last keys, the records it drops, and the first
/// one it keeps.
fn trim_audit(
    records: &mut redb::Table<(&'static str, u64), &'static [u8]>,
    by_id: &mut redb::Table<(&'static str, &'static str, u64), ()>,
    path: &Path,
    app: &str,
    retention: &AuditRetention,
    now: std::time::SystemTime,
) -> Result<(), StoreError> {
    let bounds = {
        let mut range = records
            .range((app, 0)..=(app, u64::MAX))
            .map_err(|e| unavailable(path, e))?;
        let first = range.next().transpose().map_err(|e| unavailable(path, e))?;
        let last = range
            .next_back()
            .transpose()
            .map_err(|e| unavailable(path, e))?;
        first.map(|(f, _)| {
            let first = f.value().1;
            (first, last.map_or(first, |(l, _)| l.value().1))
        })
    };
    let Some((first, last)) = bounds else {
        return Ok(());
    };
    // Sequences are contiguous: trimming only ever removes the head.
    let count = last - first + 1;
    let mut keep_from = first + count.saturating_sub(retention.max_records);
    // The oldest records we would keep may still be too old.
    let mut doomed: Vec<(u64, String)> = Vec::new();
    for item in records
        .range((app, first)..=(app, last))
        .map_err(|e| unavailable(path, e))?
    {
        let (k, v) = item.map_err(|e| unavailable(path, e))?;
        let seq = k.value().1;
        let record: AuditRecord = decode(path, "audit", v.value())?;
        if seq >= keep_from {
            if !retention.expired(record.at, now) {
                break;
            }
            keep_from = seq + 1;
        }
        doomed.push((seq, record.id.to_string()));
    }
    for (seq, id) in &doomed {
        records
            .remove((app, *seq))
            .map_err(|e| unavailable(path, e))?;
        by_id
            .remove((app, id.as_str(), *seq))
            .map_err(|e| unavailable(path, e))?;
    }
    Ok(())
}

#[async_trait]
impl StateStore for RedbStore {
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError> {
        let app = app.to_owned();
        self.blocking(move |db, path| load_versioned(db, path, INVENTORY, &app))
            .await
    }

    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
        audit: &[AuditRecord],
    ) -> Result<u64, StoreError> {
        let app = app.to_owned();
        let bytes = encode(&self.path, inventory)?;
        let audit: Vec<(String, Vec<u8>)> = audit
            .iter()
            .map(|r| Ok((r.id.to_string(), encode(&self.path, r)?)))
            .collect::<Result<_, StoreError>>()?;
        let retention = self.retention;
        self.blocking(move |db, path| {
            let txn = db.begin_write().map_err(|e| unavailable(path, e))?;
            let version = write_versioned(&txn, path, INVENTORY, &app, expected, &bytes)?;
            if !audit.is_empty() {
                let mut records = txn.open_table(AUDIT).map_err(|e| unavailable(path, e))?;
                let mut by_id = txn
                    .open_table(AUDIT_BY_ID)
                    .map_err(|e| unavailable(path, e))?;
                let first = next_sequence(&records, path, &app)?;
                for (seq, (id, bytes)) in (first..).zip(&audit) {
                    records
                        .insert((app.as_str(), seq), bytes.as_slice())
                        .map_err(|e| unavailable(path, e))?;
                    by_id
                        .insert((app.as_str(), id.as_str(), seq), ())
                        .map_err(|e| unavailable(path, e))?;
                }
                trim_audit(
                    &mut records,
                    &mut by_id,
                    path,
                    &app,
                    &retention,
                    std::time::SystemTime::now(),
                )?;
            }
            txn.commit().map_err(|e| unavailable(path, e))?;
            Ok(version)
        })
        .await
    }

    async fn append_history(
        &self,
        app: &str,
        entry: &HistoryEntry,
        retain: usize,
    ) -> Result<(), StoreError> {
        let app = app.to_owned();
        let bytes = encode(&self.path, entry)?;
        self.blocking(move |db, path| {
            let txn = db.begin_write().map_err(|e| unavailable(path, e))?;
            {
                let mut table = txn.open_table(HISTORY).map_err(|e| unavailable(path, e))?;
                let seq = next_sequence(&table, path, &app)?;
                table
                    .insert((app.as_str(), seq), bytes.as_slice())
                    .map_err(|e| unavailable(path, e))?;
                // Keep the newest `retain`: sequences below seq + 1 - retain go.
                let keep_from = (seq + 1).saturating_sub(retain as u64);
                if keep_from > 0 {
                    table
                        .retain_in((app.as_str(), 0)..(app.as_str(), keep_from), |_, _| false)
                        .map_err(|e| unavailable(path, e))?;
                }
            }
            txn.commit().map_err(|e| unavailable(path, e))?;
            Ok(())
        })
        .await
    }

    async fn history(&self, app: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let app = app.to_owned();
        self.blocking(move |db, path| {
            let txn = db.begin_read().map_err(|e| unavailable(path, e))?;
            let table = txn.open_table(HISTORY).map_err(|e| unavailable(path, e))?;
            let mut out = Vec::new();
            for item in table
                .range((app.as_str(), 0)..=(app.as_str(), u64::MAX))
                .map_err(|e| unavailable(path, e))?
                .rev()
                .take(limit)
            {
                let (_, v) = item.map_err(|e| unavailable(path, e))?;
                out.push(decode(path, "history", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn audit(&self, app: &str, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let app = app.to_owned();
        let query = query.clone();
        self.blocking(move |db, path| read_audit(db, path, &app, &query, Order::OldestFirst))
            .await
    }

    async fn audit_newest(
        &self,
        app: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let app = app.to_owned();
        let query = query.clone();
        self.blocking(move |db, path| read_audit(db, path, &app, &query, Order::NewestFirst))
            .await
    }

    async fn load_record(&self, app: &str) -> Result<Versioned<EngineRecord>, StoreError> {
        let app = app.to_owned();
        self.blocking(move |db, path| load_versioned(db, path, RECORD, &app))
            .await
    }

    async fn save_record(
        &self,
        app: &str,
        record: &EngineRecord,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let app = app.to_owned();
        let bytes = encode(&self.path, record)?;
        self.blocking(move |db, path| {
            let txn = db.begin_write().map_err(|e| unavailable(path, e))?;
            let version = write_versioned(&txn, path, RECORD, &app, expected, &bytes)?;
            txn.commit().map_err(|e| unavailable(path, e))?;
            Ok(version)
        })
        .await
    }

    async fn apps(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|db, path| {
            let txn = db.begin_read().map_err(|e| unavailable(path, e))?;
            let mut names = std::collections::BTreeSet::new();
            for table in [INVENTORY, RECORD] {
                let t = txn.open_table(table).map_err(|e| unavailable(path, e))?;
                for item in t.iter().map_err(|e| unavailable(path, e))? {
                    let (k, _) = item.map_err(|e| unavailable(path, e))?;
                    names.insert(k.value().to_owned());
                }
            }
            Ok(names.into_iter().collect())
        })
        .await
    }
}

/// Which end of the audit trail a read starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    OldestFirst,
    NewestFirst,
}

/// Audit records of `app` matching `query`, walking the trail from the end
/// `order` says and stopping once `query.limit` records are found.
fn read_audit(
    db: &Database,
    path: &Path,
    app: &str,
    query: &AuditQuery,
    order: Order,
) -> Result<Vec<AuditRecord>, StoreError> {
    let txn = db.begin_read().map_err(|e| unavailable(path, e))?;
    let records = txn.open_table(AUDIT).map_err(|e| unavailable(path, e))?;
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // Whether to read on.
    let mut push = |bytes: &[u8]| -> Result<bool, StoreError> {
        let record: AuditRecord = decode(path, "audit", bytes)?;
        if query.matches(&record) {
            out.push(record);
        }
        Ok(out.len() < limit)
    };
    match &query.id {
        Some(id) => {
            // The per-resource index: one range scan, then point reads.
            let id = id.to_string();
            let index = txn
                .open_table(AUDIT_BY_ID)
                .map_err(|e| unavailable(path, e))?;
            let range = index
                .range((app, id.as_str(), 0)..=(app, id.as_str(), u64::MAX))
                .map_err(|e| unavailable(path, e))?;
            let mut visit = |item: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
                let (k, _): (redb::AccessGuard<(&str, &str, u64)>, _) =
                    item.map_err(|e| unavailable(path, e))?;
                let seq = k.value().2;
                match records.get((app, seq)).map_err(|e| unavailable(path, e))? {
                    Some(v) => push(v.value()),
                    None => Ok(true),
                }
            };
            match order {
                Order::OldestFirst => walk(range, &mut visit)?,
                Order::NewestFirst => walk(range.rev(), &mut visit)?,
            }
        }
        None => {
            let range = records
                .range((app, 0)..=(app, u64::MAX))
                .map_err(|e| unavailable(path, e))?;
            let mut visit = |item: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
                let (_, v): (_, redb::AccessGuard<&[u8]>) =
                    item.map_err(|e| unavailable(path, e))?;
                push(v.value())
            };
            match order {
                Order::OldestFirst => walk(range, &mut visit)?,
                Order::NewestFirst => walk(range.rev(), &mut visit)?,
            }
        }
    }
    Ok(out)
}

/// Visits `items` until `visit` says stop (or fails).
fn walk<I, T>(
    items: I,
    visit: &mut impl FnMut(T) -> Result<bool, StoreError>,
) -> Result<(), StoreError>
where
    I: Iterator<Item = T>,
{
    for item in items {
        if !visit(item)? {
            break;
        }
    }
    Ok(())
}
