//! `GitWriteback` against real repositories: a local path (compare-and-swap
//! of the ref) and `git http-backend` behind a local HTTP server (`git push`).

mod support;

use std::sync::Arc;

use gitops_core::testing::MemoryTarget;
use gitops_core::{
    Drifted, Engine, FilesRender, ManifestRender, Observed, Render, Revision, Source, Writeback,
    WritebackError, WritebackRequest, WrittenBack,
};
use gitops_git::{
    AllowedSigners, Credentials, GitSource, GitWriteback, GitWritebackBuilder, Identity,
    ReferencePolicy, VerifyMode,
};
use serde_json::json;
use support::http::HttpServer;
use support::{Fixture, Logs, git, runtime, ssh_keygen};

const APP: &str = "\
# web tier: scaled by hand in emergencies
kind: App
metadata: { name: web, annotations: { gitops.rs/drift: writeback } }
spec: { replicas: 2 }   # two is plenty
---
# the database: never touched
kind: App
metadata:   { name: db }
spec:  { size: 10 }
---
kind: App
metadata: { name: cache }
spec: { memory: 64 }
";

fn allow_push(fx: &Fixture) {
    git(&fx.remote, &["config", "http.receivepack", "true"]);
}

fn source(fx: &Fixture, url: String, cache: &str) -> GitSource {
    GitSource::builder(url, ReferencePolicy::branch("main"))
        .cache_dir(fx.cache(cache))
        .build()
        .expect("source")
}

/// A repository served over HTTP (pushes allowed), its source, the
/// manifest renderer and a write-back to its `main`.
struct Http {
    fx: Fixture,
    _server: HttpServer,
    rt: tokio::runtime::Runtime,
    src: GitSource,
    render: Arc<dyn Render>,
    writeback: GitWriteback,
}

impl Http {
    fn new(files: &[(&str, &str)], cache: &str) -> Self {
        let fx = Fixture::new();
        fx.commit(files, "initial");
        fx.push();
        allow_push(&fx);
        let server = HttpServer::start(&fx.root, None, None);
        let src = source(&fx, server.url("repo.git"), cache);
        let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
        let writeback = GitWriteback::builder(&src, render.clone())
            .build()
            .expect("writeback");
        Self {
            fx,
            _server: server,
            rt: runtime(),
            src,
            render,
            writeback,
        }
    }
}

/// A repository reached by its path (pushed from the fixture's work
/// repository first), its source, the renderer and a write-back to `main`
/// configured by `configure`.
struct Local {
    rt: tokio::runtime::Runtime,
    src: GitSource,
    render: Arc<dyn Render>,
    writeback: GitWriteback,
}

impl Local {
    fn new(
        fx: &Fixture,
        render: Arc<dyn Render>,
        cache: &str,
        configure: impl FnOnce(GitWritebackBuilder) -> GitWritebackBuilder,
    ) -> Self {
        fx.push();
        let src = source(fx, fx.url_path(), cache);
        let writeback = configure(GitWriteback::builder(&src, render.clone()))
            .build()
            .expect("writeback");
        Self {
            rt: runtime(),
            src,
            render,
            writeback,
        }
    }
}

/// The drifted resource `id` of `revision`, as the target now holds `spec`.
async fn drifted(
    source: &GitSource,
    render: &dyn Render,
    revision: &Revision,
    id: &str,
    spec: Option<serde_json::Value>,
) -> Drifted {
    let snapshot = source.snapshot(revision).await.expect("snapshot");
    let desired = render.render(&snapshot).expect("render");
    let resource = desired
        .resources()
        .iter()
        .find(|r| r.id.to_string() == id)
        .unwrap_or_else(|| panic!("{id} in the desired state"))
        .clone();
    Drifted {
        resource,
        observed: spec.map(Observed::new),
    }
}

async fn write(
    writeback: &GitWriteback,
    revision: &Revision,
    drifted: &[Drifted],
) -> Result<Option<WrittenBack>, WritebackError> {
    writeback
        .write_back(WritebackRequest {
            engine: "shop",
            revision,
            drifted,
        })
        .await
}

/// A fresh clone of the remote, read with the git CLI.
fn clone_file(fx: &Fixture, branch: &str, path: &str) -> String {
    let dir = fx.dir.path().join(format!("clone-{}", fastrand_suffix()));
    git(
        fx.dir.path(),
        &[
            "clone",
            "-q",
            "-b",
            branch,
            fx.remote.to_str().expect("utf8"),
            dir.to_str().expect("utf8"),
        ],
    );
    std::fs::read_to_string(dir.join(path)).expect("file in the clone")
}

