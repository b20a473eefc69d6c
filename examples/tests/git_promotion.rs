//! Promotion through Git mechanics, end to end on a real repository: a
//! pipeline reads `main` through the Git source, deploys staging and then
//! production into directories, and a promoter moves `env/production` and
//! tags each release with the `git` command.
//!
//! The promoter here is the test's own (`git update-ref` in a local
//! repository); `gitops-git` has no `Promoter` yet. What the test proves is
//! the pipeline's side: the promoter is called once per passed stage with
//! the right revision, its references are what the next stage runs, and
//! the promotion is in the audit log.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::pipeline::{Pipeline, Stage};
use gitops_core::{
    AuditAction, AuditQuery, FilesRender, PromoteError, Promoter, Revision, async_trait,
};
use gitops_examples::DemoRepo;
use gitops_git::{GitSource, ReferencePolicy};
use gitops_targets::{FsOptions, FsTarget};

/// Passing staging moves `env/production` to the commit; passing production
/// tags it `release-<n>`.
struct RefPromoter {
    repo: DemoRepo,
    releases: Mutex<u32>,
}

#[async_trait]
impl Promoter for RefPromoter {
    async fn promote(
        &self,
        stage: &str,
        revision: &Revision,
    ) -> Result<Option<Revision>, PromoteError> {
        let failed = |message: String| PromoteError::Failed {
            stage: stage.to_owned(),
            revision: revision.to_string(),
            message,
            transient: false,
            source: None,
        };
        let (reference, args) = match stage {
            "staging" => (
                "env/production".to_owned(),
                vec![
                    "update-ref",
                    "refs/heads/env/production",
                    revision.id.as_str(),
                ],
            ),
            _ => {
                let n = {
                    let mut releases = self.releases.lock().unwrap_or_else(|p| p.into_inner());
                    *releases += 1;
                    *releases
                };
                let tag = format!("release-{n}");
                let refname = format!("refs/tags/{tag}");
                self.repo
                    .git(&["update-ref", &refname, &revision.id])
                    .map_err(failed)?;
                return Ok(Some(Revision {
                    reference: tag,
                    ..revision.clone()
                }));
            }
        };
        self.repo.git(&args).map_err(failed)?;
        Ok(Some(Revision {
            reference,
            ..revision.clone()
        }))
    }
}

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
    let fast = |b: gitops_core::EngineBuilder| b.interval(Duration::from_millis(200));
    let pipeline = Pipeline::builder(Arc::new(source))
        .render(Arc::new(FilesRender::new()))
        .stage(
            Stage::new("staging", fs(&work.path().join("staging")))
                .path("env/staging")
                .configure(fast),
        )
        .stage(
            Stage::new("production", fs(&work.path().join("production")))
                .path("env/production")
                .configure(fast),
        )
        .promoter(Arc::new(RefPromoter {
            repo: repo.clone(),
            releases: Mutex::new(0),
        }))
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
    // Passing production tagged the release.
    for _ in 0..100 {
        if repo
            .git(&["rev-parse", "--verify", "-q", "refs/tags/release-1"])
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        repo.git(&["rev-parse", "refs/tags/release-1"])
            .expect("tag"),
        commit
    );
    // Each promotion is in the audit log of the stage it passed.
    for (stage, reference) in [("staging", "env/production"), ("production", "release-1")] {
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
