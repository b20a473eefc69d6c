//! State that survives: the redb store, inventory and prune guards, history,
//! audit, rollback (manual and automatic) and disaster recovery.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gitops_core::engine::{EngineConfig, Outcome, SyncResult, Trigger};
use gitops_core::model::Inventory;
use gitops_core::store::{AuditAction, EngineRecord};
use gitops_core::store::{FORMAT_VERSION, StateStore, Versioned};
use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::{
    AuditQuery, ConditionKind, Engine, EngineError, Health, ManifestRender, RedbStore, Revision,
    StoreError,
};
use redb::ReadableDatabase as _;
use serde_json::json;

mod support;
use support::{eventually, id};

fn doc(name: &str, v: i64) -> String {
    format!("---\nkind: App\nmetadata: {{ name: {name} }}\nspec: {{ v: {v} }}\n")
}

fn engine_on(
    source: &Arc<MemorySource>,
    target: &Arc<MemoryTarget>,
    store: Arc<dyn StateStore>,
    config: EngineConfig,
) -> Engine {
    Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .store(store)
        .config(config)
        .build()
        .expect("builds")
}

fn quick() -> EngineConfig {
    EngineConfig::default()
        .interval(Duration::from_secs(10))
        .interval_jitter(0.0)
        .health_poll(Duration::from_secs(1))
        .health_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn redb_store_persists_with_compare_and_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inventory = Inventory::new();
    inventory.record(&gitops_core::Resource::new(id("App/a"), json!({"v": 1})));
    {
        let store = RedbStore::open(dir.path()).expect("opens");
        let v1 = store
            .save_inventory("web", &inventory, 0, &[])
            .await
            .expect("saves");
        let err = store
            .save_inventory("web", &inventory, 0, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    expected: 0,
                    found: 1,
                    ..
                }
            ),
            "{err}"
        );
        store
            .save_inventory("api", &Inventory::new(), 0, &[])
            .await
            .expect("saves");
        let record = EngineRecord {
            bad: vec!["abc".into()],
            ..EngineRecord::default()
        };
        store.save_record("web", &record, 0).await.expect("saves");
        assert_eq!(v1, 1);
    }
    // Reopened: everything is there, per application.
    let store = RedbStore::open(dir.path()).expect("reopens");
    let loaded = store.load_inventory("web").await.expect("loads");
    assert_eq!(
        loaded,
        Versioned {
            version: 1,
            value: inventory
        }
    );
    assert_eq!(
        store.load_inventory("other").await.expect("loads").version,
        0
    );
    assert_eq!(
        store.load_record("web").await.expect("loads").value.bad,
        ["abc"]
    );
    assert_eq!(store.apps().await.expect("lists"), ["api", "web"]);
}

#[tokio::test]
async fn a_newer_format_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = {
        let store = RedbStore::open(dir.path()).expect("opens");
        store.path().to_owned()
    };
    {
        // Simulate a store written by a future version.
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u32>::new("meta"))
                .expect("meta");
            meta.insert("history", FORMAT_VERSION + 1).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::UnsupportedFormat { record, found, .. } if record == "history" && *found == FORMAT_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to open"), "{err}");
    // Nothing was rewritten: the newer format marker is still there.
    let db = redb::Database::open(&path).expect("raw open");
    let txn = db.begin_read().expect("txn");
    let meta = txn
        .open_table(redb::TableDefinition::<&str, u32>::new("meta"))
        .expect("meta");
    let marker = meta.get("history").expect("get").map(|v| v.value());
    assert_eq!(marker, Some(FORMAT_VERSION + 1));
}

