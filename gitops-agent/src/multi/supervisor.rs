//! [`Supervisor`]: the running applications, and applying a new list to
//! them — build every new or changed application first (a list with one
//! that cannot be built is refused whole, nothing stops), then stop the
//! removed and changed ones (dependents first), then start the new and
//! changed ones (dependencies first).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gitops_core::{Engine, StateStore, Target};
use gitops_git::SharedRepository;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::app::{self, Built, Parts, TargetFactory, Upstream};
use super::list::Apply;
use super::prune::prune_removed;
use super::repos::Repos;
use super::restart::{self, Backoff, Ended};
use crate::args::CredentialArgs;
use crate::config::{self, AppSpec, AppTarget, AppsConfig, Changes, ConfigError};
use crate::http::{AppEntry, AppSet, RefFilter};
use crate::metrics::Metrics;
use crate::notify::Notifier;

/// How long a stopping application may take before it is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What every application of the agent shares.
pub(crate) struct Context {
    pub(crate) credentials: CredentialArgs,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) metrics: Metrics,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) apps: AppSet,
    pub(crate) targets: Arc<dyn TargetFactory>,
    pub(crate) prune_removed: bool,
    /// The agent-wide keys every application uses.
    pub(crate) keys: app::Keys,
    /// How an application whose engine ended by itself is restarted.
    pub(crate) backoff: Backoff,
}

/// An application whose engine ended by itself and was not restarted.
#[derive(Debug)]
pub(crate) struct Exit {
    name: String,
    generation: u64,
    ended: Ended,
}

struct Running {
    spec: AppSpec,
    engine: Engine,
    target: Arc<dyn Target>,
    shared: SharedRepository,
    generation: u64,
    task: JoinHandle<()>,
    /// Set before its engine is asked to stop: an end is then no failure.
    stop: watch::Sender<bool>,
    /// Metrics and notifications of this engine; they end with it.
    followers: Vec<JoinHandle<()>>,
    /// Watches of the engines it depends on; aborted when it stops.
    links: Vec<JoinHandle<()>>,
}

/// The running applications.
pub(crate) struct Supervisor {
    cx: Context,
    repos: Repos,
    config: Option<AppsConfig>,
    running: BTreeMap<String, Running>,
    /// Ended by themselves: restarted by the next list applied.
    dead: BTreeSet<String>,
    generation: u64,
    exits: mpsc::UnboundedSender<Exit>,
}

impl Supervisor {
    /// No application yet; ends of applications arrive on the receiver
    /// (hand them to [`exited`](Self::exited)).
    pub(crate) fn new(cx: Context, repos: Repos) -> (Self, mpsc::UnboundedReceiver<Exit>) {
        let (exits, ended) = mpsc::unbounded_channel();
        let supervisor = Self {
            cx,
            repos,
            config: None,
            running: BTreeMap::new(),
            dead: BTreeSet::new(),
            generation: 0,
            exits,
        };
        (supervisor, ended)
    }

    /// The specs running now, in the order of the list in force.
    fn running_specs(&self) -> Vec<AppSpec> {
        let order = self
            .config
            .as_ref()
            .map(|c| c.apps.as_slice())
            .unwrap_or_default();
        order
            .iter()
            .filter(|a| self.running.contains_key(&a.name))
            .map(|a| self.running[&a.name].spec.clone())
            .collect()
    }

    /// Applies `next`: refused whole (nothing changes) when an application
    /// cannot be built or two target directories overlap on disk.
    async fn apply_list(&mut self, next: AppsConfig) -> Result<Changes, ConfigError> {
        let changes = config::diff(&self.running_specs(), &self.dead, &next);
        check_real_overlaps(&next)?;
        let built = self.build(&next, &changes)?;
        self.stop(&changes).await;
        for app in built {
            self.start(app);
        }
        self.config = Some(next);
        let users: Vec<(String, Duration)> = self
            .running
            .values()
            .map(|r| (r.spec.repo.clone(), r.spec.policy.interval))
            .collect();
        self.repos
            .set_windows(users.iter().map(|(url, i)| (url.as_str(), *i)));
        if !changes.is_empty() {
            tracing::info!(
                added = ?changes.added,
                removed = ?changes.removed,
                restarted = ?changes.restarted,
                "application list applied"
            );
        }
        Ok(changes)
    }

