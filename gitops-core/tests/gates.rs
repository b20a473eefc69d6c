//! Quality gates: pre-sync gates block the apply, post-sync gates fail the
//! revision (and trigger automated rollback), outputs are kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gitops_core::engine::{EngineConfig, SyncResult};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    AuditAction, AuditQuery, ConditionKind, Engine, GateInput, GateStage, ManifestRender,
    ResourceId, gate_fn,
};
use serde_json::json;

fn doc(name: &str, v: i64) -> String {
    format!("---\nkind: App\nmetadata: {{ name: {name} }}\nspec: {{ v: {v} }}\n")
}

fn id(s: &str) -> ResourceId {
    s.parse().expect("valid id")
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
