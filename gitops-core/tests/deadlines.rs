//! Source calls and renders have deadlines and are cancelled: a snapshot
//! that hangs or a render that is slow does not hold the engine, a shutdown
//! ends a snapshot in flight at once, and a later good commit deploys.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::engine::{EngineConfig, RetryPolicy};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    Cancel, ConditionKind, DesiredState, Engine, EngineError, ManifestRender, Render, RenderError,
    Revision, Snapshot, Source, SourceError, async_trait,
};
use serde_json::json;

mod support;
use support::{Agent, eventually, id};

fn app(version: u32) -> String {
    format!("kind: App\nmetadata: {{ name: web }}\nspec: {{ v: {version} }}\n")
}

/// A [`MemorySource`] whose snapshots of chosen revisions never finish;
/// the cancel flags they were given are kept.
struct Hanging {
    inner: Arc<MemorySource>,
    hang: Mutex<HashSet<String>>,
    hung: Mutex<Vec<Cancel>>,
}

impl Hanging {
    fn new(inner: Arc<MemorySource>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hang: Mutex::new(HashSet::new()),
            hung: Mutex::new(Vec::new()),
        })
    }

    fn hang(&self, revision: &Revision) {
        self.hang.lock().unwrap().insert(revision.id.clone());
    }

    /// How many snapshots hung so far, and how many of them were cancelled.
    fn hung(&self) -> (usize, usize) {
        let hung = self.hung.lock().unwrap();
        let cancelled = hung.iter().filter(|c| c.is_cancelled()).count();
        (hung.len(), cancelled)
    }
}

#[async_trait]
impl Source for Hanging {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.inner.poll().await
    }

    async fn snapshot(
        &self,
        revision: &Revision,
        cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        if self.hang.lock().unwrap().contains(&revision.id) {
            self.hung.lock().unwrap().push(cancel.clone());
            std::future::pending::<()>().await;
        }
        self.inner.snapshot(revision, cancel).await
    }
}

fn engine(source: Arc<dyn Source>, render: Arc<dyn Render>, config: EngineConfig) -> Engine {
    Engine::builder()
        .source(source)
        .render(render)
        .target(Arc::new(MemoryTarget::new()))
        .config(config)
        .build()
        .expect("complete builder")
}

fn config() -> EngineConfig {
    EngineConfig::default()
        .interval(Duration::from_secs(10))
        .interval_jitter(0.0)
        .retry(RetryPolicy {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            max_attempts: 100,
            jitter: false,
        })
}

#[tokio::test(start_paused = true)]
async fn a_hung_snapshot_times_out_transiently_and_a_later_commit_deploys() {
    let memory = Arc::new(MemorySource::new("main"));
    memory.commit([("app.yaml", app(1))]);
    let source = Hanging::new(memory.clone());
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(config().source_timeout(Duration::from_secs(5)))
        .build()
        .expect("builder");
    let run = Agent::start(&engine);
    assert!(
        eventually(Duration::from_secs(5), || target.get(&id("App/web"))
            == Some(json!({"v": 1})))
        .await
    );

    let hung = memory.commit([("app.yaml", app(2))]);
    source.hang(&hung);
    engine.handle().reconcile_now();
    // Timed out, cancelled, and retried with backoff (transient), while the
    // last good state stays.
    assert!(
        eventually(Duration::from_secs(60), || {
            let (calls, cancelled) = source.hung();
            calls >= 2 && cancelled >= 2
        })
        .await,
        "hung snapshots: {:?}",
        source.hung()
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            let status = engine.status();
            status.retry.is_some()
                && !status.is(ConditionKind::Stalled)
                && status
                    .to_string()
                    .contains("timed out after 5s (source_timeout)")
        })
        .await,
        "{}",
        engine.status()
    );
    assert_eq!(target.get(&id("App/web")), Some(json!({"v": 1})));

    // The engine is not held: a later good commit deploys.
    memory.commit([("app.yaml", app(3))]);
    engine.handle().reconcile_now();
    assert!(
        eventually(Duration::from_secs(60), || target.get(&id("App/web"))
            == Some(json!({"v": 3})))
        .await
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_snapshot_in_flight_at_once() {
    let memory = Arc::new(MemorySource::new("main"));
    let first = memory.commit([("app.yaml", app(1))]);
    let source = Hanging::new(memory);
    source.hang(&first);
    // No source deadline at all: only the shutdown ends the wait.
    let engine = engine(
        source.clone(),
        Arc::new(ManifestRender::new()),
        config().source_timeout(Duration::MAX),
    );
    let run = Agent::start(&engine);
    assert!(eventually(Duration::from_secs(5), || source.hung().0 == 1).await);
    let started = tokio::time::Instant::now();
    engine.handle().shutdown(); // once: graceful
    let joined = tokio::time::timeout(Duration::from_secs(60), run.join()).await;
    assert!(
        joined.is_ok(),
        "a graceful shutdown waited on a hung snapshot"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(source.hung(), (1, 1), "the snapshot was cancelled");
    let history = engine.history(10).await.expect("history");
    assert!(
        history.is_empty(),
        "a shutdown is not a failure: {history:?}"
    );
}

/// Renders with [`ManifestRender`], but a snapshot holding `slow` blocks
/// (its thread) until released, or 20 s.
#[derive(Default)]
struct SlowRender {
    release: AtomicBool,
}

impl Render for SlowRender {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        if snapshot.get("slow").is_some() {
            let started = std::time::Instant::now();
            while !self.release.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        ManifestRender::new().render(snapshot)
    }
}

/// Real time on one async worker: a render on that worker would block the
/// timer that is to end it.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_render_times_out_off_the_async_worker() {
    let memory = Arc::new(MemorySource::new("main"));
    memory.commit([("app.yaml", app(1))]);
    let render = Arc::new(SlowRender::default());
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(memory.clone())
        .render(render.clone())
        .target(target.clone())
        .config(config().render_timeout(Duration::from_millis(300)))
        .build()
        .expect("builder");
    engine.sync_once().await.expect("first sync");

    memory.commit([("app.yaml", app(2)), ("slow", "1".to_owned())]);
    let started = std::time::Instant::now();
    let err = engine.sync_once().await.expect_err("render timed out");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, EngineError::RenderTimeout { .. }), "{err}");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("render_timeout"), "{err}");
    assert_eq!(target.get(&id("App/web")), Some(json!({"v": 1})));

    render.release.store(true, Ordering::Relaxed);
    memory.commit([("app.yaml", app(3))]);
    engine.sync_once().await.expect("a later commit deploys");
    assert_eq!(target.get(&id("App/web")), Some(json!({"v": 3})));
}
