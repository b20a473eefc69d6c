//! Unchanged revisions: a reconcile of the revision last converged to, with
//! the same settings, on a target that proves nothing changed, neither
//! snapshots, renders nor observes; anything else takes the full path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gitops_core::engine::{Outcome, SyncResult};
use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::{
    Cancel, DesiredState, Diff, Engine, FilesRender, MemoryStore, Observed, Render, RenderError,
    Resource, ResourceId, Revision, Snapshot, Source, SourceError, StateStore, Target, TargetError,
    async_trait,
};

mod support;
use support::id;

/// A memory source that names its settings.
struct Named {
    inner: Arc<MemorySource>,
    fingerprint: Option<String>,
    snapshots: AtomicUsize,
}

#[async_trait]
impl Source for Named {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.inner.poll().await
    }
    async fn snapshot(&self, rev: &Revision, cancel: &Cancel) -> Result<Snapshot, SourceError> {
        self.snapshots.fetch_add(1, Ordering::SeqCst);
        self.inner.snapshot(rev, cancel).await
    }
    fn fingerprint(&self) -> Option<String> {
        self.fingerprint.clone()
    }
}

/// A renderer that counts its renders.
struct Counting {
    inner: FilesRender,
    renders: AtomicUsize,
}

impl Render for Counting {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        self.renders.fetch_add(1, Ordering::SeqCst);
        self.inner.render(snapshot)
    }
    fn fingerprint(&self) -> Option<String> {
        self.inner.fingerprint()
    }
}

/// A memory target that seals by remembering what it held: proof by
/// comparison, so a test edit of the inner target is always seen.
struct Sealing {
    inner: Arc<MemoryTarget>,
    seals: Mutex<Vec<BTreeMap<ResourceId, serde_json::Value>>>,
}

#[async_trait]
impl Target for Sealing {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        self.inner.observe(id).await
    }
    async fn apply(&self, r: &Resource) -> Result<(), TargetError> {
        self.inner.apply(r).await
    }
    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        self.inner.delete(id).await
    }
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        self.inner.differs(desired, observed)
    }
    fn seal(&self) -> Option<String> {
        let mut seals = self.seals.lock().expect("lock");
        seals.push(self.inner.contents());
        Some((seals.len() - 1).to_string())
    }
    async fn unchanged_since(&self, ids: &[ResourceId], seal: &str) -> bool {
        let seals = self.seals.lock().expect("lock");
        let Some(sealed) = seal.parse::<usize>().ok().and_then(|i| seals.get(i)) else {
            return false;
        };
        let now = self.inner.contents();
        ids.len() == sealed.len() && ids.iter().all(|id| sealed.get(id) == now.get(id))
    }
}

struct World {
    memory: Arc<MemorySource>,
    source: Arc<Named>,
    render: Arc<Counting>,
    target: Arc<MemoryTarget>,
    sealing: Arc<Sealing>,
    store: Arc<MemoryStore>,
}

impl World {
    fn new() -> Self {
        let memory = Arc::new(MemorySource::new("main"));
        memory.commit([("a.conf", "a = 1\n"), ("b.conf", "b = 2\n")]);
        let target = Arc::new(MemoryTarget::new());
        Self {
            source: Arc::new(Named {
                inner: memory.clone(),
                fingerprint: Some("repo x".into()),
                snapshots: AtomicUsize::new(0),
            }),
            memory,
            render: Arc::new(Counting {
                inner: FilesRender::new(),
                renders: AtomicUsize::new(0),
            }),
            sealing: Arc::new(Sealing {
                inner: target.clone(),
                seals: Mutex::new(Vec::new()),
            }),
            target,
            store: Arc::new(MemoryStore::new()),
        }
    }

    fn engine(&self) -> Engine {
        Engine::builder()
            .source(self.source.clone())
            .render(self.render.clone())
            .target(self.sealing.clone())
            .store(self.store.clone() as Arc<dyn StateStore>)
            .build()
            .expect("complete builder")
    }

    fn renders(&self) -> usize {
        self.render.renders.load(Ordering::SeqCst)
    }

    fn observes(&self) -> usize {
        let observe = |c: &Call| matches!(c, Call::Observe(_));
        self.target.calls().iter().filter(|c| observe(c)).count()
    }
}

fn file(path: &str) -> ResourceId {
    id(&format!("File/{path}"))
}

#[tokio::test]
async fn a_converged_revision_is_proven_unchanged_without_render_or_observe() {
    let w = World::new();
    let engine = w.engine();
    assert!(engine.sync_once().await.expect("first").converged());
    let (renders, observes) = (w.renders(), w.observes());
    let snapshots = w.source.snapshots.load(Ordering::SeqCst);

    let report = engine.sync_once().await.expect("second");
    assert_eq!(report.result, SyncResult::Converged);
    assert_eq!(report.plan.summary.unchanged, 2);
    assert_eq!(report.counts()[3], 2, "{report}");
    assert_eq!(w.renders(), renders, "not rendered again");
    assert_eq!(w.observes(), observes, "nothing observed");
    assert_eq!(w.source.snapshots.load(Ordering::SeqCst), snapshots);

    // A fresh engine on the same store (a new `--once` process) too.
    let fresh = w.engine();
    assert!(fresh.sync_once().await.expect("third").converged());
    assert_eq!(w.renders(), renders);
}

