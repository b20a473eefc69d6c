//! Stages and promotion: a [`Pipeline`] of ordered stages (staging, then
//! production), each an [`Engine`] with its own target and optionally its
//! own path in the repository.
//!
//! ```text
//!   Git (main) ──► staging engine ──► Ready + healthy for the soak time,
//!                                     post-sync gates passed
//!                                          │ Promoter (optional: move env/production, tag)
//!                                          ▼ audit record "Promote" in staging's log
//!                  production engine ◄── promoted source (only revisions that passed staging)
//! ```
//!
//! Stage N+1's engine reads from a source that yields only the revisions
//! stage N promoted, and refuses to read any other (a rollback too), so a
//! revision that failed in stage N can never reach stage N+1.
//!
//! A revision passes stage N when the stage's status is Ready at that
//! revision (every resource applied and healthy, every post-sync gate of
//! its sync passed) and stays so for the stage's soak time, with every
//! resource of the stage's inventory answering `Healthy` to
//! [`Target::health`] at each check (every `check_interval`, and at the
//! end). A sample that is not healthy starts the soak again, and so does a
//! newer revision starting to sync in stage N (the target is no longer at
//! the candidate); once Ready, the newer revision replaces the candidate.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use gitops_core::pipeline::{Pipeline, Stage};
//! use gitops_core::testing::{MemorySource, MemoryTarget};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let source = Arc::new(MemorySource::new("main"));
//! source.commit([("staging/app.yaml", "kind: App\nmetadata: { name: web }\nspec: { replicas: 1 }\n"),
//!                ("production/app.yaml", "kind: App\nmetadata: { name: web }\nspec: { replicas: 5 }\n")]);
//! let (staging, production) = (Arc::new(MemoryTarget::new()), Arc::new(MemoryTarget::new()));
//! let pipeline = Pipeline::builder(source)
//!     .stage(Stage::new("staging", staging.clone()).path("staging").soak(Duration::from_secs(600)))
//!     .stage(Stage::new("production", production.clone()).path("production"))
//!     .build()?;
//! let handle = pipeline.clone();
//! let agent = tokio::spawn(async move { pipeline.run().await });
//! tokio::time::sleep(Duration::from_secs(11 * 60)).await;       // tokio's paused clock
//! assert_eq!(production.get(&"App/web".parse()?).unwrap()["replicas"], 5);
//! handle.shutdown();
//! agent.await??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use crate::sync::LockExt as _;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, EngineBuilder, EngineError, SyncResult, Trigger};
use crate::id::ResourceId;
use crate::manifest::ManifestRender;
use crate::model::{Health, Revision, Snapshot, validate_relative_path};
use crate::promote::Promoter;
use crate::render::Render;
use crate::source::{Source, SourceError};
use crate::status::{ConditionKind, Status};
use crate::store::{AuditAction, AuditQuery, AuditRecord, MemoryStore, StateStore, StoreError};
use crate::target::Target;

/// Why a pipeline could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The builder was given an unusable configuration.
    #[error("pipeline configuration: {0}")]
    Config(String),
    /// A stage's engine failed.
    #[error("stage {stage}: {source}")]
    Engine {
        /// The stage.
        stage: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The state store failed.
    #[error("stage {stage}: state store: {source}")]
    Store {
        /// The stage.
        stage: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

impl PipelineError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Config(_) => false,
            PipelineError::Engine { source, .. } => source.is_transient(),
            PipelineError::Store { source, .. } => source.is_transient(),
        }
    }
}

type Configure = Box<dyn FnOnce(EngineBuilder) -> EngineBuilder + Send>;

/// One stage: a name (also its engine's application name in the store), a
/// target, an optional path in the repository and a soak time.
pub struct Stage {
    name: String,
    target: Arc<dyn Target>,
    path: Option<String>,
    soak: Duration,
    configure: Option<Configure>,
    promoter: Option<Arc<dyn Promoter>>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("soak", &self.soak)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// A stage deploying into `target`, with no soak time.
    pub fn new(name: impl Into<String>, target: Arc<dyn Target>) -> Self {
        Self {
            name: name.into(),
            target,
            path: None,
            soak: Duration::ZERO,
            configure: None,
            promoter: None,
        }
    }

    /// The promoter called when a revision passes this stage, instead of
    /// the pipeline's (e.g. passing staging moves `env/production`, passing
    /// production creates a release tag).
    pub fn promoter(mut self, promoter: Arc<dyn Promoter>) -> Self {
        self.promoter = Some(promoter);
        self
    }