#[tokio::test(start_paused = true)]
async fn history_and_audit_record_every_sync_and_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).expect("opens"));
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let config = quick().history_limit(3);
    let engine = engine_on(&source, &target, store.clone(), config);

    let r1 = source.commit([("app.yaml", [doc("a", 1), doc("b", 1)].concat())]);
    engine.sync_once().await.expect("sync 1");
    let r2 = source.commit([("app.yaml", [doc("a", 2)].concat())]);
    engine.sync_once().await.expect("sync 2");

    let history = engine.history(10).await.expect("history");
    assert_eq!(history.len(), 2);
    let newest = &history[0];
    assert_eq!(newest.revision, r2);
    assert_eq!(newest.revision.author, "Test Author <test@example.com>");
    assert_eq!(newest.trigger, Trigger::Manual);
    assert_eq!(newest.result, SyncResult::Converged);
    assert_eq!((newest.summary.update, newest.summary.delete), (1, 1));
    assert!(newest.finished_at >= newest.started_at);
    let outcomes: Vec<_> = newest
        .outcomes
        .iter()
        .map(|o| (o.id.to_string(), o.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("App/a".to_string(), Outcome::Updated),
            ("App/b".to_string(), Outcome::Pruned)
        ]
    );
    assert_eq!(history[1].revision, r1);

    // Retention keeps the newest 3.
    for v in 3..7 {
        source.commit([("app.yaml", doc("a", v))]);
        engine.sync_once().await.expect("sync");
    }
    let history = engine.history(100).await.expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].revision.message, "commit 6");

    // Audit: who, why, what, when, from which revision.
    let all = engine.audit(&AuditQuery::default()).await.expect("audit");
    let a: Vec<_> = all.iter().filter(|r| r.id == id("App/a")).collect();
    assert_eq!(a.len(), 6, "create + 5 updates");
    assert_eq!(a[0].action, AuditAction::Create);
    assert_eq!(a[0].digest_before, None);
    assert_eq!(a[1].action, AuditAction::Update);
    assert_eq!(
        a[1].digest_before, a[0].digest_after,
        "before of one is after of the previous"
    );
    assert_eq!(a[1].revision, r2.id);
    assert_eq!(a[1].message, "commit 2");
    assert_eq!(a[1].author, "Test Author <test@example.com>");
    let b: Vec<_> = all.iter().filter(|r| r.id == id("App/b")).collect();
    assert_eq!(
        b.iter().map(|r| r.action).collect::<Vec<_>>(),
        [AuditAction::Create, AuditAction::Delete]
    );
    assert_eq!(b[1].digest_after, None);

    audit_queries_and_export(&engine).await;
}

/// Queries by resource and by time range, and the JSON-lines export.
async fn audit_queries_and_export(engine: &Engine) {
    let only_b = engine
        .audit(&AuditQuery {
            id: Some(id("App/b")),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(only_b.len(), 2);
    let future = engine
        .audit(&AuditQuery {
            since: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert!(future.is_empty());
    let mut out = Vec::new();
    let n = engine
        .export_audit(
            &AuditQuery {
                id: Some(id("App/b")),
                ..AuditQuery::default()
            },
            &mut out,
        )
        .await
        .expect("export");
    assert_eq!(n, 2);
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines[1]["action"], "delete");
    assert_eq!(lines[1]["id"], "App/b");
}

#[tokio::test(start_paused = true)]
async fn an_empty_revision_is_refused_unless_allowed() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store: Arc<dyn StateStore> = Arc::new(gitops_core::MemoryStore::new());
    let engine = engine_on(&source, &target, store.clone(), quick());
    source.commit([("app.yaml", [doc("a", 1), doc("b", 1)].concat())]);
    engine.sync_once().await.expect("sync");
    source.commit([("README.md", "the manifests moved away")]);
    let err = engine.sync_once().await.unwrap_err();
    assert!(
        matches!(err, EngineError::EmptyRevision { managed: 2, .. }),
        "{err}"
    );
    assert_eq!(target.contents().len(), 2, "nothing deleted");
    assert!(engine.status().is(ConditionKind::Stalled));

    let permissive = engine_on(&source, &target, store, quick().allow_empty(true));
    let report = permissive.sync_once().await.expect("sync");
    assert_eq!(report.counts()[2], 2, "{report}");
    assert!(target.contents().is_empty());
}

#[tokio::test(start_paused = true)]
async fn prune_opt_out_keeps_the_resource() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let engine = engine_on(
        &source,
        &target,
        Arc::new(gitops_core::MemoryStore::new()),
        quick(),
    );
    let keep = "---\nkind: App\nmetadata: { name: db, annotations: { gitops.rs/prune: disabled } }\nspec: { v: 1 }\n";
    source.commit([("app.yaml", [keep.to_string(), doc("a", 1)].concat())]);
    engine.sync_once().await.expect("sync");
    source.commit([("app.yaml", doc("a", 1))]);
    let report = engine.sync_once().await.expect("sync");
    assert_eq!(report.plan.retained, [id("App/db")]);
    assert!(target.get(&id("App/db")).is_some(), "kept");
}

#[tokio::test(start_paused = true)]
async fn manual_rollback_pins_until_resume() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let engine = engine_on(
        &source,
        &target,
        Arc::new(gitops_core::MemoryStore::new()),
        quick(),
    );
    let v1 = source.commit([("app.yaml", doc("a", 1))]);
    engine.sync_once().await.expect("sync v1");
    source.commit([("app.yaml", doc("a", 2))]);
    engine.sync_once().await.expect("sync v2");

    let recorded: Vec<Revision> = engine
        .history(10)
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.revision)
        .collect();
    assert!(recorded.contains(&v1));
    let report = engine.rollback(&v1).await.expect("rollback");
    assert!(report.converged(), "{report}");
    assert_eq!(report.trigger, Trigger::Rollback);
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 1})));
    assert_eq!(
        engine.history(1).await.expect("history")[0].trigger,
        Trigger::Rollback
    );

    // Pinned: a new commit does not advance the pull loop.
    let handle = engine.handle();
    let runner = engine.clone();
    let run = tokio::spawn(async move { runner.run().await });
    source.commit([("app.yaml", doc("a", 3))]);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        target.get(&id("App/a")),
        Some(json!({"v": 1})),
        "still pinned"
    );
    // resume() ends the pin: the agent moves on to the newest commit.
    handle.resume();
    assert!(
        eventually(Duration::from_secs(5), || target.get(&id("App/a"))
            == Some(json!({"v": 3})))
        .await
    );
    handle.shutdown();
    run.await.expect("joins").expect("run ends");
}

