//! gitops-targets benchmarks: `FsTarget` on 10,000 files of ~200 bytes in
//! 1,000 directories, with the floor (`rsync -a`, `rsync -a --dry-run` of the
//! same tree on the same filesystem) measured in the same run; the group
//! prints each ratio to its floor (`ratio fs first apply/rsync -a: 0.67x`).
//!
//! Run with `cargo bench -p gitops-benches --bench targets`; the goals are in
//! issue 4 and the numbers in the crate docs of `gitops-targets`.
//! `GITOPS_BENCH_DIR` chooses where the trees are written (default: the
//! system temporary directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt as _;
use gitops_benches::{Timings, print_ratio};
use gitops_core::files::file_spec;
use gitops_core::{Resource, ResourceId, Target};
use gitops_targets::{Durability, FsOptions, FsTarget};

/// Files and directories of the tree: 10,000 in 1,000 under `cargo bench`,
/// a tenth of that when `cargo test --all-targets` runs each benchmark once.
fn sizes() -> (usize, usize) {
    static SIZES: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *SIZES.get_or_init(|| {
        if std::env::args().any(|a| a == "--bench") {
            (10_000, 1_000)
        } else {
            (1_000, 100)
        }
    })
}
/// What the engine applies at once by default (`EngineConfig::concurrency`).
const CONCURRENCY: usize = 8;

fn content(i: usize, generation: usize) -> String {
    // ~200 bytes, like a small config file.
    let mut s = format!("# file {i}, generation {generation}\nname = \"service-{i}\"\n");
    while s.len() < 200 {
        s.push_str("option = value\n");
    }
    s
}

fn path(i: usize) -> String {
    format!("app{:03}/conf{:05}.conf", i % sizes().1, i)
}

fn resources(generation: usize) -> Vec<Resource> {
    (0..sizes().0)
        .map(|i| {
            let p = path(i);
            let id = ResourceId::new("File", p.as_str()).expect("valid id");
            Resource::new(id, file_spec(&p, content(i, generation).as_bytes(), false))
        })
        .collect()
}

/// The same tree as plain files: the source rsync copies from.
fn write_tree(dir: &Path) {
    for i in 0..sizes().0 {
        let p = dir.join(path(i));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content(i, 0)).expect("write");
    }
}

fn rsync(args: &[&str], src: &Path, dest: &Path) -> Duration {
    let mut source = src.as_os_str().to_owned();
    source.push("/");
    let started = Instant::now();
    let status = Command::new("rsync")
        .args(args)
        .arg(&source)
        .arg(dest)
        .status()
        .expect("rsync must be installed for the floor (apt-get install rsync)");
    let elapsed = started.elapsed();
    assert!(status.success(), "rsync {args:?} failed: {status}");
    elapsed
}

struct Bench {
    base: PathBuf,
    src: PathBuf,
    desired: Vec<Resource>,
    ids: Vec<ResourceId>,
    runtime: tokio::runtime::Runtime,
    fresh: usize,
}

impl Bench {
    fn new() -> Self {
        let parent = std::env::var_os("GITOPS_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let base = parent.join(format!("gitops-targets-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        write_tree(&src);
        let desired = resources(0);
        let ids = desired.iter().map(|r| r.id.clone()).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            base,
            src,
            desired,
            ids,
            runtime,
            fresh: 0,
        }
    }

    /// A new, empty destination directory on the same filesystem.
    fn empty_dir(&mut self) -> PathBuf {
        self.fresh += 1;
        let dir = self.base.join(format!("dest{}", self.fresh));
        std::fs::create_dir_all(&dir).expect("dest");
        dir
    }

