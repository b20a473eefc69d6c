//! [`GitPromoter`]: a revision that passed a stage moves a branch or gets a
//! tag, so the promotion itself is a Git event with an audit trail.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::{Revision, WritebackError};
use gix::bstr::ByteSlice as _;

use crate::GitError;
use crate::push::{Lease, Published, Publisher, failed, local_head, local_path, work_repo};
use crate::source::{GitSource, parse_id};
use crate::writeback::Identity;

/// Where a promoted revision is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromotionRef {
    /// A branch the pipeline owns, moved to each promoted revision (e.g.
    /// `env/production`); `{stage}` is replaced by the stage name.
    Branch(String),
    /// A new annotated tag per promotion (e.g. `release-{stage}-{short}`);
    /// `{stage}`, `{short}` (12 hex digits) and `{id}` are replaced. An
    /// existing tag is never moved.
    Tag(String),
}

/// Configures a [`GitPromoter`]; made by [`GitPromoter::builder`].
#[derive(Debug)]
pub struct GitPromoterBuilder {
    source: GitSource,
    target: PromotionRef,
    tagger: Identity,
    push_timeout: Duration,
}

impl GitPromoterBuilder {
    /// Tagger of annotated tags and reflog identity (default `gitops <gitops@localhost>`).
    pub fn tagger(mut self, tagger: Identity) -> Self {
        self.tagger = tagger;
        self
    }

    /// Limit for one `git push` (default: the source's fetch timeout;
    /// `Duration::MAX`: no practical limit, see [`LONGEST_TIMEOUT`](crate::LONGEST_TIMEOUT)).
    pub fn push_timeout(mut self, timeout: Duration) -> Self {
        self.push_timeout = crate::saturate(timeout);
        self
    }

    /// Checks the reference template.
    pub fn build(self) -> Result<GitPromoter, GitError> {
        let sample = match &self.target {
            PromotionRef::Branch(t) => format!("refs/heads/{}", fill(t, "stage", &"0".repeat(40))),
            PromotionRef::Tag(t) => format!("refs/tags/{}", fill(t, "stage", &"0".repeat(40))),
        };
        gix::validate::reference::name(sample.as_bytes().as_bstr()).map_err(|e| {
            GitError::Config {
                what: "promotion reference",
                reason: format!("{:?}: {e}", self.target),
            }
        })?;
        Ok(GitPromoter {
            inner: Arc::new(self),
        })
    }
}

/// Records promotions in the source's repository: moves a branch or creates
/// an annotated tag pointing at the promoted commit, published the same way
/// as [`GitWriteback`](crate::GitWriteback) publishes (compare-and-swap
/// locally, `git push` to a remote).
#[derive(Debug, Clone)]
pub struct GitPromoter {
    inner: Arc<GitPromoterBuilder>,
}

fn fill(template: &str, stage: &str, id: &str) -> String {
    template
        .replace("{stage}", stage)
        .replace("{short}", id.get(..12).unwrap_or(id))
        .replace("{id}", id)
}

impl GitPromoter {
    /// A promoter writing to the repository `source` reads.
    pub fn builder(source: &GitSource, target: PromotionRef) -> GitPromoterBuilder {
        GitPromoterBuilder {
            push_timeout: source.shared().fetch_timeout,
            source: source.clone(),
            target,
            tagger: Identity::new("gitops", "gitops@localhost"),
        }
    }

    /// Records that `revision` passed `stage`; returns the full reference
    /// name written (e.g. `refs/tags/release-staging-0123456789ab`).
    /// Promoting to a tag that already names the same commit is a no-op.
    pub async fn promote_revision(
        &self,
        stage: &str,
        revision: &Revision,
    ) -> Result<String, WritebackError> {
        let inner = self.inner.clone();
        let stage = stage.to_owned();
        let revision = revision.clone();
        tokio::task::spawn_blocking(move || promote_blocking(&inner, &stage, &revision))
            .await
            .map_err(|e| failed(format!("promotion task: {e}"), true))?
    }
}

