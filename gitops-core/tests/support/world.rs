//! A pull-mode world for engine tests: a manifest source, a memory target
//! and an engine with short, deterministic intervals (no jitter).

use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::{EngineConfig, RetryPolicy};
use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::{Engine, ManifestRender, ResourceId};

/// One manifest document.
pub fn doc(kind_name: &str, deps: &[&str], spec: serde_json::Value) -> String {
    let (kind, name) = kind_name.split_once('/').expect("Kind/name");
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "---\nkind: {kind}\nmetadata: {{ name: {name}, dependsOn: [{}] }}\nspec: {spec}\n",
        deps.join(", ")
    )
}

pub fn annotated(kind_name: &str, annotation: &str, spec: serde_json::Value) -> String {
    let (kind, name) = kind_name.split_once('/').expect("Kind/name");
    format!(
        "---\nkind: {kind}\nmetadata: {{ name: {name}, annotations: {{ {annotation} }} }}\nspec: {spec}\n"
    )
}

/// The parts of one engine under test.
pub struct World {
    pub source: Arc<MemorySource>,
    pub target: Arc<MemoryTarget>,
    pub engine: Engine,
}

/// Intervals of seconds, a 30 s health timeout, 5 quick retries.
pub fn config() -> EngineConfig {
    EngineConfig::default()
        .interval(Duration::from_secs(10))
        .interval_jitter(0.0)
        .drift_interval(Duration::from_secs(60))
        .health_poll(Duration::from_secs(1))
        .health_timeout(Duration::from_secs(30))
        .retry(RetryPolicy {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(60),
            max_attempts: 5,
            jitter: true,
        })
}

/// An engine on `manifests` with `config`.
pub fn world_with(config: EngineConfig, manifests: &str) -> World {
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("app.yaml", manifests)]);
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(config)
        .build()
        .expect("complete builder");
    World {
        source,
        target,
        engine,
    }
}

/// An engine on `manifests` with [`config`].
pub fn world(manifests: &str) -> World {
    world_with(config(), manifests)
}

/// How often `of` was applied.
pub fn applies(target: &MemoryTarget, of: &ResourceId) -> usize {
    target
        .calls()
        .iter()
        .filter(|c| **c == Call::Apply(of.clone()))
        .count()
}