    fn remove(&self, dir: &Path) {
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// Applies every desired file with the engine's concurrency.
    fn apply_all(&self, target: &FsTarget, desired: &[Resource]) {
        self.runtime.block_on(async {
            let results: Vec<_> = futures::stream::iter(desired.iter().map(|r| target.apply(r)))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            assert!(results.iter().all(Result::is_ok), "every apply succeeds");
        });
    }

    /// The wave's health check (one `syncfs` with `Durability::PerWave`).
    fn health_all(&self, target: &FsTarget) {
        self.runtime.block_on(async {
            let results: Vec<_> =
                futures::stream::iter(self.ids.iter().map(|id| target.health(id)))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            assert!(results.iter().all(Result::is_ok), "health");
        });
    }

    /// Observes everything, diffs, re-applies what drifted; returns how many
    /// and how long the observe + diff part took.
    fn repair(&self, target: &FsTarget) -> (usize, Duration) {
        self.runtime.block_on(async {
            let started = Instant::now();
            let observed = target.observe_many(&self.ids).await;
            let drifted: Vec<&Resource> = self
                .desired
                .iter()
                .zip(observed)
                .filter(|(r, o)| match o.as_ref().expect("observe") {
                    None => true,
                    Some(o) => target.differs(r, o).is_some(),
                })
                .map(|(r, _)| r)
                .collect();
            let detected = started.elapsed();
            for r in &drifted {
                target.apply(r).await.expect("repair");
            }
            (drifted.len(), detected)
        })
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The timings a ratio is printed from, each FsTarget case beside its floor.
#[derive(Default)]
struct Ratios {
    rsync: Timings,
    first_apply: Timings,
    rsync_dry_run: Timings,
    observe: Timings,
    rsync_repair: Timings,
    repair: Timings,
}

fn targets(c: &mut Criterion) {
    let mut bench = Bench::new();
    let mut ratios = Ratios::default();
    let mut group = c.benchmark_group("fs 10k files");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    first_apply(&mut group, &mut bench, &mut ratios);
    steady_state(&mut group, &mut bench, &mut ratios);
    group.finish();
    print_ratio(
        "fs first apply/rsync -a",
        &ratios.first_apply,
        &ratios.rsync,
    );
    print_ratio(
        "fs no-op observe/rsync -a --dry-run",
        &ratios.observe,
        &ratios.rsync_dry_run,
    );
    print_ratio(
        "fs one-file repair/rsync -a",
        &ratios.repair,
        &ratios.rsync_repair,
    );
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Deploying every file into an empty directory, beside rsync.
fn first_apply(group: &mut Group<'_>, bench: &mut Bench, ratios: &mut Ratios) {
    group.bench_function("floor: rsync -a into an empty dir", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dest = bench.empty_dir();
                total += rsync(&["-a"], &bench.src, &dest);
                bench.remove(&dest);
            }
            ratios.rsync.record(total, iters)
        })
    });
    for (label, durability, health) in [
        (
            "first apply (default: PerWave, before the wave's sync)",
            Durability::PerWave,
            false,
        ),
        (
            "first apply + wave health (one syncfs)",
            Durability::PerWave,
            true,
        ),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dest = bench.empty_dir();
                    let options = FsOptions::default().durability(durability);
                    let started = Instant::now();
                    let target = FsTarget::open_with(&dest, options).expect("open");
                    bench.apply_all(&target, &bench.desired);
                    if health {
                        bench.health_all(&target);
                    }
                    total += started.elapsed();
                    bench.remove(&dest);
                }
                if health {
                    total
                } else {
                    ratios.first_apply.record(total, iters)
                }
            })
        });
    }
}

