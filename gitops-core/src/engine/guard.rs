//! What every call to the tool's [`Source`] passes through: revisions come
//! back [bounded](Revision::bounded), so a commit message of any size never
//! reaches history, audit, status or events.

use async_trait::async_trait;

use crate::model::{Revision, Snapshot};
use crate::source::{Source, SourceError};

/// Wraps the engine's source (see the module docs).
pub(super) struct Guarded<S: ?Sized>(pub std::sync::Arc<S>);

#[async_trait]
impl<S: Source + ?Sized> Source for Guarded<S> {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.0.poll().await.map(Revision::bounded)
    }

    async fn snapshot(&self, revision: &Revision) -> Result<Snapshot, SourceError> {
        self.0.snapshot(revision).await
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.0.is_ancestor(ancestor, descendant).await
    }
}