fn fastrand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

fn remote_head(fx: &Fixture, branch: &str) -> String {
    git(&fx.remote, &["rev-parse", &format!("refs/heads/{branch}")])
}

#[test]
fn a_drifted_file_is_written_back_to_a_local_repository_and_visible_in_a_fresh_clone() {
    let fx = Fixture::new();
    fx.commit(
        &[
            ("etc/app.conf", "port = 80\n"),
            ("etc/other.conf", "x = 1\n"),
        ],
        "initial",
    );
    let Local {
        rt,
        src,
        render,
        writeback,
    } = Local::new(&fx, Arc::new(FilesRender::new()), "local", |b| {
        b.author(Identity::new("Ops Bot", "ops@example.com"))
    });
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "File//etc/app.conf",
            Some(json!({"path": "etc/app.conf", "content": "port = 8080\n", "encoding": "utf-8", "mode": "0755"})),
        )
        .await;
        let written = write(&writeback, &deployed, &[d])
            .await
            .expect("write-back")
            .expect("a commit");
        assert!(written.is_release);
        assert_eq!(written.published_to, "refs/heads/main");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);
        assert_eq!(
            git(&fx.remote, &["rev-parse", &format!("{}^", written.revision.id)]),
            deployed.id,
            "the deployed revision is the parent"
        );
        let message = git(&fx.remote, &["log", "-1", "--format=%an <%ae>%n%B", "main"]);
        assert!(message.starts_with("Ops Bot <ops@example.com>"), "{message}");
        assert!(message.contains("shop"), "{message}");
        assert!(message.contains("File//etc/app.conf"), "{message}");
        assert!(message.contains(&deployed.id), "{message}");
        // The engine's next poll sees its own commit.
        assert_eq!(src.poll().await.expect("poll").id, written.revision.id);
    });
    assert_eq!(clone_file(&fx, "main", "etc/app.conf"), "port = 8080\n");
    assert_eq!(clone_file(&fx, "main", "etc/other.conf"), "x = 1\n");
    let mode = git(&fx.remote, &["ls-tree", "main", "etc/app.conf"]);
    assert!(mode.starts_with("100755"), "mode written back: {mode}");
}

#[test]
fn only_the_drifted_document_of_a_multi_document_yaml_changes_over_http() {
    let fx = Fixture::new();
    fx.commit(&[("deploy/app.yaml", APP)], "initial");
    fx.push();
    allow_push(&fx);
    let server = HttpServer::start(&fx.root, None, None);
    let rt = runtime();
    let src = GitSource::builder(server.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("http"))
        .path("deploy")
        .build()
        .expect("source");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let writeback = GitWriteback::builder(&src, render.clone())
        .build()
        .expect("writeback");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let written = write(&writeback, &deployed, &[d])
            .await
            .expect("write-back")
            .expect("a commit");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);
        // Deploying the commit renders exactly the target's state.
        let next = src.poll().await.expect("poll");
        assert_eq!(next.id, written.revision.id);
        let snapshot = src.snapshot(&next).await.expect("snapshot");
        let desired = render.render(&snapshot).expect("render");
        assert_eq!(desired.resources().len(), 3);
        let web = desired
            .resources()
            .iter()
            .find(|r| r.id.to_string() == "App/web")
            .expect("web");
        assert_eq!(web.spec, json!({"replicas": 5}));
        assert_eq!(web.policy.drift, gitops_core::DriftPolicy::Writeback);
    });
    let text = clone_file(&fx, "main", "deploy/app.yaml");
    let rest = &APP[APP.find("---\n# the database").expect("second document")..];
    assert!(
        text.ends_with(rest),
        "the other documents are byte-identical:\n{text}"
    );
    assert!(
        text.starts_with("# web tier: scaled by hand in emergencies\n"),
        "{text}"
    );
    assert!(text.contains("replicas: 5"), "{text}");
    assert_eq!(text.matches("---\n").count(), 2, "{text}");
}

