//! The stored format is kept: a state directory written by format version 1
//! (the bytes below are what that build wrote, captured from it) opens and
//! reads in this build, and this build writes the same bytes for the same
//! records. If this test has to change, the format changed: bump
//! `FORMAT_VERSION` and keep reading the old one (docs/stored-data.md).

use std::time::{Duration, UNIX_EPOCH};

use gitops_core::engine::{Outcome, ResourceOutcome, SyncResult, Trigger};
use gitops_core::gate::{GateResult, GateStage};
use gitops_core::model::InventoryEntry;
use gitops_core::store::{
    AuditAction, AuditQuery, AuditRecord, EngineRecord, FORMAT_VERSION, HistoryEntry, StateStore,
};
use gitops_core::{RedbStore, ResourceId, Revision};
use redb::{Database, ReadableDatabase as _, TableDefinition};

const INVENTORY_V1: &str =
    r#"{"App/web":{"digest":"sha256:abc","depends_on":["Secret/tls"],"prune":true}}"#;
const RECORD_V1: &str = r#"{"last_applied":{"id":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","reference":"main","author":"Ada <ada@example.com>","committed_at":1764000000,"message":"Scale web\n\nmore"},"last_healthy":{"id":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","reference":"main","author":"Ada <ada@example.com>","committed_at":1764000000,"message":"Scale web\n\nmore"},"pinned":null,"bad":["1111111111111111111111111111111111111111"]}"#;
const HISTORY_V1: &str = r#"{"revision":{"id":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","reference":"main","author":"Ada <ada@example.com>","committed_at":1764000000,"message":"Scale web\n\nmore"},"trigger":"webhook","result":"failed","summary":{"create":0,"update":0,"delete":0,"unchanged":0,"retained":0},"outcomes":[{"id":"App/web","outcome":"unhealthy","reason":"crash loop"}],"gates":[{"name":"smoke","stage":"post_sync","passed":false,"output":"3 of 10 failed","duration":{"secs":1,"nanos":500000000}}],"started_at":{"secs_since_epoch":1764000000,"nanos_since_epoch":0},"finished_at":{"secs_since_epoch":1764000002,"nanos_since_epoch":0}}"#;
const AUDIT_V1: &str = r#"{"at":{"secs_since_epoch":1764000000,"nanos_since_epoch":0},"id":"App/web","action":"update","digest_before":"sha256:old","digest_after":"sha256:abc","revision":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","reference":"main","author":"Ada <ada@example.com>","message":"Scale web","trigger":"poll"}"#;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const INVENTORY: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("inventory");
const RECORD: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("record");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
const AUDIT_BY_ID: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("audit_by_id");

/// Writes a state directory exactly as format version 1 did.
fn write_v1(dir: &std::path::Path) {
    let db = Database::create(dir.join("state.redb")).expect("creates");
    let tx = db.begin_write().expect("write");
    {
        let mut meta = tx.open_table(META).expect("meta");
        for set in ["inventory", "record", "history", "audit"] {
            meta.insert(set, 1).expect("meta");
        }
        let mut t = tx.open_table(INVENTORY).expect("inventory");
        t.insert("web", (1, INVENTORY_V1.as_bytes()))
            .expect("inventory");
        let mut t = tx.open_table(RECORD).expect("record");
        t.insert("web", (1, RECORD_V1.as_bytes())).expect("record");
        let mut t = tx.open_table(HISTORY).expect("history");
        t.insert(("web", 0), HISTORY_V1.as_bytes())
            .expect("history");
        let mut t = tx.open_table(AUDIT).expect("audit");
        t.insert(("web", 0), AUDIT_V1.as_bytes()).expect("audit");
        let mut t = tx.open_table(AUDIT_BY_ID).expect("index");
        t.insert(("web", "App/web", 0), ()).expect("index");
    }
    tx.commit().expect("commits");
}

