//! [`Apps`]: one agent process running many applications from a config
//! file (`--config`) or a config repository (`--config-repo`), sharing one
//! state store, one Git cache and fetch per repository, one HTTP service,
//! one metrics registry and one notifier.
//!
//! With `--etcd` (feature `etcd`), the list is shared with the other
//! replicas instead: each application runs on exactly one of them, on the
//! shared, fenced state store in etcd (see `shared.rs` and `crate::replica`).
//!
//! SIGHUP reads the list again and reconciles every application: added
//! applications start, removed ones stop (their resources stay, unless
//! `--prune-removed`), changed ones restart (and the applications that
//! depend on them). An invalid list is refused whole and logged with its
//! line and key; the running set stays. SIGINT or SIGTERM stop every
//! application (a second one aborts).
//!
//! ```no_run
//! use std::sync::Arc;
//! use clap::Parser;
//! use gitops_agent::{Apps, AgentArgs, AgentError, Outcome};
//! use gitops_agent::config::{AppSpec, AppTarget};
//! use gitops_core::Target;
//! use gitops_core::testing::MemoryTarget;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     agent: AgentArgs,
//! }
//!
//! async fn run(cli: Cli) -> Result<Outcome, AgentError> {
//!     // Each application's target, from its `[app.target]` table.
//!     let targets = |app: &AppSpec| -> Result<Arc<dyn Target>, String> {
//!         match &app.target {
//!             AppTarget::Other { kind, .. } if kind == "memory" => Ok(Arc::new(MemoryTarget::new())),
//!             other => Err(format!("unsupported target {other:?}")),
//!         }
//!     };
//!     Apps::new(cli.agent, targets)?.run().await
//! }
//! ```

mod app;
mod list;
mod oneshot;
mod prune;
mod repos;
mod restart;
#[cfg(feature = "etcd")]
mod shared;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use gitops_core::RedbStore;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub use app::TargetFactory;

use crate::args::AgentArgs;
use crate::config::Defaults;
use crate::http::{AppContext, AppSet, HttpOptions, Server};
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyOptions};
use crate::run::{AgentError, Outcome};
use list::List;
use repos::Repos;
use supervisor::{Context, Supervisor};

/// How long queued notifications may take to go out at shutdown.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// An agent of many applications (`--config` or `--config-repo`).
pub struct Apps {
    args: AgentArgs,
    targets: Arc<dyn TargetFactory>,
    metrics: Metrics,
    http: Option<HttpOptions>,
    notify: Option<NotifyOptions>,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apps")
            .field("config", &self.args.apps.config)
            .field("config_repo", &self.args.apps.config_repo)
            .finish_non_exhaustive()
    }
}

/// What both modes set up first.
struct Common {
    signals: Signals,
    state_dir: std::path::PathBuf,
    keys: app::Keys,
    apps: AppSet,
    notifier: Option<Notifier>,
}

/// The HTTP service running, and the channel that stops it.
type Serving = (
    tokio::sync::oneshot::Sender<()>,
    Option<tokio::task::JoinHandle<Result<(), crate::http::HttpError>>>,
);

/// Stops the HTTP service and sends the queued notifications.
async fn finish(
    stop_http: tokio::sync::oneshot::Sender<()>,
    http: Option<tokio::task::JoinHandle<Result<(), crate::http::HttpError>>>,
    notifier: Option<Notifier>,
) {
    let _ = stop_http.send(());
    if let Some(http) = http
        && let Ok(Err(e)) = http.await
    {
        tracing::warn!(error = %e, "the HTTP service ended with an error");
    }
    if let Some(notifier) = notifier {
        notifier.flush(FLUSH_AT_SHUTDOWN).await;
    }
}

/// The signals the agent answers.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Self, AgentError> {
        let io = |what| move |source| AgentError::Io { what, source };
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(io("SIGINT"))?,
            terminate: signal(SignalKind::terminate()).map_err(io("SIGTERM"))?,
            hangup: signal(SignalKind::hangup()).map_err(io("SIGHUP"))?,
        })
    }

    /// The next SIGINT or SIGTERM (`true`), or SIGHUP (`false`).
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interrupt.recv() => true,
            _ = self.terminate.recv() => true,
            _ = self.hangup.recv() => false,
        }
    }

    /// The next SIGINT or SIGTERM.
    async fn stop(&mut self) {
        while !self.next().await {}
    }
}

impl Apps {
    /// Reads and checks what the flags name (secret files, listen
    /// address); `targets` builds each application's target.
    pub fn new(args: AgentArgs, targets: impl TargetFactory + 'static) -> Result<Self, AgentError> {
        if !args.apps.many() {
            return Err(AgentError::ManyApps);
        }
        let http = HttpOptions::from_args(&args)?;
        let notify = NotifyOptions::from_args(&args.notify)?;
        Ok(Self {
            args,
            targets: Arc::new(targets),
            metrics: Metrics::new(),
            http,
            notify,
        })
    }

