//! The Modify strategy in the engine: drift under a `writeback` policy becomes
//! a commit, the commit deploys as a no-op, conflicts fall back by policy,
//! transient failures are retried. In-memory source and target, paused clock.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::{EngineConfig, Event, WritebackConflict};
use gitops_core::store::AuditAction;
use gitops_core::testing::{Call, MemorySource, MemoryTarget, MemoryWriteback};
use gitops_core::{AuditQuery, Cancel, Engine, ManifestRender, ResourceId, WritebackError};
use serde_json::json;

fn id(s: &str) -> ResourceId {
    s.parse().expect("valid id")
}

const MANIFESTS: &str = "\
# the web tier
kind: App
metadata: { name: web, annotations: { gitops.rs/drift: writeback } }
spec: { replicas: 2 }
---
kind: App
metadata:   { name: db }   # odd spacing, kept
spec: { size: 10 }
";

struct World {
    source: Arc<MemorySource>,
    target: Arc<MemoryTarget>,
    writeback: Arc<MemoryWriteback>,
    engine: Engine,
}

fn world(conflict: WritebackConflict) -> World {
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("app.yaml", MANIFESTS)]);
    let target = Arc::new(MemoryTarget::new());
    let render = Arc::new(ManifestRender::new());
    let writeback = Arc::new(MemoryWriteback::committing(source.clone(), render.clone()));
    let engine = Engine::builder()
        .source(source.clone())
        .render(render)
        .target(target.clone())
        .writeback(writeback.clone())
        .name("shop")
        .config(
            EngineConfig::default()
                .interval(Duration::from_secs(10))
                .interval_jitter(0.0)
                .drift_interval(Duration::from_secs(30))
                .writeback_conflict(conflict),
        )
        .build()
        .expect("builds");
    World {
        source,
        target,
        writeback,
        engine,
    }
}

fn head_file(source: &MemorySource) -> String {
    use gitops_core::Source as _;
    let head = source.head().expect("head");
    let snapshot = futures_lite_block(source.snapshot(&head, &Cancel::new())).expect("snapshot");
    String::from_utf8(snapshot.get("app.yaml").expect("app.yaml").to_vec()).expect("utf-8")
}

fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    // MemorySource futures complete at once.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("MemorySource future pending"),
    }
}

#[tokio::test(start_paused = true)]
async fn drift_becomes_a_commit_that_deploys_as_a_no_op_without_loops() {
    let w = world(WritebackConflict::Keep);
    let mut events = w.engine.subscribe();
    let run = tokio::spawn({
        let engine = w.engine.clone();
        async move { engine.run().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"replicas": 2})));
    let first = w.source.head().expect("head");

    // Someone scales the app by hand.
    w.target.edit(&id("App/web"), json!({"replicas": 5}));
    w.target.clear_calls();
    // Several drift intervals: exactly one write-back, then quiet.
    tokio::time::sleep(Duration::from_secs(200)).await;

    assert_eq!(w.writeback.calls().len(), 1, "one write-back, no loop");
    let head = w.source.head().expect("head");
    assert_ne!(head, first, "a commit was made");
    let text = head_file(&w.source);
    assert!(text.contains("replicas: 5"), "{text}");
    assert!(
        text.ends_with(
            "---\nkind: App\nmetadata:   { name: db }   # odd spacing, kept\nspec: { size: 10 }\n"
        ),
        "the other document is byte-identical:\n{text}"
    );
    assert!(
        text.starts_with("# the web tier\n"),
        "leading comment kept:\n{text}"
    );
    // The target kept the change: never reverted, never re-applied.
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"replicas": 5})));
    assert!(
        !w.target.calls().contains(&Call::Apply(id("App/web"))),
        "the written-back resource was not applied: {:?}",
        w.target.calls()
    );
    // The engine deployed its own commit.
    assert_eq!(
        w.engine.status().last_applied.map(|r| r.id),
        Some(head.id.clone())
    );
    assert!(
        w.engine.status().drift.is_empty(),
        "{:?}",
        w.engine.status().drift
    );

    let audit = w
        .engine
        .audit(&AuditQuery {
            id: Some(id("App/web")),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let record = audit
        .iter()
        .find(|r| r.action == AuditAction::Writeback)
        .expect("a write-back audit record");
    let detail = record.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(&head.id),
        "commit id in the audit: {detail}"
    );
    assert_eq!(record.revision, first.id, "made from the deployed revision");

    let mut written = None;
    while let Ok(event) = events.try_recv() {
        if let Event::WrittenBack { revision, .. } = event {
            written = revision;
        }
    }
    assert_eq!(written.map(|r| r.id), Some(head.id));
    w.engine.handle().shutdown();
    run.await.expect("joins").expect("clean");
}

