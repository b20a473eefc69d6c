//! The convergent engine: keeps a [`Target`] equal to the release in a
//! [`Source`], in push mode ([`Engine::sync_once`], [`Engine::plan`]) or pull
//! mode ([`Engine::run`]) — one code path for both.
//!
//! The loop is level-triggered: a poll tick, a webhook
//! ([`EngineHandle::reconcile_now`]), a drift tick or a retry only says "look
//! again"; every reconcile reads the current revision and observes the
//! target afresh. At most one reconcile runs per engine at a time.
//!
//! ```
//! use std::sync::Arc;
//! use gitops_core::engine::Engine;
//! use gitops_core::testing::{MemorySource, MemoryTarget};
//! use gitops_core::ManifestRender;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let source = Arc::new(MemorySource::new("main"));
//! source.commit([("app.yaml", "kind: Config\nmetadata: { name: web }\nspec: { port: 80 }\n")]);
//! let target = Arc::new(MemoryTarget::new());
//! let engine = Engine::builder()
//!     .source(source.clone())
//!     .render(Arc::new(ManifestRender::new()))
//!     .target(target.clone())
//!     .build()?;
//! let report = engine.sync_once().await?;
//! println!("{report}");
//! assert!(report.converged());
//! assert_eq!(target.get(&"Config/web".parse()?).unwrap()["port"], 80);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod admission;
mod config;
mod events;
mod executor;
mod report;

use crate::sync::LockExt as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder as _;
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

pub use admission::{Dependency, Needs};
pub use config::{EngineConfig, RetryPolicy, WritebackConflict};
pub use events::Event;
// The stored vocabulary a report speaks in (defined in `crate::record`).
pub use crate::record::{Outcome, ResourceOutcome, SyncResult, Trigger};
pub use report::{SyncReport, Timings};

use crate::gate::{Gate, GateInput, GateResult, GateStage};
use crate::id::ResourceId;
use crate::model::{DriftPolicy, Inventory, Observed, Revision, spec_digest};
use crate::plan::{Change, Plan, PlanError, Planner};
use crate::render::{DesiredState, Render, RenderError};
use crate::source::{Source, SourceError};
use crate::status::{ConditionKind, RetryInfo, Status};
use crate::store::{
    AuditAction, AuditQuery, AuditRecord, EngineRecord, HistoryEntry, MemoryStore, StateStore,
    StoreError, Versioned,
};
use crate::target::{Target, TargetError};
use crate::window::{Clock, SyncWindows, SystemClock};
use crate::writeback::{Drifted, Writeback, WritebackError, WritebackRequest};

/// Why a reconcile could not run at all (per-resource failures are in the
/// [`SyncReport`] instead).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Polling or reading the source failed.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The revision could not be rendered; nothing of it was applied.
    #[error("revision {revision} refused: {source}")]
    Render {
        /// The refused revision.
        revision: Box<Revision>,
        /// Why.
        source: RenderError,
    },
    /// Observing the target failed.
    #[error("observe: {0}")]
    Observe(#[source] TargetError),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[source] StoreError),
    /// Planning failed.
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    /// The engine is suspended; resume it first.
    #[error("engine {0} is suspended")]
    Suspended(String),
    /// A second shutdown request aborted the reconcile.
    #[error("aborted by shutdown")]
    Aborted,
    /// The revision would delete every managed resource and
    /// `EngineConfig::allow_empty` is off.
    #[error(
        "revision {revision} has no resources and would delete all {managed} managed ones; refused (set allow_empty to permit)"
    )]
    EmptyRevision {
        /// The refused revision.
        revision: Box<Revision>,
        /// How many resources the engine manages.
        managed: usize,
    },
    /// A rollback named a revision the source cannot provide.
    #[error("rollback to {revision}: {source}")]
    Rollback {
        /// The requested revision.
        revision: Box<Revision>,
        /// Why it could not be read.
        source: SourceError,
    },
    /// The builder was missing a part.
    #[error("engine configuration: {0}")]
    Config(String),
    /// A sync window or a dependency holds the revision back; nothing was
    /// changed. Not an error of the revision: it is tried again later.
    #[error("revision {revision}: {}", blocked.message)]
    Blocked {
        /// The revision that waits.
        revision: Box<Revision>,
        /// What blocks it and until when.
        blocked: Box<crate::status::Blocked>,
    },
}

impl EngineError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Source(e) => e.is_transient(),
            EngineError::Observe(e) => e.is_transient(),
            EngineError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The revision it is about, when one was read.
    pub fn revision(&self) -> Option<&Revision> {
        match self {
            EngineError::Render { revision, .. }
            | EngineError::EmptyRevision { revision, .. }
            | EngineError::Rollback { revision, .. }
            | EngineError::Blocked { revision, .. } => Some(revision),
            _ => None,
        }
    }
}

/// `now + wait`, or about thirty years from now when `wait` is too long for
/// the clock: a `Duration::MAX` interval or timeout means "not by itself",
/// never a panic.
pub(crate) fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const ABORT: u8 = 2;

/// A revision the engine will not retry by itself (stalled, or retries
/// exhausted) until the source moves or someone calls `reconcile_now`.
#[derive(Debug)]
struct Hold {
    /// The held revision id; `None` when no revision could be read.
    revision: Option<String>,
}

struct Retry {
    revision: Option<String>,
    backoff: backon::ExponentialBackoff,
    attempt: usize,
    due: Instant,
}

/// A rendered revision with the digest of every resource, cached while the
/// revision stays the same (drift checks and retries skip fetch and render).
pub(crate) struct Prepared {
    desired: DesiredState,
    digests: Vec<String>,
}

/// What the loop remembers between reconciles; guarded by the reconcile lock.
#[derive(Default)]
struct LoopState {
    hold: Option<Hold>,
    retry: Option<Retry>,
    last_applied: Option<String>,
    /// The durable record (pins, bad revisions, last healthy), loaded once.
    record: Option<Versioned<EngineRecord>>,
    /// An automatic rollback is waiting to run.
    rollback_due: bool,
    /// A sync window held back this trigger and opens at this instant: wake
    /// then rather than at the next poll or drift check, which may be hours.
    window_opens: Option<(Instant, Trigger)>,
}

