//! Engine benchmarks on the in-memory target: 10,000 resources in 10 waves.
//! `cargo bench --bench engine`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gitops_benches::FixtureRender;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{Engine, EngineConfig};

fn engine(target: Arc<MemoryTarget>, render: &FixtureRender) -> Engine {
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("placeholder", "")]);
    Engine::builder()
        .source(source)
        .render(Arc::new(render.clone()))
        .target(target)
        .config(EngineConfig::default().concurrency(16))
        .build()
        .expect("builds")
}

fn sync(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let render = FixtureRender::new(10_000, 10);
    let mut group = c.benchmark_group("engine");
    group.sample_size(20);
    group.bench_function("full sync, 10k resources / 10 waves", |b| {
        b.iter_batched(
            || engine(Arc::new(MemoryTarget::new()), &render),
            |engine| {
                let report = rt.block_on(engine.sync_once()).expect("syncs");
                assert!(report.converged());
                report
            },
            BatchSize::PerIteration,
        )
    });
    let target = Arc::new(MemoryTarget::new());
    let steady = engine(target.clone(), &render);
    rt.block_on(steady.sync_once()).expect("first sync");
    group.bench_function("no-op reconcile, 10k resources", |b| {
        b.iter(|| {
            target.clear_calls();
            let report = rt.block_on(steady.sync_once()).expect("syncs");
            assert!(!report.plan.has_changes());
            report
        })
    });
    group.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
