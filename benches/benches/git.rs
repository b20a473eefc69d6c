//! gitops-git against the `git` CLI on the same generated repository (10,000
//! files of ~200 bytes in nested directories), same machine, same run:
//! cold fetch + snapshot vs `git clone --depth 1`; a no-op poll vs `git fetch`
//! on an up-to-date clone, over `file://` and over local HTTP (`git
//! http-backend` behind the same small server the tests use); a one-file
//! commit then poll + snapshot vs `git fetch` + `git reset --hard`; a
//! snapshot read from a warm cache vs `git archive` of the same commit; and
//! the peak memory of a cold 10,000-file snapshot, measured in a child
//! process. Each group prints its ratio to its floor (`ratio ...: 0.42x`),
//! from the medians of the same run.
//!
//! Run with `cargo bench -p gitops-benches --bench git`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gitops_benches::{Timings, git, git_in, print_ratio, require_tool};
use gitops_core::{Cancel, Source};
use gitops_git::{GitSource, ReferencePolicy};

#[allow(dead_code, unreachable_pub)]
#[path = "../../gitops-git/tests/support/http.rs"]
mod http;

const FILES: usize = 10_000;

/// ~200 bytes of YAML for file `i`, with a `generation` to make commits differ.
fn content(i: usize, generation: usize) -> String {
    let mut s = format!(
        "kind: ConfigFile\nmetadata:\n  name: app-{i}\n  namespace: team-{}\nspec:\n  generation: {generation}\n  port: {}\n",
        i % 50,
        8000 + i % 1000
    );
    while s.len() < 200 {
        s.push_str("  # padding to about two hundred bytes\n");
    }
    s
}

fn path_of(i: usize) -> String {
    format!(
        "apps/group-{:02}/svc-{:03}/config-{i:05}.yaml",
        i / 1000,
        (i / 50) % 20
    )
}

/// A bare repository with one commit of `FILES` files, made with `git fast-import`.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    remote: PathBuf,
    scratch: PathBuf,
    generation: usize,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("srv");
        let remote = root.join("repo.git");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        git(&root, &["init", "-q", "--bare", "-b", "main", "repo.git"]);
        let mut stream = String::from(
            "commit refs/heads/main\ncommitter Bench <bench@example.com> 1700000000 +0000\ndata 7\ninitial\n",
        );
        for i in 0..FILES {
            let c = content(i, 0);
            stream.push_str(&format!(
                "M 100644 inline {}\ndata {}\n{c}\n",
                path_of(i),
                c.len()
            ));
        }
        git_in(
            &remote,
            &["fast-import", "--quiet"],
            Some(stream.as_bytes()),
        );
        Self {
            _dir: dir,
            root,
            remote,
            scratch,
            generation: 0,
        }
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// One more commit on main that changes one file.
    fn commit_one_file(&mut self) {
        self.generation += 1;
        let i = self.generation % FILES;
        let c = content(i, self.generation);
        let stream = format!(
            "commit refs/heads/main\ncommitter Bench <bench@example.com> {} +0000\ndata 6\nchange\nfrom refs/heads/main^0\nM 100644 inline {}\ndata {}\n{c}\n",
            1700000000 + self.generation,
            path_of(i),
            c.len()
        );
        git_in(
            &self.remote,
            &["fast-import", "--quiet"],
            Some(stream.as_bytes()),
        );
    }

    fn tempdir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(&self.scratch).expect("tempdir")
    }
}

fn source(url: &str, cache: &Path) -> GitSource {
    GitSource::builder(url, ReferencePolicy::branch("main"))
        .cache_dir(cache)
        .build()
        .expect("source")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn poll_and_snapshot(rt: &tokio::runtime::Runtime, src: &GitSource) -> usize {
    rt.block_on(async {
        let rev = src.poll().await.expect("poll");
        src.snapshot(&rev, &Cancel::new())
            .await
            .expect("snapshot")
            .len()
    })
}

/// Times `iters` runs of `routine`, each in a fresh scratch directory that is
/// created and removed outside the timing.
fn in_fresh_dirs(
    fx: &Fixture,
    timings: &mut Timings,
    iters: u64,
    mut routine: impl FnMut(&Path),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = fx.tempdir();
        let started = Instant::now();
        routine(dir.path());
        total += started.elapsed();
    }
    timings.record(total, iters)
}

