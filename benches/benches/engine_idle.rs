//! CPU used by an idle pull-mode agent holding 10,000 resources: polls every
//! second, a full drift check every 10 s (far more often than the defaults of
//! 30 s and 60 s). `cargo bench --bench engine_idle`; prints the share of one core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_benches::{FixtureRender, cpu_time};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{Engine, EngineConfig};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, window) = if full {
        (10_000, Duration::from_secs(30))
    } else {
        (100, Duration::from_secs(2))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("placeholder", "")]);
    let engine = Engine::builder()
        .source(source)
        .render(Arc::new(FixtureRender::new(n, 10)))
        .target(Arc::new(MemoryTarget::new()))
        .config(
            EngineConfig::default()
                .interval(Duration::from_secs(1))
                .drift_interval(Duration::from_secs(10)),
        )
        .build()
        .expect("builds");
    rt.block_on(async {
        engine.sync_once().await.expect("first sync");
        let handle = engine.handle();
        let runner = engine.clone();
        let task = tokio::spawn(async move { runner.run().await });
        // Let the first poll settle, then measure a quiet window.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu_before = cpu_time().unwrap_or_default();
        let wall = Instant::now();
        tokio::time::sleep(window).await;
        let cpu = cpu_time().unwrap_or_default() - cpu_before;
        let wall = wall.elapsed();
        handle.shutdown();
        let _ = task.await;
        println!(
            "idle agent, {n} resources, poll 1 s, drift check 10 s: {:.2}% of one core ({:?} CPU over {:?})",
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            cpu,
            wall
        );
    });
}
