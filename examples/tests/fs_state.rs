//! The state promises on the filesystem target: the engine with `FsTarget`
//! and the redb store on real directories.

use std::path::Path;
use std::sync::Arc;

use gitops_core::store::AuditAction;
use gitops_core::testing::MemorySource;
use gitops_core::{AuditQuery, Engine, FilesRender, RedbStore, StateStore};
use gitops_targets::{FsOptions, FsTarget};

fn engine(source: &Arc<MemorySource>, dir: &Path, store: Arc<dyn StateStore>) -> Engine {
    let target = FsTarget::open_with(dir, FsOptions::default().create_root(true)).expect("opens");
    Engine::builder()
        .source(source.clone())
        .render(Arc::new(FilesRender::new()))
        .target(Arc::new(target))
        .store(store)
        .build()
        .expect("builds")
}

fn redb(dir: &Path) -> Arc<dyn StateStore> {
    Arc::new(RedbStore::open(dir).expect("opens"))
}

fn read(dir: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(path)).ok()
}

#[tokio::test]
async fn a_wiped_directory_is_restored() {
    let work = tempfile::tempdir().expect("tempdir");
    let target = work.path().join("target");
    let source = Arc::new(MemorySource::new("main"));
    source.commit([
        ("etc/app.conf", "port = 80\n"),
        ("etc/db/url", "postgres://db\n"),
        ("VERSION", "1\n"),
    ]);
    let engine = engine(&source, &target, redb(&work.path().join("state")));
    assert!(engine.sync_once().await.expect("sync").converged());
    for entry in std::fs::read_dir(&target).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("wipe");
        } else {
            std::fs::remove_file(&path).expect("wipe");
        }
    }
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(report.counts()[0], 3, "all recreated: {report}");
    assert_eq!(
        read(&target, "etc/db/url").as_deref(),
        Some("postgres://db\n")
    );
}

#[tokio::test]
async fn prune_removes_only_what_the_engine_wrote() {
    let work = tempfile::tempdir().expect("tempdir");
    let target = work.path().join("target");
    std::fs::create_dir_all(target.join("etc")).expect("mkdir");
    std::fs::write(target.join("etc/local.conf"), "mine\n").expect("foreign file");
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("etc/app.conf", "a\n"), ("cache/tmp.conf", "b\n")]);
    let engine = engine(&source, &target, redb(&work.path().join("state")));
    engine.sync_once().await.expect("sync");
    source.commit([("etc/other.conf", "c\n")]);
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(
        read(&target, "etc/local.conf").as_deref(),
        Some("mine\n"),
        "foreign file kept"
    );
    assert!(read(&target, "etc/app.conf").is_none());
    assert!(
        !target.join("cache").exists(),
        "a directory the engine created and emptied is removed"
    );
    assert!(
        target.join("etc").exists(),
        "a directory holding a foreign file stays"
    );
    let deletes = engine
        .audit(&AuditQuery::default())
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.action == AuditAction::Delete)
        .count();
    assert_eq!(deletes, 2);
}

#[tokio::test]
async fn a_lost_state_directory_is_rebuilt_by_adoption() {
    let work = tempfile::tempdir().expect("tempdir");
    let target = work.path().join("target");
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("a.conf", "a\n"), ("b.conf", "b\n")]);
    engine(&source, &target, redb(&work.path().join("state")))
        .sync_once()
        .await
        .expect("sync");
    std::fs::remove_dir_all(work.path().join("state")).expect("lose the state");

    let engine = engine(&source, &target, redb(&work.path().join("state")));
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(report.counts()[3], 2, "adopted, not re-applied: {report}");
    source.commit([("a.conf", "a\n")]);
    let report = engine.sync_once().await.expect("sync");
    assert_eq!(
        report.counts()[2],
        1,
        "the adopted file is managed: {report}"
    );
    assert!(read(&target, "b.conf").is_none());
}

#[tokio::test]
async fn drift_in_the_directory_is_reverted_and_audited() {
    let work = tempfile::tempdir().expect("tempdir");
    let target = work.path().join("target");
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("app.conf", "workers = 4\n")]);
    let engine = engine(&source, &target, redb(&work.path().join("state")));
    engine.sync_once().await.expect("sync");
    std::fs::write(target.join("app.conf"), "workers = 64\n").expect("hand edit");
    let report = engine.sync_once().await.expect("sync");
    assert_eq!(report.counts()[1], 1, "{report}");
    assert_eq!(read(&target, "app.conf").as_deref(), Some("workers = 4\n"));
    assert_eq!(engine.status().drift.len(), 1);
    let audit = engine.audit(&AuditQuery::default()).await.expect("audit");
    assert_eq!(audit.last().map(|r| r.action), Some(AuditAction::Update));
    assert_eq!(
        audit.last().and_then(|r| r.digest_before.clone()),
        audit.last().and_then(|r| r.digest_after.clone()),
        "the same spec re-applied"
    );
}
