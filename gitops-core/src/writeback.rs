//! The [`Writeback`] trait: the Modify strategy, recording target changes in Git.

use async_trait::async_trait;

use crate::model::{Observed, Resource, Revision};
use crate::source::BoxError;

/// A resource whose target state drifted from Git under a `writeback` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Drifted {
    /// The desired resource, as rendered from `revision` (its `origin` says
    /// which file and document to rewrite).
    pub resource: Resource,
    /// What the target holds now; `None` when it was deleted there.
    pub observed: Option<Observed>,
}

/// Why a write-back failed.
#[derive(Debug, thiserror::Error)]
pub enum WritebackError {
    /// Git moved and the same files changed upstream: nothing was overwritten.
    #[error("write-back conflict on {path}: {message}")]
    Conflict {
        /// The file that changed upstream.
        path: String,
        /// Detail.
        message: String,
    },
    /// The push or commit failed; may succeed later.
    #[error("write-back failed: {message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// Whether retrying may help.
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl WritebackError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WritebackError::Failed {
                transient: true,
                ..
            }
        )
    }
}

/// Records drifted resources in the source of truth (a commit to Git).
#[async_trait]
pub trait Writeback: Send + Sync {
    /// Writes `drifted` back on top of `revision`; returns the new revision
    /// (the engine treats it as the next release), or `None` when nothing
    /// needed writing.
    async fn write_back(
        &self,
        revision: &Revision,
        drifted: &[Drifted],
    ) -> Result<Option<Revision>, WritebackError>;
}
