//! A complete `Target` for a system of its own — an in-process key-value
//! store — in four methods. Run: `cargo run --example custom_target`.
//!
//! Everything else (ordering, retries, drift, prune, history) comes from the
//! engine; swap `KvStore` for your HTTP API, database or device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gitops_core::testing::MemorySource;
use gitops_core::{
    Engine, ManifestRender, Observed, Resource, ResourceId, Target, TargetError, async_trait,
};

/// The system being managed: keys to JSON values.
#[derive(Default)]
struct KvStore(Mutex<BTreeMap<String, serde_json::Value>>);

/// The target: one key per resource, `namespace/name` or `name`.
struct KvTarget(Arc<KvStore>);

fn key(id: &ResourceId) -> String {
    match id.namespace() {
        Some(ns) => format!("{ns}/{}", id.name()),
        None => id.name().to_owned(),
    }
}

#[async_trait]
impl Target for KvTarget {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let map = self
            .0
            .0
            .lock()
            .map_err(|_| TargetError::transient(id, "store poisoned"))?;
        Ok(map.get(&key(id)).cloned().map(Observed::new))
    }

    async fn apply(&self, r: &Resource) -> Result<(), TargetError> {
        let mut map = self
            .0
            .0
            .lock()
            .map_err(|_| TargetError::transient(&r.id, "store poisoned"))?;
        map.insert(key(&r.id), r.spec.clone());
        Ok(())
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let mut map = self
            .0
            .0
            .lock()
            .map_err(|_| TargetError::transient(id, "store poisoned"))?;
        map.remove(&key(id));
        Ok(())
    }
    // health() defaults to Healthy; override it when your system can say more.
}

const MANIFESTS: &str = "
kind: Setting
metadata: { name: db-url, namespace: prod }
spec: { value: postgres://db/prod }
---
kind: Setting
metadata: { name: feature-flags, namespace: prod, dependsOn: [Setting/prod/db-url] }
spec: { checkout: true }
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(KvStore::default());
    let source = Arc::new(MemorySource::new("main")); // gitops_git::GitSource in real life
    source.commit([("settings.yaml", MANIFESTS)]);
    let engine = Engine::builder()
        .source(source)
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(KvTarget(store.clone())))
        .build()?;
    let report = engine.sync_once().await?;
    println!("{report}");
    for (k, v) in store.0.lock().map_err(|_| "store poisoned")?.iter() {
        println!("  {k} = {v}");
    }
    if !report.converged() {
        return Err("did not converge".into());
    }
    Ok(())
}
