//! [`EngineError`]: why a reconcile could not run at all, and
//! [`ConfigError`]: why an engine could not be built.
//!
//! Per-resource failures are in the [`SyncReport`](super::SyncReport);
//! outcomes that are not failures (blocked by a window or a dependency,
//! suspended, aborted by shutdown) are a [`SyncResult`](crate::record::SyncResult)
//! of the report, never an error.

use std::time::Duration;

use crate::model::Revision;
use crate::plan::PlanError;
use crate::render::RenderError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::target::TargetError;

/// Why a reconcile could not run at all.
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
    /// Rendering the revision took longer than
    /// [`EngineConfig::render_timeout`](super::EngineConfig::render_timeout).
    /// Transient: retried with backoff.
    #[error("revision {revision}: rendering took longer than {after:?} (render_timeout)")]
    RenderTimeout {
        /// The revision being rendered.
        revision: Box<Revision>,
        /// The limit.
        after: Duration,
    },
    /// The engine started shutting down while the revision was being read
    /// or rendered; nothing of it was applied.
    #[error("cancelled: the engine is shutting down")]
    ShuttingDown,
    /// Observing the target failed.
    #[error("observe: {0}")]
    Observe(#[source] TargetError),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[source] StoreError),
    /// Planning failed.
    #[error("plan: {0}")]
    Plan(#[from] PlanError),
    /// The revision would delete every managed resource and
    /// [`EngineConfig::allow_empty`](super::EngineConfig::allow_empty) is off.
    #[error(
        "revision {revision} has no resources and would delete all {managed} managed ones; refused (set allow_empty to permit)"
    )]
    EmptyRevision {
        /// The refused revision.
        revision: Box<Revision>,
        /// How many resources the engine manages.
        managed: usize,
    },
    /// The revision would delete or change more than
    /// [`EngineConfig::delete_limit`](super::EngineConfig::delete_limit) or
    /// [`change_limit`](super::EngineConfig::change_limit) allow; it waits
    /// until someone confirms it.
    #[error(
        "revision {revision} is held for confirmation: {why}; confirm it with `--confirm {}` (gitops-agent), `POST /confirm?revision={}` or EngineHandle::confirm",
        revision.id, revision.id
    )]
    ConfirmationRequired {
        /// The held revision.
        revision: Box<Revision>,
        /// What it would do, and the limit.
        why: String,
    },
    /// A rollback named a revision the source cannot provide.
    #[error("rollback to {revision}: {source}")]
    Rollback {
        /// The requested revision.
        revision: Box<Revision>,
        /// Why it could not be read.
        source: SourceError,
    },
    /// The builder was given an unusable configuration.
    #[error("engine configuration: {0}")]
    Config(#[from] ConfigError),
}

impl EngineError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Source(e) => e.is_transient(),
            EngineError::Observe(e) => e.is_transient(),
            EngineError::Store(e) => e.is_transient(),
            EngineError::RenderTimeout { .. } | EngineError::ShuttingDown => true,
            _ => false,
        }
    }

    /// The revision it is about, when one was read.
    pub fn revision(&self) -> Option<&Revision> {
        match self {
            EngineError::Render { revision, .. }
            | EngineError::RenderTimeout { revision, .. }
            | EngineError::EmptyRevision { revision, .. }
            | EngineError::ConfirmationRequired { revision, .. }
            | EngineError::Rollback { revision, .. } => Some(revision),
            _ => None,
        }
    }
}

/// Why [`EngineBuilder::build`](super::EngineBuilder::build) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required part was not given.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A limit that must be at least 1 was zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// An interval of zero would poll (or check) in a busy loop.
    #[error("{0} must be longer than zero (Duration::MAX: only when triggered)")]
    ZeroInterval(&'static str),
    /// A timeout of zero would fail every call.
    #[error("{0} must be longer than zero (Duration::MAX: no limit)")]
    ZeroTimeout(&'static str),
    /// An application listed itself as a dependency.
    #[error("app `{0}` cannot depend on itself")]
    SelfDependency(String),
}
