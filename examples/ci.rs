//! Push mode for CI: `plan` on every pull request, `apply` on every merge,
//! with an optional pre-sync gate command (a test suite, a policy scanner).
//!
//! ```text
//! cargo run --example ci -- plan|apply --repo <path|url> --target-dir DIR
//!     [--branch B] [--path SUBDIR] [--render files|manifests] [--state-dir DIR] [--json]
//!     [--gate PROGRAM [ARGS...]]      # must be last; gets {revision, plan} as JSON on stdin
//! ```
//!
//! Exit codes follow `terraform plan -detailed-exitcode`: `plan` exits 0 when
//! nothing would change, 2 when changes are pending, 1 on error; `apply` exits
//! 0 when the target converged, 1 otherwise (a failing gate included).

use std::process::{ExitCode, Stdio};
use std::sync::Arc;

use gitops_core::{Engine, FilesRender, GateInput, ManifestRender, RedbStore, Render, gate_fn};
use gitops_git::{GitSource, ReferencePolicy};
use gitops_targets::{FsOptions, FsTarget};
use tokio::io::AsyncWriteExt as _;

const USAGE: &str = "usage: ci plan|apply --repo <path|url> --target-dir DIR [--branch B] [--path SUBDIR] [--render files|manifests] [--state-dir DIR] [--json] [--gate PROGRAM [ARGS...]]";
/// The most gate output kept (its tail), so a chatty test suite cannot flood the report.
const GATE_OUTPUT_LIMIT: usize = 64 * 1024;

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

/// Runs the gate program (no shell) with `{revision, plan}` on stdin; exit 0 passes.
async fn run_gate(argv: Arc<Vec<String>>, input: GateInput) -> Result<String, String> {
    let stdin = serde_json::to_vec(
        &serde_json::json!({ "revision": input.revision, "plan": &*input.plan }),
    )
    .map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true) // the engine's gate timeout drops this future
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(&stdin).await;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if text.len() > GATE_OUTPUT_LIMIT {
        let mut cut = text.len() - GATE_OUTPUT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = format!("[...] {}", &text[cut..]);
    }
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{} ({})", text.trim_end(), out.status))
    }
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
        let argv = Arc::new(args.gate.clone());
        let name = args.gate[0].clone();
        engine = engine.pre_sync_gate(gate_fn(name, move |input| run_gate(argv.clone(), input)));
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
