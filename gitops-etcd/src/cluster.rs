//! Replicas sharing applications: membership, rendezvous assignment, claims
//! bound to a lease, fencing, failover and graceful handover.
//!
//! Each replica
//!
//! 1. grants itself a lease of [`ReplicaConfig::ttl`] and keeps it alive
//!    every TTL/6;
//! 2. registers `<prefix>/members/<id>` under that lease;
//! 3. assigns every application to the live member with the highest
//!    rendezvous score (so a join or a death moves only the applications
//!    of that member);
//! 4. claims the applications assigned to it by creating
//!    `<prefix>/locks/<app>` under its lease, only if the key does not exist
//!    (one transaction); the key's create-revision is the [`Fence`];
//! 5. runs one [`Engine`] per claimed application, built by the factory
//!    with a fenced [`EtcdStore`] (see [`AppContext`]).
//!
//! **Failover.** A killed replica stops renewing its lease; etcd deletes its
//! member and lock keys when the lease expires (TTL after the last renewal),
//! the others see the deletes on their watch and claim within milliseconds:
//! takeover within TTL + ~0.5 s (etcd checks expiry every 500 ms).
//!
//! **Fencing.** A replica that can not prove its lease alive stops its
//! engines *before* etcd could expire the lease: when no keep-alive sent in
//! the last TTL/2 was acknowledged, or at once when etcd answers that the
//! lease is gone (revoked or expired). The lease expires at the earliest TTL
//! after the last acknowledged renewal was *sent*, so engines stop at least
//! TTL/2 before another replica can claim. Independently of timing, every
//! state write (and every [`EtcdTarget`](crate::EtcdTarget) write built with
//! the fence) checks the lock's create-revision in the same transaction, so
//! a replica that lost the lock — even one paused for longer than the TTL —
//! can not write.
//!
//! **Handover.** When the assignment moves an application away (a replica
//! joined) or the replica shuts down, its engine is asked to finish the
//! resources in flight (at most [`ReplicaConfig::handover_timeout`], then
//! aborted) and the lock is deleted; the new owner claims it at once.

use gitops_core::sync::LockExt as _;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchFilterType,
    WatchOptions,
};
use futures::StreamExt as _;
use gitops_core::{BoxError, Engine, EngineHandle, StateStore};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{EtcdClient, EtcdError};
use crate::fence::{Fence, escape, unescape};
use crate::store::EtcdStore;

/// Why a replica could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd failed.
    #[error("replica {replica}: {source}")]
    Etcd {
        /// The replica.
        replica: String,
        /// The etcd error.
        #[source]
        source: EtcdError,
    },
    /// The configuration is unusable.
    #[error("replica {replica}: invalid configuration: {message}")]
    Config {
        /// The replica.
        replica: String,
        /// What is wrong.
        message: String,
    },
}

impl ClusterError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Etcd { source, .. } => source.is_transient(),
            ClusterError::Config { .. } => false,
        }
    }
}

/// How a replica behaves. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's name, unique among live replicas (no `/`). A replica
    /// restarted under the same name waits until its previous incarnation's
    /// lease has expired.
    pub id: String,
    /// The key prefix the cluster shares (e.g. `/gitops`).
    pub prefix: String,
    /// Lease time-to-live (default 5 s, at least 2 s, whole seconds): a
    /// killed replica's applications are taken over about this long after
    /// its death; a replica stops its engines when it has not renewed the
    /// lease for TTL/2.
    pub ttl: Duration,
    /// How long a graceful handover waits for an engine to finish the
    /// resources in flight before aborting it (default 10 s).
    pub handover_timeout: Duration,
    /// How often the assignment is re-checked even when the watch is quiet
    /// (default: the TTL).
    pub rebalance_interval: Option<Duration>,
    /// Claims sent at once (default 32).
    pub claim_concurrency: usize,
}