    /// The metrics registry (`GET /metrics`); add a tool's own series to it.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs every application until SIGINT or SIGTERM (with `--etcd`, as
    /// one replica among several sharing the list); with `--once` or
    /// `--plan` (and `--config`), every application once, dependencies
    /// first, then returns.
    pub async fn run(self) -> Result<Outcome, AgentError> {
        if self.args.mode.once || self.args.mode.plan {
            let path = self
                .args
                .apps
                .config
                .as_deref()
                .ok_or(AgentError::ManyApps)?;
            return oneshot::run(&self.args, self.targets.as_ref(), path).await;
        }
        let common = self.common()?;
        #[cfg(feature = "etcd")]
        if self.args.replica.enabled() {
            return shared::run(&self, common).await;
        }
        self.run_local(common).await
    }

    /// What both modes set up first.
    fn common(&self) -> Result<Common, AgentError> {
        let signals = Signals::install()?;
        let state_dir = self
            .args
            .engine
            .state_dir
            .clone()
            .ok_or(AgentError::NoStateDir)?;
        std::fs::create_dir_all(&state_dir).map_err(|source| AgentError::Io {
            what: "creating --state-dir",
            source,
        })?;
        // The flags' keys are read (and refused) now; each application
        // reads its own when it is built.
        crate::trust::trusted_signers(&self.args.source)?;
        let keys = app::Keys {
            age: crate::run::age_keys(&self.args)?,
            digest: gitops_core::secret::DigestKey::load_or_create(
                &state_dir.join(crate::run::DIGEST_KEY_FILE),
            )?,
        };
        let notifier = self
            .notify
            .clone()
            .map(|options| Notifier::new(options, self.metrics.clone()));
        Ok(Common {
            signals,
            state_dir,
            keys,
            apps: AppSet::many(),
            notifier,
        })
    }

    /// Every application in this process, on the redb store.
    async fn run_local(&self, common: Common) -> Result<Outcome, AgentError> {
        let Common {
            mut signals,
            state_dir,
            keys,
            apps,
            notifier,
        } = common;
        let store = RedbStore::open(&state_dir).map_err(|source| AgentError::Store {
            path: state_dir.clone(),
            source,
        })?;
        let context = Context {
            credentials: self.args.credentials.clone(),
            store: Arc::new(store),
            metrics: self.metrics.clone(),
            notifier: notifier.clone(),
            apps: apps.clone(),
            targets: self.targets.clone(),
            prune_removed: self.args.apps.prune_removed,
            keys,
            backoff: restart::Backoff::default(),
        };
        let (mut supervisor, mut exits) =
            Supervisor::new(context, Repos::new(state_dir.join("git")));
        let defaults = Defaults::from_args(&self.args);
        let mut list = List::new(&self.args, &mut supervisor, &state_dir)?;
        list.start(&self.args, &defaults, &mut supervisor, &apps)
            .await?;
        let (stop_http, http) = self.serve(&apps, notifier.clone()).await?;
        let mut poll = tokio::time::interval(self.args.engine.interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                stop = signals.next() => {
                    if stop {
                        break;
                    }
                    tracing::info!("SIGHUP: reading the application list again");
                    list.expire();
                    list.refresh(&self.args, &defaults, &mut supervisor, &apps).await;
                    supervisor.reconcile_all();
                }
                _ = poll.tick(), if list.polled() => {
                    list.refresh(&self.args, &defaults, &mut supervisor, &apps).await;
                }
                Some(exit) = exits.recv() => supervisor.exited(exit),
            }
        }
        tracing::info!("shutting down (again to abort)");
        let handles = supervisor.stop_all();
        let wait = supervisor.wait();
        tokio::pin!(wait);
        tokio::select! {
            () = &mut wait => {}
            () = signals.stop() => {
                handles.iter().for_each(gitops_core::EngineHandle::shutdown);
                wait.await;
            }
        }
        finish(stop_http, http, notifier).await;
        Ok(Outcome::Stopped)
    }

    /// Starts the HTTP service (with `--listen`) for `apps`.
    async fn serve(
        &self,
        apps: &AppSet,
        notifier: Option<Notifier>,
    ) -> Result<Serving, AgentError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let Some(options) = &self.http else {
            return Ok((stop, None));
        };
        let context = AppContext::many(apps.clone(), self.metrics.clone(), notifier);
        let server = Server::bind(options.clone(), context).await?;
        tracing::info!(addr = %server.local_addr(), "listening");
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok((stop, Some(task)))
    }
}