pub(crate) struct Inner {
    config: EngineConfig,
    source: Arc<dyn Source>,
    render: Arc<dyn Render>,
    target: Arc<dyn Target>,
    store: Arc<dyn StateStore>,
    writeback: Option<Arc<dyn Writeback>>,
    pre_gates: Vec<Arc<dyn Gate>>,
    post_gates: Vec<Arc<dyn Gate>>,
    clock: Arc<dyn Clock>,
    dependencies: Vec<Dependency>,
    events: broadcast::Sender<Event>,
    status: watch::Sender<Status>,
    trigger: Notify,
    shutdown: watch::Sender<u8>,
    suspended: AtomicBool,
    state: Mutex<LoopState>,
    cache: std::sync::Mutex<Option<(String, Arc<Prepared>)>>,
    /// A rollback asked for through the handle, taken by the run loop.
    rollback_request: std::sync::Mutex<Option<Revision>>,
    /// `resume()` was called: the loop clears any pin.
    resume_request: AtomicBool,
    /// The last drift handed to write-back: not handed again.
    writeback_memo: std::sync::Mutex<Option<WritebackKey>>,
    /// Resources a write-back conflict sent back to revert, at one revision.
    force_revert: std::sync::Mutex<Option<(String, HashSet<ResourceId>)>>,
}

/// Identifies one write-back: the revision and what the target held.
#[derive(Debug, PartialEq, Eq)]
struct WritebackKey {
    revision: String,
    observed: Vec<(ResourceId, Option<String>)>,
}

/// Builds an [`Engine`]; source, render and target are required.
#[derive(Default)]
pub struct EngineBuilder {
    config: EngineConfig,
    source: Option<Arc<dyn Source>>,
    render: Option<Arc<dyn Render>>,
    target: Option<Arc<dyn Target>>,
    store: Option<Arc<dyn StateStore>>,
    writeback: Option<Arc<dyn Writeback>>,
    pre_gates: Vec<Arc<dyn Gate>>,
    post_gates: Vec<Arc<dyn Gate>>,
    clock: Option<Arc<dyn Clock>>,
    dependencies: Vec<Dependency>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Where releases come from.
    pub fn source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// How snapshots become desired state.
    pub fn render(mut self, render: Arc<dyn Render>) -> Self {
        self.render = Some(render);
        self
    }

    /// The system kept equal to Git.
    pub fn target(mut self, target: Arc<dyn Target>) -> Self {
        self.target = Some(target);
        self
    }

    /// Where the inventory lives (default: a [`MemoryStore`], lost on exit).
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where `writeback`-policy drift goes (default: none; such drift is reported only).
    pub fn writeback(mut self, writeback: Arc<dyn Writeback>) -> Self {
        self.writeback = Some(writeback);
        self
    }

    /// A gate that must pass before a revision with changes is applied.
    pub fn pre_sync_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.pre_gates.push(gate);
        self
    }

    /// A gate that must pass after a revision with changes was applied and
    /// found healthy (or, without changes, when its last run on this
    /// revision failed); a failure marks the revision failed.
    pub fn post_sync_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.post_gates.push(gate);
        self
    }

    /// When syncs may change the target (see [`crate::window`]).
    pub fn windows(mut self, windows: SyncWindows) -> Self {
        self.config.windows = windows;
        self
    }

    /// The wall clock sync windows are read against (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Syncs only while another engine of this process is Ready (see
    /// [`Dependency`]); the status names the dependency that blocks.
    pub fn depends_on(mut self, dependency: Dependency) -> Self {
        self.dependencies.push(dependency);
        self
    }

    /// All policies at once. Replaces everything set before, the name
    /// included: call [`name`](Self::name) and the other setters after it.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// The application name (the state-store key).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Poll interval of pull mode.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// Drift-check interval of pull mode.
    pub fn drift_interval(mut self, interval: Duration) -> Self {
        self.config.drift_interval = interval;
        self
    }

    /// Retry policy for transient failures.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<Engine, EngineError> {
        let missing = |what: &str| EngineError::Config(format!("{what} is required"));
        if self.config.concurrency == 0 || self.config.observe_chunk == 0 {
            return Err(EngineError::Config(
                "concurrency and observe_chunk must be at least 1".into(),
            ));
        }
        // Zero would poll (or check drift) in a busy loop.
        for (name, value) in [
            ("interval", self.config.interval),
            ("drift_interval", self.config.drift_interval),
            ("health_poll", self.config.health_poll),
        ] {
            if value.is_zero() {
                return Err(EngineError::Config(format!(
                    "{name} must be longer than zero (Duration::MAX: only when triggered)"
                )));
            }
        }
        if let Some(own) = self
            .dependencies
            .iter()
            .find(|d| d.name() == self.config.name)
        {
            return Err(EngineError::Config(format!(
                "app `{}` cannot depend on itself",
                own.name()
            )));
        }
        let (events, _) = broadcast::channel(1024);
        let (status, _) = watch::channel(Status::default());
        let (shutdown, _) = watch::channel(RUNNING);
        Ok(Engine {
            inner: Arc::new(Inner {
                config: self.config,
                source: self.source.ok_or_else(|| missing("a source"))?,
                render: self.render.ok_or_else(|| missing("a render"))?,
                target: self.target.ok_or_else(|| missing("a target"))?,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                writeback: self.writeback,
                pre_gates: self.pre_gates,
                post_gates: self.post_gates,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                dependencies: self.dependencies,
                events,
                status,
                trigger: Notify::new(),
                shutdown,
                suspended: AtomicBool::new(false),
                state: Mutex::new(LoopState::default()),
                cache: std::sync::Mutex::new(None),
                rollback_request: std::sync::Mutex::new(None),
                resume_request: AtomicBool::new(false),
                writeback_memo: std::sync::Mutex::new(None),
                force_revert: std::sync::Mutex::new(None),
            }),
        })
    }
}

/// The engine. Cheap to clone; clones share one state and one reconcile lock.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Controls a running engine from elsewhere (a webhook receiver, a signal
/// handler, an admin endpoint).
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.inner.config.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("name", &self.inner.config.name)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Asks for a reconcile as soon as possible; calls made while one is
    /// pending coalesce into one. Also clears a stalled or failed hold (an
    /// explicit retry).
    pub fn reconcile_now(&self) {
        self.inner.trigger.notify_one();
    }

    /// Stops automatic reconciles (polls, drift checks, retries) until [`resume`](Self::resume).
    pub fn suspend(&self) {
        self.inner.suspended.store(true, Ordering::SeqCst);
        self.inner.status.send_modify(|s| s.suspended = true);
    }

    /// Resumes automatic reconciles, ends a rollback pin, and reconciles at once.
    pub fn resume(&self) {
        self.inner.suspended.store(false, Ordering::SeqCst);
        self.inner.resume_request.store(true, Ordering::SeqCst);
        self.inner.status.send_modify(|s| s.suspended = false);
        self.reconcile_now();
    }

    /// Asks the running engine to deploy `revision` (e.g. from
    /// [`Engine::history`]) and pin it: automatic advance stops until
    /// [`resume`](Self::resume) (or, with `unpin_on_new_commit`, a newer
    /// commit). Recorded in history with trigger `rollback`.
    pub fn rollback(&self, revision: Revision) {
        *self.inner.rollback_request.locked() = Some(revision);
        self.reconcile_now();
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// First call: finish the resources in flight, start nothing new, stop.
    /// Second call: abort at once.
    pub fn shutdown(&self) {
        self.inner
            .shutdown
            .send_modify(|level| *level = (*level + 1).min(ABORT));
    }
}

