//! EtcdStore past gRPC's reply limit: an application whose audit log and
//! history together hold far more than 4 MiB (tonic's default decode
//! limit) is still read, a page at a time. Uses only the `StateStore` API.

mod support;

use std::time::SystemTime;

use gitops_core::engine::{SyncResult, Trigger};
use gitops_core::model::Inventory;
use gitops_core::store::AuditAction;
use gitops_core::{AuditQuery, AuditRecord, HistoryEntry, Revision, StateStore};
use gitops_etcd::EtcdStore;

/// Saves of this many records of ~4.4 KB each: ~1.3 MB per save, under
/// the 1.4 MB value limit.
const PER_SAVE: usize = 300;
/// Saves: ~8 MB of audit in all, twice the 4 MiB limit.
const SAVES: usize = 6;

fn big_record(save: usize, i: usize) -> AuditRecord {
    AuditRecord {
        at: SystemTime::now(),
        id: format!("Key/s{save}-{i:03}").parse().unwrap(),
        action: AuditAction::Update,
        digest_before: Some("a".repeat(64)),
        digest_after: Some("b".repeat(64)),
        revision: "c".repeat(40),
        reference: "main".into(),
        author: "Release Bot <bot@example.com>".into(),
        // The engine caps commit messages at 4 KiB.
        message: "m".repeat(4096),
        trigger: Trigger::Poll,
        detail: None,
    }
}

/// A history entry of ~1.2 MB (a long error text).
fn big_entry(n: usize) -> HistoryEntry {
    HistoryEntry {
        revision: Revision::new("main", format!("{n:040}")),
        trigger: Trigger::Poll,
        result: SyncResult::Failed,
        error: Some(format!("{n}: {}", "e".repeat(1_200_000))),
        summary: Default::default(),
        outcomes: Vec::new(),
        gates: Vec::new(),
        not_converging: Vec::new(),
        started_at: SystemTime::now(),
        finished_at: SystemTime::now(),
    }
}

async fn fill_audit(store: &EtcdStore, app: &str) {
    let mut version = 0;
    for save in 0..SAVES {
        let batch: Vec<AuditRecord> = (0..PER_SAVE).map(|i| big_record(save, i)).collect();
        version = store
            .save_inventory(app, &Inventory::new(), version, &batch)
            .await
            .expect("a save of ~1.3 MB of audit lands");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_queries_work_with_far_more_than_4_mib_of_records() {
    let store = EtcdStore::new(support::client().await, support::prefix("audit-8mib"));
    fill_audit(&store, "web").await;

    let all = store
        .audit("web", &AuditQuery::default())
        .await
        .expect("the whole audit log (~8 MB) is read");
    assert_eq!(all.len(), SAVES * PER_SAVE);
    assert_eq!(all[0].id.to_string(), "Key/s0-000");
    assert_eq!(all[all.len() - 1].id.to_string(), "Key/s5-299");

    let one = AuditQuery {
        id: Some("Key/s5-123".parse().unwrap()),
        ..AuditQuery::default()
    };
    let found = store.audit("web", &one).await.expect("a filtered query");
    assert_eq!(found.len(), 1);

    let first = AuditQuery {
        limit: Some(3),
        ..AuditQuery::default()
    };
    let ids: Vec<String> = store
        .audit("web", &first)
        .await
        .expect("a limited query")
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(ids, ["Key/s0-000", "Key/s0-001", "Key/s0-002"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_work_with_far_more_than_4_mib_of_entries() {
    let store = EtcdStore::new(support::client().await, support::prefix("history-8mib"));
    for n in 0..7 {
        store
            .append_history("web", &big_entry(n), 100)
            .await
            .expect("a ~1.2 MB entry lands");
    }
    // What the engine's pager asks for when a revision has a long run.
    let history = store
        .history("web", 64)
        .await
        .expect("~8.4 MB of history is read");
    let revisions: Vec<String> = history.iter().map(|h| h.revision.id.clone()).collect();
    let expected: Vec<String> = (0..7).rev().map(|n| format!("{n:040}")).collect();
    assert_eq!(revisions, expected, "newest first, all of them");
    let newest = store.history("web", 1).await.expect("one entry");
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].revision.id, format!("{:040}", 6));
    // Retention still trims (a page of keys at a time).
    store
        .append_history("web", &big_entry(7), 2)
        .await
        .expect("trims");
    assert_eq!(store.history("web", 64).await.expect("reads").len(), 2);
}