fn promote_blocking(
    inner: &GitPromoterBuilder,
    stage: &str,
    revision: &Revision,
) -> Result<String, WritebackError> {
    let shared = inner.source.shared();
    let commit = parse_id(&revision.id).map_err(|e| failed(e.to_string(), false))?;
    let repo = work_repo(shared)?;
    if !repo.has_object(commit) {
        return Err(failed(
            format!("commit {} is not in the repository", revision.id),
            false,
        ));
    }
    let publisher = Publisher {
        shared,
        timeout: inner.push_timeout,
        committer: (&inner.tagger.name, &inner.tagger.email),
    };
    let message = format!("gitops: promote {revision} past stage {stage}");
    match &inner.target {
        PromotionRef::Branch(template) => {
            let reference = format!("refs/heads/{}", fill(template, stage, &revision.id));
            publisher.publish(&repo, &reference, Lease::Force, commit, &message)?;
            Ok(reference)
        }
        PromotionRef::Tag(template) => {
            let name = fill(template, stage, &revision.id);
            let reference = format!("refs/tags/{name}");
            if local_path(shared).is_some()
                && let Some(existing) = local_head(&repo, &reference)?
            {
                return if existing == commit {
                    Ok(reference)
                } else {
                    Err(failed(
                        format!("tag {name} already exists at {existing}; tags are never moved"),
                        false,
                    ))
                };
            }
            let tag = gix::objs::Tag {
                target: commit,
                target_kind: gix::objs::Kind::Commit,
                name: name.as_str().into(),
                tagger: Some(gix::actor::Signature {
                    name: inner.tagger.name.as_str().into(),
                    email: inner.tagger.email.as_str().into(),
                    time: gix::date::Time::now_utc(),
                }),
                message: format!(
                    "Promoted past stage {stage}\n\n{revision}: {}\n",
                    revision.summary()
                )
                .into(),
                signature: None,
            };
            let tag_id = repo
                .write_object(&tag)
                .map_err(|e| failed(format!("write tag {name}: {}", e), false))?
                .detach();
            match publisher.publish(&repo, &reference, Lease::Absent, tag_id, &message)? {
                Published::Done => Ok(reference),
                // A repeat (e.g. after a crash) finds its own tag: done.
                Published::Moved => match publisher.remote_commit(&reference)? {
                    Some(existing) if existing == commit => Ok(reference),
                    existing => Err(failed(
                        format!(
                            "tag {name} already exists{}; tags are never moved",
                            existing.map(|e| format!(" at {e}")).unwrap_or_default()
                        ),
                        false,
                    )),
                },
            }
        }
    }
}

/// The pipeline's view: each passed stage moves the branch or creates the
/// tag, and the next stage reads the same commit through that reference
/// (`env/production`, `release-…`, without `refs/heads/` or `refs/tags/`).
#[gitops_core::async_trait]
impl gitops_core::Promoter for GitPromoter {
    async fn promote(
        &self,
        stage: &str,
        revision: &Revision,
    ) -> Result<Option<Revision>, gitops_core::PromoteError> {
        use gitops_core::PromoteError;
        let reference = self
            .promote_revision(stage, revision)
            .await
            .map_err(|e| match e {
                WritebackError::Conflict { path, message } => PromoteError::Conflict {
                    stage: stage.to_owned(),
                    revision: revision.to_string(),
                    reference: path,
                    message,
                },
                WritebackError::Failed {
                    message,
                    transient,
                    source,
                } => PromoteError::Failed {
                    stage: stage.to_owned(),
                    revision: revision.to_string(),
                    message,
                    transient,
                    source,
                },
            })?;
        let short = reference
            .strip_prefix("refs/heads/")
            .or_else(|| reference.strip_prefix("refs/tags/"))
            .unwrap_or(&reference);
        Ok(Some(Revision {
            reference: short.to_owned(),
            ..revision.clone()
        }))
    }
}