#[tokio::test(start_paused = true)]
async fn rollback_through_the_handle_can_unpin_on_a_newer_commit() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let config = quick().unpin_on_new_commit(true);
    let engine = engine_on(
        &source,
        &target,
        Arc::new(gitops_core::MemoryStore::new()),
        config,
    );
    let v1 = source.commit([("app.yaml", doc("a", 1))]);
    let handle = engine.handle();
    let runner = engine.clone();
    let run = tokio::spawn(async move { runner.run().await });
    assert!(
        eventually(Duration::from_secs(5), || target
            .get(&id("App/a"))
            .is_some())
        .await
    );
    source.commit([("app.yaml", doc("a", 2))]);
    assert!(
        eventually(Duration::from_secs(30), || target.get(&id("App/a"))
            == Some(json!({"v": 2})))
        .await
    );
    handle.rollback(v1);
    assert!(
        eventually(Duration::from_secs(5), || target.get(&id("App/a"))
            == Some(json!({"v": 1})))
        .await
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        target.get(&id("App/a")),
        Some(json!({"v": 1})),
        "v2 is what we rolled back from"
    );
    source.commit([("app.yaml", doc("a", 3))]);
    assert!(
        eventually(Duration::from_secs(30), || target.get(&id("App/a"))
            == Some(json!({"v": 3})))
        .await
    );
    handle.shutdown();
    run.await.expect("joins").expect("run ends");
}

#[tokio::test(start_paused = true)]
async fn automated_rollback_restores_the_last_healthy_revision_without_flip_flop() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let config = quick().auto_rollback(true);
    let engine = engine_on(
        &source,
        &target,
        Arc::new(gitops_core::MemoryStore::new()),
        config,
    );
    source.commit([("app.yaml", doc("a", 1))]);
    let handle = engine.handle();
    let runner = engine.clone();
    let run = tokio::spawn(async move { runner.run().await });
    assert!(
        eventually(Duration::from_secs(5), || engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );

    // v2 never becomes healthy; everything after it is.
    target.script_health(
        &id("App/a"),
        [
            Health::Degraded {
                reason: "CrashLoopBackOff".into(),
            },
            Health::Healthy,
        ],
    );
    let v2 = source.commit([("app.yaml", doc("a", 2))]);
    let rolled_back = || {
        let applies: Vec<Call> = target.changes();
        applies.len() == 3 && target.get(&id("App/a")) == Some(json!({"v": 1}))
    };
    assert!(
        eventually(Duration::from_secs(60), rolled_back).await,
        "rolled back"
    );
    assert!(
        eventually(Duration::from_secs(5), || engine
            .status()
            .is(ConditionKind::Ready))
        .await
    );
    let history = engine.history(10).await.expect("history");
    assert_eq!(history[0].trigger, Trigger::Rollback);
    assert_eq!(history[1].revision, v2);
    assert_eq!(history[1].result, SyncResult::Failed);
    // The bad revision is not retried: v2 is applied exactly once.
    tokio::time::sleep(Duration::from_secs(300)).await;
    let v2_applies = target
        .timed_calls()
        .iter()
        .filter(|(c, _)| *c == Call::Apply(id("App/a")))
        .count();
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 1})));
    assert_eq!(v2_applies, 3, "v1, v2, rollback to v1 — nothing more");
    // A newer commit ends it.
    source.commit([("app.yaml", doc("a", 3))]);
    assert!(
        eventually(Duration::from_secs(30), || target.get(&id("App/a"))
            == Some(json!({"v": 3})))
        .await
    );
    handle.shutdown();
    run.await.expect("joins").expect("run ends");
}

