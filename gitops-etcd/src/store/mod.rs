//! [`EtcdStore`]: the engine's [`StateStore`] on etcd, fenced by ownership.
//!
//! Layout under the store's prefix (application names are escaped so that
//! each is one key segment):
//!
//! ```text
//! <prefix>/state/<app>/inventory          ids, digests, dependencies (no manifests)
//! <prefix>/state/<app>/record             pins, bad revisions, last applied/healthy
//! <prefix>/state/<app>/history/<id>       one sync each, newest `retain` kept
//! <prefix>/state/<app>/audit/<version>    append-only: the records of one inventory
//!                                          save, in the same transaction
//! <prefix>/state/<app>/audit-count        how many audit records there are, up to
//!                                          which key (a cache for retention, rebuilt
//!                                          from the audit keys when missing)
//! ```
//!
//! Inventory and record writes compare the key's mod-revision with the
//! version the engine read (the version *is* the mod-revision). A store made
//! with [`EtcdStore::fenced`] adds the owner's [`Fence`] to every write
//! transaction, history included: once the replica lost the application,
//! every write is refused with [`StoreError::Conflict`] and nothing lands.
//! Values over [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES) are refused before
//! they are sent (an inventory fits ~10,000 resources).
//!
//! Every read of more than one key is paged: at most
//! [`VALUES_PER_PAGE`] values or
//! [`KEYS_PER_PAGE`] keys per request, so no reply
//! comes near the client's [`DECODE_LIMIT`](crate::DECODE_LIMIT) however
//! much history and audit an application has. Audit records are kept within
//! an [`AuditRetention`] (default: 90 days, 100,000 records per
//! application), trimmed after each save from the oldest key on.

mod audit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use gitops_core::model::Inventory;
use gitops_core::store::EngineRecord;
use gitops_core::store::{AuditRetention, FORMAT_VERSION, Versioned, readable};
use gitops_core::sync::LockExt as _;
use gitops_core::{AuditQuery, AuditRecord, HistoryEntry, StateStore, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{EtcdClient, EtcdError, KEYS_PER_PAGE, VALUES_PER_PAGE, check_size};
use crate::fence::{Fence, escape, unescape};

/// The engine state of many applications in etcd. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EtcdStore {
    client: EtcdClient,
    prefix: String,
    fence: Option<Fence>,
    retention: AuditRetention,
    reads: Arc<ReadCounters>,
    /// What a fenced store (the only writer of its application) knows of
    /// its own writes, to skip reads; shared by its clones.
    known: Arc<Mutex<Known>>,
}

/// What a fenced store remembers of its application between writes.
#[derive(Debug, Default)]
struct Known {
    /// History entries after the last append (`None`: not counted yet).
    history: Option<usize>,
    /// The audit count and its key's version after the last write of it.
    audit: Option<(u64, audit::AuditCount)>,
}

/// What this store (and its clones) read from etcd.
#[derive(Debug, Default)]
struct ReadCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// How much a store has read from etcd since it was made (clones share
/// the count): for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadStats {
    /// Range (get) requests sent.
    pub requests: u64,
    /// Bytes of keys and values received.
    pub bytes: u64,
}

/// One key read.
pub(crate) struct Kv {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
}

/// The first key after every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (never one of our prefixes): to the end of the keys.
    vec![0]
}

/// The key right after `key`.
pub(crate) fn key_after(key: &str) -> Vec<u8> {
    let mut next = key.as_bytes().to_vec();
    next.push(0);
    next
}

fn page_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    format: u32,
    data: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    format: u32,
    data: Option<T>,
}