fn cold(c: &mut Criterion, fx: &Fixture, rt: &tokio::runtime::Runtime) {
    let url = fx.file_url();
    let (mut ours, mut clone, mut floor) = (Timings::new(), Timings::new(), Timings::new());
    let mut group = c.benchmark_group("git cold fetch + snapshot (10k files, file URL)");
    group.sample_size(10);
    group.bench_function(
        "gitops-git poll + snapshot (bare cache, no worktree)",
        |b| {
            b.iter_custom(|iters| {
                in_fresh_dirs(fx, &mut ours, iters, |dir| {
                    let src = source(&url, &dir.join("cache"));
                    assert_eq!(poll_and_snapshot(rt, &src), FILES);
                })
            })
        },
    );
    group.bench_function("git clone --depth 1 (writes a worktree)", |b| {
        b.iter_custom(|iters| {
            in_fresh_dirs(fx, &mut clone, iters, |dir| {
                git(dir, &["clone", "-q", "--depth", "1", &url, "clone"]);
            })
        })
    });
    group.bench_function("floor: git clone --depth 1 --bare (no worktree)", |b| {
        b.iter_custom(|iters| {
            in_fresh_dirs(fx, &mut floor, iters, |dir| {
                git(
                    dir,
                    &["clone", "-q", "--bare", "--depth", "1", &url, "clone"],
                );
            })
        })
    });
    group.finish();
    print_ratio("git cold/bare clone", &ours, &floor);
    print_ratio("git cold/clone with worktree", &ours, &clone);
}

fn noop(c: &mut Criterion, fx: &Fixture, rt: &tokio::runtime::Runtime, http_url: &str) {
    let mut group = c.benchmark_group("git no-op poll (10k files)");
    group.sample_size(30);
    let mut ratios = Vec::new();
    for (kind, url) in [("file://", fx.file_url()), ("HTTP", http_url.to_owned())] {
        let (mut ours, mut floor) = (Timings::new(), Timings::new());
        let dir = fx.tempdir();
        let src = source(&url, &dir.path().join("cache"));
        poll_and_snapshot(rt, &src);
        group.bench_function(format!("gitops-git poll, {kind}"), |b| {
            b.iter_custom(|iters| {
                ours.time(iters, || {
                    let outcome = rt.block_on(src.poll_detailed()).expect("poll");
                    assert!(!outcome.pack_received);
                })
            })
        });
        git(dir.path(), &["clone", "-q", "--depth", "1", &url, "clone"]);
        let clone = dir.path().join("clone");
        group.bench_function(format!("git fetch on an up-to-date clone, {kind}"), |b| {
            b.iter_custom(|iters| floor.time(iters, || git(&clone, &["fetch", "-q", "origin"])))
        });
        ratios.push((format!("git no-op poll/git fetch, {kind}"), ours, floor));
    }
    group.finish();
    for (name, ours, floor) in &ratios {
        print_ratio(name, ours, floor);
    }
}

/// Times `iters` runs of `routine`, each after a one-file commit made
/// outside the timing.
fn after_commits(
    fx: &std::cell::RefCell<&mut Fixture>,
    timings: &mut Timings,
    iters: u64,
    mut routine: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        fx.borrow_mut().commit_one_file();
        let started = Instant::now();
        routine();
        total += started.elapsed();
    }
    timings.record(total, iters)
}