#[tokio::test(start_paused = true)]
async fn a_wiped_target_is_restored() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let engine = engine_on(
        &source,
        &target,
        Arc::new(gitops_core::MemoryStore::new()),
        quick(),
    );
    source.commit([("app.yaml", [doc("a", 1), doc("b", 2), doc("c", 3)].concat())]);
    engine.sync_once().await.expect("sync");
    let before = target.contents();
    target.wipe();
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(report.counts()[0], 3, "all recreated");
    assert_eq!(target.contents(), before);
}

#[tokio::test(start_paused = true)]
async fn a_lost_state_is_rebuilt_by_adoption_and_survives_restarts() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    source.commit([("app.yaml", [doc("a", 1), doc("b", 1)].concat())]);
    {
        let first_life = engine_on(
            &source,
            &target,
            Arc::new(gitops_core::MemoryStore::new()),
            quick(),
        );
        first_life.sync_once().await.expect("sync");
    }
    // The state is gone; a new engine starts with an empty store.
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).expect("opens"));
    let engine = engine_on(&source, &target, store, quick());
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged());
    assert_eq!(
        report.counts()[3],
        2,
        "adopted as unchanged, nothing re-applied"
    );
    assert_eq!(
        target.changes().len(),
        2,
        "only the first life's two creates"
    );
    drop(engine);

    // Restart on the same state directory: the adopted resources are managed.
    let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).expect("reopens"));
    let engine = engine_on(&source, &target, store, quick());
    source.commit([("app.yaml", doc("a", 1))]);
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert!(
        target.get(&id("App/b")).is_none(),
        "pruned after adoption and restart"
    );
}

/// A limit of zero means none, in every store and for both queries.
#[tokio::test(start_paused = true)]
async fn zero_limits_return_nothing_in_every_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores: [Arc<dyn StateStore>; 2] = [
        Arc::new(RedbStore::open(dir.path()).expect("opens")),
        Arc::new(gitops_core::MemoryStore::new()),
    ];
    for store in stores {
        let source = Arc::new(MemorySource::new("main"));
        let target = Arc::new(MemoryTarget::new());
        let engine = engine_on(&source, &target, store.clone(), quick());
        source.commit([("app.yaml", [doc("a", 1), doc("b", 1)].concat())]);
        engine.sync_once().await.expect("sync");
        let app = engine.handle().name().to_owned();
        let app = app.as_str();
        assert_eq!(store.history(app, 0).await.expect("history").len(), 0);
        assert_eq!(store.history(app, 1).await.expect("history").len(), 1);
        let none = AuditQuery {
            limit: Some(0),
            ..AuditQuery::default()
        };
        assert_eq!(store.audit(app, &none).await.expect("audit").len(), 0);
        let one = AuditQuery {
            limit: Some(1),
            ..AuditQuery::default()
        };
        assert_eq!(store.audit(app, &one).await.expect("audit").len(), 1);
    }
}

