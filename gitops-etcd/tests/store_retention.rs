//! EtcdStore audit retention and bounded reads against a real etcd: at
//! most `max_records` per application, nothing older than `max_age`
//! (timestamps in the records, no sleeps), a count kept beside the records
//! so a save reads none of them, and a limited query that reads one page.

mod support;

use std::time::{Duration, SystemTime};

use gitops_core::engine::Trigger;
use gitops_core::model::Inventory;
use gitops_core::store::AuditAction;
use gitops_core::store::AuditRetention;
use gitops_core::{AuditQuery, AuditRecord, StateStore};
use gitops_etcd::{EtcdClient, EtcdStore};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn record(id: &str, at: SystemTime, message_bytes: usize) -> AuditRecord {
    AuditRecord {
        at,
        id: id.parse().unwrap(),
        action: AuditAction::Update,
        digest_before: None,
        digest_after: Some("d".into()),
        revision: "abc".into(),
        reference: "main".into(),
        author: "a".into(),
        message: "m".repeat(message_bytes),
        trigger: Trigger::Poll,
        detail: None,
    }
}

async fn ids(store: &EtcdStore, app: &str) -> Vec<String> {
    store
        .audit(app, &AuditQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect()
}

async fn store(name: &str, retention: AuditRetention) -> (EtcdClient, String, EtcdStore) {
    let client = support::client().await;
    let prefix = support::prefix(name);
    let store = EtcdStore::new(client.clone(), prefix.clone()).with_audit_retention(retention);
    (client, prefix, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_at_most_max_records_per_application() {
    let (_, _, store) = store("keep-5", AuditRetention::default().max_records(5)).await;
    let now = SystemTime::now();
    let mut version = 0;
    for save in 0..4 {
        let batch: Vec<AuditRecord> = (0..3)
            .map(|i| record(&format!("K/s{save}-{i}"), now, 1))
            .collect();
        version = store
            .save_inventory("web", &Inventory::new(), version, &batch)
            .await
            .unwrap();
        assert!(ids(&store, "web").await.len() <= 5, "after save {save}");
    }
    store
        .save_inventory("api", &Inventory::new(), 0, &[record("K/api", now, 1)])
        .await
        .unwrap();
    // Exactly the newest 5: a batch the limit cuts through is rewritten.
    assert_eq!(
        ids(&store, "web").await,
        ["K/s2-1", "K/s2-2", "K/s3-0", "K/s3-1", "K/s3-2"]
    );
    assert_eq!(ids(&store, "api").await, ["K/api"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_records_older_than_max_age() {
    let (_, _, store) = store("age-30d", AuditRetention::default().max_age(30 * DAY)).await;
    let now = SystemTime::now();
    // A save of old records only: its key goes whole.
    let stale: Vec<AuditRecord> = (0..3)
        .map(|i| record(&format!("K/stale-{i}"), now - 365 * DAY, 1))
        .collect();
    let v = store
        .save_inventory("web", &Inventory::new(), 0, &stale)
        .await
        .unwrap();
    assert!(ids(&store, "web").await.is_empty());
    // Old and recent in one save: the batch is rewritten without the old.
    let v = store
        .save_inventory(
            "web",
            &Inventory::new(),
            v,
            &[
                record("K/old", now - 100 * DAY, 1),
                record("K/older-than-a-month", now - 40 * DAY, 1),
                record("K/recent", now - 10 * DAY, 1),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids(&store, "web").await, ["K/recent"]);
    store
        .save_inventory("web", &Inventory::new(), v, &[record("K/today", now, 1)])
        .await
        .unwrap();
    assert_eq!(ids(&store, "web").await, ["K/recent", "K/today"]);
}

/// Audit written before the count existed: the first save counts the old
/// keys once (both the one-record and the batch layout) and trims them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_written_without_a_count_is_counted_and_trimmed() {
    let (client, prefix, store) = store("no-count", AuditRetention::default().max_records(4)).await;
    let now = SystemTime::now();
    let base = format!("{prefix}/state/web/audit");
    for i in 0..3 {
        let value =
            serde_json::json!({ "format": 1, "data": record(&format!("K/single-{i}"), now, 1) });
        gitops_etcd::testing::put(
            &client,
            &format!("{base}/{:020}-{i:06}", 1),
            &value.to_string(),
        )
        .await
        .unwrap();
    }
    let batch: Vec<AuditRecord> = (0..3)
        .map(|i| record(&format!("K/batch-{i}"), now, 1))
        .collect();
    let value = serde_json::json!({ "format": 1, "data": batch });
    gitops_etcd::testing::put(&client, &format!("{base}/{:020}", 2), &value.to_string())
        .await
        .unwrap();
    assert_eq!(ids(&store, "web").await.len(), 6);
    // The inventory's version (an etcd revision) names the next audit key.
    let v = store
        .save_inventory("web", &Inventory::new(), 0, &[])
        .await
        .unwrap();
    store
        .save_inventory("web", &Inventory::new(), v, &[record("K/new", now, 1)])
        .await
        .unwrap();
    assert_eq!(
        ids(&store, "web").await,
        ["K/batch-0", "K/batch-1", "K/batch-2", "K/new"]
    );
}

/// With ~8 MB of audit: a save reads only the count (not one record), and
/// a query with a limit reads one page, not the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_and_limited_queries_read_a_page_not_the_whole_audit_log() {
    let (_, _, store) = store("bounded-reads", AuditRetention::default()).await;
    let now = SystemTime::now();
    let mut version = 0;
    for save in 0..6 {
        let batch: Vec<AuditRecord> = (0..300)
            .map(|i| record(&format!("K/s{save}-{i:03}"), now, 4096))
            .collect();
        version = store
            .save_inventory("web", &Inventory::new(), version, &batch)
            .await
            .unwrap();
    }
    let before = store.read_stats();
    store
        .save_inventory(
            "web",
            &Inventory::new(),
            version,
            &[record("K/one-more", now, 1)],
        )
        .await
        .unwrap();
    let save = store.read_stats();
    let save_bytes = save.bytes - before.bytes;
    assert!(
        save_bytes < 16 * 1024,
        "a save with ~8 MB of audit read {save_bytes} bytes"
    );

    let limited = AuditQuery {
        limit: Some(5),
        ..AuditQuery::default()
    };
    assert_eq!(store.audit("web", &limited).await.unwrap().len(), 5);
    let after = store.read_stats();
    assert_eq!(after.requests - save.requests, 1, "one range request");
    let read = after.bytes - save.bytes;
    assert!(
        read < 2 * 1024 * 1024,
        "a query for 5 records read {read} bytes (one batch is ~1.3 MB, all ~8 MB)"
    );

    let all_before = store.read_stats();
    assert_eq!(ids(&store, "web").await.len(), 6 * 300 + 1);
    let all = store.read_stats();
    assert!(all.bytes - all_before.bytes > 7 * 1024 * 1024);
}

/// More keys than one page holds (`VALUES_PER_PAGE`): audit and history
/// reads continue page after page, in order, with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_continue_across_pages_in_order() {
    let (_, _, store) = store("pages", AuditRetention::default()).await;
    let now = SystemTime::now();
    let keys = 3 * gitops_etcd::VALUES_PER_PAGE + 2;
    let mut version = 0;
    for save in 0..keys {
        version = store
            .save_inventory(
                "web",
                &Inventory::new(),
                version,
                &[record(&format!("K/s{save:03}"), now, 1)],
            )
            .await
            .unwrap();
    }
    let before = store.read_stats();
    let expected: Vec<String> = (0..keys).map(|s| format!("K/s{s:03}")).collect();
    assert_eq!(ids(&store, "web").await, expected);
    assert!(store.read_stats().requests - before.requests >= 4, "paged");
    let mut entry = gitops_core::HistoryEntry {
        revision: gitops_core::Revision::new("main", "0"),
        trigger: Trigger::Poll,
        result: gitops_core::engine::SyncResult::Converged,
        error: None,
        summary: Default::default(),
        outcomes: Vec::new(),
        gates: Vec::new(),
        not_converging: Vec::new(),
        started_at: now,
        finished_at: now,
    };
    for n in 0..keys {
        entry.revision = gitops_core::Revision::new("main", format!("{n:03}"));
        store.append_history("web", &entry, 1000).await.unwrap();
    }
    let got: Vec<String> = store
        .history("web", 1000)
        .await
        .unwrap()
        .iter()
        .map(|h| h.revision.id.clone())
        .collect();
    let newest_first: Vec<String> = (0..keys).rev().map(|n| format!("{n:03}")).collect();
    assert_eq!(got, newest_first);
    assert_eq!(store.history("web", 5).await.unwrap().len(), 5);
}
