//! [`GitWritebackBuilder`] and the [`Identity`] commits are made with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::Render;
use gix::bstr::ByteSlice as _;

use crate::policy::Policy;
use crate::push::local_path;
use crate::source::GitSource;

use super::{DEFAULT_MESSAGE_TEMPLATE, GitWriteback, WritebackInner};

/// A commit author or committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

impl Identity {
    /// An identity.
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            email: email.into(),
        }
    }
}

/// Configures a [`GitWriteback`]; made by [`GitWriteback::builder`].
pub struct GitWritebackBuilder {
    source: GitSource,
    render: Arc<dyn Render>,
    review_branch: Option<String>,
    author: Identity,
    committer: Option<Identity>,
    template: String,
    signing_key: Option<PathBuf>,
    max_attempts: u32,
    push_timeout: Duration,
}

impl std::fmt::Debug for GitWritebackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitWritebackBuilder")
            .field("source", &self.source)
            .field("review_branch", &self.review_branch)
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
}

impl GitWritebackBuilder {
    /// The defaults; see [`GitWriteback::builder`].
    pub(super) fn new(source: &GitSource, render: Arc<dyn Render>) -> Self {
        Self {
            push_timeout: source.shared().fetch_timeout,
            source: source.clone(),
            render,
            review_branch: None,
            author: Identity::new("gitops", "gitops@localhost"),
            committer: None,
            template: DEFAULT_MESSAGE_TEMPLATE.to_owned(),
            signing_key: None,
            max_attempts: 3,
        }
    }

    /// Publish to this branch (review flow: a person merges it) instead of
    /// the branch the source tracks. The branch belongs to the engine: each
    /// write-back replaces it with one commit on top of the deployed revision
    /// holding all current drift.
    pub fn review_branch(mut self, branch: impl Into<String>) -> Self {
        self.review_branch = Some(branch.into());
        self
    }

    /// Commit author (default `gitops <gitops@localhost>`).
    pub fn author(mut self, author: Identity) -> Self {
        self.author = author;
        self
    }

    /// Committer (default: the author).
    pub fn committer(mut self, committer: Identity) -> Self {
        self.committer = Some(committer);
        self
    }

    /// The commit message. Placeholders: `{engine}`, `{count}`,
    /// `{resources}` (one `- id (file, changed in the target)` line each,
    /// or `deleted`), `{previous}` (the deployed revision) and `{time}`
    /// (RFC 3339, UTC), expanded in one pass (placeholders inside resource
    /// names stay as written). Default: [`DEFAULT_MESSAGE_TEMPLATE`].
    pub fn message_template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// Signs each commit with this unencrypted OpenSSH Ed25519 private key
    /// (namespace `git`, as `git commit -S` with `gpg.format=ssh`), so a
    /// source that verifies signatures deploys the engine's own commits.
    pub fn signing_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.signing_key = Some(path.into());
        self
    }

    /// How often to rebuild on a moved branch before giving up (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Limit for one `git push` (default: the source's fetch timeout;
    /// `Duration::MAX`: no practical limit, see [`LONGEST_TIMEOUT`](crate::LONGEST_TIMEOUT)).
    pub fn push_timeout(mut self, timeout: Duration) -> Self {
        self.push_timeout = crate::saturate(timeout);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<GitWriteback, crate::GitError> {
        let config = |reason: String| crate::GitError::Config {
            what: "write-back",
            reason,
        };
        let shared = self.source.shared().clone();
        let (branch, is_release) = match (&self.review_branch, &shared.policy) {
            (Some(review), _) => (review.clone(), false),
            (None, Policy::Branch(branch)) => (branch.clone(), true),
            (None, _) => {
                return Err(config(
                    "the source does not track a branch (tag, semver or commit policy): \
                     publish to a review branch with `review_branch`"
                        .to_owned(),
                ));
            }
        };
        let full = format!("refs/heads/{branch}");
        gix::validate::reference::name(full.as_bytes().as_bstr())
            .map_err(|e| config(format!("branch {branch:?}: {e}")))?;
        let signer = match &self.signing_key {
            None => None,
            Some(path) => {
                let key = ssh_key::PrivateKey::read_openssh_file(path)
                    .map_err(|e| config(format!("signing key {}: {e}", path.display())))?;
                if key.is_encrypted() {
                    return Err(config(format!(
                        "signing key {}: encrypted keys are not supported",
                        path.display()
                    )));
                }
                Some(key)
            }
        };
        let local = local_path(&shared).is_some();
        Ok(GitWriteback {
            inner: Arc::new(WritebackInner {
                source: self.source,
                render: self.render,
                branch,
                reference: full,
                is_release,
                local,
                author: self.author.clone(),
                committer: self.committer.unwrap_or(self.author),
                template: self.template,
                signer,
                max_attempts: self.max_attempts,
                push_timeout: self.push_timeout,
            }),
        })
    }
}
