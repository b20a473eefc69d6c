//! What every gitops pull agent needs, as a library, and the reference agent
//! (the `gitops-agent` binary) built on it.
//!
//! A tool author's agent is a few dozen lines: flatten [`AgentArgs`] into a
//! clap CLI, hand [`Agent`] a [`Target`](gitops_core::Target), and run. The
//! agent brings the Git source (with credentials from files or the
//! environment), the state store, the engine settings from the flags, an
//! HTTP service (`/healthz`, `/readyz`, `/status`, `/history`, `/metrics`,
//! `/notifications`, authenticated webhooks), Prometheus metrics, CloudEvents
//! notifications, signals, logging and the exit codes CI relies on.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use std::sync::Arc;
//!
//! use clap::Parser;
//! use gitops_agent::{Agent, AgentArgs, AgentError, Outcome};
//! use gitops_core::testing::MemoryTarget;
//!
//! /// My tool's agent.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     agent: AgentArgs,
//! }
//!
//! async fn run(cli: Cli) -> Result<Outcome, AgentError> {
//!     let agent = Agent::new("my-app", cli.agent)?;
//!     let target = Arc::new(MemoryTarget::new()); // your `Target` here
//!     let engine = agent.engine(target)?.build()?;
//!     agent.run(engine).await
//! }
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     let cli: Cli = gitops_agent::parse();
//!     gitops_agent::logging::init(&cli.agent.log, cli.agent.default_log_level());
//!     gitops_agent::exit(run(cli).await)
//! }
//! ```
//!
//! Many applications in one process (`--config apps.toml`, or the list in
//! a Git repository with `--config-repo`) run through [`Apps`], with a
//! [`TargetFactory`] that builds each application's target; the file's
//! format is in [`config`].
//!
//! With the feature `etcd`, `--etcd URL --replica-id ID` runs the list as
//! one replica among several sharing it on etcd (the module `replica`).
//!
//! Exit codes: 0 converged (or, with `--plan`, nothing to change), 2 changes
//! pending (`--plan`), 1 any error, a usage error too. The manual is
//! `docs/agent.md`.

pub mod args;
pub mod config;
pub mod credentials;
pub mod http;
pub mod logging;
pub mod metrics;
mod multi;
pub mod notify;
#[cfg(feature = "etcd")]
pub mod replica;
mod run;
pub mod signing;
mod trust;

pub use args::{AgentArgs, parse};
pub use multi::{Apps, TargetFactory};
pub use run::{Agent, AgentError, Outcome, exit};