#[tokio::test(start_paused = true)]
async fn a_conflict_keeps_the_target_and_is_not_retried_on_the_same_revision() {
    let w = world(WritebackConflict::Keep);
    let mut events = w.engine.subscribe();
    w.engine.sync_once().await.expect("sync");
    w.target.edit(&id("App/web"), json!({"replicas": 5}));
    w.writeback.fail_next(WritebackError::Conflict {
        path: "app.yaml".into(),
        message: "changed upstream".into(),
    });
    let head = w.source.head();
    w.engine.sync_once().await.expect("sync");
    w.engine.sync_once().await.expect("sync");
    assert_eq!(
        w.writeback.calls().len(),
        1,
        "not retried on the same revision"
    );
    assert_eq!(w.source.head(), head, "nothing committed");
    assert_eq!(
        w.target.get(&id("App/web")),
        Some(json!({"replicas": 5})),
        "kept"
    );
    let drift = w.engine.status().drift;
    assert_eq!(drift.len(), 1);
    assert!(!drift[0].resolved, "still reported");
    let mut conflict = false;
    while let Ok(event) = events.try_recv() {
        if let Event::WritebackConflict { path, fallback, .. } = event {
            assert_eq!(path, "app.yaml");
            assert_eq!(fallback, WritebackConflict::Keep);
            conflict = true;
        }
    }
    assert!(conflict, "a conflict event was raised");
}

#[tokio::test(start_paused = true)]
async fn a_conflict_under_the_revert_policy_reverts_the_target_to_git() {
    let w = world(WritebackConflict::Revert);
    w.engine.sync_once().await.expect("sync");
    w.target.edit(&id("App/web"), json!({"replicas": 5}));
    w.writeback.fail_next(WritebackError::Conflict {
        path: "app.yaml".into(),
        message: "changed upstream".into(),
    });
    w.engine.sync_once().await.expect("sync");
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"replicas": 5})));
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(
        w.target.get(&id("App/web")),
        Some(json!({"replicas": 2})),
        "reverted to Git"
    );
    assert_eq!(w.writeback.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_and_nothing_is_lost() {
    let w = world(WritebackConflict::Keep);
    w.engine.sync_once().await.expect("sync");
    w.target.edit(&id("App/web"), json!({"replicas": 7}));
    w.writeback.fail_next(WritebackError::Failed {
        message: "push rejected: remote unavailable".into(),
        transient: true,
        source: None,
    });
    let before = w.source.head();
    w.engine.sync_once().await.expect("sync");
    assert_eq!(w.source.head(), before);
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"replicas": 7})));
    let report = w.engine.sync_once().await.expect("sync");
    assert_eq!(w.writeback.calls().len(), 2, "retried");
    let written = report.written_back.expect("committed on the retry");
    assert_eq!(w.source.head(), Some(written.clone()));
    assert!(head_file(&w.source).contains("replicas: 7"));
    // The next sync deploys the commit as a no-op.
    w.target.clear_calls();
    let report = w.engine.sync_once().await.expect("sync");
    assert_eq!(report.revision.id, written.id);
    assert!(!report.plan.has_changes(), "{report}");
    assert!(!w.target.calls().contains(&Call::Apply(id("App/web"))));
}

#[tokio::test(start_paused = true)]
async fn deleting_a_resource_in_the_target_removes_its_document() {
    let w = world(WritebackConflict::Keep);
    w.engine.sync_once().await.expect("sync");
    w.target.remove(&id("App/web"));
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.written_back.is_some(), "{report}");
    let text = head_file(&w.source);
    assert!(!text.contains("name: web"), "{text}");
    assert!(
        text.contains("metadata:   { name: db }   # odd spacing, kept"),
        "{text}"
    );
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(w.target.get(&id("App/db")), Some(json!({"size": 10})));
}

