//! `StateStore::audit_newest`: the newest records first, at most `limit`,
//! with the id and time filters — the same answer from the memory store,
//! the redb store (which walk their records backwards) and the trait's
//! default (which reads oldest first and keeps the end), with more records
//! than the limit.

mod support;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use gitops_core::model::Inventory;
use gitops_core::store::{EngineRecord, StateStore, StoreError, Versioned};
use gitops_core::{AuditQuery, AuditRecord, HistoryEntry, MemoryStore, RedbStore};
use support::audit_record;

/// 30 records, a second apart, alternating between `K/even` and `K/odd`
/// (their message is their number), in 3 saves; and one of another app.
async fn fill(store: &dyn StateStore, start: SystemTime) {
    let mut version = 0;
    for save in 0..3 {
        let batch: Vec<AuditRecord> = (0..10)
            .map(|i| {
                let n = save * 10 + i;
                let id = if n % 2 == 0 { "K/even" } else { "K/odd" };
                let mut r = audit_record(id, start + Duration::from_secs(n));
                r.message = n.to_string();
                r
            })
            .collect();
        version = store
            .save_inventory("web", &Inventory::new(), version, &batch)
            .await
            .expect("saves");
    }
    store
        .save_inventory("api", &Inventory::new(), 0, &[audit_record("K/api", start)])
        .await
        .expect("saves");
}

async fn numbers(store: &dyn StateStore, query: &AuditQuery) -> Vec<u64> {
    store
        .audit_newest("web", query)
        .await
        .expect("audit")
        .iter()
        .map(|r| r.message.parse().expect("a number"))
        .collect()
}

async fn newest_first(store: &dyn StateStore) {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    fill(store, start).await;
    let limit = |n| AuditQuery {
        limit: Some(n),
        ..AuditQuery::default()
    };
    assert_eq!(numbers(store, &limit(5)).await, [29, 28, 27, 26, 25]);
    assert_eq!(numbers(store, &limit(0)).await, Vec::<u64>::new());
    let all = numbers(store, &AuditQuery::default()).await;
    assert_eq!(all, (0..30).rev().collect::<Vec<u64>>());
    let odd = AuditQuery {
        id: Some("K/odd".parse().expect("id")),
        limit: Some(3),
        ..AuditQuery::default()
    };
    assert_eq!(numbers(store, &odd).await, [29, 27, 25]);
    let window = AuditQuery {
        since: Some(start + Duration::from_secs(10)),
        until: Some(start + Duration::from_secs(20)),
        limit: Some(4),
        ..AuditQuery::default()
    };
    assert_eq!(numbers(store, &window).await, [19, 18, 17, 16]);
    let other = store.audit_newest("api", &limit(5)).await.expect("audit");
    assert_eq!(other.len(), 1, "another app's records stay apart");
    // The oldest-first read is unchanged.
    let oldest = store.audit("web", &limit(2)).await.expect("audit");
    let oldest: Vec<&str> = oldest.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(oldest, ["0", "1"]);
}

#[tokio::test]
async fn the_memory_store_reads_newest_first() {
    newest_first(&MemoryStore::new()).await;
}

#[tokio::test]
async fn the_redb_store_reads_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    newest_first(&RedbStore::open(dir.path()).expect("opens")).await;
}

#[tokio::test]
async fn the_default_reads_newest_first() {
    newest_first(&Oldest(MemoryStore::new())).await;
}

/// A store with only the required methods: `audit_newest` is the default.
struct Oldest(MemoryStore);

#[async_trait]
impl StateStore for Oldest {
    async fn load_inventory(&self, app: &str) -> Result<Versioned<Inventory>, StoreError> {
        self.0.load_inventory(app).await
    }

    async fn save_inventory(
        &self,
        app: &str,
        inventory: &Inventory,
        expected: u64,
        audit: &[AuditRecord],
    ) -> Result<u64, StoreError> {
        self.0.save_inventory(app, inventory, expected, audit).await
    }

    async fn append_history(
        &self,
        app: &str,
        entry: &HistoryEntry,
        retain: usize,
    ) -> Result<(), StoreError> {
        self.0.append_history(app, entry, retain).await
    }

    async fn history(&self, app: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        self.0.history(app, limit).await
    }

    async fn audit(&self, app: &str, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.0.audit(app, query).await
    }

    async fn load_record(&self, app: &str) -> Result<Versioned<EngineRecord>, StoreError> {
        self.0.load_record(app).await
    }

    async fn save_record(
        &self,
        app: &str,
        record: &EngineRecord,
        expected: u64,
    ) -> Result<u64, StoreError> {
        self.0.save_record(app, record, expected).await
    }

    async fn apps(&self) -> Result<Vec<String>, StoreError> {
        self.0.apps().await
    }
}
