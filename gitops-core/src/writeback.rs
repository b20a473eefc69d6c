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
    /// Git moved and the same files changed upstream: nothing was
    /// overwritten. Not transient for this revision; the engine falls back to
    /// its conflict policy and tries again on the next revision.
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

/// What the engine asks a [`Writeback`] to record.
#[derive(Debug, Clone, Copy)]
pub struct WritebackRequest<'a> {
    /// The engine (application) name, for the commit message.
    pub engine: &'a str,
    /// The revision the drifted resources were deployed from: the parent of
    /// the commit to make.
    pub revision: &'a Revision,
    /// The drifted resources with what the target holds now.
    pub drifted: &'a [Drifted],
}

/// A write-back that produced a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenBack {
    /// The new commit.
    pub revision: Revision,
    /// The reference it was published to (e.g. `refs/heads/main`).
    pub published_to: String,
    /// Whether that reference is the one the engine deploys from: the commit
    /// is then the next release (it deploys as a no-op, since the target
    /// already holds it). `false` for a review branch.
    pub is_release: bool,
}

/// Records drifted resources in the source of truth (a commit to Git).
///
/// Implementations must be idempotent for the same request: the engine may
/// ask again when it restarts before the commit is deployed.
#[async_trait]
pub trait Writeback: Send + Sync {
    /// Writes the drifted resources back on top of `request.revision`;
    /// returns the commit, or `None` when nothing needed writing.
    async fn write_back(
        &self,
        request: WritebackRequest<'_>,
    ) -> Result<Option<WrittenBack>, WritebackError>;
}
