//! Write-back (the Modify strategy): an operator hot-fixes a config file on
//! the machine; instead of reverting it, the engine commits the change to
//! Git, then deploys its own commit as a no-op. Run:
//! `cargo run --example writeback`.

use std::sync::Arc;

use gitops_core::{DriftPolicy, Engine, FilesRender, RedbStore, Render};
use gitops_examples::DemoRepo;
use gitops_git::{GitSource, GitWriteback, Identity, ReferencePolicy};
use gitops_targets::{FsOptions, FsTarget};

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let work = tempfile::tempdir()?;
    // Where people commit, and the shared bare repository the engine uses.
    let repo = DemoRepo::init(work.path().join("work"))?;
    repo.write("app.conf", "workers = 4\n")?;
    repo.write("db.conf", "url = postgres://db:5432/shop\n")?;
    repo.commit("Initial configuration")?;
    let origin = work.path().join("origin.git");
    repo.git(&["clone", "-q", "--bare", ".", &origin.display().to_string()])?;
    let origin_repo = |args: &[&str]| -> Result<String, Error> {
        let mut all = vec!["--git-dir", origin.to_str().ok_or("path")?];
        all.extend_from_slice(args);
        Ok(repo.git(&all)?)
    };

    let source = GitSource::builder(
        origin.display().to_string(),
        ReferencePolicy::branch("main"),
    )
    .cache_dir(work.path().join("cache"))
    .build()?;
    // Every file: changes made on the machine are recorded in Git.
    let render: Arc<dyn Render> = Arc::new(FilesRender::new().drift_policy(DriftPolicy::Writeback));
    let writeback = GitWriteback::builder(&source, render.clone())
        .author(Identity::new("gitops-bot", "gitops-bot@example.com"))
        .build()?;
    let target_dir = work.path().join("etc");
    let engine = Engine::builder()
        .source(Arc::new(source))
        .render(render)
        .target(Arc::new(FsTarget::open_with(
            &target_dir,
            FsOptions::default().create_root(true),
        )?))
        .store(Arc::new(RedbStore::open(work.path().join("state"))?))
        .writeback(Arc::new(writeback))
        .name("shop")
        .build()?;

    println!("{}", engine.sync_once().await?);

    println!("\nan operator raises the worker count on the machine by hand");
    std::fs::write(target_dir.join("app.conf"), "workers = 16\n")?;
    let report = engine.sync_once().await?;
    let commit = report
        .written_back
        .clone()
        .ok_or("the drift was not written back")?;
    println!("{report}");
    println!(
        "written back as commit {} on main:\n{}",
        commit.id,
        origin_repo(&["show", "--stat", "--format=%an: %s%n%n%b", "main"])?
    );
    if std::fs::read_to_string(target_dir.join("app.conf"))? != "workers = 16\n" {
        return Err("the hot fix was reverted".into());
    }

    println!("\nthe next sync deploys that commit; nothing changes on the machine");
    let report = engine.sync_once().await?;
    println!("{report}");
    if report.revision.id != commit.id || report.plan.has_changes() {
        return Err("the write-back commit did not deploy as a no-op".into());
    }
    let audit = engine
        .audit(&gitops_core::AuditQuery::default())
        .await?
        .into_iter()
        .filter(|r| r.action == gitops_core::store::AuditAction::Writeback);
    for record in audit {
        println!(
            "audit: {} {} ({})",
            record.id,
            record.detail.unwrap_or_default(),
            record.trigger
        );
    }
    println!("deployed {} (no changes)", report.revision);
    Ok(())
}
