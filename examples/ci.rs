//! Push mode for CI: `plan` on every pull request, `apply` on every merge,
//! with an optional pre-sync gate command (a test suite, a policy scanner).
//!
//! ```text
//! cargo run --example ci -- plan|apply --repo <path|url> --target-dir DIR
//!     [--branch B] [--path SUBDIR] [--render files|manifests] [--state-dir DIR] [--json]
//!     [--gate PROGRAM [ARGS...]]      # must be last; gets {stage, revision, plan} as JSON on stdin
//! ```
//!
//! Exit codes follow `terraform plan -detailed-exitcode`: `plan` exits 0 when
//! nothing would change, 2 when changes are pending, 1 on error; `apply` exits
//! 0 when the target converged, 1 otherwise (a failing gate included).

use std::process::ExitCode;
use std::sync::Arc;

use gitops_core::{Engine, FilesRender, ManifestRender, RedbStore, Render};
use gitops_git::{GitSource, ReferencePolicy};
use gitops_targets::{CommandGate, FsOptions, FsTarget};

const USAGE: &str = "usage: ci plan|apply --repo <path|url> --target-dir DIR [--branch B] [--path SUBDIR] [--render files|manifests] [--state-dir DIR] [--json] [--gate PROGRAM [ARGS...]]";

struct Args {
    apply: bool,
    repo: String,
    branch: String,
    path: Option<String>,
    manifests: bool,
    target_dir: std::path::PathBuf,
    state_dir: Option<std::path::PathBuf>,
    json: bool,
    gate: Vec<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let apply = match args.next().as_deref() {
        Some("plan") => false,
        Some("apply") => true,
        _ => return Err(USAGE.into()),
    };
    let (mut repo, mut branch, mut path, mut manifests) = (None, "main".to_owned(), None, false);
    let (mut target_dir, mut state_dir, mut json, mut gate) = (None, None, false, Vec::new());
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--repo" => repo = Some(value()?),
            "--branch" => branch = value()?,
            "--path" => path = Some(value()?),
            "--render" => manifests = value()? == "manifests",
            "--target-dir" => target_dir = Some(value()?.into()),
            "--state-dir" => state_dir = Some(value()?.into()),
            "--json" => json = true,
            "--gate" => {
                gate = args.by_ref().collect();
                if gate.is_empty() {
                    return Err("--gate needs a program".into());
                }
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Args {
        apply,
        repo: repo.ok_or("--repo is required")?,
        branch,
        path,
        manifests,
        target_dir: target_dir.ok_or("--target-dir is required")?,
        state_dir,
        json,
        gate,
    })
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let mut source = GitSource::builder(
        args.repo.clone(),
        ReferencePolicy::branch(args.branch.clone()),
    );
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.target_dir.with_extension("gitops-state"));
    source = source.cache_dir(state_dir.join("cache"));
    if let Some(path) = &args.path {
        source = source.path(path.clone());
    }
    let render: Arc<dyn Render> = if args.manifests {
        Arc::new(ManifestRender::new())
    } else {
        Arc::new(FilesRender::new())
    };
    let mut engine = Engine::builder()
        .source(Arc::new(source.build().map_err(|e| e.to_string())?))
        .render(render)
        .target(Arc::new(
            FsTarget::open_with(&args.target_dir, FsOptions::default().create_root(true))
                .map_err(|e| e.to_string())?,
        ))
        .store(Arc::new(
            RedbStore::open(&state_dir).map_err(|e| e.to_string())?,
        ))
        .name("ci");
    if !args.gate.is_empty() {
        // No shell; {stage, revision, plan} as JSON on stdin; the last 64 KiB
        // of stdout and of stderr kept; the gate's process group is killed
        // at the engine's gate timeout.
        let gate = CommandGate::builder(args.gate.clone())
            .build()
            .map_err(|e| e.to_string())?;
        engine = engine.pre_sync_gate(Arc::new(gate));
    }
    let engine = engine.build().map_err(|e| e.to_string())?;
    let print = |text: String, value: serde_json::Result<String>| -> Result<(), String> {
        println!(
            "{}",
            if args.json {
                value.map_err(|e| e.to_string())?
            } else {
                text
            }
        );
        Ok(())
    };
    if args.apply {
        let report = engine.sync_once().await.map_err(|e| e.to_string())?;
        print(report.to_string(), serde_json::to_string_pretty(&report))?;
        Ok(if report.converged() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    } else {
        let plan = engine.plan().await.map_err(|e| e.to_string())?;
        print(plan.to_string(), serde_json::to_string_pretty(&plan))?;
        Ok(if plan.has_changes() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = match parse(std::env::args().skip(1)) {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}