impl ReplicaConfig {
    /// The defaults for replica `id` in cluster `prefix`.
    pub fn new(id: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            prefix: prefix.into().trim_end_matches('/').to_owned(),
            ttl: Duration::from_secs(5),
            handover_timeout: Duration::from_secs(10),
            rebalance_interval: None,
            claim_concurrency: 32,
        }
    }

    /// Sets the lease TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The keep-alive silence after which the replica stops its engines: TTL/2.
    pub fn safety_margin(&self) -> Duration {
        self.ttl / 2
    }

    fn validate(&self) -> Result<(), ClusterError> {
        let bad = |message: String| {
            Err(ClusterError::Config {
                replica: self.id.clone(),
                message,
            })
        };
        if self.id.is_empty() || self.id.contains('/') {
            return bad("the id must be non-empty and contain no '/'".into());
        }
        if self.ttl < Duration::from_secs(2) || self.ttl.subsec_nanos() != 0 {
            return bad(format!(
                "ttl {:?}: etcd leases are whole seconds, at least 2 s",
                self.ttl
            ));
        }
        if self.claim_concurrency == 0 {
            return bad("claim_concurrency must be at least 1".into());
        }
        Ok(())
    }

    fn lock_key(&self, app: &str) -> String {
        format!("{}/locks/{}", self.prefix, escape(app))
    }
}

/// What a factory gets to build the engine of one owned application.
#[derive(Debug, Clone)]
pub struct AppContext {
    app: String,
    fence: Fence,
    store: EtcdStore,
    client: EtcdClient,
    replica: String,
}

impl AppContext {
    /// The application; the engine must be named after it
    /// (`Engine::builder().name(ctx.app())`), or the replica refuses it.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// This replica's ownership of the application, for fenced writes
    /// ([`EtcdTarget::fenced`](crate::EtcdTarget::fenced)).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The fenced state store to give the engine.
    pub fn store(&self) -> Arc<dyn StateStore> {
        Arc::new(self.store.clone())
    }

    /// The connection to etcd.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// The replica running the engine.
    pub fn replica(&self) -> &str {
        &self.replica
    }
}

/// Builds the engine of one application; called each time the replica
/// claims it.
pub type EngineFactory = Arc<dyn Fn(&AppContext) -> Result<Engine, BoxError> + Send + Sync>;

/// What a replica did, in order; subscribe with [`ReplicaHandle::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Registered as a member under a new lease.
    Joined {
        /// The lease id.
        lease: i64,
    },
    /// Claimed an application; its engine is starting.
    Claimed {
        /// The application.
        app: String,
        /// The lock's create-revision (the fence).
        revision: i64,
    },
    /// Handed an application over: its engine stopped, the lock is being
    /// deleted.
    Released {
        /// The application.
        app: String,
    },
    /// Lost an application without handing it over (lock gone or taken);
    /// its engine was aborted.
    Lost {
        /// The application.
        app: String,
        /// Why.
        reason: String,
    },
    /// An engine could not be built or stopped by itself; the lock was
    /// released, and the replica claims the application again after one TTL
    /// (so an engine that fails at once does not spin).
    EngineFailed {
        /// The application.
        app: String,
        /// The error.
        error: String,
    },
    /// The lease could not be proven alive; every engine was stopped. The
    /// replica joins again under a new lease.
    LeaseLost {
        /// Why.
        reason: String,
    },
    /// Shut down: every application handed over, the lease revoked.
    Stopped,
}

/// The rendezvous (highest random weight) owner of `app` among `members`:
/// stable, and a member joining or leaving moves only the applications it
/// gains or had.
pub fn assign<'a>(app: &str, members: &'a [String]) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| (score(m, app), m.as_str()))
        .map(String::as_str)
}