/// A synced tree: the no-op check and one changed file, beside rsync.
fn steady_state(group: &mut Group<'_>, bench: &mut Bench, ratios: &mut Ratios) {
    let synced = bench.empty_dir();
    rsync(&["-a"], &bench.src, &synced);
    let target = FsTarget::open(&synced).expect("open");
    assert_eq!(
        bench.repair(&target).0,
        0,
        "rsync and FsTarget write the same tree"
    );

    group.bench_function("floor: rsync -a --dry-run on the synced tree", |b| {
        b.iter_custom(|iters| {
            let total = (0..iters)
                .map(|_| rsync(&["-a", "--dry-run"], &bench.src, &synced))
                .sum();
            ratios.rsync_dry_run.record(total, iters)
        })
    });
    group.bench_function(
        "reference: open+fstat+read+close of every file, 2 threads",
        |b| {
            let paths: Vec<PathBuf> = (0..sizes().0).map(|i| synced.join(path(i))).collect();
            b.iter(|| {
                std::thread::scope(|scope| {
                    for half in paths.chunks(sizes().0 / 2) {
                        scope.spawn(move || {
                            for p in half {
                                let mut f = std::fs::File::open(p).expect("open");
                                let _ = f.metadata().expect("fstat");
                                let mut buf = Vec::with_capacity(256);
                                std::io::Read::read_to_end(&mut f, &mut buf).expect("read");
                            }
                        });
                    }
                })
            })
        },
    );
    group.bench_function("no-op observe_many of all files", |b| {
        b.iter_custom(|iters| {
            ratios.observe.time(iters, || {
                let observed = bench.runtime.block_on(target.observe_many(&bench.ids));
                assert_eq!(observed.len(), sizes().0);
            })
        })
    });
    one_changed_file(group, bench, (&synced, &target), ratios);
}

/// One file drifted in a synced tree: FsTarget observes all, diffs and
/// repairs it; the floor is `rsync -a` finding and copying it back.
fn one_changed_file(
    group: &mut Group<'_>,
    bench: &mut Bench,
    (synced, target): (&Path, &FsTarget),
    ratios: &mut Ratios,
) {
    let mirror = bench.empty_dir();
    rsync(&["-a"], &bench.src, &mirror);
    let mut round = 0;
    group.bench_function("floor: rsync -a repairing one changed file", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let victim = mirror.join(path(round * 7919 % sizes().0));
                std::fs::write(&victim, format!("drift {round}\n")).expect("drift");
                total += rsync(&["-a"], &bench.src, &mirror);
            }
            ratios.rsync_repair.record(total, iters)
        })
    });
    let mut detect_times = Vec::new();
    group.bench_function("one changed file: observe all, diff, repair", |b| {
        let mut round = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let victim = synced.join(path(round * 7919 % sizes().0));
                std::fs::write(&victim, format!("drift {round}\n")).expect("drift");
                let started = Instant::now();
                let (repaired, detected) = bench.repair(target);
                total += started.elapsed();
                detect_times.push(detected);
                assert_eq!(repaired, 1);
            }
            ratios.repair.record(total, iters)
        })
    });
    detect_times.sort();
    if let Some(median) = detect_times.get(detect_times.len() / 2) {
        println!(
            "one changed file: observe + diff part, median of {} runs: {median:?} (the rest is the one apply)",
            detect_times.len()
        );
    }
}

/// The durability trade-off on the first 1,000 files (per-file `fsync` is
/// too slow to sample 10,000 files ten times).
fn durability(c: &mut Criterion) {
    let subset_len = sizes().0 / 10;
    let mut bench = Bench::new();
    let subset: Vec<Resource> = bench.desired[..subset_len].to_vec();
    let ids: Vec<ResourceId> = bench.ids[..subset_len].to_vec();
    let mut group = c.benchmark_group("fs durability, 1,000 files");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (label, durability) in [
        ("None: apply", Durability::None),
        (
            "PerWave (default): apply + wave health (one syncfs)",
            Durability::PerWave,
        ),
        (
            "PerFile: apply (fsync file + directory each)",
            Durability::PerFile,
        ),
    ] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dest = bench.empty_dir();
                    let options = FsOptions::default().durability(durability);
                    let started = Instant::now();
                    let target = FsTarget::open_with(&dest, options).expect("open");
                    bench.apply_all(&target, &subset);
                    if durability == Durability::PerWave {
                        bench.runtime.block_on(async {
                            for id in &ids {
                                target.health(id).await.expect("health");
                            }
                        });
                    }
                    total += started.elapsed();
                    bench.remove(&dest);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, targets, durability);
criterion_main!(benches);
