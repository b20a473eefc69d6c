//! Promotion through Git mechanics, end to end on a real repository: a
//! pipeline reads `main` through the Git source and deploys staging, then
//! production, into directories; `gitops-git`'s `GitPromoter` moves
//! `env/production` when a revision passes staging and creates an annotated
//! release tag when it passes production.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::pipeline::{Pipeline, Stage};
use gitops_core::store::AuditAction;
use gitops_core::{AuditQuery, FilesRender};
use gitops_examples::DemoRepo;
use gitops_git::{GitPromoter, GitSource, PromotionRef, ReferencePolicy};
use gitops_targets::{FsOptions, FsTarget};

fn fs(dir: &Path) -> Arc<FsTarget> {
    Arc::new(FsTarget::open_with(dir, FsOptions::default().create_root(true)).expect("opens"))
}

async fn wait_for_file(path: &Path, content: &str) {
    for _ in 0..400 {
        if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} never held {content:?} (holds {:?})",
        path.display(),
        std::fs::read_to_string(path).ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_promoted_by_moving_a_branch_and_tagged_after_production() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = DemoRepo::init(work.path().join("repo")).expect("repo");
    repo.write("env/staging/app.conf", "replicas = 1\n")
        .expect("write");
    repo.write("env/production/app.conf", "replicas = 5\n")
        .expect("write");
    let commit = repo.commit("release 1").expect("commit");

    let source = GitSource::builder(repo.url(), ReferencePolicy::branch("main"))
        .cache_dir(work.path().join("cache"))
        .build()
        .expect("source");
    let move_production =
        GitPromoter::builder(&source, PromotionRef::Branch("env/production".into()))
            .build()
            .expect("promoter");
    let tag_release = GitPromoter::builder(&source, PromotionRef::Tag("release-{short}".into()))
        .build()
        .expect("promoter");
    let fast = |b: gitops_core::EngineBuilder| {
        b.config(gitops_core::EngineConfig::default().interval(Duration::from_millis(200)))
    };
    let pipeline = Pipeline::builder(Arc::new(source))
        .render(Arc::new(FilesRender::new()))
        .stage(
            Stage::new("staging", fs(&work.path().join("staging")))
                .path("env/staging")
                .promoter(Arc::new(move_production))
                .configure(fast),
        )
        .stage(
            Stage::new("production", fs(&work.path().join("production")))
                .path("env/production")
                .promoter(Arc::new(tag_release))
                .configure(fast),
        )
        .check_interval(Duration::from_millis(100))
        .build()
        .expect("pipeline");
    let running = pipeline.clone();
    let agent = tokio::spawn(async move { running.run().await });

    wait_for_file(&work.path().join("production/app.conf"), "replicas = 5\n").await;
    assert_eq!(
        std::fs::read_to_string(work.path().join("staging/app.conf"))
            .ok()
            .as_deref(),
        Some("replicas = 1\n")
    );
    // Passing staging moved env/production to the release commit ...
    assert_eq!(
        repo.git(&["rev-parse", "refs/heads/env/production"])
            .expect("branch"),
        commit
    );
    // ... which is what production runs, through that reference.
    let production = pipeline.status("production").expect("status");
    let applied = production.last_applied.expect("applied");
    assert_eq!(applied.id, commit);
    assert_eq!(applied.reference, "env/production");
    assert_eq!(applied.message.trim(), "release 1");
    // Passing production created an annotated release tag.
    let tag = format!("release-{}", &commit[..12]);
    let refname = format!("refs/tags/{tag}");
    for _ in 0..100 {
        if repo.git(&["rev-parse", "--verify", "-q", &refname]).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peeled = format!("{refname}^{{commit}}");
    assert_eq!(repo.git(&["rev-parse", &peeled]).expect("tag"), commit);
    assert_eq!(
        repo.git(&["cat-file", "-t", &refname]).expect("type"),
        "tag"
    );
    // Each promotion is in the audit log of the stage it passed.
    for (stage, reference) in [("staging", "env/production"), ("production", tag.as_str())] {
        let audit = pipeline
            .engine(stage)
            .expect("stage")
            .audit(&AuditQuery {
                id: Some(format!("Stage/{stage}").parse().expect("id")),
                ..AuditQuery::default()
            })
            .await
            .expect("audit");
        assert_eq!(audit.len(), 1, "{stage}: {audit:?}");
        assert_eq!(audit[0].action, AuditAction::Promote);
        assert_eq!(audit[0].revision, commit);
        assert_eq!(audit[0].reference, reference);
        assert_eq!(audit[0].author, "Ada Operator <ada@example.com>");
    }
    pipeline.shutdown();
    agent.await.expect("join").expect("run");
}
