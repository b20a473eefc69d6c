//! Rollback: deploy two releases from Git, roll back to the first, stay
//! pinned while Git moves on, then resume. Run: `cargo run --example rollback`.

use std::sync::Arc;

use gitops_core::{Engine, FilesRender, RedbStore};
use gitops_examples::DemoRepo;
use gitops_git::{GitSource, ReferencePolicy};
use gitops_targets::FsTarget;

type Error = Box<dyn std::error::Error>;

fn deployed(dir: &std::path::Path) -> Result<String, Error> {
    Ok(std::fs::read_to_string(dir.join("version.txt"))?
        .trim()
        .to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let work = tempfile::tempdir()?;
    let repo = DemoRepo::init(work.path().join("repo"))?;
    let target_dir = work.path().join("target");
    let engine = |repo: &DemoRepo| -> Result<Engine, Error> {
        let source = GitSource::builder(repo.url(), ReferencePolicy::branch("main"))
            .cache_dir(work.path().join("cache"))
            .build()?;
        Ok(Engine::builder()
            .source(Arc::new(source))
            .render(Arc::new(FilesRender::new()))
            .target(Arc::new(FsTarget::open_with(
                &target_dir,
                gitops_targets::FsOptions::default().create_root(true),
            )?))
            .store(Arc::new(RedbStore::open(work.path().join("state"))?))
            .build()?)
    };
    let engine = engine(&repo)?;

    for version in ["1.0", "2.0"] {
        repo.write("version.txt", &format!("{version}\n"))?;
        repo.commit(&format!("Release {version}"))?;
        println!("{}", engine.sync_once().await?);
    }
    println!("deployed: {}", deployed(&target_dir)?);

    let history = engine.history(10).await?;
    let good = history
        .iter()
        .find(|h| h.revision.summary() == "Release 1.0")
        .ok_or("Release 1.0 is not in the history")?
        .revision
        .clone();
    println!("\nrolling back to {} (\"{}\")", good, good.summary());
    println!("{}", engine.rollback(&good).await?);
    println!("deployed: {}", deployed(&target_dir)?);

    repo.write("version.txt", "3.0\n")?;
    repo.commit("Release 3.0")?;
    println!("\nGit moved to 3.0, but the rollback pins 1.0:");
    println!("{}", engine.sync_once().await?);
    println!("deployed: {}", deployed(&target_dir)?);

    println!("\nresume(): automatic advance again");
    engine.handle().resume();
    let runner = engine.clone();
    let agent = tokio::spawn(async move { runner.run().await });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while deployed(&target_dir)? != "3.0" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    engine.handle().shutdown();
    agent.await??;
    println!("deployed: {}", deployed(&target_dir)?);
    if deployed(&target_dir)? != "3.0" {
        return Err("did not advance after resume".into());
    }
    Ok(())
}
