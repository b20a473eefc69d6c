//! Non-convergence (issue 16 item 3): a target that stores `true` as `1`
//! never compares equal under the default exact `differs`. The engine stops
//! re-applying it on every drift check (backoff), says `NotConverging` in
//! the status naming the resource and the field with a hint, sends an event
//! and records it in the history; a target that normalises clears it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gitops_core::engine::{EngineConfig, Event};
use gitops_core::status::Reason;
use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::{
    ConditionKind, Engine, ManifestRender, Observed, Resource, ResourceId, Target, TargetError,
    async_trait,
};
use serde_json::{Value, json};

mod support;
use support::{Agent, eventually, id};

/// A target that reports booleans as 0 and 1 until it is fixed.
struct OneForTrue {
    inner: MemoryTarget,
    fixed: AtomicBool,
}

fn numbers(v: Value) -> Value {
    match v {
        Value::Bool(b) => json!(u8::from(b)),
        Value::Object(m) => m.into_iter().map(|(k, v)| (k, numbers(v))).collect(),
        Value::Array(a) => a.into_iter().map(numbers).collect(),
        other => other,
    }
}

#[async_trait]
impl Target for OneForTrue {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let observed = self.inner.observe(id).await?;
        if self.fixed.load(Ordering::SeqCst) {
            return Ok(observed);
        }
        Ok(observed.map(|o| Observed::new(numbers(o.spec.to_value()))))
    }
    async fn apply(&self, r: &Resource) -> Result<(), TargetError> {
        self.inner.apply(r).await
    }
    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        self.inner.delete(id).await
    }
}

fn applies(target: &MemoryTarget, of: &ResourceId) -> usize {
    target
        .calls()
        .iter()
        .filter(|c| **c == Call::Apply(of.clone()))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_target_that_never_compares_equal_backs_off_and_says_not_converging() {
    let source = Arc::new(MemorySource::new("main"));
    source.commit([(
        "app.yaml",
        "kind: App\nmetadata: { name: web }\nspec: { enabled: true, port: 80 }\n---\n\
         kind: App\nmetadata: { name: api }\nspec: { port: 81 }\n",
    )]);
    let target = Arc::new(OneForTrue {
        inner: MemoryTarget::new(),
        fixed: AtomicBool::new(false),
    });
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(
            EngineConfig::default()
                .interval(Duration::from_secs(10))
                .interval_jitter(0.0)
                .drift_interval(Duration::from_secs(60)),
        )
        .build()
        .expect("engine");
    let mut events = engine.subscribe();
    let run = Agent::start(&engine);

    // Ten drift checks: without backoff, eleven applies.
    tokio::time::sleep(Duration::from_secs(10 * 60 + 5)).await;
    let web = id("App/web");
    let count = applies(&target.inner, &web);
    assert!((2..=4).contains(&count), "{count} applies of App/web");
    assert_eq!(applies(&target.inner, &id("App/api")), 1, "api converged");

    let status = engine.status();
    let ready = status.condition(ConditionKind::Ready);
    assert!(!ready.status, "{status}");
    assert_eq!(ready.reason, Reason::NotConverging);
    assert_eq!(ready.reason, "NotConverging");
    for needed in ["App/web", "spec.enabled", "Target::differs", "normalise"] {
        assert!(
            ready.message.contains(needed),
            "{needed}: {}",
            ready.message
        );
    }
    assert!(!ready.message.contains("spec.port"), "{}", ready.message);

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::NotConverging { id, fields, .. } = e {
            seen.push((id, fields));
        }
    }
    assert_eq!(
        seen,
        [(web.clone(), vec!["spec.enabled".to_owned()])],
        "once"
    );

    let history = engine.history(100).await.expect("history");
    let noted = history
        .iter()
        .find_map(|h| h.not_converging.iter().find(|n| n.id == web))
        .expect("history names it");
    assert_eq!(noted.fields, ["spec.enabled"]);
    assert!(noted.applies >= 1, "{noted:?}");
    let latest = history[0].not_converging.first().expect("still noted");
    assert_eq!(latest.applies, count, "every apply that left it counted");

    // The target is fixed: the next drift check finds it equal.
    target.fixed.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(70), || engine
            .status()
            .is(ConditionKind::Ready))
        .await,
        "{}",
        engine.status()
    );
    assert_eq!(
        engine.status().condition(ConditionKind::Ready).reason,
        Reason::ReconciliationSucceeded
    );
    let history = engine.history(1).await.expect("history");
    assert!(history[0].not_converging.is_empty(), "{history:?}");
    let settled = applies(&target.inner, &web);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(applies(&target.inner, &web), settled);
    run.stop().await;
}