impl Engine {
    /// A builder with the defaults of [`EngineConfig`].
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A handle for controlling the engine while [`run`](Self::run) is going.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            inner: self.inner.clone(),
        }
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The policies in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The newest `limit` history entries, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, EngineError> {
        self.inner
            .store
            .history(&self.inner.config.name, limit)
            .await
            .map_err(EngineError::Store)
    }

    /// Audit records matching `query`, oldest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, EngineError> {
        self.inner
            .store
            .audit(&self.inner.config.name, query)
            .await
            .map_err(EngineError::Store)
    }

    /// Writes the audit records matching `query` as JSON lines.
    pub async fn export_audit(
        &self,
        query: &AuditQuery,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<usize, EngineError> {
        let records = self.audit(query).await?;
        for r in &records {
            let line = serde_json::to_string(r).map_err(|e| {
                EngineError::Store(StoreError::Corrupt {
                    location: self.inner.config.name.clone(),
                    message: format!("cannot encode audit record: {e}"),
                })
            })?;
            writeln!(out, "{line}").map_err(|e| {
                EngineError::Store(StoreError::Unavailable {
                    location: "audit export".into(),
                    message: e.to_string(),
                    source: Some(Box::new(e)),
                })
            })?;
        }
        Ok(records.len())
    }

    /// Push-mode rollback: deploys `revision` now and pins it (see
    /// [`EngineHandle::rollback`]).
    pub async fn rollback(&self, revision: &Revision) -> Result<SyncReport, EngineError> {
        let mut state = self.inner.state.lock().await;
        self.inner.load_record(&mut state).await?;
        let head = self.inner.source.poll().await.ok().map(|r| r.id);
        self.inner
            .pin(
                &mut state,
                revision.clone(),
                head.filter(|_| self.inner.config.unpin_on_new_commit),
            )
            .await?;
        state.hold = None;
        let result = self
            .inner
            .guarded_reconcile(Trigger::Rollback, Some(revision.clone()))
            .await;
        self.inner
            .after_sync(&mut state, Trigger::Rollback, &result)
            .await;
        result
    }

    /// Dry run: fetch, render, observe and plan; changes nothing.
    pub async fn plan(&self) -> Result<Plan, EngineError> {
        let mut state = self.inner.state.lock().await;
        self.inner.load_record(&mut state).await?;
        let pinned = state.record.as_ref().and_then(|r| r.value.pinned.clone());
        let revision = match pinned {
            Some(rev) => rev,
            None => self.inner.source.poll().await?,
        };
        let (prepared, _, _) = self.inner.prepare(&revision).await?;
        let desired = &prepared.desired;
        let inventory = self
            .inner
            .store
            .load_inventory(&self.inner.config.name)
            .await
            .map_err(EngineError::Store)?;
        let (plan, _) = self
            .inner
            .observe_and_plan(desired, &inventory.value)
            .await?;
        Ok(plan)
    }

    /// One full reconcile (push mode). Per-resource failures are in the
    /// report; an `Err` means the reconcile could not run (source, render,
    /// observe or store failure). Fails with [`EngineError::Suspended`] while
    /// suspended.
    pub async fn sync_once(&self) -> Result<SyncReport, EngineError> {
        if self.inner.suspended.load(Ordering::SeqCst) {
            return Err(EngineError::Suspended(self.inner.config.name.clone()));
        }
        let mut state = self.inner.state.lock().await;
        self.inner.load_record(&mut state).await?;
        state.hold = None;
        let pinned = state.record.as_ref().and_then(|r| r.value.pinned.clone());
        let result = self.inner.guarded_reconcile(Trigger::Manual, pinned).await;
        self.inner
            .after_sync(&mut state, Trigger::Manual, &result)
            .await;
        result
    }

    /// Pull mode: polls, checks drift, retries and answers
    /// [`EngineHandle::reconcile_now`] until [`EngineHandle::shutdown`].
    pub async fn run(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        {
            let mut state = inner.state.lock().await;
            inner.load_record(&mut state).await?;
        }
        let mut shutdown = inner.shutdown.subscribe();
        let mut next_poll = Instant::now();
        let mut next_drift = after(Instant::now(), inner.config.drift_interval);
        loop {
            if *shutdown.borrow() >= GRACEFUL {
                return Ok(());
            }
            let (retry_due, rollback_due, window_opens) = {
                let state = inner.state.lock().await;
                (
                    state.retry.as_ref().map(|r| r.due),
                    state.rollback_due,
                    state.window_opens,
                )
            };
            let wake = if rollback_due {
                Instant::now()
            } else {
                [
                    Some(next_poll),
                    Some(next_drift),
                    retry_due,
                    window_opens.map(|(at, _)| at),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_poll)
            };
            let webhook = tokio::select! {
                _ = tokio::time::sleep_until(wake) => false,
                _ = inner.trigger.notified() => true,
                _ = shutdown.changed() => continue,
            };
            let mut state = inner.state.lock().await;
            if inner.resume_request.swap(false, Ordering::SeqCst) {
                inner.unpin(&mut state).await;
            }
            let requested = inner.rollback_request.locked().take();
            if let Some(revision) = requested {
                let head = inner.source.poll().await.ok().map(|r| r.id);
                let until = head.filter(|_| inner.config.unpin_on_new_commit);
                if let Err(e) = inner.pin(&mut state, revision, until).await {
                    tracing::warn!(error = %e, "could not record the rollback pin");
                }
                state.rollback_due = true;
            }
            if inner.suspended.load(Ordering::SeqCst) {
                // Due work waits for resume(), which triggers a reconcile.
                let now = Instant::now();
                next_poll = next_poll.max(after(now, inner.config.interval));
                next_drift = next_drift.max(after(now, inner.config.drift_interval));
                continue;
            }
            let now = Instant::now();
            let trigger = if state.rollback_due {
                Trigger::Rollback
            } else if webhook {
                Trigger::Webhook
            } else if let Some((_, held)) = state.window_opens.filter(|(at, _)| *at <= now) {
                // What the window held back runs as what it was.
                state.window_opens = None;
                held
            } else if retry_due.is_some_and(|due| due <= now) {
                Trigger::Retry
            } else if next_drift <= now {
                Trigger::Drift
            } else {
                Trigger::Poll
            };
            if matches!(trigger, Trigger::Poll | Trigger::Webhook) {
                next_poll = after(now, inner.jittered_interval());
            }
            if matches!(trigger, Trigger::Drift | Trigger::Webhook) {
                next_drift = after(now, inner.config.drift_interval);
            }
            state.rollback_due = false;

            match trigger {
                Trigger::Webhook => state.hold = None,
                Trigger::Poll => {
                    // The cheap check: reconcile only for a revision not yet
                    // applied, not awaiting a retry, not held, not bad.
                    match inner.source.poll().await {
                        Ok(rev) => {
                            if inner.release_pin_for(&mut state, &rev).await {
                                continue;
                            }
                            let known = |id: Option<&String>| id == Some(&rev.id);
                            let bad = state
                                .record
                                .as_ref()
                                .is_some_and(|r| r.value.bad.contains(&rev.id));
                            if bad
                                || known(state.last_applied.as_ref())
                                || known(state.retry.as_ref().and_then(|r| r.revision.as_ref()))
                            {
                                continue;
                            }
                            match &state.hold {
                                Some(hold) if known(hold.revision.as_ref()) => continue,
                                _ => state.hold = None,
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "poll failed");
                            let result = Err(EngineError::Source(e));
                            inner.after_sync(&mut state, trigger, &result).await;
                            continue;
                        }
                    }
                }
                Trigger::Drift | Trigger::Retry if state.hold.is_some() => continue,
                _ => {}
            }
            let pinned = state.record.as_ref().and_then(|r| r.value.pinned.clone());
            let result = inner.guarded_reconcile(trigger, pinned).await;
            inner.after_sync(&mut state, trigger, &result).await;
            drop(state);
            match &result {
                // A newer revision, or our own write-back commit: deploy it now.
                Ok(report)
                    if report.result == SyncResult::Superseded || report.written_back.is_some() =>
                {
                    next_poll = Instant::now()
                }
                Err(EngineError::Aborted) => return Ok(()),
                _ => {}
            }
        }
    }
}