/// A hostile commit message (one 1 MiB line) and author are kept to a few
/// KiB in history, audit and status, marked as cut.
#[tokio::test]
async fn huge_commit_messages_are_cut_in_every_record() {
    use gitops_core::model::{MAX_AUTHOR_BYTES, MAX_MESSAGE_BYTES, TRUNCATED};
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store = Arc::new(gitops_core::MemoryStore::new());
    let engine = engine_on(&source, &target, store, quick());
    let huge = "é".repeat(512 * 1024);
    source.commit_as(&huge, &huge, [("app.yaml", doc("a", 1))]);
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    let history = engine.history(1).await.expect("history");
    let kept = &history[0].revision;
    assert!(
        kept.message.len() <= MAX_MESSAGE_BYTES,
        "{}",
        kept.message.len()
    );
    assert!(kept.message.ends_with(TRUNCATED));
    assert!(kept.author.len() <= MAX_AUTHOR_BYTES && kept.author.ends_with(TRUNCATED));
    let audit = engine.audit(&AuditQuery::default()).await.expect("audit");
    assert!(!audit.is_empty());
    for record in audit {
        assert!(record.message.len() <= MAX_MESSAGE_BYTES);
        assert!(record.author.len() <= MAX_AUTHOR_BYTES);
    }
    let status = engine.status();
    let applied = status.last_applied.expect("applied");
    assert!(applied.message.len() <= MAX_MESSAGE_BYTES);
}

/// A health wait cut short by a shutdown loses no audit record: what
/// reached the target is recorded before the wait.
#[tokio::test(start_paused = true)]
async fn a_health_wait_cut_short_keeps_the_audit_records() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store = Arc::new(gitops_core::MemoryStore::new());
    let config = quick().health_timeout(Duration::from_secs(3600));
    let engine = engine_on(&source, &target, store.clone(), config);
    target.script_health(
        &id("App/a"),
        std::iter::repeat_n(Health::Progressing, 10_000),
    );
    source.commit([("app.yaml", doc("a", 1))]);
    let running = engine.clone();
    let run = tokio::spawn(async move { running.run().await });
    assert!(
        eventually(Duration::from_secs(10), || target
            .get(&id("App/a"))
            .is_some())
        .await,
        "applied"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // inside the health wait
    engine.handle().shutdown();
    engine.handle().shutdown(); // the second aborts the wait
    run.await.expect("join").expect("run");
    let audit = engine.audit(&AuditQuery::default()).await.expect("audit");
    assert_eq!(
        audit
            .iter()
            .map(|r| (r.id.to_string(), r.action))
            .collect::<Vec<_>>(),
        [("App/a".to_owned(), AuditAction::Create)],
        "the create that reached the target is audited"
    );
}

/// A crash between an apply and its record leaves a pending create (or the
/// old digest) in the inventory; the next sync finds the target already
/// holds the revision's version and audits the change then.
#[tokio::test]
async fn a_change_whose_record_a_crash_lost_is_audited_by_the_next_sync() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store = Arc::new(gitops_core::MemoryStore::new());
    source.commit([("app.yaml", format!("{}{}", doc("a", 1), doc("b", 1)))]);
    let engine = engine_on(&source, &target, store.clone(), quick());
    assert!(engine.sync_once().await.expect("sync").converged());
    let before = engine
        .audit(&AuditQuery::default())
        .await
        .expect("audit")
        .len();
    // As if a crash hit between the apply and its record: the target holds
    // v2 of a and the new c, the inventory still the old digest of a and a
    // pending (empty) entry for c.
    source.commit([(
        "app.yaml",
        format!("{}{}{}", doc("a", 2), doc("b", 1), doc("c", 1)),
    )]);
    target.edit(&id("App/a"), json!({"v": 2}));
    target.edit(&id("App/c"), json!({"v": 1}));
    let loaded = store.load_inventory("default").await.expect("inventory");
    let mut inventory = loaded.value.clone();
    inventory.insert(
        id("App/c"),
        gitops_core::model::InventoryEntry {
            digest: String::new(),
            depends_on: Vec::new(),
            prune: true,
        },
    );
    store
        .save_inventory("default", &inventory, loaded.version, &[])
        .await
        .expect("save");
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    let audit = engine.audit(&AuditQuery::default()).await.expect("audit");
    let recovered: Vec<_> = audit[before..]
        .iter()
        .map(|r| (r.id.to_string(), r.action, r.detail.is_some()))
        .collect();
    assert_eq!(
        recovered,
        [
            ("App/a".to_owned(), AuditAction::Update, true),
            ("App/c".to_owned(), AuditAction::Create, true)
        ]
    );
}