#[test]
fn an_upstream_change_to_the_same_file_is_a_conflict_and_nothing_is_overwritten() {
    let Http {
        fx,
        _server,
        rt,
        src,
        render,
        writeback,
    } = Http::new(&[("app.yaml", APP)], "conflict");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        // Someone else edits the same file (another document) and pushes first.
        let upstream = fx.commit(
            &[("app.yaml", &APP.replace("memory: 64", "memory: 128"))],
            "bigger cache",
        );
        fx.push();
        let err = write(&writeback, &deployed, &[d])
            .await
            .expect_err("a conflict");
        match &err {
            WritebackError::Conflict { path, message } => {
                assert_eq!(path, "app.yaml");
                assert!(message.contains("nothing was overwritten"), "{message}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(remote_head(&fx, "main"), upstream, "upstream kept");
    });
}

#[test]
fn an_upstream_change_to_another_file_is_rebased_and_pushed() {
    let Http {
        fx,
        _server,
        rt,
        src,
        render,
        writeback,
    } = Http::new(
        &[
            ("app.yaml", APP),
            (
                "other.yaml",
                "kind: App\nmetadata: { name: other }\nspec: { v: 1 }\n",
            ),
        ],
        "rebase",
    );
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let upstream = fx.commit(
            &[(
                "other.yaml",
                "kind: App\nmetadata: { name: other }\nspec: { v: 2 }\n",
            )],
            "other v2",
        );
        fx.push();
        let written = write(&writeback, &deployed, &[d])
            .await
            .expect("rebased")
            .expect("a commit");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);
        assert_eq!(
            git(
                &fx.remote,
                &["rev-parse", &format!("{}^", written.revision.id)]
            ),
            upstream,
            "rebuilt on the new head"
        );
    });
    assert!(clone_file(&fx, "main", "app.yaml").contains("replicas: 5"));
    assert!(clone_file(&fx, "main", "other.yaml").contains("v: 2"));
}

#[test]
fn a_push_rejected_by_the_server_is_a_clear_transient_error_and_is_retried() {
    let Http {
        fx,
        _server,
        rt,
        src,
        render,
        writeback,
    } = Http::new(&[("app.yaml", APP)], "rejected");
    // The server refuses pushes while the marker exists.
    let marker = fx.dir.path().join("frozen");
    std::fs::write(&marker, "").expect("marker");
    let hook = fx.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'main is frozen for the release' >&2; exit 1; fi\n",
            marker.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let err = write(&writeback, &deployed, std::slice::from_ref(&d))
            .await
            .expect_err("refused");
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("pre-receive hook declined"), "{text}");
        assert_eq!(remote_head(&fx, "main"), deployed.id, "nothing pushed");
        std::fs::remove_file(&marker).expect("unfreeze");
        let written = write(&writeback, &deployed, &[d])
            .await
            .expect("retried")
            .expect("a commit");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);
    });
}

#[test]
fn credentials_never_appear_in_errors_debug_output_or_logs() {
    const SECRET: &str = "pa55-w0rd-never-shown";
    let logs = Logs::capture();
    let fx = Fixture::new();
    fx.commit(&[("app.yaml", APP)], "initial");
    fx.push();
    allow_push(&fx);
    let server = HttpServer::start(&fx.root, Some(("deployer", SECRET)), None);
    let rt = runtime();
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let src = GitSource::builder(server.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("auth"))
        .credentials(Credentials::basic("deployer", SECRET))
        .build()
        .expect("source");
    let writeback = GitWriteback::builder(&src, render.clone())
        .build()
        .expect("writeback");
    assert!(!format!("{writeback:?}").contains(SECRET));
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let written = write(&writeback, &deployed, std::slice::from_ref(&d))
            .await
            .expect("pushed with credentials")
            .expect("a commit");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);

        // The same write-back with a wrong secret in the URL: refused, not printed.
        let wrong = format!("wrong-{SECRET}");
        let bad_src = GitSource::builder(
            format!("http://deployer:{wrong}@127.0.0.1:{}/repo.git", server.port),
            ReferencePolicy::branch("main"),
        )
        .cache_dir(fx.cache("auth"))
        .build()
        .expect("source");
        let bad = GitWriteback::builder(&bad_src, render.clone())
            .build()
            .expect("writeback");
        let d2 = drifted(
            &src,
            &*render,
            &written.revision,
            "App/web",
            Some(json!({"replicas": 6})),
        )
        .await;
        let err = write(&bad, &written.revision, &[d2])
            .await
            .expect_err("refused");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&wrong), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            !err.is_transient(),
            "authentication is not transient: {text}"
        );
    });
    let logs = logs.text();
    assert!(
        logs.contains("drift written back"),
        "the logs were captured"
    );
    assert!(!logs.contains(SECRET), "a secret in the logs:\n{logs}");
}

