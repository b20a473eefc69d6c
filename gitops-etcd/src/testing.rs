//! Helpers for tests against a real etcd (cargo feature `testing`): take a
//! lock by hand, read and edit keys behind the engine's back, and record
//! every change under a prefix with its revision (the log that ownership is
//! checked against).

use gitops_core::sync::LockExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use futures::StreamExt as _;
use tokio::task::JoinHandle;

use crate::client::{EtcdClient, EtcdError};

mod syncs;

pub use syncs::{SyncWatch, Synced};

/// Grants a lease of `ttl_secs` and creates `key` under it; fails when the
/// key exists. Returns the lease id.
pub async fn lock(client: &EtcdClient, key: &str, ttl_secs: i64) -> Result<i64, EtcdError> {
    let lease = client
        .lease()
        .grant(ttl_secs, None)
        .await
        .map_err(|e| EtcdError::request("lease grant", key, e))?
        .id();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            "test",
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let resp = client
        .kv()
        .txn(txn)
        .await
        .map_err(|e| EtcdError::request("txn", key, e))?;
    if resp.succeeded() {
        Ok(lease)
    } else {
        Err(EtcdError::Request {
            op: "lock",
            key: key.to_owned(),
            message: "already held".into(),
            transient: false,
            source: None,
        })
    }
}

/// A key's create-revision and lease, `None` when absent.
pub async fn lock_info(client: &EtcdClient, key: &str) -> Result<Option<(i64, i64)>, EtcdError> {
    let resp = client
        .kv()
        .get(key, None)
        .await
        .map_err(|e| EtcdError::request("get", key, e))?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| (kv.create_revision(), kv.lease())))
}

/// Every key under `prefix` with its value (lossy UTF-8) and lease id.
pub async fn list(
    client: &EtcdClient,
    prefix: &str,
) -> Result<Vec<(String, String, i64)>, EtcdError> {
    crate::client::list_prefix(client, prefix).await
}

/// Writes `key` (an edit behind the engine's back).
pub async fn put(client: &EtcdClient, key: &str, value: &str) -> Result<(), EtcdError> {
    client
        .kv()
        .put(key, value, None)
        .await
        .map(|_| ())
        .map_err(|e| EtcdError::request("put", key, e))
}

/// Deletes every key under `prefix`; returns how many.
pub async fn delete_prefix(client: &EtcdClient, prefix: &str) -> Result<i64, EtcdError> {
    client
        .kv()
        .delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .map(|r| r.deleted())
        .map_err(|e| EtcdError::request("delete", prefix, e))
}

/// The applications whose newest history entry is not a converged sync of
/// the revision paired with them; empty when all have converged.
pub async fn not_converged(
    store: &crate::EtcdStore,
    expected: &[(String, String)],
) -> Result<Vec<String>, gitops_core::StoreError> {
    use gitops_core::StateStore as _;
    let checks = expected.iter().map(|(app, revision)| async move {
        let newest = store.history(app, 1).await?;
        let done = newest.first().is_some_and(|h| {
            h.revision.id == *revision && h.result == gitops_core::engine::SyncResult::Converged
        });
        Ok::<_, gitops_core::StoreError>((!done).then(|| app.clone()))
    });
    let results = futures::stream::iter(checks)
        .buffered(32)
        .collect::<Vec<_>>()
        .await;
    let mut pending = Vec::new();
    for r in results {
        pending.extend(r?);
    }
    Ok(pending)
}

/// One change seen under a recorded prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The revision of the write (etcd's global order).
    pub revision: i64,
    /// The key.
    pub key: String,
    /// `true` for a put, `false` for a delete.
    pub put: bool,
    /// The value written (empty for a delete).
    pub value: String,
}

/// Records every change under a prefix from the moment it starts.
#[derive(Debug)]
pub struct Recorder {
    client: EtcdClient,
    prefix: String,
    changes: Arc<Mutex<Vec<Change>>>,
    task: JoinHandle<()>,
    sentinels: usize,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts recording changes under `prefix` made after the current revision.
    pub async fn start(client: &EtcdClient, prefix: &str) -> Result<Self, EtcdError> {
        let from = client.revision().await? + 1;
        let mut stream = client
            .watch()
            .watch(
                prefix,
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .map_err(|e| EtcdError::request("watch", prefix, e))?;
        let changes = Arc::new(Mutex::new(Vec::new()));
        let sink = changes.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let mut sink = sink.locked();
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    sink.push(Change {
                        revision: kv.mod_revision(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        put: event.event_type() == EventType::Put,
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                    });
                }
            }
        });
        Ok(Self {
            client: client.clone(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            changes,
            task,
            sentinels: 0,
        })
    }

    /// Every change recorded up to now, in revision order (a sentinel key
    /// is written and waited for, so nothing before this call is missing).
    pub async fn changes(&mut self) -> Result<Vec<Change>, EtcdError> {
        self.sentinels += 1;
        let key = format!("{}/~sentinel/{}", self.prefix, self.sentinels);
        put(&self.client, &key, "").await?;
        for _ in 0..600 {
            {
                let changes = self.changes.locked();
                if changes.iter().any(|c| c.key == key) {
                    return Ok(changes
                        .iter()
                        .filter(|c| !c.key.contains("/~sentinel/"))
                        .cloned()
                        .collect());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EtcdError::Request {
            op: "watch",
            key,
            message: "the sentinel did not arrive within 30 s".into(),
            transient: true,
            source: None,
        })
    }
}