    /// Reads only this directory of each revision (its files appear at the
    /// top level to the renderer).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// How long a revision must stay Ready and healthy here before it is
    /// promoted (default zero: promoted once Ready and healthy).
    pub fn soak(mut self, soak: Duration) -> Self {
        self.soak = soak;
        self
    }

    /// Adds gates, windows, dependencies or policies to this stage's engine.
    /// The pipeline sets source, render, target, store and name afterwards.
    pub fn configure(
        mut self,
        configure: impl FnOnce(EngineBuilder) -> EngineBuilder + Send + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }
}

/// Builds a [`Pipeline`].
pub struct PipelineBuilder {
    source: Arc<dyn Source>,
    render: Arc<dyn Render>,
    store: Arc<dyn StateStore>,
    stages: Vec<Stage>,
    promoter: Option<Arc<dyn Promoter>>,
    check_interval: Duration,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// Appends a stage; revisions flow through stages in the order added.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stages.push(stage);
        self
    }

    /// How snapshots become desired state in every stage (default
    /// [`ManifestRender`]).
    pub fn render(mut self, render: Arc<dyn Render>) -> Self {
        self.render = render;
        self
    }

    /// The store shared by the stages' engines, each under its stage name
    /// (default: in memory).
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = store;
        self
    }

    /// Makes each promotion a Git event (a moved branch, a tag); a stage's
    /// own [`Stage::promoter`] takes precedence.
    pub fn promoter(mut self, promoter: Arc<dyn Promoter>) -> Self {
        self.promoter = Some(promoter);
        self
    }

    /// How often health is sampled during a soak (default 10 s).
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Builds one engine per stage.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        if self.stages.is_empty() {
            return Err(PipelineError::Config("a pipeline needs a stage".into()));
        }
        if self.check_interval.is_zero() {
            return Err(PipelineError::Config(
                "the check interval must be positive".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut stages: Vec<StageRuntime> = Vec::new();
        for stage in self.stages {
            if !names.insert(stage.name.clone()) {
                return Err(PipelineError::Config(format!(
                    "stage {} is defined twice",
                    stage.name
                )));
            }
            let gate = stages.last().map(|previous| {
                Arc::new(PromotedSource {
                    inner: self.source.clone(),
                    from: previous.name.clone(),
                    passed: Mutex::new(HashSet::new()),
                    current: watch::channel(None).0,
                })
            });
            let mut source: Arc<dyn Source> = match &gate {
                Some(g) => g.clone(),
                None => self.source.clone(),
            };
            if let Some(path) = &stage.path {
                let path = path.trim_end_matches('/').to_owned();
                validate_relative_path(&path).map_err(|e| {
                    PipelineError::Config(format!("stage {}: path: {e}", stage.name))
                })?;
                source = Arc::new(SubdirSource {
                    inner: source,
                    prefix: format!("{path}/"),
                });
            }
            let mut builder = Engine::builder();
            if let Some(configure) = stage.configure {
                builder = configure(builder);
            }
            let engine = builder
                .source(source)
                .render(self.render.clone())
                .target(stage.target.clone())
                .store(self.store.clone())
                .name(stage.name.clone())
                .build()
                .map_err(|source| PipelineError::Engine {
                    stage: stage.name.clone(),
                    source,
                })?;
            stages.push(StageRuntime {
                name: stage.name,
                engine,
                target: stage.target,
                soak: stage.soak,
                promoter: stage.promoter,
                gate,
                passed: Mutex::new(None),
                soaking: Mutex::new(None),
            });
        }
        Ok(Pipeline {
            inner: Arc::new(Inner {
                stages,
                promoter: self.promoter,
                store: self.store,
                check_interval: self.check_interval,
                shutdown: watch::channel(false).0,
            }),
        })
    }
}

/// Ordered stages with promotion between them; see the [module docs](self).
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.stages.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Pipeline")
            .field("stages", &names)
            .finish_non_exhaustive()
    }
}

struct Inner {
    stages: Vec<StageRuntime>,
    promoter: Option<Arc<dyn Promoter>>,
    store: Arc<dyn StateStore>,
    check_interval: Duration,
    shutdown: watch::Sender<bool>,
}

