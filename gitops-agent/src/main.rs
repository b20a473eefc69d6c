//! `gitops-agent`: the reference pull agent. Keeps a directory equal to a
//! Git repository, or, with `--config`, many directories equal to many
//! applications' repositories; built with the feature `etcd`, `--etcd`
//! shares those applications with other replicas. `gitops-agent --help`
//! lists every flag; the manual is `docs/agent.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gitops_agent::config::{AppSpec, AppTarget};
use gitops_agent::{Agent, AgentArgs, AgentError, Apps, Outcome};
use gitops_core::Target;
use gitops_targets::{FsOptions, FsTarget};

/// Keeps a directory equal to what a Git repository says, continuously.
///
/// Exit codes: 0 converged or stopped; 2 changes pending (--plan); 1 any error.
#[derive(Debug, Parser)]
#[command(name = "gitops-agent", version)]
struct Cli {
    /// The directory to keep equal to the repository (created if missing).
    /// With --config, each application's `target_dir` instead.
    #[arg(
        long,
        env = "GITOPS_TARGET_DIR",
        value_name = "DIR",
        help_heading = "Target",
        required_unless_present_any = ["config", "config_repo"],
        conflicts_with_all = ["config", "config_repo"]
    )]
    target_dir: Option<PathBuf>,
    #[command(flatten)]
    agent: AgentArgs,
}

/// Without `--verify-content`, every managed file's content is read at the
/// latest on every this many checks, even when its stat is unchanged.
const VERIFY_EVERY: u32 = 100;

/// `<target-dir>/../.gitops-state`: beside the target, never inside it.
fn default_state_dir(target_dir: &Path) -> PathBuf {
    let parent = target_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(".gitops-state")
}

/// The target of one application of a `--config`: its directory.
fn app_target(app: &AppSpec) -> Result<Arc<dyn Target>, String> {
    match &app.target {
        AppTarget::Dir(dir) => FsTarget::open_with(dir, FsOptions::default().create_root(true))
            .map(|t| Arc::new(t) as Arc<dyn Target>)
            .map_err(|e| format!("{}: {e}", dir.display())),
        AppTarget::Other { kind, .. } if kind == "etcd" && !cfg!(feature = "etcd") => Err(
            "kind \"etcd\" needs replica mode (--etcd), and this agent was built without the feature etcd".to_owned(),
        ),
        AppTarget::Other { kind, .. } if kind == "etcd" => Err(
            "kind \"etcd\" needs --etcd: its keys are written by the replica owning the app, fenced by its lock".to_owned(),
        ),
        AppTarget::Other { kind, .. } => Err(format!(
            "kind {kind:?} is not supported by this agent: use target_dir, or kind = \"dir\" with a path"
        )),
        _ => Err("unsupported target".to_owned()),
    }
}

async fn run(mut cli: Cli) -> Result<Outcome, AgentError> {
    let Some(target_dir) = cli.target_dir.clone() else {
        return Apps::new(cli.agent, app_target)?.run().await;
    };
    let state_dir = &mut cli.agent.engine.state_dir;
    if state_dir.is_none() {
        *state_dir = Some(default_state_dir(&target_dir));
    }
    let agent = Agent::new("agent", cli.agent)?;
    let verify_every = if agent.args().engine.verify_content {
        1
    } else {
        VERIFY_EVERY
    };
    let options = FsOptions::default()
        .create_root(true)
        .stat_cache(agent.state_dir()?.join("fs-stat-cache"))
        .verify_every(verify_every);
    let target = FsTarget::open_with(&target_dir, options).map_err(|e| AgentError::Target {
        what: format!("--target-dir {}", target_dir.display()),
        source: Box::new(e),
    })?;
    let engine = agent.engine(Arc::new(target.clone()))?.build()?;
    let outcome = agent.run(engine).await;
    if let Err(e) = target.save_stat_cache() {
        tracing::warn!(error = %e, "the stat cache was not saved; the next run reads every file");
    }
    outcome
}

fn main() -> ExitCode {
    let cli: Cli = gitops_agent::parse();
    gitops_agent::logging::init(&cli.agent.log, cli.agent.default_log_level());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => gitops_agent::exit(runtime.block_on(run(cli))),
        Err(source) => gitops_agent::exit(Err(AgentError::Io {
            what: "starting the runtime",
            source,
        })),
    }
}
