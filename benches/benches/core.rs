//! gitops-core benchmarks: planning, graph waves, manifest rendering.
//! Run with `cargo bench --bench core`; goals are in `docs/performance.md`.
//!
//! Rendering has a natural floor, measured in the same group: parsing the
//! same files with the YAML parser alone (serde-saphyr into
//! `serde_json::Value`, what `ManifestRender` builds on), split over the same
//! threads. The group prints `ratio render/parse-only: ...x` in wall-clock
//! and in process CPU time, then again from 15 runs of each side taken
//! alternately (the goal, 1.3x, is on the CPU ratio: the machine's load
//! moves it least). Planning and graph waves have no such floor.

use criterion::{Criterion, criterion_group, criterion_main};
use gitops_benches::{
    Timings, dag_edges, desired, interleaved, manifest_snapshot, observed, print_cpu_ratio,
};
use gitops_core::graph::DependencyGraph;
use gitops_core::model::Inventory;
use gitops_core::plan::Planner;
use gitops_core::{ManifestRender, Render, Snapshot};
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

/// The floor of rendering: every matching file parsed by serde-saphyr into
/// `serde_json::Value` documents and nothing else, with the files split over
/// threads the way `ManifestRender` splits them (one chunk per core when
/// there are 32 files or more). Returns the number of documents.
fn parse_only(render: &ManifestRender, snapshot: &Snapshot) -> usize {
    let files: Vec<&[u8]> = snapshot
        .files()
        .iter()
        .filter(|(path, _)| render.matches(path))
        .map(|(_, file)| &file.data[..])
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len() / 32)
        .max(1);
    let parse = |part: &[&[u8]]| -> usize {
        part.iter()
            .map(|bytes| {
                let text = std::str::from_utf8(bytes).expect("UTF-8 fixture");
                serde_saphyr::from_multiple::<serde_json::Value>(text)
                    .expect("the fixture parses")
                    .len()
            })
            .sum()
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(files.len().div_ceil(threads).max(1))
            .map(|part| scope.spawn(move || parse(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parser thread"))
            .sum()
    })
}

fn render(c: &mut Criterion) {
    let snapshot = manifest_snapshot(1_000, 10);
    let render = ManifestRender::new();
    assert_eq!(parse_only(&render, &snapshot), 10_000);
    let (mut floor, mut subject) = (Timings::new(), Timings::new());
    let mut group = c.benchmark_group("render");
    group.sample_size(20);
    group.bench_function("floor: serde-saphyr parse only, 10k YAML documents", |b| {
        b.iter_custom(|iters| floor.time(iters, || parse_only(&render, black_box(&snapshot))))
    });
    group.bench_function("ManifestRender, 10k YAML documents", |b| {
        b.iter_custom(|iters| {
            subject.time(iters, || {
                render.render(black_box(&snapshot)).expect("renders")
            })
        })
    });
    group.finish();
    print_cpu_ratio("render/parse-only", &subject, &floor);
    if subject.is_empty() || floor.is_empty() {
        return; // filtered out
    }
    // The same pair again, alternating run by run, so a change in the
    // machine's load between the two criterion benchmarks cannot make the ratio.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        15
    } else {
        1
    };
    let (mut floor, mut subject) = (Timings::new(), Timings::new());
    interleaved(
        rounds,
        (&mut floor, || parse_only(&render, black_box(&snapshot))),
        (&mut subject, || {
            render.render(black_box(&snapshot)).expect("renders")
        }),
    );
    print_cpu_ratio("render/parse-only, interleaved runs", &subject, &floor);
}

criterion_group!(benches, plan, waves, render);
criterion_main!(benches);
