//! gitops-git against the `git` CLI on the same generated repository (10,000
//! files of ~200 bytes in nested directories), same machine, same run:
//! cold fetch + snapshot vs `git clone --depth 1`; a no-op poll vs `git fetch`
//! on an up-to-date clone, over `file://` and over local HTTP (`git
//! http-backend` behind the same small server the tests use); a one-file
//! commit then poll + snapshot vs `git fetch` + `git reset --hard`; and the
//! peak memory of a cold 10,000-file snapshot, measured in a child process.
//!
//! Run with `cargo bench -p gitops-benches --bench git`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use gitops_benches::{git, git_in, require_tool};
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

fn cold(c: &mut Criterion, fx: &Fixture, rt: &tokio::runtime::Runtime) {
    let url = fx.file_url();
    let mut group = c.benchmark_group("git cold fetch + snapshot (10k files, file URL)");
    group.sample_size(10);
    group.bench_function(
        "gitops-git poll + snapshot (bare cache, no worktree)",
        |b| {
            b.iter_batched(
                || fx.tempdir(),
                |dir| {
                    let src = source(&url, &dir.path().join("cache"));
                    assert_eq!(poll_and_snapshot(rt, &src), FILES);
                    dir
                },
                BatchSize::PerIteration,
            )
        },
    );
    group.bench_function("git clone --depth 1 (writes a worktree)", |b| {
        b.iter_batched(
            || fx.tempdir(),
            |dir| {
                git(dir.path(), &["clone", "-q", "--depth", "1", &url, "clone"]);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("floor: git clone --depth 1 --bare (no worktree)", |b| {
        b.iter_batched(
            || fx.tempdir(),
            |dir| {
                git(
                    dir.path(),
                    &["clone", "-q", "--bare", "--depth", "1", &url, "clone"],
                );
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn noop(c: &mut Criterion, fx: &Fixture, rt: &tokio::runtime::Runtime, http_url: &str) {
    let mut group = c.benchmark_group("git no-op poll (10k files)");
    group.sample_size(30);
    for (kind, url) in [("file://", fx.file_url()), ("HTTP", http_url.to_owned())] {
        let dir = fx.tempdir();
        let src = source(&url, &dir.path().join("cache"));
        poll_and_snapshot(rt, &src);
        group.bench_function(format!("gitops-git poll, {kind}"), |b| {
            b.iter(|| {
                let outcome = rt.block_on(src.poll_detailed()).expect("poll");
                assert!(!outcome.pack_received);
            })
        });
        git(dir.path(), &["clone", "-q", "--depth", "1", &url, "clone"]);
        let clone = dir.path().join("clone");
        group.bench_function(format!("git fetch on an up-to-date clone, {kind}"), |b| {
            b.iter(|| git(&clone, &["fetch", "-q", "origin"]))
        });
    }
    group.finish();
}

fn incremental(c: &mut Criterion, fx: &mut Fixture, rt: &tokio::runtime::Runtime) {
    let url = fx.file_url();
    let dir = fx.tempdir();
    let src = source(&url, &dir.path().join("cache"));
    poll_and_snapshot(rt, &src);
    git(dir.path(), &["clone", "-q", "--depth", "1", &url, "clone"]);
    let clone = dir.path().join("clone");
    let fx = std::cell::RefCell::new(fx);
    let mut group =
        c.benchmark_group("git one-file commit then poll + snapshot (10k files, file URL)");
    group.sample_size(20);
    group.bench_function("gitops-git poll + snapshot", |b| {
        b.iter_batched(
            || fx.borrow_mut().commit_one_file(),
            |()| {
                let outcome = rt.block_on(src.poll_detailed()).expect("poll");
                assert!(outcome.pack_received);
                let snap = rt
                    .block_on(src.snapshot(&outcome.revision, &Cancel::new()))
                    .expect("snapshot");
                assert_eq!(snap.len(), FILES);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("git fetch --depth 1 + reset --hard (worktree)", |b| {
        b.iter_batched(
            || fx.borrow_mut().commit_one_file(),
            |()| {
                git(&clone, &["fetch", "-q", "--depth", "1", "origin", "main"]);
                git(&clone, &["reset", "-q", "--hard", "FETCH_HEAD"]);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
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
    incremental(&mut c, &mut fx, &rt);
    c.final_summary();
}
