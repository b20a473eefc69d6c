//! The quickstart: a demo Git repository deployed into `./gitops-demo/` (or
//! the directory given as the first argument), narrated step by step.
//!
//! ```text
//! cargo run --example quickstart [DIR]
//! ```
//!
//! It plans, applies three files in dependency order, reverts a hand edit,
//! deploys a new commit, prunes a file deleted in Git, refuses a broken
//! commit while keeping the last good state, and prints the history and the
//! audit trail. Needs only `git` on the PATH.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::{Event, SyncResult, Trigger};
use gitops_core::{AuditQuery, Engine, EngineConfig, ManifestRender, RedbStore};
use gitops_examples::DemoRepo;
use gitops_git::{GitSource, ReferencePolicy};
use gitops_targets::FsTarget;
use tokio::sync::broadcast::Receiver;

type Error = Box<dyn std::error::Error>;

const MARKER: &str = ".gitops-quickstart";

fn say(step: &str) {
    println!("\n\x1b[1m==> {step}\x1b[0m");
}

fn file_manifest(name: &str, depends_on: &[&str], content: &str) -> String {
    let deps: Vec<String> = depends_on.iter().map(|d| format!("File/{d}")).collect();
    format!(
        "kind: File\nmetadata:\n  name: {name}\n  dependsOn: [{}]\nspec:\n  content: |\n{}",
        deps.join(", "),
        content
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

/// Waits until a sync of commit `id` finishes; returns its result.
async fn synced(events: &mut Receiver<Event>, id: &str) -> Result<SyncResult, Error> {
    wait_for(events, |e| match e {
        Event::SyncFinished {
            revision, result, ..
        } if revision.id == id => Some(*result),
        _ => None,
    })
    .await
}

/// The demo directory: created fresh, or reused if an earlier quickstart made it.
fn prepare_target(dir: &Path) -> Result<(), Error> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(format!(
                "{} exists and was not made by the quickstart; pass another directory",
                dir.display()
            )
            .into());
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "made by `cargo run --example quickstart`\n",
    )?;
    Ok(())
}

/// Waits for the first event `pick` accepts, printing resource events on the way.
async fn wait_for<T>(
    events: &mut Receiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<T, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| "timed out waiting for the engine")??;
        match &event {
            Event::ResourceApplied { id, action } => println!("    {action:<6} {id}"),
            Event::ResourcePruned { id } => println!("    delete {id}"),
            Event::DriftDetected { id, diff, .. } => {
                println!(
                    "    drift  {id}: {}",
                    diff.as_ref().map_or("deleted".into(), |d| d.to_string())
                )
            }
            Event::DriftReverted { id } => println!("    revert {id}"),
            _ => {}
        }
        if let Some(found) = pick(&event) {
            return Ok(found);
        }
    }
}

fn show_dir(dir: &Path) -> Result<(), Error> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != MARKER))
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path)?;
        println!(
            "    {}: {}",
            path.display(),
            text.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// The demo repository: proxy.conf needs app.conf, which needs db.conf.
fn initial_repo(dir: &Path) -> Result<(DemoRepo, String), Error> {
    let repo = DemoRepo::init(dir)?;
    repo.write(
        "deploy/db.yaml",
        &file_manifest("db.conf", &[], "url = postgres://db:5432/shop"),
    )?;
    repo.write(
        "deploy/app.yaml",
        &file_manifest("app.conf", &["db.conf"], "workers = 4"),
    )?;
    repo.write(
        "deploy/proxy.yaml",
        &file_manifest("proxy.conf", &["app.conf"], "upstream = app:8080"),
    )?;
    let initial = repo.commit("Initial release")?;
    Ok((repo, initial))
}

/// The engine: Git source, manifests, the directory, the embedded store.
fn engine(repo: &DemoRepo, work: &Path, target_dir: &Path) -> Result<Engine, Error> {
    let source = GitSource::builder(repo.url(), ReferencePolicy::branch("main"))
        .cache_dir(work.join("cache"))
        .path("deploy")
        .build()?;
    Ok(Engine::builder()
        .source(Arc::new(source))
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(FsTarget::open(target_dir)?))
        .store(Arc::new(RedbStore::open(work.join("state"))?))
        .config(
            EngineConfig::default()
                .interval(Duration::from_secs(1))
                .drift_interval(Duration::from_secs(2)),
        )
        .name("quickstart")
        .build()?)
}