fn incremental(c: &mut Criterion, fx: &mut Fixture, rt: &tokio::runtime::Runtime) {
    let url = fx.file_url();
    let dir = fx.tempdir();
    let src = source(&url, &dir.path().join("cache"));
    poll_and_snapshot(rt, &src);
    git(dir.path(), &["clone", "-q", "--depth", "1", &url, "clone"]);
    let clone = dir.path().join("clone");
    let fx = std::cell::RefCell::new(fx);
    let (mut ours, mut floor) = (Timings::new(), Timings::new());
    let mut group =
        c.benchmark_group("git one-file commit then poll + snapshot (10k files, file URL)");
    group.sample_size(20);
    group.bench_function("gitops-git poll + snapshot", |b| {
        b.iter_custom(|iters| {
            after_commits(&fx, &mut ours, iters, || {
                let outcome = rt.block_on(src.poll_detailed()).expect("poll");
                assert!(outcome.pack_received);
                let snap = rt
                    .block_on(src.snapshot(&outcome.revision, &Cancel::new()))
                    .expect("snapshot");
                assert_eq!(snap.len(), FILES);
            })
        })
    });
    group.bench_function("git fetch --depth 1 + reset --hard (worktree)", |b| {
        b.iter_custom(|iters| {
            after_commits(&fx, &mut floor, iters, || {
                git(&clone, &["fetch", "-q", "--depth", "1", "origin", "main"]);
                git(&clone, &["reset", "-q", "--hard", "FETCH_HEAD"]);
            })
        })
    });
    group.finish();
    print_ratio("git one-file commit/git fetch + reset", &ours, &floor);
}

/// Reading every file of one commit from a cache that already holds it: a
/// fresh source each time (so no blob is shared from a previous snapshot)
/// vs `git archive` of the same commit from the same bare repository.
fn snapshot_only(c: &mut Criterion, fx: &Fixture, rt: &tokio::runtime::Runtime) {
    let dir = fx.tempdir();
    let cache = dir.path().join("cache");
    let url = fx.file_url();
    poll_and_snapshot(rt, &source(&url, &cache));
    let commit = source(&url, &cache)
        .cached_revision()
        .expect("the cache holds main")
        .id;
    let (mut ours, mut floor) = (Timings::new(), Timings::new());
    let mut group = c.benchmark_group("git snapshot from a warm cache (10k files)");
    group.sample_size(20);
    group.bench_function("gitops-git snapshot (fresh source)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let src = source(&url, &cache);
                let rev = src.cached_revision().expect("the cache holds main");
                let started = Instant::now();
                let snap = rt
                    .block_on(src.snapshot(&rev, &Cancel::new()))
                    .expect("snapshot");
                total += started.elapsed();
                assert_eq!(snap.len(), FILES);
            }
            ours.record(total, iters)
        })
    });
    group.bench_function("floor: git archive of the same commit", |b| {
        b.iter_custom(|iters| {
            floor.time(iters, || {
                let out = Command::new("git")
                    .arg("--git-dir")
                    .arg(&cache)
                    .args(["archive", "--format=tar", &commit])
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .expect("git archive");
                assert!(out.status.success() && out.stdout.len() > FILES * 200);
            })
        })
    });
    group.finish();
    print_ratio("git snapshot/git archive", &ours, &floor);
}

/// Peak resident memory (VmHWM) of this process, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

const MEMORY_CHILD: &str = "GITOPS_GIT_BENCH_MEMORY_URL";

/// In a fresh child process: one cold poll + snapshot, then its peak RSS.
fn memory(fx: &Fixture) {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .env(MEMORY_CHILD, fx.file_url())
        .output()
        .expect("memory child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn memory_child(url: &str) {
    let before = peak_rss().unwrap_or(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let src = source(url, &dir.path().join("cache"));
    let files = rt.block_on(async {
        let rev = src.poll().await.expect("poll");
        let snap = src.snapshot(&rev, &Cancel::new()).await.expect("snapshot");
        let bytes: usize = snap.files().values().map(|f| f.data.len()).sum();
        (snap.len(), bytes)
    });
    let after = peak_rss().unwrap_or(0);
    println!(
        "git memory: cold poll + snapshot of {} files ({} bytes of content): peak RSS {:.1} MB (process at start {:.1} MB)",
        files.0,
        files.1,
        after as f64 / 1e6,
        before as f64 / 1e6
    );
}

fn main() {
    if let Ok(url) = std::env::var(MEMORY_CHILD) {
        memory_child(&url);
        return;
    }
    require_tool("git", &["--version"]);
    let mut fx = Fixture::new();
    let rt = runtime();
    let server = http::HttpServer::start(&fx.root, None, None);
    let http_url = server.url("repo.git");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    memory(&fx);
    cold(&mut c, &fx, &rt);
    noop(&mut c, &fx, &rt, &http_url);
    snapshot_only(&mut c, &fx, &rt);
    incremental(&mut c, &mut fx, &rt);
    c.final_summary();
}