fn score(member: &str, app: &str) -> u64 {
    // FNV-1a, then a SplitMix64 finalizer: stable across builds and
    // platforms (std's hasher is not guaranteed to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0xff]).chain(app.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

struct Shared {
    config: ReplicaConfig,
    apps: Vec<String>,
    client: EtcdClient,
    store: EtcdStore,
    factory: EngineFactory,
    events: broadcast::Sender<ClusterEvent>,
    owned: Mutex<BTreeSet<String>>,
    /// Applications whose engine failed, not claimed again before the instant.
    cooldown: Mutex<HashMap<String, Instant>>,
    lease: AtomicI64,
    shutdown: watch::Sender<bool>,
}

/// A running replica.
pub struct ReplicaHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ReplicaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaHandle")
            .field("id", &self.shared.config.id)
            .finish_non_exhaustive()
    }
}

/// Starts replicas.
#[derive(Debug)]
pub struct Replica;

impl Replica {
    /// Starts a replica sharing `apps` with every other replica of the same
    /// prefix (give every replica the same list). The first lease is granted
    /// before this returns, so an unreachable etcd or refused credentials
    /// fail here; later etcd failures are retried.
    pub async fn start(
        client: EtcdClient,
        config: ReplicaConfig,
        apps: Vec<String>,
        factory: EngineFactory,
    ) -> Result<ReplicaHandle, ClusterError> {
        config.validate()?;
        let mut apps = apps;
        apps.sort();
        apps.dedup();
        let (events, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            store: EtcdStore::new(client.clone(), config.prefix.clone()),
            config,
            apps,
            client,
            factory,
            events,
            owned: Mutex::new(BTreeSet::new()),
            cooldown: Mutex::new(HashMap::new()),
            lease: AtomicI64::new(0),
            shutdown: watch::channel(false).0,
        });
        let granted_at = Instant::now();
        let lease = shared.grant().await.map_err(|source| ClusterError::Etcd {
            replica: shared.config.id.clone(),
            source,
        })?;
        let task = tokio::spawn(shared.clone().run(lease, granted_at));
        Ok(ReplicaHandle { shared, task })
    }
}