fn revision() -> Revision {
    let mut rev = Revision::new("main", "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    rev.author = "Ada <ada@example.com>".into();
    rev.committed_at = 1_764_000_000;
    rev.message = "Scale web\n\nmore".into();
    rev
}

fn web() -> ResourceId {
    "App/web".parse().expect("id")
}

#[tokio::test]
async fn a_store_written_by_format_1_opens_and_reads() {
    assert!(
        gitops_core::store::readable(1),
        "format 1 must stay readable (docs/stored-data.md)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    write_v1(dir.path());
    let store = RedbStore::open(dir.path()).expect("a format 1 store opens");
    let at = UNIX_EPOCH + Duration::from_secs(1_764_000_000);

    let inventory = store.load_inventory("web").await.expect("inventory");
    assert_eq!(inventory.version, 1);
    assert_eq!(
        inventory.value.get(&web()),
        Some(&InventoryEntry {
            digest: "sha256:abc".into(),
            depends_on: vec!["Secret/tls".parse().expect("id")],
            prune: true,
        })
    );

    let record = store.load_record("web").await.expect("record");
    assert_eq!(
        record.value,
        EngineRecord {
            last_applied: Some(revision()),
            last_healthy: Some(revision()),
            pinned: None,
            unpin_after: None,
            bad: vec!["1111111111111111111111111111111111111111".into()],
            confirmed: None,
            sealed: None,
        }
    );

    let history = store.history("web", 10).await.expect("history");
    let expected = HistoryEntry {
        revision: revision(),
        trigger: Trigger::Webhook,
        result: SyncResult::Failed,
        error: None,
        summary: Default::default(),
        outcomes: vec![ResourceOutcome {
            id: web(),
            outcome: Outcome::Unhealthy {
                reason: "crash loop".into(),
            },
        }],
        gates: vec![GateResult {
            name: "smoke".into(),
            stage: GateStage::PostSync,
            passed: false,
            output: "3 of 10 failed".into(),
            duration: Duration::from_millis(1500),
            error: None,
        }],
        not_converging: Vec::new(),
        started_at: at,
        finished_at: at + Duration::from_secs(2),
    };
    assert_eq!(history, vec![expected.clone()]);

    let query = AuditQuery {
        id: Some(web()),
        ..AuditQuery::default()
    };
    let audit = store.audit("web", &query).await.expect("audit");
    let record = AuditRecord {
        at,
        id: web(),
        action: AuditAction::Update,
        digest_before: Some("sha256:old".into()),
        digest_after: Some("sha256:abc".into()),
        revision: revision().id,
        reference: "main".into(),
        author: "Ada <ada@example.com>".into(),
        message: "Scale web".into(),
        trigger: Trigger::Poll,
        detail: None,
    };
    assert_eq!(audit, vec![record.clone()]);

    // This build writes format 2: the same bytes except that times are
    // RFC 3339 text.
    assert_eq!(FORMAT_VERSION, 2);
    let rfc3339 = |v1: &str| {
        v1.replace(
            r#"{"secs_since_epoch":1764000000,"nanos_since_epoch":0}"#,
            r#""2025-11-24T16:00:00Z""#,
        )
        .replace(
            r#"{"secs_since_epoch":1764000002,"nanos_since_epoch":0}"#,
            r#""2025-11-24T16:00:02Z""#,
        )
    };
    assert_eq!(
        serde_json::to_string(&expected).expect("json"),
        rfc3339(HISTORY_V1)
    );
    assert_eq!(
        serde_json::to_string(&record).expect("json"),
        rfc3339(AUDIT_V1)
    );
    assert!(!rfc3339(HISTORY_V1).contains("secs_since_epoch"));
    assert_eq!(
        serde_json::to_string(&store.load_record("web").await.expect("record").value)
            .expect("json"),
        RECORD_V1
    );
    assert_eq!(
        serde_json::to_string(&store.load_inventory("web").await.expect("inv").value)
            .expect("json"),
        INVENTORY_V1
    );
}

/// A format-1 store opened by this build is marked format 2 (so an older
/// build refuses it rather than misreading RFC 3339 times), keeps reading
/// its format-1 records beside new ones, and reopens; a newer format is
/// refused.
#[tokio::test]
async fn a_format_1_store_is_upgraded_in_place_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_v1(dir.path());
    {
        let store = RedbStore::open(dir.path()).expect("opens");
        let mut entry = store.history("web", 10).await.expect("history")[0].clone();
        entry.started_at += Duration::from_secs(60);
        entry.finished_at += Duration::from_secs(60);
        store
            .append_history("web", &entry, 10)
            .await
            .expect("append");
        let both = store.history("web", 10).await.expect("history");
        assert_eq!(both.len(), 2, "a format-1 entry and a format-2 entry");
    }
    let db = Database::open(dir.path().join("state.redb")).expect("db");
    {
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        assert_eq!(
            meta.get("history").expect("get").map(|v| v.value()),
            Some(2)
        );
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("history", 3)
            .expect("insert");
        txn.commit().expect("commit");
    }
    drop(db);
    let err = RedbStore::open(dir.path()).expect_err("format 3 is from the future");
    assert!(err.to_string().contains('3'), "{err}");
}

/// `HistoryEntry::not_converging` is an optional field, not a format
/// change (docs/stored-data.md): absent when empty (the v1 bytes above are
/// still what this build writes), written when there is something, and
/// read back.
#[test]
fn not_converging_is_an_optional_history_field() {
    let mut entry: HistoryEntry = serde_json::from_str(HISTORY_V1).expect("v1 reads");
    assert!(entry.not_converging.is_empty());
    entry.not_converging = vec![gitops_core::store::NotConverging {
        id: web(),
        fields: vec!["spec.enabled".into()],
        applies: 3,
    }];
    let json = serde_json::to_string(&entry).expect("json");
    assert!(
        json.contains(
            r#""not_converging":[{"id":"App/web","fields":["spec.enabled"],"applies":3}]"#
        ),
        "{json}"
    );
    let back: HistoryEntry = serde_json::from_str(&json).expect("reads");
    assert_eq!(back, entry);
}
