//! [`AppSet`]: the applications the HTTP service serves — one engine for a
//! single-application agent, or every application of a `--config`, added
//! and removed while the service runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use gitops_core::Engine;
use gitops_git::SharedRepository;
use serde::Serialize;

use super::last_sync::SyncLog;
use super::owners::Replicas;
use super::refs::RefFilter;
use super::routes::first_reconcile_ended;

/// One served application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppEntry {
    /// Its engine.
    pub engine: Engine,
    /// Which pushes a webhook acts on for it.
    pub refs: RefFilter,
    /// Its repository, normalised for matching webhook payloads
    /// ([`repo_key`](super::push::repo_key)); `None` matches any push.
    pub repo: Option<String>,
    /// The repository's shared cache, expired when a webhook names it.
    pub shared: Option<SharedRepository>,
    /// Latched once its first reconcile ended.
    ready: Arc<AtomicBool>,
    /// Its readiness and syncs are followed (see [`AppEntry::follow`]).
    followed: Arc<AtomicBool>,
    /// Its last sync as seen by the agent (for the status page).
    pub(crate) syncs: SyncLog,
    /// How many times its engine was restarted after ending by itself.
    pub(crate) restarts: Restarts,
}

/// How many times an application's engine was restarted. Cheap to clone;
/// clones share one count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restarts(Arc<AtomicU64>);

impl Restarts {
    /// The count.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one restart.
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl AppEntry {
    /// An application served for `engine`, acting on pushes `refs` accepts.
    pub fn new(engine: Engine, refs: RefFilter) -> Self {
        Self {
            engine,
            refs,
            repo: None,
            shared: None,
            ready: Arc::new(AtomicBool::new(false)),
            followed: Arc::new(AtomicBool::new(false)),
            syncs: SyncLog::default(),
            restarts: Restarts::default(),
        }
    }

    /// How many times its engine was restarted after it ended by itself
    /// (a panic or an error; applications of a `--config` only).
    pub fn restarts(&self) -> u64 {
        self.restarts.get()
    }

    /// Follows its readiness and its syncs on `runtime` (once: a second
    /// call does nothing, so that one record has one writer). The events
    /// are subscribed to now: start following before the engine runs, and
    /// the status page sees its first sync whole.
    pub(crate) fn follow(&self, runtime: &tokio::runtime::Handle) {
        if self.followed.swap(true, Ordering::SeqCst) {
            return;
        }
        runtime.spawn(self.watch_readiness());
        runtime.spawn(self.watch_syncs());
    }

    /// Follows the engine's events and keeps its last sync's steps in
    /// memory for the status page; ends with the engine.
    pub fn watch_syncs(&self) -> impl Future<Output = ()> + Send + 'static {
        self.syncs.follow(&self.engine)
    }

    /// Acts only on pushes to `repo` (any URL form; see
    /// [`repo_key`](super::push::repo_key)), expiring `shared` first.
    #[must_use]
    pub fn repository(mut self, repo: &str, shared: Option<SharedRepository>) -> Self {
        self.repo = Some(super::push::repo_key(repo));
        self.shared = shared;
        self
    }

