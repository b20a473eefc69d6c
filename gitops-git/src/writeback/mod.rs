//! [`GitWriteback`]: the Modify strategy on Git. Drifted resources are
//! written back to the files they came from, committed with the deployed
//! revision as parent, and published without overwriting anyone's work.
//!
//! `builder` checks the settings, `tree` builds the commit from the edited
//! files (and finds conflicts), `message` writes its message; this module
//! publishes it, rebuilding on a moved branch.

mod builder;
mod message;
mod tree;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::writeback::{Drifted, WritebackRequest, WrittenBack};
use gitops_core::{Render, Revision, Writeback, WritebackError};

use crate::push::{Lease, Published, Publisher, failed, local_head, work_repo};
use crate::source::{GitSource, parse_id, revision_of};

pub use builder::{GitWritebackBuilder, Identity};
pub use message::DEFAULT_MESSAGE_TEMPLATE;

/// Writes drifted resources back to Git: the Modify strategy.
///
/// Each file is rewritten by the [`Render`] that read it (a manifest's one
/// document, or a plain file's bytes), committed with the deployed revision
/// as parent, and published:
///
/// * to a **local repository** (a path or `file://` URL) by a compare-and-swap
///   of its branch reference; the branch checked out in a non-bare
///   repository is never moved (its files would stop matching it, which is
///   why `git push` refuses it too): track a bare repository there, or use a
///   [`review_branch`](GitWritebackBuilder::review_branch);
/// * to a **remote** with `git push --porcelain --atomic
///   --force-with-lease=<branch>:<deployed>` run in the source's bare cache
///   (gix cannot push yet), with the source's credentials passed in the
///   environment, never in arguments, logs or errors.
///
/// When the branch moved since the deployed revision, the change is rebuilt
/// on the new head if none of its files changed there (or changed to exactly
/// the content it would write: asking again is not a conflict with the
/// engine's own commit), else nothing is overwritten and
/// [`WritebackError::Conflict`] names the file.
#[derive(Clone)]
pub struct GitWriteback {
    inner: Arc<WritebackInner>,
}

struct WritebackInner {
    source: GitSource,
    render: Arc<dyn Render>,
    branch: String,
    reference: String,
    is_release: bool,
    local: bool,
    author: Identity,
    committer: Identity,
    template: String,
    signer: Option<ssh_key::PrivateKey>,
    max_attempts: u32,
    push_timeout: Duration,
}

impl std::fmt::Debug for GitWriteback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("GitWriteback")
            .field("location", &i.source.location())
            .field("reference", &i.reference)
            .field("is_release", &i.is_release)
            .field("signed", &i.signer.is_some())
            .finish_non_exhaustive()
    }
}

impl GitWriteback {
    /// A write-back into the repository `source` reads, rewriting files with
    /// `render` (the renderer the engine uses).
    pub fn builder(source: &GitSource, render: Arc<dyn Render>) -> GitWritebackBuilder {
        GitWritebackBuilder::new(source, render)
    }

    /// The reference commits are published to, e.g. `refs/heads/main`.
    pub fn reference(&self) -> &str {
        &self.inner.reference
    }
}

impl WritebackInner {
    /// The branch head now, brought into the repository commits are built in.
    async fn fetch_head(self: &Arc<Self>) -> Result<Option<gix::ObjectId>, WritebackError> {
        if self.local {
            let this = self.clone();
            return blocking(move || {
                let repo = work_repo(this.source.shared())?;
                local_head(&repo, &this.reference)
            })
            .await;
        }
        let head = self
            .source
            .poll_detailed()
            .await
            .map_err(|e| failed(format!("fetching the moved branch: {e}"), e.is_transient()))?;
        parse_id(&head.revision.id)
            .map(Some)
            .map_err(|e| failed(e.to_string(), false))
    }

    /// Builds the commit on `parent` and publishes it, leased on `parent`.
    fn attempt(
        &self,
        deployed: gix::ObjectId,
        parent: gix::ObjectId,
        drifted: &[Drifted],
        message: &str,
    ) -> Result<Attempt, WritebackError> {
        let repo = work_repo(self.source.shared())?;
        let edits = self.edits(&repo, deployed, drifted)?;
        if parent != deployed
            && let Some(path) = Self::conflicting_path(&repo, deployed, parent, &edits)?
        {
            return Ok(Attempt::Conflict(path));
        }
        let Some(commit) = self.commit(&repo, parent, &edits, message)? else {
            return Ok(Attempt::NothingToWrite);
        };
        // A review branch is replaced; the release branch is leased.
        let lease = if self.is_release {
            Lease::Expect(parent)
        } else {
            Lease::Force
        };
        let publisher = Publisher {
            shared: self.source.shared(),
            timeout: self.push_timeout,
            committer: (&self.committer.name, &self.committer.email),
        };
        let published = publisher.publish(
            &repo,
            &self.reference,
            lease,
            commit,
            "gitops: write back drift",
        )?;
        Ok(match published {
            Published::Done => {
                let revision = revision_of(&repo, commit, self.branch.clone())
                    .map_err(|e| failed(e.to_string(), false))?;
                Attempt::Done(revision)
            }
            Published::Moved => Attempt::Moved,
        })
    }
}

enum Attempt {
    Done(Revision),
    Moved,
    Conflict(String),
    NothingToWrite,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WritebackError> + Send + 'static,
) -> Result<T, WritebackError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(format!("write-back task: {e}"), true))?
}

#[async_trait]
impl Writeback for GitWriteback {
    async fn write_back(
        &self,
        request: WritebackRequest<'_>,
    ) -> Result<Option<WrittenBack>, WritebackError> {
        let inner = self.inner.clone();
        let deployed = parse_id(&request.revision.id).map_err(|e| failed(e.to_string(), false))?;
        let message = inner.message(&request);
        let drifted: Arc<[Drifted]> = request.drifted.into();
        let mut parent = deployed;
        for attempt in 1..=inner.max_attempts {
            let (this, shared, message) = (inner.clone(), drifted.clone(), message.clone());
            let outcome =
                blocking(move || this.attempt(deployed, parent, &shared, &message)).await?;
            match outcome {
                Attempt::Done(revision) => {
                    tracing::info!(
                        commit = %revision.id,
                        reference = %inner.reference,
                        resources = drifted.len(),
                        "drift written back"
                    );
                    return Ok(Some(WrittenBack {
                        revision,
                        published_to: inner.reference.clone(),
                        is_release: inner.is_release,
                    }));
                }
                Attempt::NothingToWrite => return Ok(None),
                Attempt::Conflict(path) => {
                    return Err(WritebackError::Conflict {
                        message: format!(
                            "{path} changed on {} since {}; nothing was overwritten",
                            inner.branch, request.revision
                        ),
                        path,
                    });
                }
                Attempt::Moved => {
                    tracing::debug!(attempt, "branch moved; rebuilding on its new head");
                    parent = inner
                        .fetch_head()
                        .await?
                        .ok_or_else(|| failed(format!("{} was deleted", inner.reference), true))?;
                }
            }
        }
        Err(failed(
            format!(
                "{} kept moving: gave up after {} attempts",
                inner.reference, inner.max_attempts
            ),
            true,
        ))
    }
}