/// Renders `text` as `path` and writes `id` back with `observed`.
fn write_back_file(
    path: &str,
    text: &str,
    id: &str,
    observed: Option<serde_json::Value>,
) -> Result<gitops_core::FileEdit, gitops_core::RenderError> {
    use gitops_core::{Render as _, Revision, Snapshot};
    let render = ManifestRender::new();
    let snapshot = Snapshot::from_files(
        Revision::new("main", "0".repeat(40)),
        [(path, text.as_bytes())],
    )
    .expect("snapshot");
    let desired = render.render(&snapshot).expect("renders");
    let resource = desired.get(&self::id(id)).expect("resource").clone();
    let file = gitops_core::model::SnapshotFile {
        data: text.as_bytes().into(),
        executable: false,
    };
    render.write_back(
        &file,
        &resource,
        observed.map(gitops_core::Observed::new).as_ref(),
    )
}

fn written(edit: gitops_core::FileEdit) -> String {
    match edit {
        gitops_core::FileEdit::Write { data, .. } => String::from_utf8(data).expect("utf-8"),
        other => panic!("expected new content, got {other:?}"),
    }
}

#[test]
fn removing_an_element_of_a_json_array_keeps_the_others_byte_identical() {
    let text = "[\n  {\"kind\": \"App\", \"metadata\": {\"name\": \"a\"}},\n  {\"kind\":\"App\",   \"metadata\":{\"name\":\"b\"}},\n  {\"kind\": \"App\", \"metadata\": {\"name\": \"c\"}, \"spec\": {\"s\": \"\\u00e9\"}}\n]\n";
    let first = written(write_back_file("apps.json", text, "App/a", None).expect("a removed"));
    assert_eq!(
        first,
        "[\n  {\"kind\":\"App\",   \"metadata\":{\"name\":\"b\"}},\n  {\"kind\": \"App\", \"metadata\": {\"name\": \"c\"}, \"spec\": {\"s\": \"\\u00e9\"}}\n]\n"
    );
    let middle = written(write_back_file("apps.json", text, "App/b", None).expect("b removed"));
    assert_eq!(
        middle,
        "[\n  {\"kind\": \"App\", \"metadata\": {\"name\": \"a\"}},\n  {\"kind\": \"App\", \"metadata\": {\"name\": \"c\"}, \"spec\": {\"s\": \"\\u00e9\"}}\n]\n"
    );
    let last = written(write_back_file("apps.json", text, "App/c", None).expect("c removed"));
    assert_eq!(
        last,
        "[\n  {\"kind\": \"App\", \"metadata\": {\"name\": \"a\"}},\n  {\"kind\":\"App\",   \"metadata\":{\"name\":\"b\"}}\n]\n"
    );
}

#[test]
fn a_toml_manifest_is_rewritten_whole_and_a_null_is_refused_by_path() {
    let text = "kind = \"App\"\n\n[metadata]\nname = \"web\"\n\n[spec]\nreplicas = 2\n";
    let edited = written(
        write_back_file(
            "web.toml",
            text,
            "App/web",
            Some(json!({"replicas": 5, "ports": [80, 443]})),
        )
        .expect("rewritten"),
    );
    // Key order follows serde_json's map (sorted, or the target's order with
    // `preserve_order`): compare what the file says.
    let parsed: serde_json::Value = toml::from_str(&edited).expect("valid TOML");
    assert_eq!(
        parsed,
        json!({"kind": "App", "metadata": {"name": "web"}, "spec": {"replicas": 5, "ports": [80, 443]}})
    );
    assert!(
        edited.starts_with("kind = \"App\"\n\n[metadata]\n"),
        "{edited}"
    );

    let err = write_back_file(
        "web.toml",
        text,
        "App/web",
        Some(json!({"replicas": 5, "ports": [80, null]})),
    )
    .expect_err("TOML has no null");
    let message = err.to_string();
    assert!(message.contains("web.toml"), "{message}");
    assert!(
        message.contains("TOML has no null, and the target holds null at spec.ports[1]"),
        "{message}"
    );
}
