//! Dependencies between applications: an engine syncs only while the
//! engines it depends on are Ready at its revision or a newer one, and its
//! status names the dependency that blocks it and why.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::SyncResult;
use gitops_core::status::BlockReason;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    ConditionKind, Dependency, Engine, ManifestRender, MemoryStore, Needs, ResourceId,
};
use serde_json::json;

fn doc(v: i64) -> String {
    format!("kind: App\nmetadata: {{ name: x }}\nspec: {{ v: {v} }}\n")
}

fn id() -> ResourceId {
    "App/x".parse().expect("valid id")
}

struct Apps {
    source: Arc<MemorySource>,
    db: Engine,
    db_target: Arc<MemoryTarget>,
    web: Engine,
    web_target: Arc<MemoryTarget>,
}

/// `db` and `web` deploy from one repository; `web` depends on `db`.
fn apps(needs: Needs) -> Apps {
    let source = Arc::new(MemorySource::new("main"));
    let db_target = Arc::new(MemoryTarget::new());
    let web_target = Arc::new(MemoryTarget::new());
    let db = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(db_target.clone())
        .name("db")
        .build()
        .expect("db");
    let web = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(web_target.clone())
        .name("web")
        .config(gitops_core::EngineConfig::default().interval(Duration::from_secs(30)))
        .depends_on(Dependency::on(&db.handle()).needs(needs))
        .build()
        .expect("web");
    Apps {
        source,
        db,
        db_target,
        web,
        web_target,
    }
}

fn blocked_message(engine: &Engine) -> String {
    let status = engine.status();
    let blocked = status.blocked.clone().expect("blocked");
    assert_eq!(blocked.reason, BlockReason::DependencyNotReady);
    let ready = status.condition(ConditionKind::Ready);
    assert!(!ready.status);
    assert_eq!(ready.reason, "DependencyNotReady");
    assert_eq!(ready.message, blocked.message);
    blocked.message
}

#[tokio::test(start_paused = true)]
async fn blocked_until_the_dependency_is_ready_at_the_same_revision() {
    let apps = apps(Needs::SameOrNewerRevision);
    let rev1 = apps.source.commit([("app.yaml", doc(1))]);

    let report = apps.web.sync_once().await.expect("blocked is an outcome");
    assert_eq!(report.result, SyncResult::Blocked, "{report}");
    assert_eq!(
        blocked_message(&apps.web),
        "waiting for app `db`: not ready (Initializing)"
    );
    assert!(apps.web_target.contents().is_empty(), "nothing applied");
    assert!(apps.web.history(5).await.expect("history").is_empty());

    apps.db.sync_once().await.expect("db sync");
    let report = apps.web.sync_once().await.expect("released");
    assert!(report.converged(), "{report}");
    assert_eq!(apps.web.status().blocked, None);

    // A new commit: web waits until db runs it.
    let rev2 = apps.source.commit([("app.yaml", doc(2))]);
    let report = apps.web.sync_once().await.expect("blocked is an outcome");
    assert_eq!(report.result, SyncResult::Blocked, "{report}");
    assert_eq!(
        blocked_message(&apps.web),
        format!("waiting for app `db`: at {rev1}, needs {rev2} or a descendant")
    );
    assert_eq!(apps.web_target.get(&id()), Some(json!({"v": 1})));
    apps.db.sync_once().await.expect("db sync");
    assert!(apps.web.sync_once().await.expect("web").converged());
    assert_eq!(apps.web_target.get(&id()), Some(json!({"v": 2})));

    // "Newer": db runs rev3, a descendant of rev2.
    let rev3 = apps.source.commit([("app.yaml", doc(3))]);
    apps.db.sync_once().await.expect("db sync");
    apps.web.sync_once().await.expect("web to rev3");

    // A commit that branches off rev1 (a force-push) does not descend from
    // rev3: db at rev3 is not "newer" than it.
    apps.source.reset(&rev1);
    let forked = apps.source.commit([("app.yaml", doc(4))]);
    assert_blocked(&apps.web).await;
    assert_eq!(
        blocked_message(&apps.web),
        format!("waiting for app `db`: at {rev3}, needs {forked} or a descendant")
    );
    assert_eq!(apps.web_target.get(&id()), Some(json!({"v": 3})));

    // Rolling web back to rev2 is fine: db runs rev3, which descends from it.
    let report = apps.web.rollback(&rev2).await.expect("rollback allowed");
    assert!(report.converged(), "{report}");
    assert_eq!(apps.web_target.get(&id()), Some(json!({"v": 2})));
}

