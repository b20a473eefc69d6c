//! Stages and promotion on tokio's paused clock: a good revision flows
//! through staging into production after the soak time; a revision that
//! fails in staging (a post-sync gate, an unhealthy resource, health lost
//! during the soak) never reaches production; promotions go through the
//! promoter and into the audit log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gitops_core::pipeline::{Pipeline, Stage};
use gitops_core::store::AuditAction;
use gitops_core::testing::{Call, MemoryPromoter, MemorySource, MemoryTarget};
use gitops_core::{
    AuditQuery, ConditionKind, EngineError, GateInput, Health, ResourceId, Revision, gate_fn,
};
use serde_json::json;
use tokio::task::JoinHandle;

const MINUTE: Duration = Duration::from_secs(60);

fn doc(v: i64) -> String {
    format!("kind: App\nmetadata: {{ name: x }}\nspec: {{ v: {v} }}\n")
}

fn id() -> ResourceId {
    "App/x".parse().expect("valid id")
}

struct World {
    source: Arc<MemorySource>,
    staging: Arc<MemoryTarget>,
    production: Arc<MemoryTarget>,
    promoter: Arc<MemoryPromoter>,
    smoke_fails: Arc<AtomicBool>,
    pipeline: Pipeline,
    agent: JoinHandle<Result<(), gitops_core::PipelineError>>,
}

impl World {
    async fn stop(self) {
        self.pipeline.shutdown();
        self.agent.await.expect("join").expect("pipeline run");
    }

    async fn production_history_ids(&self) -> Vec<String> {
        let engine = self.pipeline.engine("production").expect("stage");
        let history = engine.history(100).await.expect("history");
        history.into_iter().map(|h| h.revision.id).collect()
    }
}

/// Staging soaks 10 minutes and has a post-sync "smoke test" gate that
/// fails while `smoke_fails` is set (the bad release); production has no soak.
fn world() -> World {
    let source = Arc::new(MemorySource::new("main"));
    let staging = Arc::new(MemoryTarget::new());
    let production = Arc::new(MemoryTarget::new());
    let promoter = Arc::new(MemoryPromoter::new());
    let smoke_fails = Arc::new(AtomicBool::new(false));
    let fails = smoke_fails.clone();
    let smoke = gate_fn("smoke", move |_: GateInput| {
        let fails = fails.load(Ordering::SeqCst);
        async move {
            if fails {
                Err("smoke test: checkout returns 500".to_owned())
            } else {
                Ok("smoke test passed".to_owned())
            }
        }
    });
    let pipeline = Pipeline::builder(source.clone())
        .stage(
            Stage::new("staging", staging.clone())
                .soak(10 * MINUTE)
                .configure(move |b| b.post_sync_gate(smoke).config(every(30))),
        )
        .stage(Stage::new("production", production.clone()).configure(|b| b.config(every(30))))
        .promoter(promoter.clone())
        .check_interval(Duration::from_secs(10))
        .build()
        .expect("pipeline");
    let running = pipeline.clone();
    let agent = tokio::spawn(async move { running.run().await });
    World {
        source,
        staging,
        production,
        promoter,
        smoke_fails,
        pipeline,
        agent,
    }
}

