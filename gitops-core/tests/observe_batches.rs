//! The limit on one batch of observes grows with the batch: a healthy but
//! slow target observed 1,000 resources at a time is not cut off, while a
//! hung one is still caught (paused tokio time throughout).

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::EngineConfig;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    Engine, EngineError, ManifestRender, Observed, Resource, ResourceId, Target, TargetError,
    async_trait,
};
use tokio::time::Instant;

/// A [`MemoryTarget`] observed one resource at a time: it keeps the trait's
/// default `observe_many` (16 observes in flight), so its latency is paid
/// per observe, as by a target behind a slow API.
struct OneByOne(Arc<MemoryTarget>);

#[async_trait]
impl Target for OneByOne {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        self.0.observe(id).await
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        self.0.apply(resource).await
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        self.0.delete(id).await
    }
}

/// An engine over 1,000 resources, observed in one chunk of 1,000, with a
/// 10 s `call_timeout`, on a target whose every call takes `latency`.
fn engine(latency: Duration) -> Engine {
    let source = Arc::new(MemorySource::new("main"));
    let manifests: String = (0..1_000)
        .map(|i| format!("---\nkind: App\nmetadata: {{ name: app-{i} }}\nspec: {{ v: 1 }}\n"))
        .collect();
    source.commit([("apps.yaml", manifests)]);
    let memory = Arc::new(MemoryTarget::new());
    memory.set_latency(latency);
    Engine::builder()
        .source(source)
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(OneByOne(memory)))
        .config(
            EngineConfig::default()
                .call_timeout(Duration::from_secs(10))
                .observe_chunk(1_000),
        )
        .build()
        .expect("complete builder")
}

/// 1,000 observes of 1 s each, 16 at a time, take 63 s: far more than one
/// `call_timeout` of 10 s (the old limit for the whole chunk), within the
/// batch's limit of 10 rounds (100 s).
#[tokio::test(start_paused = true)]
async fn a_large_batch_of_slow_observes_is_not_cut_off() {
    let engine = engine(Duration::from_secs(1));
    let started = Instant::now();
    let plan = engine.plan().await.expect("the batch completes");
    assert_eq!(plan.summary.create, 1_000);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(63) && took < Duration::from_secs(100),
        "{took:?}"
    );
}

/// A hung target is still caught: after the batch's limit (10 rounds of
/// `call_timeout`), as a transient timeout, not after the hour it hangs.
#[tokio::test(start_paused = true)]
async fn a_hung_target_still_times_out() {
    let engine = engine(Duration::from_secs(3_600));
    let started = Instant::now();
    let err = engine.plan().await.expect_err("a hung batch times out");
    assert!(
        matches!(&err, EngineError::Observe(TargetError::Timeout { after, .. }) if *after == Duration::from_secs(100)),
        "{err:?}"
    );
    assert!(err.is_transient(), "{err}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(101), "{took:?}");
}