    /// Whether its first reconcile has ended; latches.
    pub fn ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let ended = first_reconcile_ended(&self.engine.status());
        if ended {
            self.ready.store(true, Ordering::Relaxed);
        }
        ended
    }

    /// Follows the engine's status and latches readiness as soon as the
    /// first reconcile ends (a later window or dependency hold would hide
    /// it from a look at the status); ends with the engine (it does not
    /// keep the engine alive).
    pub fn watch_readiness(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut status = self.engine.handle().watch_status();
        let latch = self.ready.clone();
        async move {
            loop {
                if latch.load(Ordering::Relaxed) {
                    return;
                }
                if first_reconcile_ended(&status.borrow_and_update()) {
                    latch.store(true, Ordering::Relaxed);
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where the application list came from, for `GET /status`.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ConfigState {
    /// The file, or `repo (branch) path` for a list from Git.
    pub source: String,
    /// The commit the list in force came from (a list from Git).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why the newest list was refused (the list in force stays); names
    /// its file, commit, line and key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the list was last looked at (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    many: bool,
    /// A list is in force (a list from Git may not be yet).
    loaded: bool,
    all_ready: bool,
    apps: BTreeMap<String, AppEntry>,
    config: Option<ConfigState>,
    /// Who runs what, when replicas share the list (`--etcd`).
    replicas: Option<Arc<dyn Replicas>>,
}

/// The served applications. Cheap to clone; clones share one set.
#[derive(Debug, Clone, Default)]
pub struct AppSet {
    inner: Arc<RwLock<Inner>>,
}

impl AppSet {
    /// One application (today's single-application endpoints and shapes);
    /// inside a Tokio runtime, its readiness and its syncs are followed in
    /// the background, as for every application of a set of many (the
    /// status page shows its last sync).
    pub fn single(entry: AppEntry) -> Self {
        let set = Self::default();
        set.write(|inner| inner.loaded = true);
        set.insert(entry);
        set
    }

    /// An empty set of many applications (`--config`): `GET /status`
    /// lists them all; not ready until [`set_loaded`](Self::set_loaded).
    pub fn many() -> Self {
        let set = Self::default();
        set.write(|inner| inner.many = true);
        set
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether this is a set of many (`--config`).
    pub fn is_many(&self) -> bool {
        self.read(|i| i.many)
    }

    /// Serves `entry` (replacing one of the same name); inside a Tokio
    /// runtime, its readiness is followed in the background.
    pub fn insert(&self, entry: AppEntry) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            entry.follow(&runtime);
        }
        self.write(|i| i.apps.insert(entry.engine.name().to_owned(), entry));
    }

    /// Stops serving `name`.
    pub fn remove(&self, name: &str) -> Option<AppEntry> {
        self.write(|i| i.apps.remove(name))
    }

    /// The application called `name`.
    pub fn get(&self, name: &str) -> Option<AppEntry> {
        self.read(|i| i.apps.get(name).cloned())
    }

    /// Every application, by name.
    pub fn entries(&self) -> Vec<AppEntry> {
        self.read(|i| i.apps.values().cloned().collect())
    }

    /// The one application of a single-application set (or the first).
    pub fn first(&self) -> Option<AppEntry> {
        self.read(|i| i.apps.values().next().cloned())
    }

    /// A list is in force (the readiness of many applications waits for it).
    pub fn set_loaded(&self) {
        self.write(|i| i.loaded = true);
    }

    /// Records where the list came from and whether the newest was refused.
    pub fn set_config(&self, state: ConfigState) {
        self.write(|i| i.config = Some(state));
    }

    /// The applications are shared with other replicas: `GET /status`
    /// and the status page list every application of the list with its
    /// owner ([`Owner`](super::Owner)).
    pub fn set_replicas(&self, replicas: Arc<dyn Replicas>) {
        self.write(|i| i.replicas = Some(replicas));
    }

    /// Who runs what, when replicas share the list.
    pub fn replicas(&self) -> Option<Arc<dyn Replicas>> {
        self.read(|i| i.replicas.clone())
    }

    /// Where the list came from.
    pub fn config(&self) -> Option<ConfigState> {
        self.read(|i| i.config.clone())
    }

    /// Whether every application's first reconcile has ended (once a list
    /// is in force); latches.
    pub fn ready(&self) -> bool {
        let (loaded, latched, entries) = self.read(|i| {
            (
                i.loaded,
                i.all_ready,
                i.apps.values().cloned().collect::<Vec<_>>(),
            )
        });
        if latched {
            return true;
        }
        let ready = loaded && entries.iter().all(AppEntry::ready);
        if ready {
            self.write(|i| i.all_ready = true);
        }
        ready
    }
}