impl Inner {
    fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow() >= GRACEFUL
    }

    async fn graceful_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|level| *level >= GRACEFUL).await;
    }

    async fn abort(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|level| *level >= ABORT).await;
    }

    fn jittered_interval(&self) -> Duration {
        let jitter = self.config.interval_jitter.max(0.0) * fastrand::f64();
        // Saturates: `Duration::MAX` stays "never by itself".
        Duration::try_from_secs_f64(self.config.interval.as_secs_f64() * (1.0 + jitter))
            .unwrap_or(Duration::MAX)
    }

    /// Resolves when the source reports a revision other than `current`:
    /// checked every poll interval, and at once on `reconcile_now`.
    fn wait_newer_revision(&self, current: String) -> executor::BoxFuture<'_, Revision> {
        Box::pin(async move {
            loop {
                let tick = tokio::time::sleep(self.config.interval);
                let webhook: executor::BoxFuture<'_, ()> = Box::pin(self.trigger.notified());
                tokio::select! {
                    _ = tick => {}
                    _ = webhook => {}
                }
                match self.source.poll().await {
                    Ok(rev) if rev.id != current => return rev,
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "poll during health wait failed"),
                }
            }
        })
    }

    /// Loads the durable engine record once per engine.
    async fn load_record(&self, state: &mut LoopState) -> Result<(), EngineError> {
        if state.record.is_some() {
            return Ok(());
        }
        let record = self
            .store
            .load_record(&self.config.name)
            .await
            .map_err(EngineError::Store)?;
        state.last_applied = record.value.last_applied.as_ref().map(|r| r.id.clone());
        let last_applied = record.value.last_applied.clone();
        self.status.send_modify(|s| {
            if s.last_applied.is_none() {
                s.last_applied = last_applied;
            }
        });
        state.record = Some(record);
        Ok(())
    }

    /// Changes the engine record and writes it (compare-and-swap).
    async fn update_record(
        &self,
        state: &mut LoopState,
        change: impl FnOnce(&mut EngineRecord),
    ) -> Result<(), EngineError> {
        self.load_record(state).await?;
        let Some(current) = state.record.as_mut() else {
            return Ok(());
        };
        let mut next = current.value.clone();
        change(&mut next);
        if next == current.value {
            return Ok(());
        }
        let version = self
            .store
            .save_record(&self.config.name, &next, current.version)
            .await
            .map_err(EngineError::Store)?;
        *current = Versioned {
            version,
            value: next,
        };
        Ok(())
    }

    async fn pin(
        &self,
        state: &mut LoopState,
        revision: Revision,
        unpin_after: Option<String>,
    ) -> Result<(), EngineError> {
        tracing::info!(%revision, "pinned by rollback");
        self.update_record(state, |r| {
            r.pinned = Some(revision);
            r.unpin_after = unpin_after;
        })
        .await
    }

    async fn unpin(&self, state: &mut LoopState) {
        if let Err(e) = self
            .update_record(state, |r| {
                r.pinned = None;
                r.unpin_after = None;
            })
            .await
        {
            tracing::warn!(error = %e, "could not clear the rollback pin");
        }
    }

    /// For a poll that saw `head`: whether to skip it because a pin holds.
    /// A pin with `unpin_after` ends when a commit other than that one (and
    /// the pinned one) appears.
    async fn release_pin_for(&self, state: &mut LoopState, head: &Revision) -> bool {
        let Some(record) = state.record.as_ref().map(|r| &r.value) else {
            return false;
        };
        let Some(pinned) = &record.pinned else {
            return false;
        };
        let newer = record
            .unpin_after
            .as_ref()
            .is_some_and(|old| *old != head.id && pinned.id != head.id);
        if newer {
            tracing::info!(%head, "a newer commit ends the rollback pin");
            self.unpin(state).await;
            false
        } else {
            true
        }
    }

    /// The rendered revision, from the cache when the revision is unchanged.
    async fn prepare(
        &self,
        revision: &Revision,
    ) -> Result<(Arc<Prepared>, Duration, Duration), EngineError> {
        let cached = self
            .cache
            .locked()
            .as_ref()
            .filter(|(id, _)| *id == revision.id)
            .map(|(_, p)| p.clone());
        if let Some(prepared) = cached {
            return Ok((prepared, Duration::ZERO, Duration::ZERO));
        }
        let fetch_started = Instant::now();
        let snapshot = self.source.snapshot(revision).await?;
        let fetch = fetch_started.elapsed();
        let render_started = Instant::now();
        let desired = self
            .render
            .render(&snapshot)
            .and_then(|desired| self.target.check(&desired).map(|()| desired))
            .map_err(|source| EngineError::Render {
                revision: Box::new(revision.clone()),
                source,
            })?;
        let digests = desired.resources().iter().map(|r| r.digest()).collect();
        let render = render_started.elapsed();
        let prepared = Arc::new(Prepared { desired, digests });
        *self.cache.locked() = Some((revision.id.clone(), prepared.clone()));
        Ok((prepared, fetch, render))
    }

    /// Observes the desired resources in chunks and plans. Keeps the
    /// observations of resources that may be written back.
    async fn observe_and_plan(
        &self,
        desired: &DesiredState,
        inventory: &Inventory,
    ) -> Result<(Plan, HashMap<usize, Option<Observed>>), EngineError> {
        let planner = Planner::with_target(&*self.target);
        let mut builder = planner.builder(desired);
        let mut kept = HashMap::new();
        let resources = desired.resources();
        for (chunk_index, chunk) in resources.chunks(self.config.observe_chunk).enumerate() {
            let ids: Vec<_> = chunk.iter().map(|r| r.id.clone()).collect();
            // One batch is one call: it gets the per-call limit, so a hung
            // target cannot stall the reconcile.
            let Ok(results) =
                tokio::time::timeout(self.config.call_timeout, self.target.observe_many(&ids))
                    .await
            else {
                return Err(EngineError::Observe(TargetError::Timeout {
                    id: ids[0].clone(),
                    after: self.config.call_timeout,
                }));
            };
            if results.len() != ids.len() {
                return Err(EngineError::Plan(PlanError::ObservationCount {
                    desired: ids.len(),
                    observed: results.len(),
                }));
            }
            for (offset, result) in results.into_iter().enumerate() {
                let position = chunk_index * self.config.observe_chunk + offset;
                let observed = result.map_err(EngineError::Observe)?;
                builder.observe(position, observed.as_ref());
                if resources[position].policy.drift == DriftPolicy::Writeback {
                    kept.insert(position, observed);
                }
            }
        }
        Ok((builder.finish(inventory)?, kept))
    }

    /// A reconcile that a second shutdown request aborts.
    async fn guarded_reconcile(
        &self,
        trigger: Trigger,
        pinned: Option<Revision>,
    ) -> Result<SyncReport, EngineError> {
        tokio::select! {
            result = self.reconcile(trigger, pinned) => result,
            _ = self.abort() => Err(EngineError::Aborted),
        }
    }

    /// One reconcile inside a `reconcile` span carrying the app, the trigger
    /// and (once read) the revision; resource spans nest inside it.
    async fn reconcile(
        &self,
        trigger: Trigger,
        pinned: Option<Revision>,
    ) -> Result<SyncReport, EngineError> {
        let span = tracing::info_span!(
            "reconcile",
            app = %self.config.name,
            %trigger,
            revision = tracing::field::Empty
        );
        self.reconcile_in(trigger, pinned, &span)
            .instrument(span.clone())
            .await
    }

    async fn reconcile_in(
        &self,
        trigger: Trigger,
        pinned: Option<Revision>,
        span: &tracing::Span,
    ) -> Result<SyncReport, EngineError> {
        let started = Instant::now();
        let started_at = SystemTime::now();
        // Level-triggered: the current revision, unless a rollback pins one.
        let revision = match pinned {
            Some(rev) => rev,
            None => self.source.poll().await?,
        };
        span.record("revision", tracing::field::display(&revision));
        self.admit(trigger, &revision).await?;
        self.status.send_modify(|s| {
            s.last_attempted = Some(revision.clone());
            s.set(
                ConditionKind::Reconciling,
                true,
                "Progressing",
                format!("reconciling {revision}"),
            );
        });
        self.emit(Event::SyncStarted {
            revision: revision.clone(),
            trigger,
        });
        let (prepared, fetch, render) = match self.prepare(&revision).await {
            Ok(p) => p,
            Err(EngineError::Source(source)) if trigger == Trigger::Rollback => {
                return Err(EngineError::Rollback {
                    revision: Box::new(revision),
                    source,
                });
            }
            Err(e) => return Err(e),
        };
        let desired = &prepared.desired;
        // Both are zero when the revision was already rendered (drift checks, retries).

        let plan_started = Instant::now();
        let loaded = self
            .store
            .load_inventory(&self.config.name)
            .await
            .map_err(EngineError::Store)?;
        let mut inventory = loaded.value;
        let mut version = loaded.version;
        if desired.is_empty() && !inventory.is_empty() && !self.config.allow_empty {
            return Err(EngineError::EmptyRevision {
                managed: inventory.len(),
                revision: Box::new(revision),
            });
        }
        let (plan, observed) = self.observe_and_plan(desired, &inventory).await?;
        let plan_time = plan_started.elapsed();
        tracing::debug!(summary = ?plan.summary, "planned");

        let audit = executor::AuditContext {
            revision: &revision,
            trigger,
        };
        // Gates judge changes; a no-op reconcile (a drift check that finds
        // nothing) does not run a test suite again.
        let plan = Arc::new(plan);
        let mut gates = Vec::new();
        if plan.has_changes() && !self.pre_gates.is_empty() {
            gates = self
                .run_gates(
                    GateStage::PreSync,
                    &revision,
                    &plan,
                    &audit,
                    &inventory,
                    &mut version,
                )
                .await?;
            if gates.iter().any(|g| !g.passed) {
                let total = started.elapsed();
                self.emit(Event::SyncFinished {
                    revision: revision.clone(),
                    result: SyncResult::GateFailed.to_string(),
                    duration: total,
                    summary: plan.summary,
                });
                return Ok(SyncReport {
                    revision,
                    trigger,
                    started_at,
                    result: SyncResult::GateFailed,
                    plan: Arc::unwrap_or_clone(plan),
                    outcomes: Vec::new(),
                    gates,
                    timings: Timings {
                        fetch,
                        render,
                        plan: plan_time,
                        total,
                        ..Timings::default()
                    },
                    written_back: None,
                });
            }
        }
        let earlier = self.earlier_syncs(&revision).await?;
        let recheck = Self::unhealthy_before(&earlier);
        let execution = self
            .execute(
                &prepared,
                &audit,
                &plan,
                &mut inventory,
                &mut version,
                observed,
                &recheck,
            )
            .await?;

        // Record what already matches Git but is not recorded, or recorded
        // with another digest (a lost state, a first sync onto an identical
        // target, an apply whose record a crash lost).
        let mut refreshed = false;
        for change in plan.waves.iter().flat_map(|w| &w.changes) {
            if change.change != Change::Unchanged {
                continue;
            }
            let Some(pos) = desired.position(&change.id) else {
                continue;
            };
            let digest = &prepared.digests[pos];
            if inventory
                .get(&change.id)
                .is_none_or(|e| e.digest != *digest)
            {
                let r = &desired.resources()[pos];
                inventory.insert(
                    r.id.clone(),
                    crate::model::InventoryEntry {
                        digest: digest.clone(),
                        depends_on: r.depends_on.clone(),
                        prune: r.policy.prune,
                    },
                );
                refreshed = true;
            }
        }
        if refreshed {
            version = self
                .store
                .save_inventory(&self.config.name, &inventory, version, &[])
                .await
                .map_err(EngineError::Store)?;
        }

        let written_back = self
            .write_back(
                &revision,
                &execution.writeback,
                &audit,
                &inventory,
                &mut version,
            )
            .await?;

        let mut result = execution.result;
        // A revision whose post-sync gates failed is already on the target:
        // synced again (explicitly, or after a restart) it plans no changes,
        // which must not make it Ready without its gates.
        let unverified = result == SyncResult::Converged
            && !plan.has_changes()
            && !self.post_gates.is_empty()
            && Self::failed_post_sync_gate(&earlier);
        if result == SyncResult::Converged
            && (plan.has_changes() || unverified)
            && !self.post_gates.is_empty()
        {
            let post = self
                .run_gates(
                    GateStage::PostSync,
                    &revision,
                    &plan,
                    &audit,
                    &inventory,
                    &mut version,
                )
                .await?;
            if post.iter().any(|g| !g.passed) {
                result = SyncResult::Failed;
            }
            gates.extend(post);
        }

        let total = started.elapsed();
        self.status
            .send_modify(|s| s.drift = execution.drift.clone());
        self.emit(Event::SyncFinished {
            revision: revision.clone(),
            result: result.to_string(),
            duration: total,
            summary: plan.summary,
        });
        Ok(SyncReport {
            revision,
            trigger,
            started_at,
            result,
            plan: Arc::unwrap_or_clone(plan),
            outcomes: execution.outcomes,
            gates,
            timings: Timings {
                fetch,
                render,
                plan: plan_time,
                apply: execution.apply_time,
                prune: execution.prune_time,
                total,
            },
            written_back,
        })
    }

    /// Hands `writeback`-policy drift to the configured write-back, once per
    /// revision and observed state (the drift stays reported meanwhile);
    /// returns the commit when it is the next release.
    async fn write_back(
        &self,
        revision: &Revision,
        drifted: &[Drifted],
        audit: &executor::AuditContext<'_>,
        inventory: &Inventory,
        version: &mut u64,
    ) -> Result<Option<Revision>, EngineError> {
        if drifted.is_empty() {
            return Ok(None);
        }
        let ids: Vec<_> = drifted.iter().map(|d| d.resource.id.clone()).collect();
        let key = WritebackKey {
            revision: revision.id.clone(),
            observed: drifted
                .iter()
                .map(|d| {
                    let digest = d.observed.as_ref().map(|o| spec_digest(&o.spec));
                    (d.resource.id.clone(), digest)
                })
                .collect(),
        };
        let remember = |key: WritebackKey| {
            *self.writeback_memo.locked() = Some(key);
        };
        if self.writeback_memo.locked().as_ref() == Some(&key) {
            return Ok(None);
        }
        let Some(writeback) = &self.writeback else {
            remember(key);
            self.emit(Event::WritebackFailed {
                ids,
                error: "no write-back configured; drift kept and reported".into(),
            });
            return Ok(None);
        };
        let request = WritebackRequest {
            engine: &self.config.name,
            revision,
            drifted,
        };
        match writeback.write_back(request).await {
            Ok(None) => {
                remember(key);
                self.emit(Event::WrittenBack {
                    ids,
                    revision: None,
                    published_to: None,
                });
                Ok(None)
            }
            Ok(Some(written)) => {
                let detail = format!(
                    "written back as commit {} on {}",
                    written.revision.id, written.published_to
                );
                let records: Vec<AuditRecord> = drifted
                    .iter()
                    .map(|d| {
                        let mut record = audit.record(
                            &d.resource.id,
                            AuditAction::Writeback,
                            Some(d.resource.digest()),
                            d.observed.as_ref().map(|o| spec_digest(&o.spec)),
                        );
                        record.detail = Some(detail.clone());
                        record
                    })
                    .collect();
                *version = self
                    .store
                    .save_inventory(&self.config.name, inventory, *version, &records)
                    .await
                    .map_err(EngineError::Store)?;
                remember(key);
                tracing::info!(commit = %written.revision, to = %written.published_to, "drift written back");
                self.emit(Event::WrittenBack {
                    ids,
                    revision: Some(written.revision.clone()),
                    published_to: Some(written.published_to),
                });
                Ok(written.is_release.then_some(written.revision))
            }
            Err(WritebackError::Conflict { path, message }) => {
                remember(key);
                let fallback = self.config.writeback_conflict;
                tracing::warn!(%path, %message, ?fallback, "write-back conflict");
                if fallback == WritebackConflict::Revert {
                    *self.force_revert.locked() =
                        Some((revision.id.clone(), ids.iter().cloned().collect()));
                    // Pull mode reverts at once; push mode on its next sync.
                    self.trigger.notify_one();
                }
                self.emit(Event::WritebackConflict {
                    ids,
                    path,
                    message,
                    fallback,
                });
                Ok(None)
            }
            Err(e) => {
                // A transient failure is tried again at the next drift check.
                if !e.is_transient() {
                    remember(key);
                }
                tracing::warn!(error = %e, "write-back failed");
                self.emit(Event::WritebackFailed {
                    ids,
                    error: e.to_string(),
                });
                Ok(None)
            }
        }
    }

    /// Whether a write-back conflict made `id` fall back to revert at `revision`.
    pub(super) fn forced_revert(&self, revision: &str, id: &ResourceId) -> bool {
        self.force_revert
            .locked()
            .as_ref()
            .is_some_and(|(rev, ids)| rev == revision && ids.contains(id))
    }

    /// The latest syncs of `revision` (the newest entries of the history
    /// while they are about it), newest first; none when the newest
    /// converged at it, the common case of a drift check: one entry read.
    /// Read in growing pages, so a new revision after a long history of
    /// large syncs costs one small read, not the whole history.
    async fn earlier_syncs(&self, revision: &Revision) -> Result<Vec<HistoryEntry>, EngineError> {
        let name = &self.config.name;
        let mut limit = 1;
        loop {
            let mut history = self
                .store
                .history(name, limit)
                .await
                .map_err(EngineError::Store)?;
            if history
                .first()
                .is_some_and(|h| h.revision.id == revision.id && h.result == SyncResult::Converged)
            {
                return Ok(Vec::new());
            }
            let run = history
                .iter()
                .take_while(|h| h.revision.id == revision.id)
                .count();
            if run < history.len() || history.len() < limit || limit >= self.config.history_limit {
                history.truncate(run);
                return Ok(history);
            }
            limit = (limit * 8).min(self.config.history_limit);
        }
    }

    /// The resources found unhealthy by the last sync of this revision, if
    /// it did not converge: a retry with nothing to apply checks them again.
    fn unhealthy_before(earlier: &[HistoryEntry]) -> HashSet<ResourceId> {
        earlier
            .first()
            .filter(|h| h.result != SyncResult::Converged)
            .map(|h| {
                h.outcomes
                    .iter()
                    .filter(|o| matches!(o.outcome, Outcome::Unhealthy { .. }))
                    .map(|o| o.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the last post-sync gate run on this revision failed, with no
    /// converged sync of it since.
    fn failed_post_sync_gate(earlier: &[HistoryEntry]) -> bool {
        earlier
            .iter()
            .find(|h| {
                h.result == SyncResult::Converged
                    || h.gates.iter().any(|g| g.stage == GateStage::PostSync)
            })
            .is_some_and(|h| h.gates.iter().any(|g| !g.passed))
    }

    /// Runs the gates of `stage` in order (stopping at the first failure),
    /// each under the gate timeout, and records every verdict in the audit log.
    async fn run_gates(
        &self,
        stage: GateStage,
        revision: &Revision,
        plan: &Arc<Plan>,
        audit: &executor::AuditContext<'_>,
        inventory: &Inventory,
        version: &mut u64,
    ) -> Result<Vec<GateResult>, EngineError> {
        let gates = match stage {
            GateStage::PreSync => &self.pre_gates,
            GateStage::PostSync => &self.post_gates,
        };
        let input = GateInput {
            stage,
            revision: revision.clone(),
            plan: plan.clone(),
        };
        let mut results = Vec::new();
        let mut records = Vec::new();
        for gate in gates {
            let started = Instant::now();
            let verdict = tokio::time::timeout(self.config.gate_timeout, gate.check(&input))
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {:?}", self.config.gate_timeout)));
            let (passed, output) = match verdict {
                Ok(out) => (true, out),
                Err(out) => (false, out),
            };
            tracing::info!(gate = gate.name(), ?stage, passed, "gate");
            if let Ok(id) = crate::id::ResourceId::new("Gate", gate.name()) {
                let mut record = audit.record(&id, AuditAction::Gate, None, None);
                let verdict = if passed { "passed" } else { "failed" };
                record.detail = Some(format!("{stage:?} {verdict}: {output}"));
                records.push(record);
            }
            results.push(GateResult {
                name: gate.name().to_owned(),
                stage,
                passed,
                output,
                duration: started.elapsed(),
            });
            if !passed {
                break;
            }
        }
        *version = self
            .store
            .save_inventory(&self.config.name, inventory, *version, &records)
            .await
            .map_err(EngineError::Store)?;
        Ok(results)
    }

    /// Records history, then updates holds, retries, pins and status after
    /// a reconcile.
    async fn after_sync(
        &self,
        state: &mut LoopState,
        trigger: Trigger,
        result: &Result<SyncReport, EngineError>,
    ) {
        if let Err(EngineError::Blocked { blocked, .. }) = result {
            // Nothing happened: no history entry, no hold, no retry.
            self.set_blocked(state, blocked);
            state.window_opens = blocked.until.map(|until| {
                let wait = until
                    .duration_since(self.clock.now())
                    .unwrap_or_default()
                    // The wall clock and the timer may disagree by a little:
                    // never spin on a window that is about to open.
                    .max(Duration::from_secs(1));
                (after(Instant::now(), wait), trigger)
            });
            return;
        }
        state.window_opens = None;
        self.record_history(trigger, result).await;
        let report_revision = match result {
            Ok(report) => Some(report.revision.clone()),
            Err(e) => e.revision().cloned(),
        };
        let revision_id = report_revision.as_ref().map(|r| r.id.clone());
        match result {
            Ok(report) if report.result == SyncResult::Converged => {
                state.retry = None;
                state.hold = None;
                state.last_applied = revision_id;
                let applied = report.revision.clone();
                if let Err(e) = self
                    .update_record(state, |r| {
                        r.last_applied = Some(applied.clone());
                        r.last_healthy = Some(applied);
                    })
                    .await
                {
                    tracing::warn!(error = %e, "could not record the applied revision");
                }
                let message = format!("applied revision {}", report.revision);
                self.status.send_modify(|s| {
                    s.last_applied = Some(report.revision.clone());
                    s.retry = None;
                    s.set(
                        ConditionKind::Ready,
                        true,
                        "ReconciliationSucceeded",
                        message,
                    );
                    s.set(ConditionKind::Reconciling, false, "Idle", "");
                    s.set(ConditionKind::Stalled, false, "None", "");
                    s.set(ConditionKind::Failed, false, "None", "");
                });
            }
            Ok(report)
                if matches!(
                    report.result,
                    SyncResult::Superseded | SyncResult::Interrupted | SyncResult::WindowClosed
                ) =>
            {
                let reason = match report.result {
                    SyncResult::Superseded => "Superseded",
                    SyncResult::WindowClosed => "SyncWindowClosed",
                    _ => "Interrupted",
                };
                self.status.send_modify(|s| {
                    s.set(ConditionKind::Reconciling, false, reason, "");
                });
            }
            Ok(report) if report.result == SyncResult::GateFailed => {
                let message = gate_failure(report);
                self.stall(state, report_revision, "GateFailed", message);
            }
            Ok(report) if report.gates.iter().any(|g| !g.passed) => {
                let message = gate_failure(report);
                if self.config.auto_rollback {
                    self.fail_revision(state, report_revision, message).await;
                } else {
                    self.stall(state, report_revision, "PostSyncGateFailed", message);
                }
            }
            Ok(report) => {
                let unhealthy = report.outcomes.iter().find_map(|o| match &o.outcome {
                    Outcome::Unhealthy { reason } => Some(reason.clone()),
                    _ => None,
                });
                let permanent = report.outcomes.iter().find_map(|o| match &o.outcome {
                    Outcome::Failed {
                        error,
                        transient: false,
                    } => Some(error.clone()),
                    _ => None,
                });
                if let (true, Some(reason)) = (self.config.auto_rollback, unhealthy) {
                    let message = format!("not healthy: {reason}");
                    self.fail_revision(state, report_revision, message).await;
                } else if let Some(error) = permanent {
                    self.stall(state, report_revision, "ResourceFailed", error);
                } else {
                    let message = report.to_string();
                    self.schedule_retry(state, report_revision, "ResourceFailed", message)
                        .await;
                }
            }
            Err(EngineError::Aborted) => {}
            Err(e) if e.is_transient() => {
                self.schedule_retry(
                    state,
                    report_revision,
                    "SourceOrTargetUnavailable",
                    e.to_string(),
                )
                .await
            }
            Err(e) => {
                let reason = match e {
                    EngineError::Render { .. } => "RenderFailed",
                    EngineError::EmptyRevision { .. } => "EmptyRevisionRefused",
                    EngineError::Rollback { .. } => "RollbackFailed",
                    EngineError::Source(_) => "SourceFailed",
                    _ => "ReconciliationFailed",
                };
                self.stall(state, report_revision, reason, e.to_string())
            }
        }
    }

    /// One history entry per reconcile that read a revision.
    async fn record_history(&self, trigger: Trigger, result: &Result<SyncReport, EngineError>) {
        let now = SystemTime::now();
        let entry = match result {
            Ok(report) => HistoryEntry {
                revision: report.revision.clone(),
                trigger: report.trigger,
                result: report.result,
                error: None,
                summary: report.plan.summary,
                outcomes: report
                    .outcomes
                    .iter()
                    .filter(|o| o.outcome != Outcome::Unchanged)
                    .cloned()
                    .collect(),
                gates: report.gates.clone(),
                started_at: report.started_at,
                finished_at: now,
            },
            Err(e) => {
                let Some(revision) = e.revision() else {
                    return;
                };
                HistoryEntry {
                    revision: revision.clone(),
                    trigger,
                    result: SyncResult::Failed,
                    error: Some(e.to_string()),
                    summary: Default::default(),
                    outcomes: Vec::new(),
                    gates: Vec::new(),
                    started_at: now,
                    finished_at: now,
                }
            }
        };
        if let Err(e) = self
            .store
            .append_history(&self.config.name, &entry, self.config.history_limit)
            .await
        {
            tracing::warn!(error = %e, "could not append to history");
        }
    }

    /// The revision failed for good: mark it bad and, with automatic
    /// rollback, redeploy the last healthy revision (never a bad one, so two
    /// revisions never flip-flop).
    async fn fail_revision(
        &self,
        state: &mut LoopState,
        revision: Option<Revision>,
        message: String,
    ) {
        let failed_id = revision.as_ref().map(|r| r.id.clone());
        if let Some(id) = failed_id.clone()
            && let Err(e) = self
                .update_record(state, |r| {
                    if !r.bad.contains(&id) {
                        r.bad.push(id);
                    }
                })
                .await
        {
            tracing::warn!(error = %e, "could not mark the revision bad");
        }
        let target = state.record.as_ref().and_then(|r| {
            r.value
                .last_healthy
                .clone()
                .filter(|h| Some(&h.id) != failed_id.as_ref() && !r.value.bad.contains(&h.id))
        });
        state.retry = None;
        match (self.config.auto_rollback, target) {
            (true, Some(healthy)) => {
                tracing::warn!(failed = ?failed_id, to = %healthy, %message, "automatic rollback");
                state.hold = None;
                if let Err(e) = self.pin(state, healthy, failed_id).await {
                    tracing::warn!(error = %e, "could not record the rollback pin");
                }
                state.rollback_due = true;
                self.status.send_modify(|s| {
                    s.retry = None;
                    s.set(ConditionKind::Ready, false, "RollingBack", message.clone());
                    s.set(ConditionKind::Failed, true, "RolledBack", message.clone());
                });
                self.emit(Event::Stalled {
                    revision,
                    reason: format!("{message}; rolling back"),
                });
            }
            _ => {
                state.hold = Some(Hold {
                    revision: failed_id,
                });
                self.status.send_modify(|s| {
                    s.retry = None;
                    s.set(
                        ConditionKind::Ready,
                        false,
                        "RetriesExhausted",
                        message.clone(),
                    );
                    s.set(ConditionKind::Reconciling, false, "Failed", "");
                    s.set(
                        ConditionKind::Failed,
                        true,
                        "RetriesExhausted",
                        message.clone(),
                    );
                });
                self.emit(Event::Stalled {
                    revision,
                    reason: message,
                });
            }
        }
    }

    fn stall(
        &self,
        state: &mut LoopState,
        revision: Option<Revision>,
        reason: &str,
        message: String,
    ) {
        tracing::warn!(%reason, %message, "stalled: waiting for a new revision or reconcile_now");
        state.retry = None;
        state.hold = Some(Hold {
            revision: revision.as_ref().map(|r| r.id.clone()),
        });
        self.status.send_modify(|s| {
            s.retry = None;
            s.set(ConditionKind::Ready, false, reason, message.clone());
            s.set(ConditionKind::Reconciling, false, "Stalled", "");
            s.set(ConditionKind::Stalled, true, reason, message.clone());
        });
        self.emit(Event::Stalled {
            revision,
            reason: message,
        });
    }

    async fn schedule_retry(
        &self,
        state: &mut LoopState,
        revision: Option<Revision>,
        reason: &str,
        message: String,
    ) {
        let id = revision.as_ref().map(|r| r.id.clone());
        let policy = &self.config.retry;
        let retry = match state.retry.take() {
            Some(r) if r.revision == id => r,
            _ => {
                let mut builder = backon::ExponentialBuilder::new()
                    .with_min_delay(policy.initial)
                    .with_factor(policy.factor)
                    .with_max_delay(policy.max_delay)
                    .with_max_times(policy.max_attempts);
                if policy.jitter {
                    builder = builder.with_jitter();
                }
                Retry {
                    revision: id.clone(),
                    backoff: builder.build(),
                    attempt: 0,
                    due: Instant::now(),
                }
            }
        };
        let mut retry = retry;
        match retry.backoff.next() {
            Some(delay) => {
                retry.attempt += 1;
                retry.due = after(Instant::now(), delay);
                let info = RetryInfo {
                    attempt: retry.attempt,
                    after: delay,
                };
                tracing::info!(attempt = retry.attempt, ?delay, %message, "retry scheduled");
                self.status.send_modify(|s| {
                    s.retry = Some(info);
                    s.set(ConditionKind::Ready, false, reason, message.clone());
                    s.set(ConditionKind::Reconciling, false, "RetryScheduled", "");
                });
                self.emit(Event::RetryScheduled {
                    revision,
                    attempt: retry.attempt,
                    after: delay,
                });
                state.retry = Some(retry);
            }
            None => {
                let message = format!("gave up after {} retries: {message}", retry.attempt);
                tracing::warn!(%message, "revision failed");
                self.fail_revision(state, revision, message).await;
            }
        }
    }
}

/// The first failed gate, as "gate <name> failed: <output>".
fn gate_failure(report: &SyncReport) -> String {
    report
        .gates
        .iter()
        .find(|g| !g.passed)
        .map_or_else(String::new, |g| {
            format!("gate {} failed: {}", g.name, g.output.trim())
        })
}