    /// Builds every application `changes` starts, dependencies first.
    fn build(&mut self, next: &AppsConfig, changes: &Changes) -> Result<Vec<Built>, ConfigError> {
        let mut built: Vec<Built> = Vec::with_capacity(changes.start.len());
        for name in &changes.start {
            let Some(spec) = next.get(name) else { continue };
            let upstreams: Vec<Upstream<'_>> = spec
                .depends_on
                .iter()
                .filter_map(|upstream| {
                    built
                        .iter()
                        .find(|b| &b.spec.name == upstream)
                        .map(|b| Upstream::Local(&b.spec, &b.engine))
                        .or_else(|| {
                            self.running
                                .get(upstream)
                                .map(|r| Upstream::Local(&r.spec, &r.engine))
                        })
                })
                .collect();
            let shared = self
                .repos
                .get(&spec.repo)
                .map_err(|e| next.error(name, "repo", e.to_string()))?;
            let parts = Parts {
                credentials: &self.cx.credentials,
                store: self.cx.store.clone(),
                metrics: &self.cx.metrics,
                targets: self.cx.targets.as_ref(),
                keys: &self.cx.keys,
            };
            let app = app::build(&parts, next, spec, &shared, &upstreams)?;
            built.push(app);
        }
        Ok(built)
    }

    /// Stops what `changes` stops (all asked at once, then awaited); a
    /// removed application leaves the HTTP service and its gauges, and is
    /// pruned with `--prune-removed`.
    async fn stop(&mut self, changes: &Changes) {
        let stopping: Vec<(String, Running)> = changes
            .stop
            .iter()
            .filter_map(|name| self.running.remove(name).map(|r| (name.clone(), r)))
            .collect();
        for (_, running) in &stopping {
            running.links.iter().for_each(JoinHandle::abort);
            running.stop.send_replace(true);
            running.engine.handle().shutdown();
        }
        for (name, mut running) in stopping {
            self.dead.remove(&name);
            let removed = changes.removed.contains(&name);
            if removed {
                self.cx.apps.remove(&name);
            }
            finish(&name, &mut running).await;
            if removed {
                self.forget(name, running).await;
            }
        }
    }

    /// After a removed application stopped: its gauges go; with
    /// `--prune-removed`, what it deployed goes too.
    async fn forget(&self, name: String, running: Running) {
        let Running {
            engine,
            target,
            followers,
            ..
        } = running;
        drop(engine);
        for follower in followers {
            let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
        }
        self.cx.metrics.forget(&name);
        if !self.cx.prune_removed {
            tracing::info!(app = %name, "application removed; its resources stay (--prune-removed deletes them)");
            return;
        }
        match prune_removed(self.cx.store.as_ref(), target.as_ref(), &name).await {
            Ok(deleted) => tracing::info!(app = %name, deleted, "removed application pruned"),
            Err(e) => tracing::error!(error = %e, "pruning a removed application failed"),
        }
    }

    /// Runs a built application and serves it.
    fn start(&mut self, built: Built) {
        self.generation += 1;
        let generation = self.generation;
        let Built {
            spec,
            engine,
            target,
            shared,
            upstreams,
        } = built;
        let links = upstreams
            .into_iter()
            .map(|upstream| tokio::spawn(app::follow_upstream(upstream, engine.handle())))
            .collect();
        let name = spec.name.clone();
        let mut followers = vec![self.cx.metrics.watch(&engine)];
        if let Some(notifier) = &self.cx.notifier {
            followers.push(notifier.follow(&name, &engine));
        }
        let span = tracing::info_span!("app", app = %name);
        tokio::spawn(crate::run::narrate(engine.subscribe()).instrument(span.clone()));
        let entry = AppEntry::new(engine.clone(), RefFilter::from(&spec.release))
            .repository(&spec.repo, Some(shared.clone()));
        let restarts = entry.restarts.clone();
        self.cx.apps.insert(entry);
        let exits = self.exits.clone();
        let (stop, stopping) = watch::channel(false);
        let keeper = restart::keep_running(
            engine.clone(),
            stopping,
            restarts,
            self.cx.metrics.clone(),
            self.cx.backoff,
        );
        let task = tokio::spawn(
            async move {
                let ended = keeper.await;
                let _ = exits.send(Exit {
                    name,
                    generation,
                    ended,
                });
            }
            .instrument(span),
        );
        let name = spec.name.clone();
        self.dead.remove(&name);
        self.running.insert(
            name,
            Running {
                spec,
                engine,
                target,
                shared,
                generation,
                task,
                stop,
                followers,
                links,
            },
        );
    }