impl ReplicaHandle {
    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.shared.config.id
    }

    /// The applications this replica runs now.
    pub fn owned(&self) -> Vec<String> {
        self.shared.owned().iter().cloned().collect()
    }

    /// The current lease id (0 between leases).
    pub fn lease(&self) -> i64 {
        self.shared.lease.load(Ordering::SeqCst)
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Starts a graceful shutdown: engines finish what is in flight (up to
    /// the handover timeout), locks are deleted, the lease is revoked; the
    /// others claim the applications at once.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Shuts down gracefully and waits until done.
    pub async fn stop(self) {
        self.shutdown();
        let _ = self.task.await;
    }

    /// Waits until the replica has stopped (after [`shutdown`](Self::shutdown)).
    pub async fn join(self) {
        let _ = self.task.await;
    }

    /// Stops at once without handing anything over, as if the process had
    /// been killed: engines are dropped, keep-alives stop, and the others
    /// take the applications over when the lease expires (one TTL). For
    /// tests, benchmarks and demonstrations of failover.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One claimed application.
struct Owned {
    revision: i64,
    handle: EngineHandle,
    /// Dropping or setting it aborts the engine.
    abort: watch::Sender<bool>,
    task: JoinHandle<Option<String>>,
}

struct Lock {
    owner: String,
    create_revision: i64,
    lease: i64,
}

enum SessionEnd {
    Shutdown,
    LeaseLost(String),
}

impl Shared {
    fn emit(&self, event: ClusterEvent) {
        let _ = self.events.send(event);
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.owned.locked()
    }

    /// Keeps `app` from being claimed again by this replica for one TTL, so
    /// an engine that fails at once does not spin.
    fn cool_down(&self, app: &str) {
        self.cooldown
            .locked()
            .insert(app.to_owned(), Instant::now() + self.config.ttl);
    }

    fn cooling(&self, app: &str) -> bool {
        let mut cooldown = self.cooldown.locked();
        let now = Instant::now();
        cooldown.retain(|_, until| *until > now);
        cooldown.contains_key(app)
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn etcd(&self, op: &'static str, key: &str) -> impl FnOnce(etcd_client::Error) -> EtcdError {
        let key = key.to_owned();
        move |e| EtcdError::request(op, key, e)
    }

    async fn grant(&self) -> Result<i64, EtcdError> {
        let ttl = i64::try_from(self.config.ttl.as_secs()).unwrap_or(i64::MAX);
        let resp = self
            .client
            .lease()
            .grant(ttl, None)
            .await
            .map_err(self.etcd("lease grant", &self.config.id))?;
        Ok(resp.id())
    }

    async fn run(self: Arc<Self>, first_lease: i64, first_granted_at: Instant) {
        let mut next = Some((first_lease, first_granted_at));
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if self.shutting_down() {
                break;
            }
            let (lease, granted_at) = match next.take() {
                Some(l) => l,
                None => {
                    let at = Instant::now();
                    match self.grant().await {
                        Ok(lease) => (lease, at),
                        Err(e) => {
                            tracing::warn!(replica = %self.config.id, error = %e, "lease grant failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = shutdown.changed() => {}
                            }
                            continue;
                        }
                    }
                }
            };
            self.lease.store(lease, Ordering::SeqCst);
            let end = self.session(lease, granted_at).await;
            self.lease.store(0, Ordering::SeqCst);
            self.owned().clear();
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::LeaseLost(reason) => {
                    tracing::warn!(replica = %self.config.id, %reason, "lease lost: engines stopped; joining again");
                    self.emit(ClusterEvent::LeaseLost { reason });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.emit(ClusterEvent::Stopped);
    }

    /// One lease's life: register, keep alive, rebalance until the lease is
    /// lost or shutdown is asked.
    async fn session(&self, lease: i64, granted_at: Instant) -> SessionEnd {
        let (lost_tx, mut lost) = watch::channel(None::<String>);
        let keeper = tokio::spawn(keep_alive(
            self.client.clone(),
            lease,
            self.config.ttl,
            granted_at,
            lost_tx,
        ));
        let _keeper = AbortOnDrop(keeper);
        let mut owned: HashMap<String, Owned> = HashMap::new();
        let mut shutdown = self.shutdown.subscribe();
        let end = tokio::select! {
            end = self.session_loop(lease, &mut owned, lost.clone()) => end,
            _ = lost.wait_for(Option::is_some) => SessionEnd::LeaseLost(String::new()),
            _ = shutdown.wait_for(|s| *s) => SessionEnd::Shutdown,
        };
        match end {
            SessionEnd::LeaseLost(_) => {
                let reason = lost
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| "keep-alive stopped".into());
                // The engines watch the same signal and are already stopping.
                let apps: Vec<String> = owned.keys().cloned().collect();
                for app in apps {
                    if let Some(o) = owned.remove(&app) {
                        self.abort(&app, o, &reason).await;
                    }
                }
                SessionEnd::LeaseLost(reason)
            }
            SessionEnd::Shutdown => {
                let apps: Vec<String> = owned.keys().cloned().collect();
                self.release(&mut owned, apps).await;
                if let Err(e) = self.client.revoke_lease(lease).await {
                    tracing::warn!(replica = %self.config.id, error = %e, "lease revoke failed; it expires by itself");
                }
                SessionEnd::Shutdown
            }
        }
    }

    async fn session_loop(
        &self,
        lease: i64,
        owned: &mut HashMap<String, Owned>,
        lost: watch::Receiver<Option<String>>,
    ) -> SessionEnd {
        let member_key = format!("{}/members/{}", self.config.prefix, escape(&self.config.id));
        // Register; a previous incarnation under the same id must expire first.
        let registered_at = loop {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    member_key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    member_key.as_str(),
                    self.config.id.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            match self.client.kv().txn(txn).await {
                Ok(resp) if resp.succeeded() => break resp.header().map_or(0, |h| h.revision()),
                Ok(_) => {
                    tracing::info!(replica = %self.config.id, "member key still held (a previous incarnation?); waiting for it to expire")
                }
                Err(e) => {
                    tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", member_key.as_str(), e), "registration failed; retrying")
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        self.emit(ClusterEvent::Joined { lease });
        let interval = self.config.rebalance_interval.unwrap_or(self.config.ttl);
        let mut watch = None;
        let mut due = Instant::now();
        loop {
            if watch.is_none() {
                watch = self.watch(registered_at + 1).await;
            }
            if Instant::now() >= due {
                due = Instant::now() + interval;
                self.rebalance(lease, owned, &lost).await;
            }
            let message = async {
                match watch.as_mut() {
                    Some(w) => w.message().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                msg = message => match msg {
                    Ok(Some(resp)) if !resp.canceled() => {
                        if !resp.events().is_empty() {
                            // Let a burst of deletes arrive, then look once.
                            due = due.min(Instant::now() + Duration::from_millis(20));
                        }
                    }
                    _ => {
                        watch = None;
                        due = due.min(Instant::now() + Duration::from_millis(200));
                    }
                },
            }
        }
    }

    /// Watches membership changes and lock deletions.
    async fn watch(&self, from: i64) -> Option<etcd_client::WatchStream> {
        let members = format!("{}/members/", self.config.prefix);
        let locks = format!("{}/locks/", self.config.prefix);
        let mut client = self.client.watch();
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = client
            .watch(members.as_str(), Some(options.clone()))
            .await
            .map_err(|e| tracing::warn!(error = %EtcdError::request("watch", members.as_str(), e), "watch failed"))
            .ok()?;
        stream
            .watch(
                locks.as_str(),
                Some(options.with_filters([WatchFilterType::NoPut])),
            )
            .await
            .map_err(|e| tracing::warn!(error = %EtcdError::request("watch", locks.as_str(), e), "watch failed"))
            .ok()?;
        Some(stream)
    }

    /// Members and locks, read in one transaction (one consistent revision).
    async fn snapshot(&self) -> Result<(Vec<String>, HashMap<String, Lock>), EtcdError> {
        let members = format!("{}/members/", self.config.prefix);
        let locks = format!("{}/locks/", self.config.prefix);
        let txn = Txn::new().and_then([
            TxnOp::get(
                members.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
            TxnOp::get(locks.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self
            .client
            .kv()
            .txn(txn)
            .await
            .map_err(self.etcd("txn", &members))?;
        let mut live = Vec::new();
        let mut held = HashMap::new();
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                let key = String::from_utf8_lossy(kv.key());
                if i == 0 {
                    if let Some(id) = key.strip_prefix(&members) {
                        live.push(unescape(id));
                    }
                } else if let Some(app) = key.strip_prefix(&locks) {
                    held.insert(
                        unescape(app),
                        Lock {
                            owner: String::from_utf8_lossy(kv.value()).into_owned(),
                            create_revision: kv.create_revision(),
                            lease: kv.lease(),
                        },
                    );
                }
            }
        }
        live.sort();
        Ok((live, held))
    }

    async fn rebalance(
        &self,
        lease: i64,
        owned: &mut HashMap<String, Owned>,
        lost: &watch::Receiver<Option<String>>,
    ) {
        let (live, locks) = match self.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(replica = %self.config.id, error = %e, "cannot read members and locks");
                return;
            }
        };
        // Engines that stopped by themselves, and applications whose lock
        // is gone or was re-created by someone else.
        let apps: Vec<String> = owned.keys().cloned().collect();
        for app in apps {
            let Some(o) = owned.get(&app) else { continue };
            let held = locks.get(&app).map(|l| l.create_revision);
            if held != Some(o.revision) {
                if let Some(o) = owned.remove(&app) {
                    self.abort(&app, o, "lock deleted or taken by another replica")
                        .await;
                }
            } else if o.task.is_finished()
                && let Some(o) = owned.remove(&app)
            {
                let error = o
                    .task
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "engine stopped".into());
                self.emit(ClusterEvent::EngineFailed {
                    app: app.clone(),
                    error,
                });
                self.cool_down(&app);
                self.delete_lock(&app, o.revision).await;
            }
        }
        if !live.contains(&self.config.id) {
            // Our member key is gone: the lease is about to be reported lost.
            self.publish(owned);
            return;
        }
        let mut to_release = Vec::new();
        let mut to_claim = Vec::new();
        for app in &self.apps {
            let mine = assign(app, &live) == Some(self.config.id.as_str());
            let mine = mine && !self.cooling(app);
            match (mine, owned.contains_key(app)) {
                (false, true) => to_release.push(app.clone()),
                (true, false) => match locks.get(app) {
                    None => to_claim.push((app.clone(), None)),
                    Some(l) if l.owner == self.config.id && l.lease == lease => {
                        to_claim.push((app.clone(), Some(l.create_revision)));
                    }
                    Some(_) => {} // the previous owner is handing it over
                },
                _ => {}
            }
        }
        if !to_release.is_empty() {
            self.release(owned, to_release).await;
        }
        let claims = futures::stream::iter(to_claim)
            .map(|(app, adopted)| async move {
                let revision = match adopted {
                    Some(r) => Some(r),
                    None => self.claim(&app, lease).await,
                };
                (app, revision)
            })
            .buffer_unordered(self.config.claim_concurrency)
            .collect::<Vec<_>>()
            .await;
        for (app, revision) in claims {
            let Some(revision) = revision else { continue };
            if lost.borrow().is_some() {
                break;
            }
            match self.start_engine(&app, revision, lost.clone()) {
                Ok(o) => {
                    owned.insert(app, o);
                }
                Err(error) => {
                    tracing::warn!(replica = %self.config.id, app, %error, "engine could not be built");
                    self.emit(ClusterEvent::EngineFailed {
                        app: app.clone(),
                        error,
                    });
                    self.cool_down(&app);
                    self.delete_lock(&app, revision).await;
                }
            }
        }
        self.publish(owned);
    }

    fn publish(&self, owned: &HashMap<String, Owned>) {
        *self.owned() = owned.keys().cloned().collect();
    }

    /// Creates the lock of `app` if nobody holds it; returns the fence revision.
    async fn claim(&self, app: &str, lease: i64) -> Option<i64> {
        let key = self.config.lock_key(app);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.config.id.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        match self.client.kv().txn(txn).await {
            Ok(resp) if resp.succeeded() => {
                let revision = resp.header().map_or(0, |h| h.revision());
                self.emit(ClusterEvent::Claimed {
                    app: app.to_owned(),
                    revision,
                });
                Some(revision)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", key, e), "claim failed");
                None
            }
        }
    }

    fn start_engine(
        &self,
        app: &str,
        revision: i64,
        lost: watch::Receiver<Option<String>>,
    ) -> Result<Owned, String> {
        let fence = Fence::new(app, self.config.lock_key(app), revision);
        let ctx = AppContext {
            app: app.to_owned(),
            store: self.store.fenced(fence.clone()),
            fence,
            client: self.client.clone(),
            replica: self.config.id.clone(),
        };
        let engine = (self.factory)(&ctx).map_err(|e| e.to_string())?;
        if engine.config().name != app {
            return Err(format!(
                "the factory built an engine named {:?}; it must be named after the application",
                engine.config().name
            ));
        }
        let handle = engine.handle();
        // A new owner reconciles at once, whatever the record says was last
        // applied: the previous owner may have died in the middle of a sync,
        // or the target drifted while nobody watched.
        handle.reconcile_now();
        let (abort, mut abort_rx) = watch::channel(false);
        let mut lost = lost;
        let task = tokio::spawn(async move {
            tokio::select! {
                result = engine.run() => result.err().map(|e| e.to_string()),
                _ = lost.wait_for(Option::is_some) => None,
                _ = abort_rx.wait_for(|a| *a) => None,
            }
        });
        Ok(Owned {
            revision,
            handle,
            abort,
            task,
        })
    }

    /// Stops an engine at once (its lock is no longer ours).
    async fn abort(&self, app: &str, o: Owned, reason: &str) {
        o.abort.send_replace(true);
        o.handle.shutdown();
        o.handle.shutdown();
        let _ = o.task.await;
        self.emit(ClusterEvent::Lost {
            app: app.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Graceful handover of `apps`: engines finish what is in flight (up to
    /// the handover timeout), then the locks are deleted.
    async fn release(&self, owned: &mut HashMap<String, Owned>, apps: Vec<String>) {
        let leaving: Vec<(String, Owned)> = apps
            .into_iter()
            .filter_map(|app| owned.remove(&app).map(|o| (app, o)))
            .collect();
        for (_, o) in &leaving {
            o.handle.shutdown();
        }
        let timeout = self.config.handover_timeout;
        futures::stream::iter(leaving)
            .map(|(app, o)| async move {
                let Owned {
                    revision,
                    abort,
                    mut task,
                    ..
                } = o;
                if tokio::time::timeout(timeout, &mut task).await.is_err() {
                    abort.send_replace(true);
                    let _ = task.await;
                }
                self.emit(ClusterEvent::Released { app: app.clone() });
                self.delete_lock(&app, revision).await;
            })
            .buffer_unordered(self.config.claim_concurrency)
            .collect::<Vec<_>>()
            .await;
    }

    /// Deletes the lock of `app` if it is still ours.
    async fn delete_lock(&self, app: &str, revision: i64) {
        let key = self.config.lock_key(app);
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if let Err(e) = self.client.kv().txn(txn).await {
            tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", key, e), "lock delete failed; it goes with the lease");
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews `lease` every TTL/6. Reports loss when etcd says the lease is
/// gone, or when no renewal sent in the last TTL/2 was acknowledged.
async fn keep_alive(
    client: EtcdClient,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    lost: watch::Sender<Option<String>>,
) {
    let interval = ttl / 6;
    let margin = ttl / 2;
    let mut deadline = granted_at + margin;
    let mut keeper = None;
    loop {
        let sent = Instant::now();
        let attempt = async {
            if keeper.is_none() {
                // Creating the stream sends one renewal and reads its answer.
                keeper = Some(client.lease().keep_alive(lease).await?);
                return Ok(Some(1));
            }
            let Some((k, stream)) = keeper.as_mut() else {
                return Ok(None);
            };
            k.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => {
                lost.send_replace(Some(format!(
                    "no keep-alive acknowledged within {margin:?} (TTL/2)"
                )));
                return;
            }
            Ok(Ok(Some(left))) if left > 0 => deadline = sent + margin,
            Ok(Ok(Some(_))) => {
                lost.send_replace(Some("lease expired or revoked".into()));
                return;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                lost.send_replace(Some("lease expired or revoked".into()));
                return;
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if i32::from(s.code()) == 5 => {
                lost.send_replace(Some("lease expired or revoked".into()));
                return;
            }
            Ok(Ok(None)) | Ok(Err(_)) => keeper = None,
        }
        let wake = (sent + interval).min(deadline);
        tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_stable_and_moves_little() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let apps: Vec<String> = (0..3000).map(|i| format!("app-{i}")).collect();
        let mut counts = HashMap::new();
        for app in &apps {
            let owner = assign(app, &three).unwrap();
            *counts.entry(owner).or_insert(0) += 1;
            let after = assign(app, &two).unwrap();
            if owner != "b" {
                assert_eq!(owner, after, "{app} moved though its owner stayed");
            }
        }
        for (m, n) in counts {
            assert!((800..1200).contains(&n), "{m} got {n} of 3000");
        }
        assert_eq!(assign("x", &[]), None);
    }

    #[test]
    fn config_is_validated() {
        let ok = ReplicaConfig::new("r1", "/g");
        assert!(ok.validate().is_ok());
        assert!(ReplicaConfig::new("a/b", "/g").validate().is_err());
        assert!(ok.clone().ttl(Duration::from_secs(1)).validate().is_err());
        assert!(ok.ttl(Duration::from_millis(2500)).validate().is_err());
    }
}