struct StageRuntime {
    name: String,
    engine: Engine,
    target: Arc<dyn Target>,
    soak: Duration,
    promoter: Option<Arc<dyn Promoter>>,
    /// The source of every stage but the first: what the previous one passed.
    gate: Option<Arc<PromotedSource>>,
    /// The id of the last revision that passed this stage.
    passed: Mutex<Option<String>>,
    /// The revision being soaked, if any.
    soaking: Mutex<Option<SoakState>>,
}

struct SoakState {
    revision: Revision,
    deadline: Instant,
    restarts: usize,
    last_failure: Option<String>,
}

/// A revision soaking in a stage: what it waits for before promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soaking {
    /// The candidate.
    pub revision: Revision,
    /// Soak time left if every check from now on passes.
    pub remaining: Duration,
    /// How often a failed check started the soak over.
    pub restarts: usize,
    /// Why the last check failed, e.g. `App/web: degraded: crash loop`.
    pub last_failure: Option<String>,
}

impl StageRuntime {
    fn passed(&self) -> Option<String> {
        self.passed.locked().clone()
    }

    fn soak_state(&self) -> std::sync::MutexGuard<'_, Option<SoakState>> {
        self.soaking.locked()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

enum Soak {
    Passed,
    /// The stage moved off the candidate (another revision, not Ready).
    Moved,
    Unhealthy(String),
    Shutdown,
}

impl Pipeline {
    /// A pipeline reading releases from `source`.
    pub fn builder(source: Arc<dyn Source>) -> PipelineBuilder {
        PipelineBuilder {
            source,
            render: Arc::new(ManifestRender::new()),
            store: Arc::new(MemoryStore::new()),
            stages: Vec::new(),
            promoter: None,
            check_interval: Duration::from_secs(10),
        }
    }

    /// The stage names, in order.
    pub fn stages(&self) -> Vec<&str> {
        self.inner.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// The engine of a stage (for its status, history, audit, rollback).
    pub fn engine(&self, stage: &str) -> Option<&Engine> {
        self.inner.stage(stage).map(|s| &s.engine)
    }

    /// The status of a stage's engine.
    pub fn status(&self, stage: &str) -> Option<Status> {
        self.engine(stage).map(Engine::status)
    }

    /// The revision a stage may run: the last one its previous stage
    /// promoted (`None` for the first stage, or before any promotion).
    pub fn promoted(&self, stage: &str) -> Option<Revision> {
        self.inner
            .stage(stage)
            .and_then(|s| s.gate.as_ref())
            .and_then(|g| g.current.borrow().clone())
    }

    /// The revision soaking in a stage (Ready there, waiting for its soak
    /// time to pass), and why its soak last started over.
    pub fn soaking(&self, stage: &str) -> Option<Soaking> {
        let stage = self.inner.stage(stage)?;
        let state = stage.soak_state();
        state.as_ref().map(|s| Soaking {
            revision: s.revision.clone(),
            remaining: s.deadline.saturating_duration_since(Instant::now()),
            restarts: s.restarts,
            last_failure: s.last_failure.clone(),
        })
    }

    /// Pull mode: runs every stage's engine and the promotions between them
    /// until [`shutdown`](Self::shutdown). A stage's engine starts once its
    /// previous stage has promoted a revision (after a restart: at once, with
    /// the revision it last applied, which had passed before).
    pub async fn run(&self) -> Result<(), PipelineError> {
        let inner = &self.inner;
        inner.seed().await?;
        let mut tasks: Vec<BoxFuture<'_, Result<(), PipelineError>>> = Vec::new();
        for index in 0..inner.stages.len() {
            tasks.push(Box::pin(inner.run_engine(index)));
            tasks.push(Box::pin(inner.promote_from(index)));
        }
        futures::future::try_join_all(tasks).await?;
        Ok(())
    }

    /// Stops every engine gracefully (see
    /// [`EngineHandle::shutdown`](crate::EngineHandle::shutdown)) and the
    /// promotions; [`run`](Self::run) then returns.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        for stage in &self.inner.stages {
            stage.engine.handle().shutdown();
        }
    }
}