impl EtcdStore {
    /// A store for every application under `prefix` (e.g. `/gitops`),
    /// without a fence: compare-and-swap only. Replicas use
    /// [`fenced`](Self::fenced) stores; this one is for reading history and
    /// audit, and for a single agent.
    pub fn new(client: EtcdClient, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into().trim_end_matches('/').to_owned(),
            fence: None,
            retention: AuditRetention::default(),
            reads: Arc::default(),
            known: Arc::default(),
        }
    }

    /// Keeps audit records within `retention` instead of the default (90
    /// days, 100,000 records per application). Fenced clones keep it.
    pub fn with_audit_retention(mut self, retention: AuditRetention) -> Self {
        self.retention = retention;
        self
    }

    /// The audit retention in force.
    pub fn audit_retention(&self) -> AuditRetention {
        self.retention
    }

    /// What this store and its clones have read from etcd so far.
    pub fn read_stats(&self) -> ReadStats {
        ReadStats {
            requests: self.reads.requests.load(Ordering::Relaxed),
            bytes: self.reads.bytes.load(Ordering::Relaxed),
        }
    }

    /// The same store, with every write checked against `fence`; writes for
    /// an application other than the fence's are refused.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            fence: Some(fence),
            known: Arc::default(),
            ..self.clone()
        }
    }

    /// The fence writes carry, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    fn app_prefix(&self, app: &str) -> String {
        format!("{}/state/{}/", self.prefix, escape(app))
    }

    fn unavailable(&self, e: EtcdError) -> StoreError {
        match e {
            EtcdError::TooLarge { .. } => StoreError::Corrupt {
                location: format!("etcd {}", self.client.endpoints()),
                message: format!("cannot write: {e}"),
            },
            other => StoreError::Unavailable {
                location: format!("etcd {}", self.client.endpoints()),
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }

    fn encode<T: Serialize>(&self, key: &str, value: &T) -> Result<String, StoreError> {
        let text = serde_json::to_string(&EnvelopeOut {
            format: FORMAT_VERSION,
            data: value,
        })
        .map_err(|e| StoreError::Corrupt {
            location: key.to_owned(),
            message: format!("cannot encode: {e}"),
        })?;
        check_size(key, text.len()).map_err(|e| self.unavailable(e))?;
        Ok(text)
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        let envelope: EnvelopeIn<T> =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                location: key.to_owned(),
                message: format!("unreadable record: {e}"),
            })?;
        if !readable(envelope.format) {
            return Err(StoreError::UnsupportedFormat {
                location: format!("etcd {}", self.client.endpoints()),
                record: key.to_owned(),
                found: envelope.format,
                supported: FORMAT_VERSION,
            });
        }
        envelope.data.ok_or_else(|| StoreError::Corrupt {
            location: key.to_owned(),
            message: "record without data".into(),
        })
    }

    /// Refuses a write for an application the fence does not cover.
    fn check_app(&self, app: &str) -> Result<(), StoreError> {
        match &self.fence {
            Some(f) if f.app() != app => Err(StoreError::Conflict {
                app: app.to_owned(),
                expected: u64::try_from(f.revision()).unwrap_or(0),
                found: 0,
            }),
            _ => Ok(()),
        }
    }

    /// Runs `ops` if the fence holds and, when `cas` is given, the key's
    /// mod-revision is still the expected one. Returns the write's revision.
    async fn write(
        &self,
        app: &str,
        cas: Option<(&str, u64)>,
        ops: Vec<TxnOp>,
    ) -> Result<i64, StoreError> {
        self.check_app(app)?;
        let mut compares: Vec<Compare> = Vec::new();
        let mut fallback = Vec::new();
        if let Some(fence) = &self.fence {
            compares.push(fence.compare());
            fallback.push(TxnOp::get(fence.lock_key(), None));
        }
        if let Some((key, expected)) = cas {
            let expected = i64::try_from(expected).unwrap_or(i64::MAX);
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
            fallback.push(TxnOp::get(key, None));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(fallback);
        let resp =
            self.client.kv().txn(txn).await.map_err(|e| {
                self.unavailable(EtcdError::request("txn", self.app_prefix(app), e))
            })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(revision);
        }
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.create_revision(), kv.mod_revision())),
            _ => None,
        });
        if let Some(fence) = &self.fence {
            let held = gets.next().flatten().map(|(create, _)| create);
            if held != Some(fence.revision()) {
                tracing::warn!(
                    app,
                    lock = fence.lock_key(),
                    fence = fence.revision(),
                    found = held.unwrap_or(0),
                    "write refused: this replica no longer owns the application (fenced)"
                );
                return Err(StoreError::Conflict {
                    app: app.to_owned(),
                    expected: u64::try_from(fence.revision()).unwrap_or(0),
                    found: held.and_then(|r| u64::try_from(r).ok()).unwrap_or(0),
                });
            }
        }
        let (expected, found) = match cas {
            Some((_, expected)) => (
                expected,
                gets.next()
                    .flatten()
                    .and_then(|(_, m)| u64::try_from(m).ok())
                    .unwrap_or(0),
            ),
            None => (0, 0),
        };
        Err(StoreError::Conflict {
            app: app.to_owned(),
            expected,
            found,
        })
    }

    async fn load<T: DeserializeOwned + Default>(
        &self,
        key: String,
    ) -> Result<Versioned<T>, StoreError> {
        let (kvs, _) = self.get(&key, GetOptions::new()).await?;
        match kvs.first() {
            None => Ok(Versioned::default()),
            Some(kv) => Ok(Versioned {
                version: u64::try_from(kv.mod_revision).unwrap_or(0),
                value: self.decode(&key, &kv.value)?,
            }),
        }
    }

    /// One range request; returns the keys and whether more matched.
    pub(crate) async fn get(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Result<(Vec<Kv>, bool), StoreError> {
        self.reads.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .kv()
            .get(key, Some(options))
            .await
            .map_err(|e| self.unavailable(EtcdError::request("get", key, e)))?;
        let mut bytes = 0;
        let kvs: Vec<Kv> = resp
            .kvs()
            .iter()
            .map(|kv| {
                bytes += kv.key().len() + kv.value().len();
                Kv {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                }
            })
            .collect();
        self.reads
            .bytes
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok((kvs, resp.more()))
    }

    /// The keys `[start, end)` in key order, handed to `each` until it
    /// returns false or the range ends. Pages start at `first` keys and
    /// double up to `max` (a reader that stops early reads little).
    pub(crate) async fn scan(
        &self,
        (start, end): (Vec<u8>, Vec<u8>),
        (first, max): (usize, usize),
        keys_only: bool,
        mut each: impl FnMut(Kv) -> Result<bool, StoreError> + Send,
    ) -> Result<(), StoreError> {
        let mut from = start;
        let mut page = first.clamp(1, max.max(1));
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page_limit(page));
            if keys_only {
                options = options.with_keys_only();
            }
            let key = String::from_utf8_lossy(&from).into_owned();
            let (kvs, more) = self.get(&key, options).await?;
            let Some(last) = kvs.last().map(|kv| key_after(&kv.key)) else {
                return Ok(());
            };
            for kv in kvs {
                if !each(kv)? {
                    return Ok(());
                }
            }
            if !more {
                return Ok(());
            }
            from = last;
            page = (page * 2).min(max.max(1));
        }
    }
}

