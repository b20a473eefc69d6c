//! Audit retention in the memory and redb stores: at most `max_records`
//! per application (the oldest go first) and nothing older than `max_age`,
//! trimmed as records are appended. Timestamps in the records, no sleeps.

mod support;

use std::time::{Duration, SystemTime};

use gitops_core::model::Inventory;
use gitops_core::store::AuditRetention;
use gitops_core::store::StateStore;
use gitops_core::{AuditQuery, AuditRecord, MemoryStore, RedbStore, ResourceId};
use support::audit_record;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

async fn ids(store: &dyn StateStore, app: &str, query: &AuditQuery) -> Vec<String> {
    store
        .audit(app, query)
        .await
        .expect("audit")
        .iter()
        .map(|r| r.id.to_string())
        .collect()
}

/// Appends 4 saves of 3 records (`K/s<save>-<i>`) with `max_records` 5:
/// after each save at most 5 are kept, the newest ones, other apps untouched.
async fn keeps_at_most_max_records(store: &dyn StateStore) {
    let now = SystemTime::now();
    let mut version = 0;
    for save in 0..4 {
        let batch: Vec<AuditRecord> = (0..3)
            .map(|i| audit_record(&format!("K/s{save}-{i}"), now))
            .collect();
        version = store
            .save_inventory("web", &Inventory::new(), version, &batch)
            .await
            .expect("saves");
        let kept = ids(store, "web", &AuditQuery::default()).await;
        assert!(kept.len() <= 5, "after save {save}: {kept:?}");
    }
    store
        .save_inventory("api", &Inventory::new(), 0, &[audit_record("K/api", now)])
        .await
        .expect("saves");
    assert_eq!(
        ids(store, "web", &AuditQuery::default()).await,
        ["K/s2-1", "K/s2-2", "K/s3-0", "K/s3-1", "K/s3-2"]
    );
    assert_eq!(ids(store, "api", &AuditQuery::default()).await, ["K/api"]);
    // The per-resource lookup agrees (no index entry left behind).
    let trimmed = AuditQuery {
        id: Some("K/s0-0".parse::<ResourceId>().expect("id")),
        ..AuditQuery::default()
    };
    assert!(ids(store, "web", &trimmed).await.is_empty());
    let kept = AuditQuery {
        id: Some("K/s3-1".parse::<ResourceId>().expect("id")),
        ..AuditQuery::default()
    };
    assert_eq!(ids(store, "web", &kept).await, ["K/s3-1"]);
}

/// With `max_age` 30 days: records of 100 and 40 days ago go when a save
/// appends today's; the one of 10 days ago stays.
async fn drops_records_older_than_max_age(store: &dyn StateStore) {
    let now = SystemTime::now();
    let v = store
        .save_inventory(
            "web",
            &Inventory::new(),
            0,
            &[
                audit_record("K/old", now - 100 * DAY),
                audit_record("K/older-than-a-month", now - 40 * DAY),
                audit_record("K/recent", now - 10 * DAY),
            ],
        )
        .await
        .expect("saves");
    assert_eq!(
        ids(store, "web", &AuditQuery::default()).await,
        ["K/recent"]
    );
    store
        .save_inventory("web", &Inventory::new(), v, &[audit_record("K/today", now)])
        .await
        .expect("saves");
    assert_eq!(
        ids(store, "web", &AuditQuery::default()).await,
        ["K/recent", "K/today"]
    );
    let old = AuditQuery {
        id: Some("K/old".parse::<ResourceId>().expect("id")),
        ..AuditQuery::default()
    };
    assert!(ids(store, "web", &old).await.is_empty());
}

fn count_limit() -> AuditRetention {
    AuditRetention::default().max_records(5)
}

fn age_limit() -> AuditRetention {
    AuditRetention::default().max_age(30 * DAY)
}

#[tokio::test]
async fn the_memory_store_keeps_at_most_max_records() {
    keeps_at_most_max_records(&MemoryStore::new().with_audit_retention(count_limit())).await;
}

#[tokio::test]
async fn the_memory_store_drops_records_older_than_max_age() {
    drops_records_older_than_max_age(&MemoryStore::new().with_audit_retention(age_limit())).await;
}

#[tokio::test]
async fn the_redb_store_keeps_at_most_max_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path())
        .expect("opens")
        .with_audit_retention(count_limit());
    keeps_at_most_max_records(&store).await;
    // The trim was part of the committed write: a reopened store agrees.
    drop(store);
    let store = RedbStore::open(dir.path()).expect("reopens");
    assert_eq!(ids(&store, "web", &AuditQuery::default()).await.len(), 5);
}

#[tokio::test]
async fn the_redb_store_drops_records_older_than_max_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path())
        .expect("opens")
        .with_audit_retention(age_limit());
    drops_records_older_than_max_age(&store).await;
}

#[tokio::test]
async fn the_default_retention_is_90_days_and_100k_records() {
    let keep = AuditRetention::default();
    assert_eq!(keep.max_age, 90 * DAY);
    assert_eq!(keep.max_records, 100_000);
    assert_eq!(MemoryStore::new().audit_retention(), keep);
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        RedbStore::open(dir.path())
            .expect("opens")
            .audit_retention(),
        keep
    );
    // A record older than 90 days is dropped by default; keep-all keeps it.
    let now = SystemTime::now();
    let store = MemoryStore::new();
    store
        .save_inventory(
            "web",
            &Inventory::new(),
            0,
            &[audit_record("K/a", now - 91 * DAY)],
        )
        .await
        .expect("saves");
    assert!(ids(&store, "web", &AuditQuery::default()).await.is_empty());
    let store = MemoryStore::new().with_audit_retention(AuditRetention::KEEP_ALL);
    store
        .save_inventory(
            "web",
            &Inventory::new(),
            0,
            &[audit_record("K/a", now - 9000 * DAY)],
        )
        .await
        .expect("saves");
    assert_eq!(ids(&store, "web", &AuditQuery::default()).await, ["K/a"]);
    // An age limit reaching before the epoch never panics.
    assert_eq!(AuditRetention::KEEP_ALL.cutoff(now), None);
    assert!(!AuditRetention::KEEP_ALL.expired(SystemTime::UNIX_EPOCH, now));
}
