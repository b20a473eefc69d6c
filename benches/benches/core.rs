//! gitops-core benchmarks: planning, graph waves, manifest rendering.
//! Run with `cargo bench --bench core`; goals are in the README.

use criterion::{Criterion, criterion_group, criterion_main};
use gitops_benches::{dag_edges, desired, manifest_snapshot, observed};
use gitops_core::graph::DependencyGraph;
use gitops_core::model::Inventory;
use gitops_core::plan::Planner;
use gitops_core::{ManifestRender, Render};
use std::hint::black_box;

fn plan(c: &mut Criterion) {
    let desired = desired(100_000, 10);
    let inventory = Inventory::new();
    let unchanged = observed(&desired, 0);
    let one_percent = observed(&desired, 100);
    let mut group = c.benchmark_group("plan");
    group.sample_size(20);
    group.bench_function("no-op, 100k resources", |b| {
        b.iter(|| {
            Planner::new()
                .plan(black_box(&desired), black_box(&unchanged), &inventory)
                .expect("plans")
        })
    });
    group.bench_function("1% changed, 100k resources", |b| {
        b.iter(|| {
            Planner::new()
                .plan(black_box(&desired), black_box(&one_percent), &inventory)
                .expect("plans")
        })
    });
    group.finish();
}

fn waves(c: &mut Criterion) {
    let edges = dag_edges(100_000, 300_000);
    let mut group = c.benchmark_group("graph");
    group.sample_size(20);
    group.bench_function("waves, 100k nodes / 300k edges", |b| {
        b.iter(|| DependencyGraph::new(100_000, black_box(&edges).iter().copied()).expect("a DAG"))
    });
    group.finish();
}

fn render(c: &mut Criterion) {
    let snapshot = manifest_snapshot(1_000, 10);
    let render = ManifestRender::new();
    let mut group = c.benchmark_group("render");
    group.sample_size(20);
    group.bench_function("ManifestRender, 10k YAML documents", |b| {
        b.iter(|| render.render(black_box(&snapshot)).expect("renders"))
    });
    group.finish();
}

criterion_group!(benches, plan, waves, render);
criterion_main!(benches);