    /// An application ended without being asked to and was not restarted
    /// (its engine returned by itself): the next list applied (a reload)
    /// restarts it.
    pub(crate) fn exited(&mut self, exit: Exit) {
        let current = self
            .running
            .get(&exit.name)
            .is_some_and(|r| r.generation == exit.generation && !*r.stop.borrow());
        if !current {
            return;
        }
        match exit.ended.reason() {
            Some(error) => {
                tracing::error!(app = %exit.name, %error, "application stopped; a reload restarts it")
            }
            None => tracing::warn!(app = %exit.name, "application stopped; a reload restarts it"),
        }
        self.dead.insert(exit.name);
    }

    /// Asks every application to look at its source now, fetching anew.
    pub(crate) fn reconcile_all(&self) {
        for running in self.running.values() {
            running.shared.expire();
            running.engine.handle().reconcile_now();
        }
    }

    /// Asks every running application to stop; their handles (a second
    /// `shutdown` on them aborts).
    pub(crate) fn stop_all(&self) -> Vec<gitops_core::EngineHandle> {
        self.running
            .values()
            .map(|r| {
                r.stop.send_replace(true);
                let handle = r.engine.handle();
                handle.shutdown();
                handle
            })
            .collect()
    }

    /// Waits until every application stopped.
    pub(crate) async fn wait(&mut self) {
        for (_, running) in std::mem::take(&mut self.running) {
            running.links.iter().for_each(JoinHandle::abort);
            let _ = running.task.await;
            for follower in running.followers {
                let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
            }
        }
    }
}

impl Apply for Supervisor {
    fn repo(&mut self, url: &str) -> Result<SharedRepository, gitops_git::GitError> {
        self.repos.get(url)
    }

    async fn apply(&mut self, next: AppsConfig) -> Result<Changes, ConfigError> {
        self.apply_list(next).await
    }
}

/// Waits for a stopping application, aborting it after [`STOP_TIMEOUT`].
async fn finish(name: &str, running: &mut Running) {
    if tokio::time::timeout(STOP_TIMEOUT, &mut running.task)
        .await
        .is_err()
    {
        tracing::warn!(app = %name, "still stopping after {STOP_TIMEOUT:?}; aborting");
        running.engine.handle().shutdown();
        let _ = (&mut running.task).await;
    }
}

/// Two directory targets that overlap once symbolic links are resolved.
pub(crate) fn check_real_overlaps(next: &AppsConfig) -> Result<(), ConfigError> {
    let real: Vec<(&str, std::path::PathBuf)> = next
        .apps
        .iter()
        .filter_map(|a| match &a.target {
            AppTarget::Dir(dir) => Some((a.name.as_str(), config::overlap::canonical(dir))),
            AppTarget::Other { .. } => None,
        })
        .collect();
    let dirs: Vec<(&str, &std::path::Path)> = real.iter().map(|(n, p)| (*n, p.as_path())).collect();
    match config::overlap::first_overlap(&dirs) {
        Some((first, second)) => {
            let message = format!(
                "{} overlaps {} of app {:?} (through a symbolic link): two apps cannot manage one directory",
                dirs[second].1.display(),
                dirs[first].1.display(),
                dirs[first].0,
            );
            Err(next.error(dirs[second].0, "target_dir", message))
        }
        None => Ok(()),
    }
}