fn apply_times(target: &MemoryTarget) -> Vec<tokio::time::Instant> {
    target
        .timed_calls()
        .into_iter()
        .filter(|(c, _)| matches!(c, Call::Apply(_)))
        .map(|(_, at)| at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_good_revision_flows_through_two_stages_after_the_soak() {
    let w = world();
    let rev1 = w.source.commit([("app.yaml", doc(1))]);

    tokio::time::sleep(MINUTE).await;
    assert_eq!(w.staging.get(&id()), Some(json!({"v": 1})));
    assert!(
        w.production.contents().is_empty(),
        "still soaking in staging"
    );
    assert_eq!(w.pipeline.promoted("production"), None);
    let soaking = w.pipeline.soaking("staging").expect("soaking");
    assert_eq!(soaking.revision, rev1);
    assert_eq!(soaking.restarts, 0);
    assert!(soaking.remaining > 8 * MINUTE, "{soaking:?}");

    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    let staged = apply_times(&w.staging)[0];
    let produced = apply_times(&w.production)[0];
    assert!(
        produced - staged >= 10 * MINUTE,
        "production got it {:?} after staging",
        produced - staged
    );

    // Through the promoter: production runs the promoted reference.
    let promoted = w.pipeline.promoted("production").expect("promoted");
    assert_eq!(promoted.id, rev1.id);
    assert_eq!(promoted.reference, "passed/staging");
    let status = w.pipeline.status("production").expect("status");
    assert!(status.is(ConditionKind::Ready), "{status}");
    assert_eq!(status.last_applied.as_ref(), Some(&promoted));
    let calls = w.promoter.calls();
    assert_eq!(calls[0], ("staging".to_owned(), rev1.clone()));
    assert_eq!(calls[1].0, "production", "the last stage promotes too");
    assert_eq!(calls[1].1.id, rev1.id);

    // In staging's audit log.
    let audit = w
        .pipeline
        .engine("staging")
        .expect("staging")
        .audit(&AuditQuery {
            id: Some("Stage/staging".parse().expect("id")),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, AuditAction::Promote);
    assert_eq!(audit[0].revision, rev1.id);
    assert_eq!(audit[0].reference, "passed/staging");
    let detail = audit[0].detail.as_deref().unwrap_or("");
    assert!(
        detail.starts_with("passed stage staging (Ready and healthy for 600s, gates passed); promoted to production as passed/staging@sha1:"),
        "{detail}"
    );

    // A second good revision flows too.
    let rev3 = w.source.commit([("app.yaml", doc(3))]);
    tokio::time::sleep(12 * MINUTE).await;
    assert_eq!(w.production.get(&id()), Some(json!({"v": 3})));
    assert_eq!(
        w.pipeline.promoted("production").map(|r| r.id),
        Some(rev3.id)
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_fails_in_staging_never_reaches_production() {
    let w = world();
    let rev1 = w.source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(12 * MINUTE).await;
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));

    // v=2 fails staging's post-sync gate.
    w.smoke_fails.store(true, Ordering::SeqCst);
    let rev2 = w.source.commit([("app.yaml", doc(2))]);
    tokio::time::sleep(60 * MINUTE).await;
    assert_eq!(
        w.staging.get(&id()),
        Some(json!({"v": 2})),
        "staging ran it"
    );
    let staging = w.pipeline.status("staging").expect("status");
    assert!(!staging.is(ConditionKind::Ready), "{staging}");
    assert!(
        staging
            .condition(ConditionKind::Ready)
            .message
            .contains("checkout returns 500"),
        "{staging}"
    );

    // Production never saw it: one apply (v=1), only rev1 in its history,
    // nothing of rev2 promoted.
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    assert_eq!(w.production.changes(), [Call::Apply(id())]);
    let history = w.production_history_ids().await;
    assert!(!history.is_empty());
    assert!(history.iter().all(|h| *h == rev1.id), "{history:?}");
    assert!(w.promoter.calls().iter().all(|(_, r)| r.id == rev1.id));
    assert_eq!(
        w.pipeline.promoted("production").map(|r| r.id),
        Some(rev1.id.clone())
    );

    // Not even a rollback can bring it there.
    let production = w.pipeline.engine("production").expect("production");
    let err = production.rollback(&rev2).await.expect_err("refused");
    assert!(matches!(err, EngineError::Rollback { .. }), "{err}");
    assert!(
        err.to_string().contains("has not passed stage staging"),
        "{err}"
    );
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_revision_stays_in_staging() {
    let w = world();
    w.source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(12 * MINUTE).await;

    // The target reports v=4 degraded: the sync fails in staging.
    w.staging.script_health(
        &id(),
        [Health::Degraded {
            reason: "crash loop".into(),
        }],
    );
    w.source.commit([("app.yaml", doc(4))]);
    tokio::time::sleep(60 * MINUTE).await;
    assert_eq!(w.staging.get(&id()), Some(json!({"v": 4})));
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    assert_eq!(w.production.changes(), [Call::Apply(id())]);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn health_lost_during_the_soak_blocks_the_promotion() {
    let w = world();
    // Healthy when the engine checks after the apply, degraded afterwards:
    // the engine reports Ready, the soak's health samples do not pass.
    w.staging.script_health(
        &id(),
        [
            Health::Healthy,
            Health::Degraded {
                reason: "memory leak".into(),
            },
        ],
    );
    let rev = w.source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(30 * MINUTE).await;
    let staging = w.pipeline.status("staging").expect("status");
    assert!(staging.is(ConditionKind::Ready), "{staging}");
    assert_eq!(staging.last_applied.map(|r| r.id), Some(rev.id.clone()));
    assert!(w.production.contents().is_empty(), "never promoted");
    assert!(w.promoter.calls().is_empty());
    let soaking = w.pipeline.soaking("staging").expect("soaking");
    assert_eq!(soaking.revision.id, rev.id);
    assert!(soaking.restarts > 10, "{soaking:?}");
    assert_eq!(
        soaking.last_failure.as_deref(),
        Some("App/x: degraded: memory leak")
    );

    // Healthy again: the soak starts over and completes.
    w.staging.script_health(&id(), [Health::Healthy]);
    tokio::time::sleep(5 * MINUTE).await;
    assert!(w.production.contents().is_empty(), "a fresh 10-minute soak");
    let soaking = w.pipeline.soaking("staging").expect("soaking");
    assert!(
        soaking.remaining > 4 * MINUTE && soaking.remaining <= 5 * MINUTE,
        "{soaking:?}"
    );
    tokio::time::sleep(7 * MINUTE).await;
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    assert_eq!(w.pipeline.soaking("staging"), None, "passed");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_promotion_is_retried_and_stages_read_their_own_paths() {
    let source = Arc::new(MemorySource::new("main"));
    let staging = Arc::new(MemoryTarget::new());
    let production = Arc::new(MemoryTarget::new());
    let promoter = Arc::new(MemoryPromoter::new());
    promoter.fail_next(2);
    let pipeline = Pipeline::builder(source.clone())
        .stage(Stage::new("staging", staging.clone()).path("env/staging"))
        .stage(Stage::new("production", production.clone()).path("env/production/"))
        .promoter(promoter.clone())
        .build()
        .expect("pipeline");
    let running = pipeline.clone();
    let agent = tokio::spawn(async move { running.run().await });
    let rev: Revision = source.commit([
        ("env/staging/app.yaml", doc(1)),
        ("env/production/app.yaml", doc(10)),
        ("README.md", "not a manifest".to_owned()),
    ]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(staging.get(&id()), Some(json!({"v": 1})));
    assert!(
        production.contents().is_empty(),
        "the promoter failed twice"
    );
    tokio::time::sleep(MINUTE).await;
    assert_eq!(production.get(&id()), Some(json!({"v": 10})));
    assert_eq!(promoter.calls()[0], ("staging".to_owned(), rev));
    pipeline.shutdown();
    agent.await.expect("join").expect("run");

    let err = Pipeline::builder(source)
        .stage(Stage::new("a", staging.clone()))
        .stage(Stage::new("a", production))
        .build()
        .expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        "pipeline configuration: stage a is defined twice"
    );
}

#[tokio::test(start_paused = true)]
async fn a_revision_stops_soaking_while_a_newer_one_is_being_applied() {
    // Staging's post-sync gate takes 8 minutes on v=2 and then fails it.
    let source = Arc::new(MemorySource::new("main"));
    let staging = Arc::new(MemoryTarget::new());
    let production = Arc::new(MemoryTarget::new());
    let slow = Arc::new(AtomicBool::new(false));
    let flag = slow.clone();
    let slow_smoke = gate_fn("smoke", move |_: GateInput| {
        let slow = flag.load(Ordering::SeqCst);
        async move {
            if slow {
                tokio::time::sleep(8 * MINUTE).await;
                Err("smoke test: checkout returns 500".to_owned())
            } else {
                Ok("smoke test passed".to_owned())
            }
        }
    });
    let pipeline = Pipeline::builder(source.clone())
        .stage(
            Stage::new("staging", staging.clone())
                .soak(10 * MINUTE)
                .configure(move |b| b.post_sync_gate(slow_smoke).config(every(30))),
        )
        .stage(Stage::new("production", production.clone()))
        .check_interval(Duration::from_secs(10))
        .build()
        .expect("pipeline");
    let running = pipeline.clone();
    let agent = tokio::spawn(async move { running.run().await });

    source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(5 * MINUTE).await;
    assert_eq!(staging.get(&id()), Some(json!({"v": 1})));
    // v=2 lands in staging at about 5.5 minutes; its gate runs until 13.5.
    slow.store(true, Ordering::SeqCst);
    source.commit([("app.yaml", doc(2))]);
    tokio::time::sleep(MINUTE).await;
    assert_eq!(staging.get(&id()), Some(json!({"v": 2})), "being applied");
    let soaking = pipeline.soaking("staging").expect("soaking");
    assert!(
        soaking
            .last_failure
            .as_deref()
            .is_some_and(|f| f.starts_with("the stage started syncing main@sha1:")),
        "{soaking:?}"
    );

    // At 10 minutes v=1 has not been in staging for its soak time: staging
    // has run v=2 since 5.5 minutes.
    tokio::time::sleep(6 * MINUTE).await;
    assert!(
        production.contents().is_empty(),
        "v=1 promoted although staging ran v=2 for half its soak: {:?}",
        production.contents()
    );
    assert_eq!(pipeline.promoted("production"), None);
    pipeline.shutdown();
    agent.await.expect("join").expect("run");
}

#[tokio::test(start_paused = true)]
async fn a_failed_promotion_is_retried_at_the_next_check_not_after_another_soak() {
    let w = world();
    w.promoter.fail_next(1);
    let rev = w.source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(10 * MINUTE + Duration::from_secs(5)).await;
    assert_eq!(w.promoter.calls(), [], "the failed call is not recorded");
    assert!(w.production.contents().is_empty(), "the promoter failed");

    // Retried at the next check (10 s), not after a second 10-minute soak.
    tokio::time::sleep(MINUTE).await;
    assert_eq!(
        w.promoter.calls().first(),
        Some(&("staging".to_owned(), rev.clone()))
    );
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_does_not_promote_again_what_already_passed() {
    let source = Arc::new(MemorySource::new("main"));
    let store = Arc::new(gitops_core::MemoryStore::new());
    let staging = Arc::new(MemoryTarget::new());
    let production = Arc::new(MemoryTarget::new());
    let promoter = Arc::new(MemoryPromoter::new());
    let start = || {
        let pipeline = Pipeline::builder(source.clone())
            .store(store.clone())
            .stage(Stage::new("staging", staging.clone()).soak(MINUTE))
            .stage(Stage::new("production", production.clone()).soak(MINUTE))
            .promoter(promoter.clone())
            .build()
            .expect("pipeline");
        let running = pipeline.clone();
        (pipeline, tokio::spawn(async move { running.run().await }))
    };
    let rev = source.commit([("app.yaml", doc(1))]);
    let (pipeline, agent) = start();
    tokio::time::sleep(5 * MINUTE).await;
    assert_eq!(promoter.calls().len(), 2, "{:?}", promoter.calls());
    pipeline.shutdown();
    agent.await.expect("join").expect("run");

    // Restarted with the same store: both stages already passed `rev`.
    let (pipeline, agent) = start();
    tokio::time::sleep(5 * MINUTE).await;
    let calls = promoter.calls();
    assert_eq!(
        calls.len(),
        2,
        "promoted again after the restart: {calls:?}"
    );
    for stage in ["staging", "production"] {
        let audit = pipeline
            .engine(stage)
            .expect("stage")
            .audit(&AuditQuery {
                id: Some(format!("Stage/{stage}").parse().expect("id")),
                ..AuditQuery::default()
            })
            .await
            .expect("audit");
        assert_eq!(audit.len(), 1, "{stage}: {audit:?}");
        assert_eq!(audit[0].revision, rev.id);
    }
    pipeline.shutdown();
    agent.await.expect("join").expect("run");
}

#[tokio::test(start_paused = true)]
async fn an_endless_soak_holds_the_revision_without_panicking() {
    let source = Arc::new(MemorySource::new("main"));
    let staging = Arc::new(MemoryTarget::new());
    let production = Arc::new(MemoryTarget::new());
    let pipeline = Pipeline::builder(source.clone())
        .stage(Stage::new("staging", staging.clone()).soak(Duration::MAX))
        .stage(Stage::new("production", production.clone()))
        .build()
        .expect("pipeline");
    let running = pipeline.clone();
    let agent = tokio::spawn(async move { running.run().await });
    let rev = source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(60 * MINUTE).await;
    assert_eq!(staging.get(&id()), Some(json!({"v": 1})));
    assert!(production.contents().is_empty());
    let soaking = pipeline.soaking("staging").expect("soaking");
    assert_eq!(soaking.revision.id, rev.id);
    assert!(soaking.remaining > 365 * 24 * 60 * MINUTE, "{soaking:?}");
    pipeline.shutdown();
    agent.await.expect("no panic").expect("run");
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_failed_while_its_promotion_was_retried_soaks_again() {
    let w = world();
    w.promoter.fail_next(1);
    w.source.commit([("app.yaml", doc(1))]);
    tokio::time::sleep(10 * MINUTE + Duration::from_secs(3)).await;
    assert!(w.production.contents().is_empty(), "the promoter failed");

    // Before the retry, a drift repair of v=1 fails the smoke test...
    let staging = w.pipeline.engine("staging").expect("staging").handle();
    w.smoke_fails.store(true, Ordering::SeqCst);
    w.staging.edit(&id(), json!({"v": 99}));
    staging.reconcile_now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = w.pipeline.status("staging").expect("status");
    assert!(!status.is(ConditionKind::Ready), "{status}");
    // ...and passes it again later: v=1 starts a fresh soak.
    w.smoke_fails.store(false, Ordering::SeqCst);
    staging.retry();
    tokio::time::sleep(MINUTE).await;
    let status = w.pipeline.status("staging").expect("status");
    assert!(status.is(ConditionKind::Ready), "{status}");
    assert!(
        w.production.contents().is_empty(),
        "promoted one check after failing a gate"
    );
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(w.production.get(&id()), Some(json!({"v": 1})));
    w.stop().await;
}

/// Polls every `secs` seconds.
fn every(secs: u64) -> gitops_core::EngineConfig {
    gitops_core::EngineConfig::default().interval(Duration::from_secs(secs))
}
