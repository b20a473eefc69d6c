//! Health gating in pull mode: a newer revision cancels a health wait,
//! `Degraded` fails at once while `Progressing` times out, and a retry of an
//! unhealthy revision checks its health again.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::{EngineConfig, Outcome, SyncResult};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{ConditionKind, Engine, Health, ManifestRender};
use serde_json::json;
use tokio::time::Instant;

mod support;
use support::world::{config, doc, world_with};
use support::{Agent, eventually, id};

#[tokio::test(start_paused = true)]
async fn a_newer_revision_cancels_a_health_wait() {
    let cfg = config()
        .health_timeout(Duration::from_secs(3600))
        .interval(Duration::from_secs(3600));
    let w = world_with(
        cfg,
        &[
            doc("App/slow", &[], json!({"v": 1})),
            doc("App/next", &["App/slow"], json!({})),
        ]
        .concat(),
    );
    w.target
        .script_health(&id("App/slow"), [Health::Progressing]);
    let run = Agent::start(&w.engine);
    assert!(
        eventually(Duration::from_secs(5), || w
            .target
            .get(&id("App/slow"))
            .is_some())
        .await
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        w.target.get(&id("App/next")).is_none(),
        "waiting for App/slow to be healthy"
    );
    // The fix lands in Git; the webhook fires.
    w.target.script_health(&id("App/slow"), [Health::Healthy]);
    w.source.commit([(
        "app.yaml",
        [
            doc("App/slow", &[], json!({"v": 2})),
            doc("App/next", &["App/slow"], json!({})),
        ]
        .concat(),
    )]);
    let asked = Instant::now();
    w.engine.handle().reconcile_now();
    assert!(
        eventually(Duration::from_secs(10), || w
            .target
            .get(&id("App/next"))
            .is_some())
        .await
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "did not wait out the health timeout"
    );
    assert_eq!(w.target.get(&id("App/slow")), Some(json!({"v": 2})));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn degraded_fails_at_once_and_progressing_times_out() {
    let cfg = config().health_timeout(Duration::from_secs(20));
    let w = world_with(
        cfg,
        &[
            doc("App/bad", &[], json!({})),
            doc("App/slow", &[], json!({})),
        ]
        .concat(),
    );
    w.target.script_health(
        &id("App/bad"),
        [Health::Degraded {
            reason: "CrashLoopBackOff".into(),
        }],
    );
    w.target
        .script_health(&id("App/slow"), [Health::Progressing]);
    let started = Instant::now();
    let report = w.engine.sync_once().await.expect("sync runs");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(20) && elapsed < Duration::from_secs(22),
        "{elapsed:?}"
    );
    let failed: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Unhealthy { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{report}");
    assert!(
        failed
            .iter()
            .any(|e| e.contains("degraded: CrashLoopBackOff"))
    );
    assert!(failed.iter().any(|e| e.contains("not healthy after 20s")));
}

/// A revision whose resource was degraded after its apply is retried; the
/// retry has nothing to apply, and must still find the resource healthy
/// before the revision counts as Ready (and as the rollback target).
#[tokio::test(start_paused = true)]
async fn a_retry_of_an_unhealthy_revision_checks_health_again() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store = Arc::new(gitops_core::MemoryStore::new());
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .store(store.clone())
        .config(EngineConfig::default().interval(Duration::from_secs(30)))
        .build()
        .expect("engine");
    target.script_health(
        &id("App/a"),
        [Health::Degraded {
            reason: "crash loop".into(),
        }],
    );
    let rev = source.commit([("app.yaml", doc("App/a", &[], json!({"v": 1})))]);
    let runner = engine.clone();
    let run = tokio::spawn(async move { runner.run().await });
    tokio::time::sleep(Duration::from_secs(3600)).await;

    let status = engine.status();
    assert!(!status.is(ConditionKind::Ready), "{status}");
    let history = engine.history(200).await.expect("history");
    assert!(
        history
            .iter()
            .all(|h| h.result != SyncResult::Converged || h.revision.id != rev.id),
        "converged while degraded: {:?}",
        history
            .iter()
            .map(|h| (h.trigger, h.result))
            .collect::<Vec<_>>()
    );
    let record = gitops_core::StateStore::load_record(&*store, "default")
        .await
        .expect("record")
        .value;
    assert_eq!(record.last_healthy, None);

    // Healthy again: the next retry finds it so and the revision is Ready.
    target.script_health(&id("App/a"), [Health::Healthy]);
    engine.handle().retry();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let status = engine.status();
    assert!(status.is(ConditionKind::Ready), "{status}");
    assert_eq!(status.last_applied.map(|r| r.id), Some(rev.id.clone()));

    // Converged before does not count: a drift repair that leaves it
    // degraded is not made good by the retries that follow.
    target.script_health(
        &id("App/a"),
        [Health::Degraded {
            reason: "crash loop".into(),
        }],
    );
    target.edit(&id("App/a"), json!({"v": 99}));
    engine.handle().reconcile_now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 1})), "repaired");
    let status = engine.status();
    assert!(!status.is(ConditionKind::Ready), "{status}");
    engine.handle().shutdown();
    run.await.expect("join").expect("run");
}
