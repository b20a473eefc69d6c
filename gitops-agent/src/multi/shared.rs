//! Replica mode (`--etcd`, feature `etcd`): the list is shared with the
//! other replicas through a [`Replica`]; this process builds and runs the
//! engines of the applications it owns, each on the fenced
//! [`EtcdStore`](gitops_etcd::EtcdStore) the replica hands it, and serves
//! them over HTTP; `GET /status` shows every application with its owner.
//!
//! - A new list (SIGHUP, a new commit of `--config-repo`) is checked (but
//!   for its directory targets, which only their owner opens), then
//!   shared ([`ReplicaHandle::set_apps`]); owned applications whose
//!   settings changed are handed over to this replica again
//!   ([`ReplicaHandle::restart`]), so their engine is built anew.
//! - `depends_on` reads the upstream's record from the shared store
//!   ([`Dependency::on_app`](gitops_core::Dependency::on_app)): it may run
//!   on another replica. The dependent looks at it on each of its polls.
//! - `[app.target] kind = "etcd"` becomes an
//!   [`EtcdTarget`](gitops_etcd::EtcdTarget) fenced by this replica's lock.
//! - SIGINT or SIGTERM hand every application over at once (a second one
//!   aborts; the others then take over within the lease TTL).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use gitops_core::source::BoxError;
use gitops_core::sync::LockExt as _;
use gitops_core::{Engine, HistoryEntry, StateStore as _, Target};
use gitops_etcd::{
    AppContext, ClusterEvent, EngineFactory, EtcdClient, EtcdStore, Replica, ReplicaHandle,
};
use gitops_git::{GitError, SharedRepository};
use tokio::sync::broadcast;
use tracing::Instrument as _;

use super::app::{self, Built, Keys, Parts, TargetFactory, Upstream};
use super::list::{Apply, List};
use super::repos::Repos;
use super::{Apps, Common, finish};
use crate::args::CredentialArgs;
use crate::config::{self, AppSpec, AppTarget, AppsConfig, Changes, ConfigError, Defaults};
use crate::http::{AppEntry, AppSet, RefFilter, Replicas};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::replica::{self, EtcdTargetSpec, PASSWORD_ENV, ReplicaError};
use crate::run::{AgentError, Outcome};

/// What the engine factory and the list share.
struct Inner {
    /// `--etcd-prefix`: no etcd target may write under it.
    cluster: String,
    /// The list in force.
    list: RwLock<Option<Arc<AppsConfig>>>,
    repos: Mutex<Repos>,
    credentials: CredentialArgs,
    keys: Keys,
    metrics: Metrics,
    notifier: Option<Notifier>,
    apps: AppSet,
    targets: Arc<dyn TargetFactory>,
    /// The fence (lock revision) of each served application's engine.
    served: Mutex<HashMap<String, i64>>,
}

/// The targets of the applications this replica owns: `kind = "etcd"`
/// fenced by its lock, the others from the agent's factory.
struct OwnedTargets<'a> {
    ctx: &'a AppContext,
    cluster: &'a str,
    others: &'a dyn TargetFactory,
}

impl TargetFactory for OwnedTargets<'_> {
    fn target(&self, app: &AppSpec) -> Result<Arc<dyn Target>, String> {
        match &app.target {
            AppTarget::Other { kind, settings } if kind == replica::KIND => {
                EtcdTargetSpec::parse(settings, self.cluster).map(|spec| spec.build(self.ctx))
            }
            _ => self.others.target(app),
        }
    }
}

impl Inner {
    fn list(&self) -> Option<Arc<AppsConfig>> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The engine of an application this replica just claimed, built from
    /// the list in force, and served.
    fn engine(&self, ctx: &AppContext) -> Result<Engine, BoxError> {
        let list = self.list().ok_or("no application list in force")?;
        let spec = list
            .get(ctx.app())
            .ok_or_else(|| format!("{:?} is not in the list in force", ctx.app()))?;
        let shared = self.repos.locked().get(&spec.repo)?;
        let targets = OwnedTargets {
            ctx,
            cluster: &self.cluster,
            others: self.targets.as_ref(),
        };
        let parts = Parts {
            keys: &self.keys,
            credentials: &self.credentials,
            store: ctx.store(),
            metrics: &self.metrics,
            targets: &targets,
        };
        let upstreams: Vec<Upstream<'_>> = spec
            .depends_on
            .iter()
            .filter_map(|name| list.get(name))
            .map(Upstream::Stored)
            .collect();
        let built = app::build(&parts, &list, spec, &shared, &upstreams)?;
        self.serve(&built, ctx.fence().revision());
        Ok(built.engine)
    }

