//! The sources a stage reads through: only what the stage before promoted
//! ([`PromotedSource`]), and only its own directory ([`SubdirSource`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::cancel::Cancel;
use crate::model::{Revision, Snapshot};
use crate::source::{Source, SourceError};
use crate::sync::LockExt as _;

/// The source of every stage but the first: only revisions the previous
/// stage promoted, the newest first; any other is refused.
pub(super) struct PromotedSource {
    inner: Arc<dyn Source>,
    /// The stage before.
    from: String,
    passed: Mutex<HashSet<String>>,
    current: watch::Sender<Option<Revision>>,
}

impl PromotedSource {
    /// Nothing promoted from stage `from` yet.
    pub(super) fn new(inner: Arc<dyn Source>, from: String) -> Self {
        Self {
            inner,
            from,
            passed: Mutex::new(HashSet::new()),
            current: watch::channel(None).0,
        }
    }

    /// Lets `revision` through, and makes it the one polls return.
    pub(super) fn hand_on(&self, revision: Revision) {
        self.passed.locked().insert(revision.id.clone());
        self.current.send_replace(Some(revision));
    }

    /// The last revision handed on.
    pub(super) fn current(&self) -> Option<Revision> {
        self.current.borrow().clone()
    }

    /// Watches the revision handed on.
    pub(super) fn subscribe(&self) -> watch::Receiver<Option<Revision>> {
        self.current.subscribe()
    }
}

#[async_trait]
impl Source for PromotedSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.current().ok_or_else(|| SourceError::Other {
            message: format!("no revision has passed stage {} yet", self.from),
            transient: true,
            source: None,
        })
    }

    async fn snapshot(
        &self,
        revision: &Revision,
        cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        let passed = self.passed.locked().contains(&revision.id);
        if !passed {
            return Err(SourceError::Other {
                message: format!("{revision} has not passed stage {}; refused", self.from),
                transient: false,
                source: None,
            });
        }
        self.inner.snapshot(revision, cancel).await
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.inner.is_ancestor(ancestor, descendant).await
    }
}

/// One directory of each revision, its files moved to the top level.
pub(super) struct SubdirSource {
    inner: Arc<dyn Source>,
    /// `path/`.
    prefix: String,
}

impl SubdirSource {
    /// The files of `inner` under `prefix` (`path/`).
    pub(super) fn new(inner: Arc<dyn Source>, prefix: String) -> Self {
        Self { inner, prefix }
    }
}

#[async_trait]
impl Source for SubdirSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.inner.poll().await
    }

    async fn snapshot(
        &self,
        revision: &Revision,
        cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        let full = self.inner.snapshot(revision, cancel).await?;
        let mut part = Snapshot::new(full.revision().clone());
        for (path, file) in full.files() {
            if let Some(rest) = path.strip_prefix(&self.prefix) {
                part.insert(rest, file.data.clone(), file.executable)
                    .map_err(|e| SourceError::Rejected {
                        path: path.clone(),
                        reason: e.reason.to_owned(),
                    })?;
            }
        }
        Ok(part)
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.inner.is_ancestor(ancestor, descendant).await
    }

    fn fingerprint(&self) -> Option<String> {
        let inner = self.inner.fingerprint()?;
        Some(format!("{inner}\nsubdir {:?}", self.prefix))
    }
}
