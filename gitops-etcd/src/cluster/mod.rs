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
//!    (one transaction); the key's create-revision is the [`Fence`](crate::Fence);
//! 5. runs one [`Engine`](gitops_core::Engine) per claimed application, built by the factory
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
//!
//! **Changing the list.** [`ReplicaHandle::set_apps`] replaces the shared
//! list (give every replica the same one) and
//! [`ReplicaHandle::restart`] hands an owned application over to itself
//! (its engine is built anew, e.g. after its settings changed); both take
//! effect at the next rebalance, which they start at once.
//!
//! Inside: `config` (settings, errors), `event`, `assign` (rendezvous
//! hashing), `lease` (grant, keep-alive), `session` (one lease's life),
//! `rebalance` (what to release, claim, adopt), `engines` (one per claimed
//! application), `list` (changing the list, reading the owners).

mod assign;
mod config;
mod engines;
mod event;
mod lease;
mod list;
mod rebalance;
mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use gitops_core::sync::LockExt as _;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{EtcdClient, EtcdError};
use crate::store::EtcdStore;

pub use assign::assign;
pub use config::{ClusterError, MAX_REBALANCE_INTERVAL, MAX_TTL, ReplicaConfig};
pub use engines::{AppContext, EngineFactory};
pub use event::ClusterEvent;

/// What the replica's task and its handle share.
struct Shared {
    config: ReplicaConfig,
    /// The shared list, sorted and deduplicated ([`ReplicaHandle::set_apps`]).
    apps: Mutex<Arc<Vec<String>>>,
    /// Owned applications to hand over to this replica again ([`ReplicaHandle::restart`]).
    restarts: Mutex<BTreeSet<String>>,
    /// Starts a rebalance now.
    wake: tokio::sync::Notify,
    client: EtcdClient,
    store: EtcdStore,
    factory: EngineFactory,
    events: broadcast::Sender<ClusterEvent>,
    owned: Mutex<BTreeSet<String>>,
    /// Applications whose engine failed, not claimed again before the instant.
    cooldown: Mutex<HashMap<String, Instant>>,
    lease: AtomicI64,
    shutdown: watch::Sender<bool>,
    /// Start turns: how many engines run their first sync at once.
    starts: Arc<tokio::sync::Semaphore>,
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
        let starts = Arc::new(tokio::sync::Semaphore::new(config.start_concurrency));
        let shared = Arc::new(Shared {
            store: EtcdStore::new(client.clone(), config.prefix.clone())
                .with_audit_retention(config.audit_retention),
            config,
            apps: Mutex::new(Arc::new(apps)),
            restarts: Mutex::new(BTreeSet::new()),
            wake: tokio::sync::Notify::new(),
            client,
            factory,
            events,
            owned: Mutex::new(BTreeSet::new()),
            cooldown: Mutex::new(HashMap::new()),
            lease: AtomicI64::new(0),
            shutdown: watch::channel(false).0,
            starts,
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
}