#[test]
fn a_local_repository_is_updated_by_compare_and_swap_and_rebased_or_refused() {
    let fx = Fixture::new();
    fx.commit(
        &[
            ("app.yaml", APP),
            (
                "other.yaml",
                "kind: App\nmetadata: { name: other }\nspec: { v: 1 }\n",
            ),
        ],
        "initial",
    );
    let Local {
        rt,
        src,
        render,
        writeback,
    } = Local::new(&fx, Arc::new(ManifestRender::new()), "local-cas", |b| b);
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        // Another file moves upstream: rebuilt on it.
        let upstream = fx.commit(
            &[(
                "other.yaml",
                "kind: App\nmetadata: { name: other }\nspec: { v: 2 }\n",
            )],
            "other v2",
        );
        fx.push();
        let written = write(&writeback, &deployed, std::slice::from_ref(&d))
            .await
            .expect("rebased")
            .expect("a commit");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);
        assert_eq!(
            git(
                &fx.remote,
                &["rev-parse", &format!("{}^", written.revision.id)]
            ),
            upstream
        );
        // The same file moves upstream: refused, nothing overwritten.
        let deployed = src.poll().await.expect("poll");
        assert_eq!(deployed.id, written.revision.id);
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 6})),
        )
        .await;
        git(
            &fx.work,
            &["pull", "-q", fx.remote.to_str().expect("utf8"), "main"],
        );
        let upstream = fx.commit(
            &[("app.yaml", &APP.replace("replicas: 2", "replicas: 3"))],
            "web 3",
        );
        fx.push();
        let err = write(&writeback, &deployed, &[d])
            .await
            .expect_err("conflict");
        assert!(
            matches!(err, WritebackError::Conflict { ref path, .. } if path == "app.yaml"),
            "{err:?}"
        );
        assert_eq!(remote_head(&fx, "main"), upstream);
    });
}

#[test]
fn a_review_branch_gets_the_commit_and_the_release_branch_stays() {
    let fx = Fixture::new();
    fx.commit(&[("app.yaml", APP)], "initial");
    fx.push();
    allow_push(&fx);
    let server = HttpServer::start(&fx.root, None, None);
    let rt = runtime();
    let src = source(&fx, server.url("repo.git"), "review");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let writeback = GitWriteback::builder(&src, render.clone())
        .review_branch("gitops/shop")
        .build()
        .expect("writeback");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        for replicas in [5, 6] {
            let d = drifted(
                &src,
                &*render,
                &deployed,
                "App/web",
                Some(json!({ "replicas": replicas })),
            )
            .await;
            let written = write(&writeback, &deployed, &[d])
                .await
                .expect("pushed")
                .expect("a commit");
            assert!(!written.is_release);
            assert_eq!(written.published_to, "refs/heads/gitops/shop");
            assert_eq!(remote_head(&fx, "gitops/shop"), written.revision.id);
            assert_eq!(
                git(&fx.remote, &["rev-parse", "gitops/shop^"]),
                deployed.id,
                "one commit on top of the deployed revision, replaced each time"
            );
        }
        assert_eq!(
            remote_head(&fx, "main"),
            deployed.id,
            "release branch untouched"
        );
    });
    assert!(clone_file(&fx, "gitops/shop", "app.yaml").contains("replicas: 6"));
}

