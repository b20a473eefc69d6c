//! State store benchmarks on the embedded redb store, printed as medians:
//! appending 10,000 history entries, querying the audit log of one resource
//! among 1,000,000 records, opening a store that holds 100 applications.
//! `cargo bench --bench state` (a few minutes: it writes ~1M records first).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gitops_core::engine::{SyncResult, Trigger};
use gitops_core::model::Inventory;
use gitops_core::store::{AuditAction, AuditQuery, AuditRecord, HistoryEntry, StateStore};
use gitops_core::{RedbStore, Resource, ResourceId, Revision};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn revision(i: u64) -> Revision {
    let mut r = Revision::new("main", format!("{i:040x}"));
    r.author = "Dev <dev@example.com>".into();
    r.message = format!("change {i}");
    r
}

fn audit_record(i: u64, resources: u64) -> AuditRecord {
    AuditRecord {
        at: SystemTime::now(),
        id: ResourceId::new("ConfigMap", format!("cm-{:06}", i % resources)).expect("valid"),
        action: AuditAction::Update,
        digest_before: Some(format!("{:064x}", i)),
        digest_after: Some(format!("{:064x}", i + 1)),
        revision: format!("{:040x}", i / 100),
        reference: "main".into(),
        author: "Dev <dev@example.com>".into(),
        message: "change".into(),
        trigger: Trigger::Poll,
        detail: None,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (entries, audit_total, apps) = if full {
        (10_000, 1_000_000, 100)
    } else {
        (100, 10_000, 5)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        history_appends(entries).await;
        audit_query(audit_total).await;
        open_with_apps(apps).await;
    });
}

/// History appends: one durable transaction each.
async fn history_appends(entries: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path()).expect("opens");
    let started = Instant::now();
    for i in 0..entries {
        let entry = HistoryEntry {
            revision: revision(i),
            trigger: Trigger::Poll,
            result: SyncResult::Converged,
            error: None,
            summary: Default::default(),
            outcomes: Vec::new(),
            gates: Vec::new(),
            not_converging: Vec::new(),
            started_at: SystemTime::now(),
            finished_at: SystemTime::now(),
        };
        store
            .append_history("web", &entry, 100)
            .await
            .expect("appends");
    }
    let took = started.elapsed();
    println!(
        "history: {entries} appends (retention 100) in {took:.2?}: {:.2?} each",
        took / entries as u32
    );
}

/// An audit query of one resource among many records.
async fn audit_query(audit_total: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path()).expect("opens");
    let resources = 10_000;
    let fill = Instant::now();
    let mut version = 0;
    for batch in 0..(audit_total / 10_000) {
        let records: Vec<AuditRecord> = (0..10_000)
            .map(|j| audit_record(batch * 10_000 + j, resources))
            .collect();
        version = store
            .save_inventory("web", &Inventory::new(), version, &records)
            .await
            .expect("writes");
    }
    println!(
        "audit: wrote {audit_total} records in {:.1?}",
        fill.elapsed()
    );
    let mut samples = Vec::new();
    let mut found = 0;
    for k in 0..50 {
        let id = ResourceId::new("ConfigMap", format!("cm-{:06}", (k * 7919) % resources))
            .expect("valid");
        let query = AuditQuery {
            id: Some(id),
            ..AuditQuery::default()
        };
        let t = Instant::now();
        found = store.audit("web", &query).await.expect("queries").len();
        samples.push(t.elapsed());
    }
    println!(
        "audit: query of one resource ({found} records) among {audit_total}: median {:.2?}",
        median(samples)
    );
}

/// Opening a store that holds many applications.
async fn open_with_apps(apps: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = RedbStore::open(dir.path()).expect("opens");
        for a in 0..apps {
            let mut inventory = Inventory::new();
            for r in 0..100 {
                let id = ResourceId::new("ConfigMap", format!("cm-{r}")).expect("valid");
                inventory.record(&Resource::new(id, serde_json::json!({"v": r})));
            }
            let app = format!("app-{a}");
            store
                .save_inventory(&app, &inventory, 0, &[])
                .await
                .expect("writes");
        }
    }
    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let store = Arc::new(RedbStore::open(dir.path()).expect("opens"));
        samples.push(t.elapsed());
        drop(store);
    }
    println!(
        "store: open with {apps} applications: median {:.2?}",
        median(samples)
    );
}