#[tokio::test]
async fn drift_in_the_target_takes_the_full_path_and_is_reverted() {
    let w = World::new();
    let engine = w.engine();
    engine.sync_once().await.expect("first");
    let observes = w.observes();
    w.target
        .edit(&file("a.conf"), serde_json::json!({"content": "hand"}));
    let report = engine.sync_once().await.expect("drift");
    assert!(w.observes() > observes, "full path");
    let outcome = report.outcomes.iter().find(|o| o.id == file("a.conf"));
    assert_eq!(outcome.map(|o| &o.outcome), Some(&Outcome::Updated));
    let content = w
        .target
        .get(&file("a.conf"))
        .and_then(|s| s["content"].as_str().map(str::to_owned));
    assert_eq!(content.as_deref(), Some("a = 1\n"));

    // Deleted by hand: recreated.
    w.target.remove(&file("b.conf"));
    let report = engine.sync_once().await.expect("deleted");
    assert_eq!(report.counts()[0], 1, "{report}");
    assert!(w.target.get(&file("b.conf")).is_some());
}

#[tokio::test]
async fn a_new_commit_is_rendered_and_applied() {
    let w = World::new();
    let engine = w.engine();
    engine.sync_once().await.expect("first");
    let renders = w.renders();
    w.memory
        .commit([("a.conf", "a = 9\n"), ("b.conf", "b = 2\n")]);
    let report = engine.sync_once().await.expect("new commit");
    assert_eq!(w.renders(), renders + 1);
    assert_eq!(report.counts()[1], 1, "{report}");
}

#[tokio::test]
async fn going_back_to_an_earlier_converged_commit_is_a_change() {
    let w = World::new();
    let engine = w.engine();
    engine.sync_once().await.expect("first");
    let first = w.memory.head().expect("head");
    w.memory
        .commit([("a.conf", "a = 9\n"), ("b.conf", "b = 2\n")]);
    engine.sync_once().await.expect("second");
    assert!(w.memory.reset(&first));
    let report = engine.sync_once().await.expect("back");
    assert_eq!(report.counts()[1], 1, "a.conf restored: {report}");
    let content = w
        .target
        .get(&file("a.conf"))
        .and_then(|s| s["content"].as_str().map(str::to_owned));
    assert_eq!(content.as_deref(), Some("a = 1\n"));
}

#[tokio::test]
async fn other_render_or_source_settings_take_the_full_path() {
    let w = World::new();
    w.engine().sync_once().await.expect("first");
    let renders = w.renders();

    // The same store, another exclusion: rendered again, b.conf pruned.
    let other = Engine::builder()
        .source(w.source.clone())
        .render(Arc::new(Counting {
            inner: FilesRender::new().exclude(&["b.*"]).expect("glob"),
            renders: AtomicUsize::new(0),
        }))
        .target(w.sealing.clone())
        .store(w.store.clone() as Arc<dyn StateStore>)
        .build()
        .expect("builder");
    let report = other.sync_once().await.expect("other render");
    assert_eq!(report.counts()[2], 1, "b.conf pruned: {report}");

    // Another source setting (a path inside the repository, say).
    let moved = Arc::new(Named {
        inner: w.memory.clone(),
        fingerprint: Some("repo x path y".into()),
        snapshots: AtomicUsize::new(0),
    });
    let engine = Engine::builder()
        .source(moved.clone())
        .render(w.render.clone())
        .target(w.sealing.clone())
        .store(w.store.clone() as Arc<dyn StateStore>)
        .build()
        .expect("builder");
    engine.sync_once().await.expect("moved");
    assert_eq!(moved.snapshots.load(Ordering::SeqCst), 1, "snapshot read");
    assert!(w.renders() > renders);
}

#[tokio::test]
async fn a_source_that_cannot_name_its_settings_always_renders() {
    let w = World::new();
    let unnamed = Arc::new(Named {
        inner: w.memory.clone(),
        fingerprint: None,
        snapshots: AtomicUsize::new(0),
    });
    let engine = Engine::builder()
        .source(unnamed.clone())
        .render(w.render.clone())
        .target(w.sealing.clone())
        .build()
        .expect("builder");
    engine.sync_once().await.expect("first");
    engine.sync_once().await.expect("second");
    engine.sync_once().await.expect("third");
    assert_eq!(w.renders(), 1, "rendered once, then cached in memory");
    assert!(w.observes() >= 6, "observed every time");
    assert!(
        w.sealing.seals.lock().expect("lock").is_empty(),
        "never sealed"
    );
}

#[tokio::test]
async fn a_spec_is_never_part_of_the_seal() {
    let w = World::new();
    let engine = w.engine();
    engine.sync_once().await.expect("first");
    let record = w.store.load_record("default").await.expect("record");
    let seal = record.value.sealed.expect("sealed");
    let text = serde_json::to_string(&seal).expect("json");
    assert!(!text.contains("a = 1"), "{text}");
    assert_eq!(seal.settings.len(), 64, "a digest of the settings");
}