impl Inner {
    fn stage(&self, name: &str) -> Option<&StageRuntime> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// After a restart: each gated stage may keep running what it last
    /// applied (it was promoted to get there), and that counts as passed
    /// by the stage before. The last stage, which hands on to nobody, has
    /// passed what its audit log last records as promoted (so it is not
    /// promoted again).
    async fn seed(&self) -> Result<(), PipelineError> {
        if let Some(last) = self.stages.last()
            && last.passed().is_none()
            && let Ok(id) = ResourceId::new("Stage", last.name.clone())
        {
            let query = AuditQuery {
                id: Some(id),
                ..AuditQuery::default()
            };
            let records = self
                .store
                .audit(&last.name, &query)
                .await
                .map_err(|source| PipelineError::Store {
                    stage: last.name.clone(),
                    source,
                })?;
            if let Some(record) = records
                .iter()
                .rev()
                .find(|r| r.action == AuditAction::Promote)
            {
                *last.passed.locked() = Some(record.revision.clone());
            }
        }
        for (index, stage) in self.stages.iter().enumerate() {
            let Some(gate) = &stage.gate else { continue };
            if gate.current.borrow().is_some() {
                continue;
            }
            let record = self
                .store
                .load_record(&stage.name)
                .await
                .map_err(|source| PipelineError::Store {
                    stage: stage.name.clone(),
                    source,
                })?;
            if let Some(applied) = record.value.last_applied {
                *self.stages[index - 1].passed.locked() = Some(applied.id.clone());
                gate.hand_on(applied);
            }
        }
        Ok(())
    }

    async fn run_engine(&self, index: usize) -> Result<(), PipelineError> {
        let stage = &self.stages[index];
        if let Some(gate) = &stage.gate {
            let mut promoted = gate.current.subscribe();
            let mut shutdown = self.shutdown.subscribe();
            let first = async move { promoted.wait_for(Option::is_some).await.is_ok() };
            let stop = async move { shutdown.wait_for(|s| *s).await.is_ok() };
            tokio::select! {
                started = first => if !started { return Ok(()) },
                _ = stop => return Ok(()),
            }
        }
        stage
            .engine
            .run()
            .await
            .map_err(|source| PipelineError::Engine {
                stage: stage.name.clone(),
                source,
            })
    }