/// The agent at work: drift reverted, a new commit, a prune, a refused cycle.
async fn tour(
    engine: &Engine,
    repo: &DemoRepo,
    target_dir: &Path,
    initial: &str,
) -> Result<(), Error> {
    let mut events = engine.subscribe();
    let handle = engine.handle();
    let agent = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let result = synced(&mut events, initial).await?;
    println!("    synced main@{}: {result}", &initial[..12]);
    show_dir(target_dir)?;

    say("Someone edits app.conf by hand; the drift check puts Git's version back");
    std::fs::write(target_dir.join("app.conf"), "workers = 64\n")?;
    wait_for(&mut events, |e| {
        matches!(e, Event::DriftReverted { .. }).then_some(())
    })
    .await?;
    synced(&mut events, initial).await?;
    println!(
        "    app.conf is now: {}",
        std::fs::read_to_string(target_dir.join("app.conf"))?.trim()
    );

    say("A new commit changes app.conf; a webhook asks for a reconcile");
    repo.write(
        "deploy/app.yaml",
        &file_manifest("app.conf", &["db.conf"], "workers = 8"),
    )?;
    let scaled = repo.commit("Scale app workers to 8")?;
    handle.reconcile_now();
    synced(&mut events, &scaled).await?;

    say("proxy.yaml is deleted in Git: the file it made is pruned");
    repo.remove("deploy/proxy.yaml")?;
    let retired = repo.commit("Retire the proxy")?;
    handle.reconcile_now();
    synced(&mut events, &retired).await?;
    show_dir(target_dir)?;

    say("A broken commit: db.conf now depends on app.conf, a cycle");
    repo.write(
        "deploy/db.yaml",
        &file_manifest("db.conf", &["app.conf"], "url = postgres://db:5432/shop"),
    )?;
    repo.commit("Make db depend on app (oops)")?;
    handle.reconcile_now();
    let reason = wait_for(&mut events, |e| match e {
        Event::Stalled { message, .. } => Some(message.clone()),
        _ => None,
    })
    .await?;
    println!("    refused: {reason}");
    println!("    the last good state stays deployed:");
    show_dir(target_dir)?;

    handle.shutdown();
    agent.await??;
    Ok(())
}

/// What the store remembers: history and the audit trail.
async fn records(engine: &Engine) -> Result<(), Error> {
    say("History (newest first)");
    for entry in engine.history(10).await? {
        println!(
            "    {:<8} {:<10} {}  \"{}\" by {}",
            entry.trigger.to_string(),
            format!("{:?}", entry.result).to_lowercase(),
            &entry.revision.id[..12],
            entry.revision.summary(),
            entry.revision.author
        );
    }
    say("Audit trail: every change applied, who and why");
    for record in engine.audit(&AuditQuery::default()).await? {
        let trigger = if record.trigger == Trigger::Drift {
            " (drift)"
        } else {
            ""
        };
        println!(
            "    {:<6} {:<16} from {} \"{}\"{trigger}",
            format!("{:?}", record.action).to_lowercase(),
            record.id.to_string(),
            &record.revision[..12],
            record.message,
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let target_dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "gitops-demo".into()),
    );
    let work = tempfile::tempdir()?;
    prepare_target(&target_dir)?;

    say("A Git repository with three manifests: proxy.conf needs app.conf, which needs db.conf");
    let (repo, initial) = initial_repo(&work.path().join("repo"))?;
    println!("    {}", repo.dir().display());
    let engine = engine(&repo, work.path(), &target_dir)?;

    say("Plan (a dry run: nothing changes yet)");
    println!("{}", engine.plan().await?);

    say(&format!(
        "Start the agent: apply wave by wave into {}/",
        target_dir.display()
    ));
    tour(&engine, &repo, &target_dir, &initial).await?;
    records(&engine).await?;
    println!(
        "\nDone. The deployed files are in {}/",
        target_dir.display()
    );
    Ok(())
}
