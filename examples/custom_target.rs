//! A complete `Target` for a system of its own — an in-process key-value
//! store, in `examples/kv.rs`, four methods — driven in push mode. Run:
//! `cargo run --example custom_target`. `custom_agent` runs the same target
//! as a long-lived agent.

use std::sync::Arc;

use gitops_core::testing::MemorySource;
use gitops_core::{Engine, ManifestRender};
use gitops_examples::kv::{KvStore, KvTarget};

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
    for (k, v) in store.entries() {
        println!("  {k} = {v}");
    }
    if !report.converged() {
        return Err("did not converge".into());
    }
    Ok(())
}