#[test]
fn signed_write_back_commits_pass_the_sources_verification() {
    let fx = Fixture::new();
    let (key, public) = ssh_keygen(fx.dir.path(), "engine");
    support::use_signing_key(&fx.work, &key);
    std::fs::write(fx.work.join("app.yaml"), APP).expect("write");
    git(&fx.work, &["add", "-A"]);
    git(&fx.work, &["commit", "-q", "-S", "-m", "signed initial"]);
    fx.push();
    let signers =
        AllowedSigners::parse(&format!("engine@example.com {public}\n")).expect("signers");
    let rt = runtime();
    let src = GitSource::builder(fx.url_path(), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("signed"))
        .verify(VerifyMode::Head, signers)
        .build()
        .expect("source");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let writeback = GitWriteback::builder(&src, render.clone())
        .signing_key(&key)
        .build()
        .expect("writeback");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let written = write(&writeback, &deployed, &[d])
            .await
            .expect("write-back")
            .expect("a commit");
        let next = src.poll().await.expect("the signed commit verifies");
        assert_eq!(next.id, written.revision.id);
        src.snapshot(&next).await.expect("snapshot verifies too");
    });
    let verified = std::process::Command::new("git")
        .current_dir(&fx.remote)
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("gpg.ssh.allowedSignersFile={}", {
            let path = fx.dir.path().join("allowed");
            std::fs::write(&path, format!("engine@example.com {public}\n")).expect("write");
            path.display().to_string()
        }))
        .args(["verify-commit", "main"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git verify-commit");
    assert!(
        verified.status.success(),
        "git itself verifies the signature: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[test]
fn the_engine_writes_back_then_deploys_its_own_commit_as_a_no_op() {
    let fx = Fixture::new();
    fx.commit(&[("app.yaml", APP)], "initial");
    fx.push();
    allow_push(&fx);
    let server = HttpServer::start(&fx.root, None, None);
    let rt = runtime();
    let src = source(&fx, server.url("repo.git"), "engine");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(Arc::new(src.clone()))
        .render(render.clone())
        .target(target.clone())
        .writeback(Arc::new(
            GitWriteback::builder(&src, render.clone())
                .build()
                .expect("writeback"),
        ))
        .name("shop")
        .build()
        .expect("engine");
    let web: gitops_core::ResourceId = "App/web".parse().expect("id");
    rt.block_on(async {
        assert!(engine.sync_once().await.expect("first sync").converged());
        target.edit(&web, json!({"replicas": 9}));
        let report = engine.sync_once().await.expect("drift sync");
        let written = report.written_back.clone().expect("written back");
        assert_eq!(remote_head(&fx, "main"), written.id);
        target.clear_calls();
        let report = engine.sync_once().await.expect("deploys the commit");
        assert_eq!(report.revision.id, written.id);
        assert!(!report.plan.has_changes(), "{report}");
        assert!(report.converged());
        assert_eq!(target.get(&web), Some(json!({"replicas": 9})));
        assert!(engine.status().drift.is_empty());
        let audit = engine
            .audit(&gitops_core::AuditQuery::default())
            .await
            .expect("audit");
        assert!(
            audit
                .iter()
                .any(|r| r.action == gitops_core::AuditAction::Writeback
                    && r.detail.as_deref().is_some_and(|d| d.contains(&written.id))),
            "{audit:?}"
        );
    });
    assert!(clone_file(&fx, "main", "app.yaml").contains("replicas: 9"));
}

#[test]
fn the_same_write_back_asked_twice_is_not_a_conflict_with_its_own_commit() {
    // The trait requires idempotence: the engine may ask again (a restart, a
    // push whose answer was lost) before it deploys its own commit.
    let fx = Fixture::new();
    fx.commit(&[("app.yaml", APP)], "initial");
    let Local {
        rt,
        src,
        render,
        writeback,
    } = Local::new(&fx, Arc::new(ManifestRender::new()), "twice", |b| b);
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let written = write(&writeback, &deployed, std::slice::from_ref(&d))
            .await
            .expect("first write-back")
            .expect("a commit");
        let again = write(&writeback, &deployed, &[d])
            .await
            .expect("asking again is not a conflict: Git already holds the change");
        assert!(again.is_none(), "nothing more to write: {again:?}");
        assert_eq!(remote_head(&fx, "main"), written.revision.id);
    });
}

#[test]
fn an_upstream_commit_that_already_records_the_drift_is_not_a_conflict() {
    let fx = Fixture::new();
    fx.commit(&[("etc/app.conf", "port = 80\n")], "initial");
    let Local {
        rt,
        src,
        render,
        writeback,
    } = Local::new(&fx, Arc::new(FilesRender::new()), "same-upstream", |b| b);
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "File//etc/app.conf",
            Some(json!({"path": "etc/app.conf", "content": "port = 8080\n", "encoding": "utf-8", "mode": "0644"})),
        )
        .await;
        // The operator who made the hotfix also committed it.
        let upstream = fx.commit(&[("etc/app.conf", "port = 8080\n")], "hotfix");
        fx.push();
        let outcome = write(&writeback, &deployed, &[d])
            .await
            .expect("not a conflict: upstream holds what the target holds");
        assert!(outcome.is_none(), "{outcome:?}");
        assert_eq!(remote_head(&fx, "main"), upstream);
    });
}