    /// Watches stage `index`: soaks each revision it becomes Ready at, then
    /// promotes it (to the next stage, through the promoter, into the audit).
    async fn promote_from(&self, index: usize) -> Result<(), PipelineError> {
        let stage = &self.stages[index];
        let mut status = stage.engine.handle().watch_status();
        let mut shutdown = self.shutdown.subscribe();
        // A revision that soaked but whose promotion failed: the retry
        // checks it once more instead of soaking it again.
        let mut unpromoted: Option<String> = None;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let candidate = ready_at(&status.borrow_and_update())
                .filter(|r| stage.passed().as_ref() != Some(&r.id));
            let Some(candidate) = candidate else {
                // Not Ready at it any more: a soaked revision whose
                // promotion failed soaks again when it comes back.
                unpromoted = None;
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return Ok(()) },
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            tracing::info!(stage = %stage.name, revision = %candidate, soak = ?stage.soak, "soaking");
            let soaked = if unpromoted.take().as_ref() == Some(&candidate.id) {
                match self.unhealthy(stage, &candidate).await {
                    None => Soak::Passed,
                    Some(reason) => Soak::Unhealthy(reason),
                }
            } else {
                self.soak(stage, &candidate, &mut status, &mut shutdown)
                    .await
            };
            match soaked {
                Soak::Passed => {
                    if self.pass(index, &candidate).await {
                        *stage.soak_state() = None;
                    } else {
                        let still = self
                            .watch_pause(&candidate, &mut status, &mut shutdown)
                            .await;
                        unpromoted = still.then(|| candidate.id.clone());
                    }
                }
                Soak::Moved => *stage.soak_state() = None,
                Soak::Unhealthy(reason) => {
                    tracing::warn!(stage = %stage.name, revision = %candidate, %reason, "soak restarts");
                    if let Some(state) = stage.soak_state().as_mut() {
                        state.restarts += 1;
                        state.last_failure = Some(reason);
                    }
                    self.pause(&mut shutdown).await;
                }
                Soak::Shutdown => return Ok(()),
            }
        }
    }

    async fn pause(&self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.check_interval) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// Pauses for one check interval; `false` when the stage was seen
    /// leaving `candidate` meanwhile (not Ready at it, or syncing another
    /// revision).
    async fn watch_pause(
        &self,
        candidate: &Revision,
        status: &mut watch::Receiver<Status>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let until = soak_deadline(self.check_interval);
        let mut still = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return still,
                changed = status.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    let now = status.borrow_and_update();
                    let ready = ready_at(&now).is_some_and(|r| r.id == candidate.id);
                    let same = now
                        .last_attempted
                        .as_ref()
                        .is_none_or(|r| r.id == candidate.id);
                    still &= ready && same;
                }
                _ = shutdown.changed() => return still,
            }
        }
    }

    async fn soak(
        &self,
        stage: &StageRuntime,
        candidate: &Revision,
        status: &mut watch::Receiver<Status>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Soak {
        let deadline = soak_deadline(stage.soak);
        {
            let mut state = stage.soak_state();
            match state.as_mut() {
                Some(s) if s.revision.id == candidate.id => s.deadline = deadline,
                _ => {
                    *state = Some(SoakState {
                        revision: candidate.clone(),
                        deadline,
                        restarts: 0,
                        last_failure: None,
                    })
                }
            }
        }
        loop {
            if let Some(reason) = self.unhealthy(stage, candidate).await {
                return Soak::Unhealthy(reason);
            }
            let now = Instant::now();
            if now >= deadline {
                return Soak::Passed;
            }
            let pause = self.check_interval.min(deadline - now);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                changed = status.changed() => {
                    if changed.is_err() {
                        return Soak::Shutdown;
                    }
                    let still = ready_at(&status.borrow_and_update())
                        .is_some_and(|r| r.id == candidate.id);
                    if !still {
                        return Soak::Moved;
                    }
                }
                _ = shutdown.changed() => return Soak::Shutdown,
            }
        }
    }

    /// Why `candidate` does not count as healthy in `stage` right now.
    async fn unhealthy(&self, stage: &StageRuntime, candidate: &Revision) -> Option<String> {
        let status = stage.engine.status();
        if ready_at(&status).is_none_or(|r| r.id != candidate.id) {
            return Some(format!("not Ready at {candidate}: {status}"));
        }
        // Ready stays at the candidate while a newer revision is being
        // applied (or was left half-applied by a superseded or stopped
        // sync): the target is no longer at the candidate.
        if let Some(attempted) = &status.last_attempted
            && attempted.id != candidate.id
        {
            return Some(format!("the stage started syncing {attempted}"));
        }
        // Belt and braces: the last sync of this revision that ran gates
        // must have passed them all.
        match stage.engine.history(50).await {
            Ok(history) => {
                let gated = history
                    .iter()
                    .find(|h| h.revision.id == candidate.id && !h.gates.is_empty());
                if let Some(entry) = gated
                    && let Some(gate) = entry.gates.iter().find(|g| !g.passed)
                {
                    return Some(format!("gate {} failed", gate.name));
                }
                if let Some(entry) = gated
                    && entry.result != SyncResult::Converged
                {
                    return Some(format!("last gated sync ended {}", entry.result));
                }
            }
            Err(e) => return Some(format!("cannot read history: {e}")),
        }
        let inventory = match self.store.load_inventory(&stage.name).await {
            Ok(v) => v.value,
            Err(e) => return Some(format!("cannot read the inventory: {e}")),
        };
        let limit = stage.engine.config().call_timeout;
        for (id, _) in inventory.iter() {
            match tokio::time::timeout(limit, stage.target.health(id)).await {
                Ok(Ok(Health::Healthy)) => {}
                Ok(Ok(other)) => return Some(format!("{id}: {other}")),
                Ok(Err(e)) => return Some(e.to_string()),
                Err(_) => return Some(format!("{id}: health check timed out after {limit:?}")),
            }
        }
        None
    }

    /// `candidate` passed stage `index`: promote it. `false` when the
    /// promoter failed (tried again after a pause).
    async fn pass(&self, index: usize, candidate: &Revision) -> bool {
        let stage = &self.stages[index];
        let next = self.stages.get(index + 1);
        let promoted = match stage.promoter.as_ref().or(self.promoter.as_ref()) {
            Some(promoter) => match promoter.promote(&stage.name, candidate).await {
                Ok(Some(r)) => r,
                Ok(None) => candidate.clone(),
                Err(e) => {
                    tracing::warn!(stage = %stage.name, revision = %candidate, error = %e, "promotion failed");
                    return false;
                }
            },
            None => candidate.clone(),
        };
        let detail = match next {
            Some(next) => format!(
                "passed stage {} (Ready and healthy for {:?}, gates passed); promoted to {} as {promoted}",
                stage.name, stage.soak, next.name
            ),
            None => format!(
                "passed stage {} (Ready and healthy for {:?}, gates passed); last stage, promoted as {promoted}",
                stage.name, stage.soak
            ),
        };
        tracing::info!(stage = %stage.name, revision = %candidate, %detail, "promoted");
        if let Err(e) = self.audit(stage, candidate, &promoted, detail).await {
            tracing::warn!(stage = %stage.name, error = %e, "could not record the promotion");
        }
        *stage.passed.locked() = Some(candidate.id.clone());
        if let Some(next) = next
            && let Some(gate) = &next.gate
        {
            gate.hand_on(promoted);
            next.engine.handle().reconcile_now();
        }
        true
    }

    /// Appends the promotion to `stage`'s audit log (compare-and-swap on its
    /// inventory, retried when the engine wrote in between).
    async fn audit(
        &self,
        stage: &StageRuntime,
        candidate: &Revision,
        promoted: &Revision,
        detail: String,
    ) -> Result<(), StoreError> {
        let Ok(id) = ResourceId::new("Stage", stage.name.clone()) else {
            return Ok(());
        };
        let record = AuditRecord {
            at: SystemTime::now(),
            id,
            action: AuditAction::Promote,
            digest_before: None,
            digest_after: None,
            revision: candidate.id.clone(),
            reference: promoted.reference.clone(),
            author: candidate.author.clone(),
            message: candidate.summary().to_owned(),
            trigger: Trigger::Promotion,
            detail: Some(detail),
        };
        let mut attempts = 0;
        loop {
            let inventory = self.store.load_inventory(&stage.name).await?;
            match self
                .store
                .save_inventory(
                    &stage.name,
                    &inventory.value,
                    inventory.version,
                    std::slice::from_ref(&record),
                )
                .await
            {
                Err(StoreError::Conflict { .. }) if attempts < 5 => attempts += 1,
                other => return other.map(|_| ()),
            }
        }
    }
}