#[tokio::test(start_paused = true)]
async fn a_failed_dependency_blocks_with_its_reason() {
    let apps = apps(Needs::SameOrNewerRevision);
    apps.source
        .commit([("app.yaml", "kind: App\nmetadata: { name: x }\nspec: [")]);
    apps.db.sync_once().await.expect_err("render error");
    assert_blocked(&apps.web).await;
    let message = blocked_message(&apps.web);
    assert!(
        message.starts_with("waiting for app `db`: not ready (RenderFailed: "),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_agent_is_released_once_the_dependency_is_ready() {
    let apps = apps(Needs::SameOrNewerRevision);
    apps.source.commit([("app.yaml", doc(1))]);
    let web = apps.web.clone();
    let handle = web.handle();
    let agent = tokio::spawn(async move { web.run().await });
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert!(apps.web_target.contents().is_empty());
    assert_eq!(
        blocked_message(&apps.web),
        "waiting for app `db`: not ready (Initializing)"
    );

    apps.db.sync_once().await.expect("db");
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(apps.web_target.get(&id()), Some(json!({"v": 1})));
    let status = handle.status();
    assert!(status.is(ConditionKind::Ready), "{status}");
    assert_eq!(status.blocked, None);
    handle.shutdown();
    agent.await.expect("join").expect("run");
}

#[tokio::test(start_paused = true)]
async fn needs_ready_accepts_any_revision() {
    let apps = apps(Needs::Ready);
    apps.source.commit([("app.yaml", doc(1))]);
    apps.db.sync_once().await.expect("db");
    apps.source.commit([("app.yaml", doc(2))]);
    let report = apps.web.sync_once().await.expect("db is ready, at rev1");
    assert!(report.converged(), "{report}");
    assert_eq!(apps.db_target.get(&id()), Some(json!({"v": 1})));
}

/// `db` and `web` share a store but not a process: `web` knows `db` only by
/// name, through what `db` recorded.
#[tokio::test(start_paused = true)]
async fn a_dependency_by_name_reads_the_shared_store() {
    let source = Arc::new(MemorySource::new("main"));
    let store = Arc::new(MemoryStore::new());
    let (db_target, web_target) = (Arc::new(MemoryTarget::new()), Arc::new(MemoryTarget::new()));
    let engine = |name: &str, target: &Arc<MemoryTarget>, dependency: Option<Dependency>| {
        let mut builder = Engine::builder()
            .source(source.clone())
            .render(Arc::new(ManifestRender::new()))
            .target(target.clone())
            .store(store.clone())
            .name(name);
        if let Some(dependency) = dependency {
            builder = builder.depends_on(dependency);
        }
        builder.build().expect("engine")
    };
    let db = engine("db", &db_target, None);
    let web = engine("web", &web_target, Some(Dependency::on_app("db")));

    let rev1 = source.commit([("app.yaml", doc(1))]);
    assert_blocked(&web).await;
    assert_eq!(
        blocked_message(&web),
        "waiting for app `db`: not yet applied and healthy"
    );
    assert!(web_target.contents().is_empty());
    assert!(db.sync_once().await.expect("db").converged());
    assert!(web.sync_once().await.expect("released").converged());
    assert_eq!(web_target.get(&id()), Some(json!({"v": 1})));

    // db fails on rev2: it stays healthy at rev1 only, which is older.
    let rev2 = source.commit([("app.yaml", "kind: App\nmetadata: { name: x }\nspec: [")]);
    db.sync_once().await.expect_err("render error");
    assert_blocked(&web).await;
    assert_eq!(
        blocked_message(&web),
        format!("waiting for app `db`: at {rev1}, needs {rev2} or a descendant")
    );
    let rev3 = source.commit([("app.yaml", doc(3))]);
    assert!(db.sync_once().await.expect("db").converged());
    assert!(web.sync_once().await.expect("web").converged());
    assert_eq!(web_target.get(&id()), Some(json!({"v": 3})));
    assert_eq!(web.status().last_applied, Some(rev3));

    // Needs::Ready: any revision db was healthy at.
    let other = engine(
        "other",
        &Arc::new(MemoryTarget::new()),
        Some(Dependency::on_app("db").needs(Needs::Ready)),
    );
    source.commit([("app.yaml", doc(4))]);
    assert!(
        other
            .sync_once()
            .await
            .expect("db healthy at rev3")
            .converged()
    );
}

#[test]
fn an_app_cannot_depend_on_itself() {
    let err = Engine::builder()
        .source(Arc::new(MemorySource::new("main")))
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(MemoryTarget::new()))
        .name("web")
        .depends_on(Dependency::on_app("web"))
        .build()
        .expect_err("self-dependency");
    assert_eq!(
        err.to_string(),
        "engine configuration: app `web` cannot depend on itself"
    );
}

/// A sync of `engine` that a dependency holds back: an outcome, not an error.
async fn assert_blocked(engine: &Engine) {
    let report = engine.sync_once().await.expect("blocked is an outcome");
    assert_eq!(report.result, SyncResult::Blocked, "{report}");
}
