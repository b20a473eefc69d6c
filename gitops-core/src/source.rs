//! The [`Source`] trait: where releases come from.

use async_trait::async_trait;

use crate::cancel::Cancel;
use crate::model::{Revision, Snapshot};

/// A boxed error from a dependency, kept as the `source()` of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a source could not poll or read a revision.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The remote could not be reached (network down, timeout, 5xx). Transient.
    #[error("source {location} unavailable: {message}")]
    Unavailable {
        /// Where it was looking, with any credentials removed.
        location: String,
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The branch, tag, range or commit does not exist. Permanent.
    #[error("reference {reference} not found: {message}")]
    ReferenceNotFound {
        /// The reference as configured.
        reference: String,
        /// Detail.
        message: String,
    },
    /// A commit failed signature verification. Permanent.
    #[error("commit {commit} failed verification: {reason}")]
    Verification {
        /// The commit id.
        commit: String,
        /// Why (unsigned, unknown key, bad signature, ...).
        reason: String,
    },
    /// A file or tree was refused (hostile path, symlink, size or count limit). Permanent.
    #[error("{path}: {reason}")]
    Rejected {
        /// The snapshot-relative path it is about (or the subdirectory).
        path: String,
        /// Why.
        reason: String,
    },
    /// Authentication failed. Permanent until the credentials change.
    #[error("source {location}: authentication failed: {message}")]
    Authentication {
        /// Where, with any credentials removed.
        location: String,
        /// Detail (never the secret).
        message: String,
    },
    /// Anything else, with an explicit transient flag.
    #[error("{message}")]
    Other {
        /// What went wrong.
        message: String,
        /// Whether retrying may help.
        transient: bool,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl SourceError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Unavailable { .. } => true,
            SourceError::Other { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// Where desired state comes from: a Git repository, or a test's memory.
///
/// Implementations are cheap to poll: `poll` compares the remote reference
/// with what was seen last and transfers nothing when it has not moved.
#[async_trait]
pub trait Source: Send + Sync {
    /// The current release according to the source's reference policy.
    async fn poll(&self) -> Result<Revision, SourceError>;

    /// The files of one revision, read without a worktree checkout.
    ///
    /// `cancel` is set when the caller stops waiting (the engine's
    /// `source_timeout` passed, or the engine shuts down): work running on
    /// another thread checks it and returns early, so a cancelled snapshot
    /// does not keep a thread (and process exit) busy. Implementations also
    /// bound the work themselves (entries, depth, bytes): a revision whose
    /// snapshot exceeds a limit is refused with [`SourceError::Rejected`]
    /// naming the limit.
    async fn snapshot(&self, revision: &Revision, cancel: &Cancel)
    -> Result<Snapshot, SourceError>;

    /// Whether `ancestor` is `descendant` or one of its ancestors in the
    /// source's history: `Some(true)` or `Some(false)` when the source can
    /// tell, `None` when it cannot (the default; a shallow history, or a
    /// source without history). Used by application dependencies to accept
    /// a dependency that runs a newer commit.
    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        Ok((ancestor.id == descendant.id).then_some(true))
    }

    /// Everything besides the revision id that decides what
    /// [`snapshot`](Source::snapshot) returns and whether a revision is
    /// accepted (the repository, the path inside it, limits, signature
    /// policy), as text that changes whenever any of it changes. The
    /// engine keeps only a SHA-256 of it; never put a credential in it
    /// anyway.
    ///
    /// `None` (the default) means "unknown": the engine then never proves
    /// a reconcile unchanged without a snapshot (see `docs/engine.md`,
    /// "Unchanged revisions").
    fn fingerprint(&self) -> Option<String> {
        None
    }
}
