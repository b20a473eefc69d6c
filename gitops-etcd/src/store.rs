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
//! ```
//!
//! Inventory and record writes compare the key's mod-revision with the
//! version the engine read (the version *is* the mod-revision). A store made
//! with [`EtcdStore::fenced`] adds the owner's [`Fence`] to every write
//! transaction, history included: once the replica lost the application,
//! every write is refused with [`StoreError::Conflict`] and nothing lands.
//! Values over [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES) are refused before
//! they are sent (an inventory fits ~10,000 resources).

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use gitops_core::store::{FORMAT_VERSION, Versioned};
use gitops_core::{
    AuditQuery, AuditRecord, EngineRecord, HistoryEntry, Inventory, StateStore, StoreError,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{EtcdClient, EtcdError, check_size};
use crate::fence::{Fence, escape, unescape};

/// The engine state of many applications in etcd. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EtcdStore {
    client: EtcdClient,
    prefix: String,
    fence: Option<Fence>,
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
        }
    }

    /// The same store, with every write checked against `fence`; writes for
    /// an application other than the fence's are refused.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            fence: Some(fence),
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

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
        let envelope: EnvelopeIn<T> =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                location: key.to_owned(),
                message: format!("unreadable record: {e}"),
            })?;
        if envelope.format != FORMAT_VERSION {
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
        let resp = self
            .client
            .kv()
            .get(key.as_str(), None)
            .await
            .map_err(|e| self.unavailable(EtcdError::request("get", key.as_str(), e)))?;
        match resp.kvs().first() {
            None => Ok(Versioned::default()),
            Some(kv) => Ok(Versioned {
                version: u64::try_from(kv.mod_revision()).unwrap_or(0),
                value: self.decode(&key, kv.value())?,
            }),
        }
    }

    async fn range(
        &self,
        prefix: &str,
        options: GetOptions,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let resp = self
            .client
            .kv()
            .get(prefix, Some(options.with_prefix()))
            .await
            .map_err(|e| self.unavailable(EtcdError::request("get", prefix, e)))?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
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
        let count = self
            .client
            .kv()
            .get(
                base.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(|e| self.unavailable(EtcdError::request("get", base.as_str(), e)))?
            .count();
        let excess = usize::try_from(count).unwrap_or(0).saturating_sub(retain);
        if excess > 0 {
            let oldest = self
                .range(
                    &base,
                    GetOptions::new()
                        .with_keys_only()
                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                        .with_limit(i64::try_from(excess).unwrap_or(i64::MAX)),
                )
                .await?;
            // A transaction holds at most `--max-txn-ops` operations (128
            // by default); a lowered retention can leave more to trim.
            for chunk in oldest.chunks(TRIM_BATCH) {
                let deletes = chunk
                    .iter()
                    .map(|(k, _)| TxnOp::delete(k.as_str(), None))
                    .collect();
                self.write(app, None, deletes).await?;
            }
        }
        Ok(())
    }

    async fn history(&self, app: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        if limit == 0 {
            // etcd reads a range limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        let base = format!("{}history/", self.app_prefix(app));
        let entries = self
            .range(
                &base,
                GetOptions::new()
                    .with_sort(SortTarget::Create, SortOrder::Descend)
                    .with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await?;
        entries.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    async fn audit(&self, app: &str, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let base = format!("{}audit/", self.app_prefix(app));
        let records = self
            .range(
                &base,
                GetOptions::new().with_sort(SortTarget::Key, SortOrder::Ascend),
            )
            .await?;
        let mut out = Vec::new();
        'keys: for (k, v) in &records {
            // `<expected>`: the batch of one save; `<expected>-<i>`: one
            // record each, as earlier versions wrote them.
            let single = k.strip_prefix(&base).is_some_and(|seq| seq.contains('-'));
            let batch: Vec<AuditRecord> = if single {
                vec![self.decode(k, v)?]
            } else {
                self.decode(k, v)?
            };
            for record in batch {
                if query.matches(&record) {
                    out.push(record);
                    if query.limit.is_some_and(|l| out.len() >= l) {
                        break 'keys;
                    }
                }
            }
        }
        Ok(out)
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
        let base = format!("{}/state/", self.prefix);
        let keys = self
            .range(&base, GetOptions::new().with_keys_only())
            .await?;
        let mut apps: Vec<String> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(&base)?.split('/').next().map(unescape))
            .collect();
        apps.sort();
        apps.dedup();
        Ok(apps)
    }
}
