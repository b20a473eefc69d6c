//! The blast-radius guard: a revision that would delete more than the
//! limit allows is held until someone confirms it; the plan says so first.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::{ChangeLimit, EngineConfig};
use gitops_core::status::Reason;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{ConditionKind, Engine, EngineError, ManifestRender, MemoryStore, StateStore};
use serde_json::json;

mod support;
use support::{Agent, eventually, id};

fn apps(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("---\nkind: App\nmetadata: {{ name: a{i} }}\nspec: {{ v: 1 }}\n"))
        .collect()
}

struct World {
    source: Arc<MemorySource>,
    target: Arc<MemoryTarget>,
    store: Arc<MemoryStore>,
    engine: Engine,
}

fn world(config: EngineConfig) -> World {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .store(store.clone())
        .config(
            config
                .interval(Duration::from_secs(10))
                .interval_jitter(0.0),
        )
        .build()
        .expect("engine");
    World {
        source,
        target,
        store,
        engine,
    }
}

#[tokio::test]
async fn deleting_more_than_the_limit_waits_for_a_confirmation() {
    let w = world(EngineConfig::default());
    w.source.commit([("apps.yaml", apps(0..20))]);
    assert!(w.engine.sync_once().await.expect("sync").converged());
    // 11 of 20 go: more than 10 and more than 50 %.
    let rev = w.source.commit([("apps.yaml", apps(0..9))]);

    let plan = w.engine.plan().await.expect("plan");
    let held = plan.held.clone().expect("the plan says it would be held");
    assert!(held.contains("delete 11 of 20"), "{held}");
    assert!(held.contains(&format!("--confirm {}", rev.id)), "{held}");
    assert!(
        plan.to_string()
            .contains("A sync would not apply it: held for confirmation")
    );

    let err = w.engine.sync_once().await.expect_err("held");
    assert!(
        matches!(err, EngineError::ConfirmationRequired { .. }),
        "{err}"
    );
    assert_eq!(w.target.contents().len(), 20, "nothing deleted");
    let status = w.engine.status();
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.kind == ConditionKind::Stalled)
        .expect("stalled");
    assert!(
        stalled.status && stalled.reason == Reason::ConfirmationRequired,
        "{status}"
    );

    w.engine.confirm(&rev.id).await.expect("confirm");
    assert!(w.engine.plan().await.expect("plan").held.is_none());
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(w.target.contents().len(), 9);
    let record = w.store.load_record("default").await.expect("record").value;
    assert_eq!(record.confirmed, None, "spent once the revision synced");
}

#[tokio::test]
async fn small_deletes_and_unlimited_configs_pass() {
    let w = world(EngineConfig::default());
    w.source.commit([("apps.yaml", apps(0..8))]);
    assert!(w.engine.sync_once().await.expect("sync").converged());
    w.source.commit([("apps.yaml", apps(0..1))]);
    assert!(
        w.engine.plan().await.expect("plan").held.is_none(),
        "7 is not more than 10"
    );
    assert!(w.engine.sync_once().await.expect("sync").converged());

    let w = world(EngineConfig::default().delete_limit(None));
    w.source.commit([("apps.yaml", apps(0..30))]);
    assert!(w.engine.sync_once().await.expect("sync").converged());
    w.source.commit([("apps.yaml", apps(0..1))]);
    assert!(w.engine.sync_once().await.expect("sync").converged());

    let w = world(EngineConfig::default().change_limit(Some(ChangeLimit::new(2, 10))));
    w.source.commit([("apps.yaml", apps(0..3))]);
    let err = w
        .engine
        .sync_once()
        .await
        .expect_err("3 creates are over a change limit of 2");
    assert!(err.to_string().contains("it would change 3"), "{err}");
}

#[tokio::test]
async fn the_plan_says_an_empty_revision_would_be_refused() {
    let w = world(EngineConfig::default());
    w.source.commit([("apps.yaml", apps(0..2))]);
    assert!(w.engine.sync_once().await.expect("sync").converged());
    w.source.commit([("README", "nothing here")]);
    let plan = w.engine.plan().await.expect("plan");
    assert!(
        plan.held
            .expect("held")
            .starts_with("refused: the revision has no resources")
    );
}

#[tokio::test(start_paused = true)]
async fn a_running_engine_holds_then_deploys_once_confirmed() {
    let w = world(EngineConfig::default());
    w.source.commit([("apps.yaml", apps(0..20))]);
    let agent = Agent::start(&w.engine);
    assert!(eventually(Duration::from_secs(30), || w.target.contents().len() == 20).await);
    let rev = w.source.commit([("apps.yaml", apps(0..2))]);
    assert!(
        eventually(Duration::from_secs(60), || w
            .engine
            .status()
            .conditions
            .iter()
            .any(|c| {
                c.kind == ConditionKind::Stalled
                    && c.status
                    && c.reason == Reason::ConfirmationRequired
            }))
        .await
    );
    // Held: polls and webhooks do not apply it.
    w.engine.handle().reconcile_now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(w.target.contents().len(), 20);
    // A hand edit is still repaired while it waits.
    w.target.edit(&id("App/a5"), json!({"v": 99}));
    assert!(
        eventually(Duration::from_secs(300), || w.target.get(&id("App/a5"))
            == Some(json!({"v": 1})))
        .await,
        "drift repair goes on while a revision is held"
    );
    w.engine.handle().confirm(rev.id.clone());
    assert!(eventually(Duration::from_secs(30), || w.target.contents().len() == 2).await);
    agent.stop().await;
}
