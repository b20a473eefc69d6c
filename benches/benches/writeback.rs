//! The Modify strategy end to end over local HTTP (`git http-backend` behind
//! the small server the tests use): one resource drifts in the target; the
//! engine's sync polls, observes, rewrites the manifest, commits and pushes.
//! Timed from the start of that sync to the commit being on the remote.
//! Floor in the same run: the `git` CLI committing a one-file change in a
//! clone and pushing it to the same server; the ratio to it is printed
//! after the group.
//!
//! Run with `cargo bench -p gitops-benches --bench writeback`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gitops_benches::{Timings, git, print_ratio, require_tool};
use gitops_core::testing::MemoryTarget;
use gitops_core::{Engine, ManifestRender, Render, ResourceId};
use gitops_git::{GitSource, GitWriteback, ReferencePolicy};
use serde_json::json;

#[allow(dead_code, unreachable_pub)]
#[path = "../../gitops-git/tests/support/http.rs"]
mod http;

/// Other manifests in the repository, so the snapshot is not trivial.
const OTHER_FILES: usize = 200;

fn rev_parse(dir: &Path, rev: &str) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["rev-parse", rev])
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare remote with `app.yaml` (write-back drift) and other manifests,
/// pushed from a work clone; returns the served root and the remote.
fn remote_repo(base: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = base.join("srv");
    let remote = root.join("repo.git");
    let work = base.join("work");
    std::fs::create_dir_all(work.join("apps")).expect("mkdir");
    std::fs::create_dir_all(&root).expect("mkdir");
    git(&root, &["init", "-q", "--bare", "-b", "main", "repo.git"]);
    git(&remote, &["config", "http.receivepack", "true"]);
    git(base, &["init", "-q", "-b", "main", "work"]);
    std::fs::write(
        work.join("app.yaml"),
        "kind: App\nmetadata: { name: web, annotations: { gitops.rs/drift: writeback } }\nspec: { replicas: 0 }\n",
    )
    .expect("write");
    for i in 0..OTHER_FILES {
        std::fs::write(
            work.join(format!("apps/app-{i}.yaml")),
            format!("kind: App\nmetadata: {{ name: app-{i} }}\nspec: {{ port: {i} }}\n"),
        )
        .expect("write");
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "main"],
    );
    (root, remote)
}

fn main() {
    require_tool("git", &["--version"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, remote) = remote_repo(dir.path());
    let server = http::HttpServer::start(&root, None, None);
    let url = server.url("repo.git");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let source = GitSource::builder(&url, ReferencePolicy::branch("main"))
        .cache_dir(dir.path().join("cache"))
        .build()
        .expect("source");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(Arc::new(source.clone()))
        .render(render.clone())
        .target(target.clone())
        .writeback(Arc::new(
            GitWriteback::builder(&source, render)
                .build()
                .expect("writeback"),
        ))
        .name("bench")
        .build()
        .expect("engine");
    let web: ResourceId = "App/web".parse().expect("id");
    rt.block_on(engine.sync_once()).expect("first deploy");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
        .configure_from_args();
    let mut group = c.benchmark_group("writeback");
    let mut replicas = 0;
    let mut commits = 0;
    let (mut ours, mut floor) = (Timings::new(), Timings::new());
    group.bench_function("drift to commit on the remote (HTTP, gitops)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: deploy the previous write-back (a no-op), then drift.
                rt.block_on(engine.sync_once()).expect("deploy");
                replicas += 1;
                target.edit(&web, json!({ "replicas": replicas }));
                let started = Instant::now();
                let report = rt.block_on(engine.sync_once()).expect("sync");
                total += started.elapsed();
                assert!(report.written_back.is_some(), "{report}");
                commits += 1;
            }
            ours.record(total, iters)
        });
    });
    let head = rev_parse(&remote, "main");
    assert_ne!(head, "", "the remote has the commits");

    let clone = dir.path().join("clone");
    git(
        dir.path(),
        &["clone", "-q", &url, clone.to_str().expect("utf8")],
    );
    let mut n = 0;
    group.bench_function("one-file commit + git push (HTTP, git CLI floor)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                std::fs::write(
                    clone.join("app.yaml"),
                    format!("kind: App\nmetadata: {{ name: web }}\nspec: {{ replicas: {n} }}\n"),
                )
                .expect("write");
                let started = Instant::now();
                git(&clone, &["commit", "-q", "-am", "scale"]);
                git(&clone, &["push", "-q", "origin", "main"]);
                total += started.elapsed();
            }
            floor.record(total, iters)
        });
    });
    group.finish();
    print_ratio("writeback/git commit + push", &ours, &floor);
    println!("writeback: {commits} write-back commits pushed; remote head {head}");
    c.final_summary();
}
