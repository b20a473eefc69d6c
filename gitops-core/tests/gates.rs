//! Quality gates: pre-sync gates block the apply, post-sync gates fail the
//! revision (and trigger automated rollback), outputs are kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gitops_core::engine::{EngineConfig, SyncResult};
use gitops_core::store::AuditAction;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    AuditQuery, ConditionKind, Engine, GateInput, GateStage, ManifestRender, gate_fn,
};
use serde_json::json;

mod support;
use support::{Agent, id};

fn doc(name: &str, v: i64) -> String {
    format!("---\nkind: App\nmetadata: {{ name: {name} }}\nspec: {{ v: {v} }}\n")
}

fn world(
    config: EngineConfig,
    pre: bool,
    post: Option<Arc<AtomicBool>>,
) -> (Arc<MemorySource>, Arc<MemoryTarget>, Engine) {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let mut builder = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(config);
    if pre {
        // A "security scanner": refuses any planned value of 100.
        builder = builder.pre_sync_gate(gate_fn("scanner", |input: GateInput| async move {
            assert_eq!(input.stage, GateStage::PreSync);
            let text = serde_json::to_string(&*input.plan).map_err(|e| e.to_string())?;
            if text.contains("100") {
                Err("policy violation: v=100 is not allowed".into())
            } else {
                Ok(format!("scanned {}", input.revision))
            }
        }));
    }
    if let Some(fail) = post {
        // A "smoke test" against the deployed system; the test decides its verdict.
        builder = builder.post_sync_gate(gate_fn("smoke", move |input: GateInput| {
            let fail = fail.clone();
            async move {
                assert_eq!(input.stage, GateStage::PostSync);
                if fail.load(Ordering::SeqCst) {
                    Err("smoke test: 3 of 10 requests failed".into())
                } else {
                    Ok("10 of 10 requests passed".into())
                }
            }
        }));
    }
    (source, target, builder.build().expect("builds"))
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_sync_gate_blocks_the_apply() {
    let (source, target, engine) = world(EngineConfig::default(), true, None);
    source.commit([("app.yaml", doc("a", 1))]);
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(report.gates.len(), 1);
    assert!(report.gates[0].passed, "{:?}", report.gates);

    source.commit([("app.yaml", doc("a", 100))]);
    let report = engine.sync_once().await.expect("sync");
    assert_eq!(report.result, SyncResult::GateFailed);
    assert!(report.outcomes.is_empty());
    assert!(
        report
            .to_string()
            .contains("gate scanner (PreSync) FAILED: policy violation"),
        "{report}"
    );
    assert_eq!(
        target.get(&id("App/a")),
        Some(json!({"v": 1})),
        "nothing applied"
    );
    let status = engine.status();
    assert!(status.is(ConditionKind::Stalled), "{status}");
    assert!(
        status
            .condition(ConditionKind::Stalled)
            .message
            .contains("policy violation")
    );

    let history = engine.history(1).await.expect("history");
    assert_eq!(history[0].result, SyncResult::GateFailed);
    assert_eq!(
        history[0].gates[0].output,
        "policy violation: v=100 is not allowed"
    );
    let audit = engine
        .audit(&AuditQuery {
            id: Some(id("Gate/scanner")),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].action, AuditAction::Gate);
    assert!(
        audit[1]
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("PreSync failed: policy violation"))
    );
}

#[tokio::test(start_paused = true)]
async fn no_changes_no_gate_run() {
    let (source, _target, engine) = world(EngineConfig::default(), true, Some(Arc::default()));
    source.commit([("app.yaml", doc("a", 1))]);
    engine.sync_once().await.expect("sync");
    let report = engine.sync_once().await.expect("sync");
    assert!(report.gates.is_empty(), "a no-op reconcile runs no gates");
}

#[tokio::test(start_paused = true)]
async fn a_failing_post_sync_gate_fails_the_revision_and_rolls_back() {
    let config = EngineConfig::default()
        .auto_rollback(true)
        .interval(Duration::from_secs(10));
    let fail = Arc::new(AtomicBool::new(false));
    let (source, target, engine) = world(config, false, Some(fail.clone()));
    source.commit([("app.yaml", doc("a", 1))]);
    let handle = engine.handle();
    let runner = engine.clone();
    let run = tokio::spawn(async move { runner.run().await });
    let ready = async {
        while !engine.status().is(ConditionKind::Ready) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("first revision ready");

    fail.store(true, Ordering::SeqCst);
    let v2 = source.commit([("app.yaml", doc("a", 2))]);
    let rolled_back = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let history = engine.history(10).await.expect("history");
            if history
                .first()
                .is_some_and(|h| h.trigger == gitops_core::engine::Trigger::Rollback)
            {
                return history;
            }
        }
    };
    let history = tokio::time::timeout(Duration::from_secs(60), rolled_back)
        .await
        .expect("rolled back");
    fail.store(false, Ordering::SeqCst);
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 1})));
    let failed = &history[1];
    assert_eq!(failed.revision, v2);
    assert_eq!(failed.result, SyncResult::Failed);
    assert_eq!(
        failed.gates[0].output,
        "smoke test: 3 of 10 requests failed"
    );
    // The failed revision is not retried.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 1})));
    handle.shutdown();
    run.await.expect("joins").expect("run ends");
}