    /// Serves a built engine over HTTP, with its metrics, notifications
    /// and log lines; they end with the engine.
    fn serve(&self, built: &Built, revision: i64) {
        let Built {
            spec,
            engine,
            shared,
            ..
        } = built;
        let span = tracing::info_span!("app", app = %spec.name);
        tokio::spawn(crate::run::narrate(engine.subscribe()).instrument(span));
        drop(self.metrics.watch(engine));
        if let Some(notifier) = &self.notifier {
            drop(notifier.follow(&spec.name, engine));
        }
        let entry = AppEntry::new(engine.clone(), RefFilter::from(&spec.release))
            .repository(&spec.repo, Some(shared.clone()));
        self.apps.insert(entry);
        self.served.locked().insert(spec.name.clone(), revision);
    }

    /// The engine of `app` under fence `revision` stopped: it leaves the
    /// HTTP service and the metrics (its new owner serves it), unless a
    /// newer engine of it already replaced it here.
    fn unserve(&self, app: &str, revision: i64) {
        let mut served = self.served.locked();
        if served.get(app) == Some(&revision) {
            served.remove(app);
            self.apps.remove(app);
            self.metrics.forget(app);
        }
    }
}

/// Follows the replica's events: an engine that stopped (handed over,
/// lost, failed) stops being served.
async fn follow(inner: Arc<Inner>, mut events: broadcast::Receiver<ClusterEvent>) {
    let mut claimed: HashMap<String, i64> = HashMap::new();
    loop {
        match events.recv().await {
            Ok(ClusterEvent::Claimed { app, revision }) => {
                tracing::info!(app, "claimed");
                claimed.insert(app, revision);
            }
            Ok(
                ClusterEvent::Released { app }
                | ClusterEvent::Lost { app, .. }
                | ClusterEvent::EngineFailed { app, .. },
            ) => {
                if let Some(revision) = claimed.remove(&app) {
                    inner.unserve(&app, revision);
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "replica events missed; the status may lag");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `GET /status` of a replica: owners from the lock keys, the newest
/// sync of the others' applications from the shared store.
struct Owners {
    replica: Arc<ReplicaHandle>,
    store: EtcdStore,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("replica", &self.replica.id())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Replicas for Owners {
    fn replica(&self) -> &str {
        self.replica.id()
    }

    fn apps(&self) -> Vec<String> {
        self.inner
            .list()
            .map(|list| list.apps.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default()
    }

    async fn owners(&self) -> Result<BTreeMap<String, String>, String> {
        self.replica.owners().await.map_err(|e| e.to_string())
    }

    async fn last_sync(&self, app: &str) -> Option<HistoryEntry> {
        self.store.history(app, 1).await.ok()?.into_iter().next()
    }
}

/// The list's side of replica mode.
struct Sharing {
    inner: Arc<Inner>,
    replica: Arc<ReplicaHandle>,
}

impl Apply for Sharing {
    fn repo(&mut self, url: &str) -> Result<SharedRepository, GitError> {
        self.inner.repos.locked().get(url)
    }

    /// Checks `next` (refused whole), then shares it; owned applications
    /// whose settings changed are built anew.
    async fn apply(&mut self, next: AppsConfig) -> Result<Changes, ConfigError> {
        check_etcd_targets(&next, &self.inner.cluster)?;
        for spec in &next.apps {
            let shared = self
                .repo(&spec.repo)
                .map_err(|e| next.error(&spec.name, "repo", e.to_string()))?;
            app::check(
                &self.inner.credentials,
                &self.inner.keys,
                &next,
                spec,
                &shared,
            )?;
        }
        let running = self
            .inner
            .list()
            .map(|list| list.apps.clone())
            .unwrap_or_default();
        let changes = config::diff(&running, &BTreeSet::new(), &next);
        let names: Vec<String> = next.apps.iter().map(|a| a.name.clone()).collect();
        self.inner.repos.locked().set_windows(
            next.apps
                .iter()
                .map(|a| (a.repo.as_str(), a.policy.interval)),
        );
        *self.inner.list.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(next));
        self.replica.set_apps(names);
        self.replica.restart(changes.restarted.iter().cloned());
        if !changes.is_empty() {
            tracing::info!(
                added = ?changes.added,
                removed = ?changes.removed,
                restarted = ?changes.restarted,
                "application list shared"
            );
        }
        Ok(changes)
    }
}

impl Sharing {
    /// Asks every application served here to look at its source now.
    fn reconcile_all(&self) {
        for entry in self.inner.apps.entries() {
            if let Some(shared) = &entry.shared {
                shared.expire();
            }
            entry.engine.handle().reconcile_now();
        }
    }
}

/// The `kind = "etcd"` targets of `config`: each checked, and no two
/// writing under overlapping prefixes.
fn check_etcd_targets(config: &AppsConfig, cluster: &str) -> Result<(), ConfigError> {
    let mut prefixes: Vec<(&str, String)> = Vec::new();
    for spec in &config.apps {
        if let AppTarget::Other { kind, settings } = &spec.target
            && kind == replica::KIND
        {
            let target = EtcdTargetSpec::parse(settings, cluster)
                .map_err(|m| config.error(&spec.name, "target", m))?;
            prefixes.push((spec.name.as_str(), target.prefix));
        }
    }
    let pairs: Vec<(&str, &str)> = prefixes.iter().map(|(n, p)| (*n, p.as_str())).collect();
    match replica::first_overlap(&pairs) {
        Some((first, second)) => Err(config.error(
            pairs[second].0,
            "target",
            format!(
                "prefix {} overlaps prefix {} of app {:?}: two apps cannot manage one key",
                pairs[second].1, pairs[first].1, pairs[first].0
            ),
        )),
        None => Ok(()),
    }
}

/// Runs the list as one replica until SIGINT or SIGTERM, then hands every
/// application over.
pub(super) async fn run(agent: &Apps, common: Common) -> Result<Outcome, AgentError> {
    let Common {
        mut signals,
        state_dir,
        keys,
        apps,
        notifier,
    } = common;
    let args = &agent.args.replica;
    if agent.args.apps.prune_removed {
        return Err(ReplicaError::PruneRemoved.into());
    }
    let etcd = args.etcd_config(std::env::var(PASSWORD_ENV).ok())?;
    let config = args.replica_config()?;
    let client = EtcdClient::connect(&etcd)
        .await
        .map_err(ReplicaError::from)?;
    let inner = Arc::new(Inner {
        cluster: config.prefix.clone(),
        list: RwLock::new(None),
        repos: Mutex::new(Repos::new(state_dir.join("git"))),
        credentials: agent.args.credentials.clone(),
        keys,
        metrics: agent.metrics.clone(),
        notifier: notifier.clone(),
        apps: apps.clone(),
        targets: agent.targets.clone(),
        served: Mutex::new(HashMap::new()),
    });
    let building = inner.clone();
    let factory: EngineFactory = Arc::new(move |ctx: &AppContext| building.engine(ctx));
    let store = EtcdStore::new(client.clone(), config.prefix.clone());
    let handle = Replica::start(client, config, Vec::new(), factory)
        .await
        .map_err(ReplicaError::from)?;
    let replica = Arc::new(handle);
    tracing::info!(replica = replica.id(), "joined the replicas on etcd");
    tokio::spawn(follow(inner.clone(), replica.subscribe()));
    apps.set_replicas(Arc::new(Owners {
        replica: replica.clone(),
        store,
        inner: inner.clone(),
    }));
    let mut sharing = Sharing {
        inner,
        replica: replica.clone(),
    };
    let defaults = Defaults::from_args(&agent.args);
    let mut list = List::new(&agent.args, &mut sharing, &state_dir)?;
    list.start(&agent.args, &defaults, &mut sharing, &apps)
        .await?;
    let (stop_http, http) = agent.serve(&apps, notifier.clone()).await?;
    let mut poll = tokio::time::interval(agent.args.engine.interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            stop = signals.next() => {
                if stop {
                    break;
                }
                tracing::info!("SIGHUP: reading the application list again");
                list.expire();
                list.refresh(&agent.args, &defaults, &mut sharing, &apps).await;
                sharing.reconcile_all();
            }
            _ = poll.tick(), if list.polled() => {
                list.refresh(&agent.args, &defaults, &mut sharing, &apps).await;
            }
        }
    }
    tracing::info!("handing every application over (again to abort)");
    let mut events = replica.subscribe();
    replica.shutdown();
    let stopped = async {
        loop {
            match events.recv().await {
                Ok(ClusterEvent::Stopped) | Err(broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
    };
    tokio::select! {
        () = stopped => {}
        () = signals.stop() => {
            tracing::warn!("aborted: the other replicas take over within the lease TTL");
        }
    }
    finish(stop_http, http, notifier).await;
    Ok(Outcome::Stopped)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(targets: &[(&str, &str)]) -> AppsConfig {
        let text: String = targets
            .iter()
            .map(|(name, prefix)| {
                format!(
                    "[[app]]\nname = {name:?}\nrepo = \"/r\"\n[app.target]\nkind = \"etcd\"\nprefix = {prefix:?}\n"
                )
            })
            .collect();
        config::parse(&text, "apps.toml", Path::new("/"), &Defaults::default()).expect("valid")
    }

    #[test]
    fn etcd_targets_are_checked_with_the_line_and_key() {
        assert!(check_etcd_targets(&config(&[("a", "/kv/a"), ("b", "/kv/ab")]), "/gitops").is_ok());
        let e = check_etcd_targets(&config(&[("a", "/kv/a"), ("b", "/kv/a/x")]), "/gitops")
            .expect_err("overlap")
            .to_string();
        assert_eq!(
            e,
            "apps.toml:10: app \"b\": target: prefix /kv/a/x overlaps prefix /kv/a of app \"a\": two apps cannot manage one key"
        );
        let e = check_etcd_targets(&config(&[("a", "/gitops/a")]), "/gitops")
            .expect_err("inside the cluster")
            .to_string();
        assert!(
            e.starts_with("apps.toml:4: app \"a\": target: prefix"),
            "{e}"
        );
    }
}