/// When a soak of `soak` starting now ends; a soak too long for the clock
/// (`Duration::MAX`: promote by hand) ends about thirty years from now.
fn soak_deadline(soak: Duration) -> Instant {
    crate::engine::after(Instant::now(), soak)
}

/// The revision a status is Ready at.
fn ready_at(status: &Status) -> Option<Revision> {
    status
        .last_applied
        .clone()
        .filter(|_| status.is(ConditionKind::Ready))
}

/// The source of every stage but the first: only revisions the previous
/// stage promoted, the newest first; any other is refused.
struct PromotedSource {
    inner: Arc<dyn Source>,
    from: String,
    passed: Mutex<HashSet<String>>,
    current: watch::Sender<Option<Revision>>,
}

impl PromotedSource {
    fn hand_on(&self, revision: Revision) {
        self.passed.locked().insert(revision.id.clone());
        self.current.send_replace(Some(revision));
    }
}

#[async_trait]
impl Source for PromotedSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.current
            .borrow()
            .clone()
            .ok_or_else(|| SourceError::Other {
                message: format!("no revision has passed stage {} yet", self.from),
                transient: true,
                source: None,
            })
    }

    async fn snapshot(&self, revision: &Revision) -> Result<Snapshot, SourceError> {
        let passed = self.passed.locked().contains(&revision.id);
        if !passed {
            return Err(SourceError::Other {
                message: format!("{revision} has not passed stage {}; refused", self.from),
                transient: false,
                source: None,
            });
        }
        self.inner.snapshot(revision).await
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.inner.is_ancestor(ancestor, descendant).await
    }
}

/// One directory of each revision, its files moved to the top level.
struct SubdirSource {
    inner: Arc<dyn Source>,
    /// `path/`.
    prefix: String,
}

#[async_trait]
impl Source for SubdirSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.inner.poll().await
    }

    async fn snapshot(&self, revision: &Revision) -> Result<Snapshot, SourceError> {
        let full = self.inner.snapshot(revision).await?;
        let mut part = Snapshot::new(full.revision().clone());
        for (path, file) in full.files() {
            if let Some(rest) = path.strip_prefix(&self.prefix) {
                part.insert(rest, file.data.clone(), file.executable)
                    .map_err(|e| SourceError::Rejected {
                        path: path.clone(),
                        reason: e.reason.to_owned(),
                    })?;
            }
        }
        Ok(part)
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.inner.is_ancestor(ancestor, descendant).await
    }
}