#[test]
fn placeholders_in_resource_names_are_not_expanded_in_the_commit_message() {
    let fx = Fixture::new();
    let manifest = "kind: App\nmetadata: { name: \"{previous}-{time}\" }\nspec: { a: 1 }\n";
    fx.commit(&[("app.yaml", manifest)], "initial");
    let Local {
        rt,
        src,
        render,
        writeback,
    } = Local::new(&fx, Arc::new(ManifestRender::new()), "placeholders", |b| {
        b.message_template("{engine} wrote back:\n{resources}\n")
    });
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/{previous}-{time}",
            Some(json!({"a": 2})),
        )
        .await;
        write(&writeback, &deployed, &[d])
            .await
            .expect("write-back")
            .expect("a commit");
    });
    let message = git(&fx.remote, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(
        message,
        "shop wrote back:\n- App/{previous}-{time} (app.yaml, changed in the target)"
    );
}

#[test]
fn the_commit_message_names_files_by_their_path_in_the_repository() {
    let fx = Fixture::new();
    fx.commit(&[("deploy/app.yaml", APP)], "initial");
    fx.push();
    let rt = runtime();
    let src = GitSource::builder(fx.url_path(), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("subdir-message"))
        .path("deploy")
        .build()
        .expect("source");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let writeback = GitWriteback::builder(&src, render.clone())
        .message_template("{resources}")
        .build()
        .expect("writeback");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let web = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 5})),
        )
        .await;
        let db = drifted(&src, &*render, &deployed, "App/db", None).await;
        write(&writeback, &deployed, &[web, db])
            .await
            .expect("write-back")
            .expect("a commit");
    });
    let message = git(&fx.remote, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(
        message,
        "- App/web (deploy/app.yaml, changed in the target)\n\
         - App/db (deploy/app.yaml (document 2), deleted in the target)"
    );
}

#[test]
fn a_write_back_of_what_git_already_holds_makes_no_commit() {
    // A target may report drift in something a manifest cannot hold; the
    // observed spec then equals Git's, and rewriting the document would only
    // drop its comments and formatting.
    let fx = Fixture::new();
    fx.commit(&[("app.yaml", APP)], "initial");
    let Local {
        rt,
        src,
        render,
        writeback,
    } = Local::new(&fx, Arc::new(ManifestRender::new()), "same-spec", |b| b);
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({"replicas": 2})),
        )
        .await;
        let outcome = write(&writeback, &deployed, &[d])
            .await
            .expect("write-back");
        assert!(outcome.is_none(), "no commit: {outcome:?}");
        assert_eq!(remote_head(&fx, "main"), deployed.id);
    });
    assert_eq!(clone_file(&fx, "main", "app.yaml"), APP);
}

/// A source that is someone's checkout (a non-bare repository with `main`
/// checked out): moving `main` under its files is refused, as `git push`
/// refuses it; a review branch is fine.
#[test]
fn the_checked_out_branch_of_a_work_tree_is_never_moved() {
    let fx = Fixture::new();
    fx.commit(&[("app.yaml", APP)], "initial");
    let rt = runtime();
    let src = source(&fx, fx.work.display().to_string(), "checkout");
    let render: Arc<dyn Render> = Arc::new(ManifestRender::new());
    let writeback = GitWriteback::builder(&src, render.clone())
        .build()
        .expect("writeback");
    let review = GitWriteback::builder(&src, render.clone())
        .review_branch("gitops/shop")
        .build()
        .expect("writeback to a review branch");
    rt.block_on(async {
        let deployed = src.poll().await.expect("poll");
        let d = drifted(
            &src,
            &*render,
            &deployed,
            "App/web",
            Some(json!({ "replicas": 5 })),
        )
        .await;
        let err = write(&writeback, &deployed, std::slice::from_ref(&d))
            .await
            .expect_err("main is checked out");
        let text = err.to_string();
        assert!(
            text.contains("refusing to move refs/heads/main: it is checked out in"),
            "{text}"
        );
        assert!(!err.is_transient(), "{text}");
        assert_eq!(fx.head(), deployed.id, "main did not move");
        assert_eq!(
            git(&fx.work, &["status", "--porcelain"]),
            "",
            "the work tree still matches its branch"
        );

        let written = write(&review, &deployed, &[d])
            .await
            .expect("pushed")
            .expect("a commit");
        assert_eq!(written.published_to, "refs/heads/gitops/shop");
        assert_eq!(
            git(&fx.work, &["rev-parse", "gitops/shop"]),
            written.revision.id
        );
    });
}
