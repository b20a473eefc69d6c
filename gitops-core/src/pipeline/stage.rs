//! One stage of a pipeline, as configured.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::EngineBuilder;
use crate::promote::Promoter;
use crate::target::Target;

/// What [`Stage::configure`] adds to the stage's engine.
pub(super) type Configure = Box<dyn FnOnce(EngineBuilder) -> EngineBuilder + Send>;

/// One stage: a name (also its engine's application name in the store), a
/// target, an optional path in the repository and a soak time.
pub struct Stage {
    pub(super) name: String,
    pub(super) target: Arc<dyn Target>,
    pub(super) path: Option<String>,
    pub(super) soak: Duration,
    pub(super) configure: Option<Configure>,
    pub(super) promoter: Option<Arc<dyn Promoter>>,
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
