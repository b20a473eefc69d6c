//! What every call to the tool's [`Source`] passes through:
//!
//! - a deadline (`source_timeout`): a call that takes longer fails with a
//!   transient error (retried with backoff) instead of holding the engine;
//! - a shutdown of the engine ends a call in flight at once;
//! - a snapshot that is no longer awaited (deadline, shutdown, an aborted
//!   reconcile) has its [`Cancel`] set, so blocking work behind it stops;
//! - revisions come back [bounded](Revision::bounded), so a commit message
//!   of any size never reaches history, audit, status or events.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::state::GRACEFUL;
use crate::cancel::Cancel;
use crate::model::{Revision, Snapshot};
use crate::source::{Source, SourceError};

/// Wraps the engine's source (see the module docs).
pub(super) struct Guarded<S: ?Sized> {
    pub source: Arc<S>,
    /// The deadline of each call (`EngineConfig::source_timeout`).
    pub timeout: Duration,
    /// The engine's shutdown level.
    pub shutdown: watch::Receiver<u8>,
}

/// The message of a source call cut short by the engine's shutdown.
const SHUTTING_DOWN: &str = "cancelled: the engine is shutting down";

impl<S: ?Sized> Guarded<S> {
    /// Runs `call` under the deadline, until a shutdown.
    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            result = tokio::time::timeout(self.timeout, call) => result,
            _ = shutdown.wait_for(|level| *level >= GRACEFUL) => {
                return Err(SourceError::Other {
                    message: format!("{}: {SHUTTING_DOWN}", what()),
                    transient: true,
                    source: None,
                });
            }
        };
        result.unwrap_or_else(|_| {
            Err(SourceError::Other {
                message: format!(
                    "{} timed out after {:?} (source_timeout)",
                    what(),
                    self.timeout
                ),
                transient: true,
                source: None,
            })
        })
    }
}

#[async_trait]
impl<S: Source + ?Sized> Source for Guarded<S> {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.bounded(|| "poll".to_owned(), self.source.poll())
            .await
            .map(Revision::bounded)
    }

    async fn snapshot(
        &self,
        revision: &Revision,
        cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        // Set when this call returns or is dropped: whatever still runs
        // behind it is no longer wanted.
        let _stop = cancel.on_drop();
        self.bounded(
            || format!("snapshot of {revision}"),
            self.source.snapshot(revision, cancel),
        )
        .await
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.bounded(
            || "ancestry check".to_owned(),
            self.source.is_ancestor(ancestor, descendant),
        )
        .await
    }

    fn fingerprint(&self) -> Option<String> {
        self.source.fingerprint()
    }
}