/// A revision whose post-sync gate failed is already on the target, so
/// syncing it again plans no changes; that must not make it Ready without
/// its gates (an explicit sync, or an engine restarted over the same store).
#[tokio::test(start_paused = true)]
async fn a_revision_that_failed_its_post_sync_gate_is_not_ready_when_synced_again() {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let store = Arc::new(gitops_core::MemoryStore::new());
    let fail = Arc::new(AtomicBool::new(false));
    let build = || {
        let fail = fail.clone();
        Engine::builder()
            .source(source.clone())
            .render(Arc::new(ManifestRender::new()))
            .target(target.clone())
            .store(store.clone())
            .post_sync_gate(gate_fn("smoke", move |_: GateInput| {
                let fail = fail.load(Ordering::SeqCst);
                async move {
                    if fail {
                        Err("smoke test: 3 of 10 requests failed".to_owned())
                    } else {
                        Ok("10 of 10 requests passed".to_owned())
                    }
                }
            }))
            .build()
            .expect("builds")
    };
    let engine = build();
    source.commit([("app.yaml", doc("a", 1))]);
    assert!(engine.sync_once().await.expect("sync").converged());

    fail.store(true, Ordering::SeqCst);
    let v2 = source.commit([("app.yaml", doc("a", 2))]);
    let report = engine.sync_once().await.expect("sync");
    assert_eq!(report.result, SyncResult::Failed, "{report}");
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 2})));

    for (what, engine) in [("again", engine), ("after a restart", build())] {
        let report = engine.sync_once().await.expect("sync");
        assert_eq!(report.revision, v2);
        assert_eq!(report.result, SyncResult::Failed, "{what}: {report}");
        assert_eq!(report.gates.len(), 1, "{what}: the gate runs again");
        assert!(!report.gates[0].passed);
        let status = engine.status();
        assert!(!status.is(ConditionKind::Ready), "{what}: {status}");
        assert_ne!(status.last_applied.map(|r| r.id), Some(v2.id.clone()));
        let record = gitops_core::StateStore::load_record(&*store, "default")
            .await
            .expect("record")
            .value;
        assert_ne!(
            record.last_healthy.map(|r| r.id),
            Some(v2.id.clone()),
            "{what}: never the rollback target"
        );
    }

    // The same for a revision that converged before: v3 passes, then its
    // drift repair fails the gate; syncing it again runs the gate again.
    fail.store(false, Ordering::SeqCst);
    let engine = build();
    source.commit([("app.yaml", doc("a", 3))]);
    assert!(engine.sync_once().await.expect("sync").converged());
    fail.store(true, Ordering::SeqCst);
    target.edit(&id("App/a"), json!({"v": 99}));
    let report = engine.sync_once().await.expect("drift repair");
    assert_eq!(report.result, SyncResult::Failed, "{report}");
    let report = engine.sync_once().await.expect("sync");
    assert_eq!(report.result, SyncResult::Failed, "again: {report}");
    assert!(!engine.status().is(ConditionKind::Ready));
}

/// An engine in pull mode with one pre-sync gate, `check`, and the events it sends.
fn gated(
    check: Arc<dyn gitops_core::Gate>,
) -> (
    Arc<MemorySource>,
    Arc<MemoryTarget>,
    Engine,
    tokio::sync::broadcast::Receiver<gitops_core::engine::Event>,
) {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let config = EngineConfig::default()
        .gate_timeout(Duration::from_secs(60))
        .interval(Duration::from_secs(3600))
        .drift_interval(Duration::from_secs(3600));
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(config)
        .pre_sync_gate(check)
        .build()
        .expect("builds");
    let events = engine.subscribe();
    (source, target, engine, events)
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_times_out_is_retried_with_backoff_not_stalled() {
    use gitops_core::engine::Event;
    use gitops_core::status::Reason;
    use std::sync::atomic::AtomicUsize;
    // The scanner hangs on its first two runs (longer than the gate
    // timeout), then answers.
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let scanner = gate_fn("scanner", move |_: GateInput| {
        let run = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if run < 2 {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Ok::<_, String>("clean".to_owned())
        }
    });
    let (source, target, engine, mut events) = gated(scanner);
    source.commit([("app.yaml", doc("a", 1))]);
    let agent = Agent::start(&engine);
    let mut retries = Vec::new();
    loop {
        match events.recv().await.expect("events") {
            Event::RetryScheduled {
                reason, message, ..
            } => retries.push((reason, message)),
            Event::Stalled { message, .. } => panic!("stalled on a gate timeout: {message}"),
            Event::SyncFinished {
                result: SyncResult::Converged,
                ..
            } => break,
            _ => {}
        }
    }
    assert_eq!(retries.len(), 2, "{retries:?}");
    for (reason, message) in &retries {
        assert_eq!(*reason, Reason::GateUnavailable);
        assert!(message.contains("timed out after 60s"), "{message}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(target.get(&id("App/a")), Some(json!({"v": 1})));
    assert!(engine.status().is(ConditionKind::Ready));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_fails_stalls_without_retrying() {
    use gitops_core::engine::Event;
    use gitops_core::status::Reason;
    use std::sync::atomic::AtomicUsize;
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let scanner = gate_fn("scanner", move |_: GateInput| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<String, _>("policy violation".to_owned()) }
    });
    let (source, target, engine, mut events) = gated(scanner);
    source.commit([("app.yaml", doc("a", 1))]);
    let agent = Agent::start(&engine);
    loop {
        match events.recv().await.expect("events") {
            Event::Stalled {
                reason, message, ..
            } => {
                assert_eq!(reason, Reason::GateFailed);
                assert!(message.contains("policy violation"), "{message}");
                break;
            }
            Event::RetryScheduled { message, .. } => panic!("retried a failed gate: {message}"),
            _ => {}
        }
    }
    // An hour of polls and drift checks later: still held, never run again.
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stalled = engine.status();
    assert!(stalled.is(ConditionKind::Stalled));
    assert_eq!(
        stalled.condition(ConditionKind::Stalled).reason,
        Reason::GateFailed
    );
    assert!(target.contents().is_empty(), "nothing applied");
    agent.stop().await;
}
