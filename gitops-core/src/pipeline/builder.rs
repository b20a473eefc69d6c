//! Building a pipeline: one engine per stage, each stage but the first
//! reading only what the stage before promoted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::sources::{PromotedSource, SubdirSource};
use super::{Inner, Pipeline, PipelineError, Stage, StageRuntime};
use crate::engine::Engine;
use crate::model::validate_relative_path;
use crate::promote::Promoter;
use crate::render::Render;
use crate::source::Source;
use crate::store::StateStore;

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
    /// No stages yet, checks every 10 s.
    pub(super) fn new(
        source: Arc<dyn Source>,
        render: Arc<dyn Render>,
        store: Arc<dyn StateStore>,
    ) -> Self {
        Self {
            source,
            render,
            store,
            stages: Vec::new(),
            promoter: None,
            check_interval: Duration::from_secs(10),
        }
    }

    /// Appends a stage; revisions flow through stages in the order added.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stages.push(stage);
        self
    }

    /// How snapshots become desired state in every stage (default
    /// [`ManifestRender`](crate::ManifestRender)).
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
    pub fn build(mut self) -> Result<Pipeline, PipelineError> {
        validate(self.stages.len(), self.check_interval)?;
        let mut names = HashSet::new();
        let mut stages: Vec<StageRuntime> = Vec::new();
        for stage in std::mem::take(&mut self.stages) {
            if !names.insert(stage.name.clone()) {
                return Err(PipelineError::Config(format!(
                    "stage {} is defined twice",
                    stage.name
                )));
            }
            let runtime = self.runtime(stage, stages.last())?;
            stages.push(runtime);
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

    /// The engine of `stage`, reading what `previous` promotes (the
    /// pipeline's source for the first stage), under the stage's path.
    fn runtime(
        &self,
        stage: Stage,
        previous: Option<&StageRuntime>,
    ) -> Result<StageRuntime, PipelineError> {
        let gate =
            previous.map(|p| Arc::new(PromotedSource::new(self.source.clone(), p.name.clone())));
        let mut source: Arc<dyn Source> = match &gate {
            Some(g) => g.clone(),
            None => self.source.clone(),
        };
        if let Some(path) = &stage.path {
            source = Arc::new(SubdirSource::new(source, path_prefix(&stage.name, path)?));
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
        Ok(StageRuntime {
            name: stage.name,
            engine,
            target: stage.target,
            soak: stage.soak,
            promoter: stage.promoter,
            gate,
            passed: Mutex::new(None),
            soaking: Mutex::new(None),
        })
    }
}

/// At least one stage and a positive check interval.
fn validate(stages: usize, check_interval: Duration) -> Result<(), PipelineError> {
    if stages == 0 {
        return Err(PipelineError::Config("a pipeline needs a stage".into()));
    }
    if check_interval.is_zero() {
        return Err(PipelineError::Config(
            "the check interval must be positive".into(),
        ));
    }
    Ok(())
}

/// `path/` for a stage's path in the repository, which must be relative
/// and stay inside it.
fn path_prefix(stage: &str, path: &str) -> Result<String, PipelineError> {
    let path = path.trim_end_matches('/');
    validate_relative_path(path)
        .map_err(|e| PipelineError::Config(format!("stage {stage}: path: {e}")))?;
    Ok(format!("{path}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_needs_a_stage_and_a_positive_interval() {
        let second = Duration::from_secs(1);
        let err = |r: Result<(), PipelineError>| r.expect_err("invalid").to_string();
        assert_eq!(
            err(validate(0, second)),
            "pipeline configuration: a pipeline needs a stage"
        );
        assert_eq!(
            err(validate(1, Duration::ZERO)),
            "pipeline configuration: the check interval must be positive"
        );
        assert!(validate(2, second).is_ok());
    }

    #[test]
    fn stage_paths_stay_inside_the_repository() {
        assert_eq!(path_prefix("s", "env/prod/").expect("valid"), "env/prod/");
        assert_eq!(path_prefix("s", "staging").expect("valid"), "staging/");
        let err = path_prefix("s", "../prod").expect_err("escapes");
        assert!(
            err.to_string()
                .starts_with("pipeline configuration: stage s: path: "),
            "{err}"
        );
    }
}
