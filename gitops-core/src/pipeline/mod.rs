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

mod builder;
mod promotion;
mod run;
mod soak;
mod sources;
mod stage;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, EngineError};
use crate::manifest::ManifestRender;
use crate::model::Revision;
use crate::promote::Promoter;
use crate::source::Source;
use crate::status::{ConditionKind, Status};
use crate::store::{MemoryStore, StateStore, StoreError};
use crate::sync::LockExt as _;
use crate::target::Target;

pub use builder::PipelineBuilder;
pub use soak::Soaking;
pub use stage::Stage;

use soak::SoakState;
use sources::PromotedSource;

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

/// What the clones of a [`Pipeline`] share.
struct Inner {
    stages: Vec<StageRuntime>,
    promoter: Option<Arc<dyn Promoter>>,
    store: Arc<dyn StateStore>,
    check_interval: Duration,
    shutdown: watch::Sender<bool>,
}

/// A built stage: its engine and what the promotions track about it.
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

impl StageRuntime {
    fn passed(&self) -> Option<String> {
        self.passed.locked().clone()
    }

    fn soak_state(&self) -> std::sync::MutexGuard<'_, Option<SoakState>> {
        self.soaking.locked()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Pipeline {
    /// A pipeline reading releases from `source`.
    pub fn builder(source: Arc<dyn Source>) -> PipelineBuilder {
        PipelineBuilder::new(
            source,
            Arc::new(ManifestRender::new()),
            Arc::new(MemoryStore::new()),
        )
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
            .and_then(|g| g.current())
    }

    /// The revision soaking in a stage (Ready there, waiting for its soak
    /// time to pass), and why its soak last started over.
    pub fn soaking(&self, stage: &str) -> Option<Soaking> {
        let stage = self.inner.stage(stage)?;
        let state = stage.soak_state();
        state.as_ref().map(|s| s.report(Instant::now()))
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
}

/// The revision a status is Ready at.
fn ready_at(status: &Status) -> Option<Revision> {
    status
        .last_applied
        .clone()
        .filter(|_| status.is(ConditionKind::Ready))
}
