//! The [`Promoter`] trait: promotion through Git mechanics. When a revision
//! passes a stage of a [`Pipeline`](crate::pipeline::Pipeline), a promoter
//! can make that a Git event: move a branch (`env/production`) or create a
//! tag (`release-42`). The pipeline records every promotion in the audit log
//! of the stage the revision passed.
//!
//! `gitops-core` knows nothing of Git; a Git implementation lives in
//! `gitops-git`. `testing::MemoryPromoter` (cargo feature `testing`) records calls.

use async_trait::async_trait;

use crate::model::Revision;
use crate::source::BoxError;

/// Why a promotion failed. The pipeline keeps the revision at the stage it
/// passed and tries again at its next check.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The reference moved since it was read (someone else pushed): nothing
    /// was overwritten.
    #[error("promoting {revision} past stage {stage}: reference {reference} moved: {message}")]
    Conflict {
        /// The stage the revision passed.
        stage: String,
        /// The revision, as `main@sha1:<hex>`.
        revision: String,
        /// The branch or tag.
        reference: String,
        /// Detail.
        message: String,
    },
    /// Anything else, with an explicit transient flag.
    #[error("promoting {revision} past stage {stage} failed: {message}")]
    Failed {
        /// The stage the revision passed.
        stage: String,
        /// The revision, as `main@sha1:<hex>`.
        revision: String,
        /// What went wrong.
        message: String,
        /// Whether retrying may help.
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl PromoteError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            PromoteError::Conflict { .. } => true,
            PromoteError::Failed { transient, .. } => *transient,
        }
    }
}

/// Records in the source of truth that a revision passed a stage.
#[async_trait]
pub trait Promoter: Send + Sync {
    /// `revision` passed `stage` (it was Ready and healthy there for the
    /// soak time and every post-sync gate passed). Move a branch or create a
    /// tag; return the revision as the next stage should read it (the same
    /// commit through the new reference), or `None` to hand on `revision`
    /// unchanged. Called once per revision and stage, also for the last
    /// stage (e.g. to tag a release); must be idempotent, since a crash
    /// between the promotion and its audit record repeats it.
    async fn promote(
        &self,
        stage: &str,
        revision: &Revision,
    ) -> Result<Option<Revision>, PromoteError>;
}