/// History entries deleted per transaction, well under etcd's default
/// `--max-txn-ops` of 128.
const TRIM_BATCH: usize = 64;

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError> {
        self.load(format!("{}inventory", self.app_prefix(app)))
            .await
    }

    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
        audit: &[AuditRecord],
    ) -> Result<u64, StoreError> {
        let base = self.app_prefix(app);
        let key = format!("{base}inventory");
        let value = self.encode(&key, inventory)?;
        let mut bytes = key.len() + value.len();
        let mut ops = vec![TxnOp::put(key.as_str(), value, None)];
        if !audit.is_empty() {
            // One key for the whole batch: a transaction holds at most
            // `--max-txn-ops` operations (128 by default), and one wave can
            // change more resources than that. The expected version is
            // unique per successful write and grows, so keys sort in the
            // order the changes were made.
            let audit_key = format!("{base}audit/{expected:020}");
            let records = self.encode(&audit_key, &audit)?;
            bytes += audit_key.len() + records.len();
            ops.push(TxnOp::put(audit_key.as_str(), records, None));
        }
        // Both values go in one request: etcd refuses a request over its
        // limit as an invalid argument, which retrying can not cure.
        check_size(&key, bytes).map_err(|e| self.unavailable(e))?;
        let revision = self.write(app, Some((&key, expected)), ops).await?;
        if !audit.is_empty() {
            // The save landed; a retention pass that fails (another writer,
            // a lost fence, etcd away) is tried again after the next save.
            let written = format!("{expected:020}");
            let first_at = audit.first().map(|r| r.at);
            if let Err(e) = self
                .retain_audit(app, &written, (audit.len(), first_at))
                .await
            {
                tracing::warn!(app, error = %e, "audit retention not applied this time");
            }
        }
        Ok(u64::try_from(revision).unwrap_or(0))
    }

    async fn append_history(
        &self,
        app: &str,
        entry: &HistoryEntry,
        retain: usize,
    ) -> Result<(), StoreError> {
        let base = format!("{}history/", self.app_prefix(app));
        let key = format!(
            "{base}{:039}-{:016x}",
            nanos(entry.finished_at),
            fastrand::u64(..)
        );
        let value = self.encode(&key, entry)?;
        self.write(app, None, vec![TxnOp::put(key.as_str(), value, None)])
            .await?;
        // A fenced store is the only writer: while its own count stays
        // within `retain`, nothing needs counting or trimming.
        let known = self.fence.as_ref().and(self.known.locked().history);
        if let Some(n) = known.map(|n| n + 1).filter(|n| *n <= retain) {
            self.known.locked().history = Some(n);
            return Ok(());
        }
        self.reads.requests.fetch_add(1, Ordering::Relaxed);
        let total = self
            .client
            .kv()
            .get(
                base.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(|e| self.unavailable(EtcdError::request("get", base.as_str(), e)))?
            .count();
        let mut excess = usize::try_from(total).unwrap_or(0).saturating_sub(retain);
        while excess > 0 {
            // The oldest first, a page of keys at a time: a lowered
            // retention can leave far more to trim than one reply holds.
            let (oldest, _) = self
                .get(
                    &base,
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(page_limit(excess.min(KEYS_PER_PAGE))),
                )
                .await?;
            if oldest.is_empty() {
                break;
            }
            excess -= oldest.len();
            // A transaction holds at most `--max-txn-ops` operations (128
            // by default).
            for chunk in oldest.chunks(TRIM_BATCH) {
                let deletes = chunk
                    .iter()
                    .map(|kv| TxnOp::delete(kv.key.as_str(), None))
                    .collect();
                self.write(app, None, deletes).await?;
            }
        }
        if self.fence.is_some() {
            let left = usize::try_from(total).unwrap_or(0).min(retain);
            self.known.locked().history = Some(left);
        }
        Ok(())
    }

    async fn history(&self, app: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let base = format!("{}history/", self.app_prefix(app));
        let mut out = Vec::new();
        let mut before: Option<i64> = None;
        // Newest first, a page at a time: each entry may be up to
        // MAX_VALUE_BYTES, so a page holds at most VALUES_PER_PAGE.
        // (A limit of 0 reads nothing: etcd reads it as "no limit".)
        while out.len() < limit {
            let mut options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(page_limit((limit - out.len()).min(VALUES_PER_PAGE)));
            if let Some(before) = before {
                options = options.with_max_create_revision(before);
            }
            let (kvs, more) = self.get(&base, options).await?;
            before = kvs.last().map(|kv| kv.create_revision - 1);
            for kv in &kvs {
                out.push(self.decode(&kv.key, &kv.value)?);
            }
            if !more || kvs.is_empty() || before.is_some_and(|b| b < 1) {
                break;
            }
        }
        Ok(out)
    }

    async fn audit(&self, app: &str, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.read_audit(app, query).await
    }

    async fn load_record(&self, app: &str) -> Result<Versioned<EngineRecord>, StoreError> {
        self.load(format!("{}record", self.app_prefix(app))).await
    }

    async fn save_record(
        &self,
        app: &str,
        record: &EngineRecord,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let key = format!("{}record", self.app_prefix(app));
        let value = self.encode(&key, record)?;
        let revision = self
            .write(
                app,
                Some((&key, expected)),
                vec![TxnOp::put(key.as_str(), value, None)],
            )
            .await?;
        Ok(u64::try_from(revision).unwrap_or(0))
    }

    async fn apps(&self) -> Result<Vec<String>, StoreError> {
        // One key per application: after each, skip past all its keys.
        let base = format!("{}/state/", self.prefix);
        let end = prefix_end(&base);
        let mut from = base.as_bytes().to_vec();
        let mut apps = Vec::new();
        loop {
            let key = String::from_utf8_lossy(&from).into_owned();
            let (kvs, _) = self
                .get(
                    &key,
                    GetOptions::new()
                        .with_range(end.clone())
                        .with_keys_only()
                        .with_limit(1),
                )
                .await?;
            let Some(segment) = kvs
                .first()
                .and_then(|kv| kv.key.strip_prefix(&base)?.split('/').next())
                .map(str::to_owned)
            else {
                break;
            };
            from = prefix_end(&format!("{base}{segment}/"));
            apps.push(unescape(&segment));
        }
        apps.sort();
        apps.dedup();
        Ok(apps)
    }
}
