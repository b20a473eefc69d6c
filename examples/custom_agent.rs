//! A custom target's agent: the key-value target of `examples/kv.rs` as a
//! long-lived agent with everything `gitops-agent` brings — the Git source
//! and its credentials, the state store, the HTTP service (status, metrics,
//! authenticated webhooks), notifications, signals, logs and exit codes.
//!
//! ```text
//! cargo run --example custom_agent -- --repo <url> --state-dir DIR --render manifests [--once] [--listen 127.0.0.1:8080] …
//! ```
//!
//! `--help` lists every flag (those of `gitops-agent` and this tool's own).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gitops_agent::{Agent, AgentArgs, AgentError, Outcome};
use gitops_examples::kv::{KvStore, KvTarget};

/// Keeps a key-value store equal to what a Git repository says.
#[derive(Parser)]
#[command(name = "kv-agent", version)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
    /// Print the store after a one-shot run.
    #[arg(long, env = "KV_SHOW")]
    show: bool,
}

async fn run(cli: Cli) -> Result<Outcome, AgentError> {
    let show = cli.show;
    let agent = Agent::new("kv", cli.agent)?;
    let store = Arc::new(KvStore::default());
    let engine = agent.engine(Arc::new(KvTarget(store.clone())))?.build()?;
    let outcome = agent.run(engine).await?;
    if show {
        for (key, value) in store.entries() {
            println!("{key} = {value}");
        }
    }
    Ok(outcome)
}

fn main() -> ExitCode {
    let cli: Cli = gitops_agent::parse();
    gitops_agent::logging::init(&cli.agent.log, cli.agent.default_log_level());
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => gitops_agent::exit(runtime.block_on(run(cli))),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
