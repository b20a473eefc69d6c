//! [`GitWriteback`]: the Modify strategy on Git. Drifted resources are
//! written back to the files they came from, committed with the deployed
//! revision as parent, and published without overwriting anyone's work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::model::SnapshotFile;
use gitops_core::{
    Drifted, FileEdit, Render, Revision, Writeback, WritebackError, WritebackRequest, WrittenBack,
};
use gix::bstr::ByteSlice as _;

use crate::error::chain;
use crate::policy::Policy;
use crate::push::{Lease, Published, Publisher, failed, local_head, local_path, work_repo};
use crate::source::{GitSource, parse_id, revision_of};

/// Default commit message; see [`GitWritebackBuilder::message_template`].
pub const DEFAULT_MESSAGE_TEMPLATE: &str = "\
gitops({engine}): write back {count} drifted resource(s)

{resources}

The target was changed outside Git; the engine `{engine}` recorded the
change here instead of reverting it (drift policy `writeback`).

Previous revision: {previous}
Written at: {time}
";

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

    /// Limit for one `git push` (default: the source's fetch timeout).
    pub fn push_timeout(mut self, timeout: Duration) -> Self {
        self.push_timeout = timeout;
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
        GitWritebackBuilder {
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

    /// The reference commits are published to, e.g. `refs/heads/main`.
    pub fn reference(&self) -> &str {
        &self.inner.reference
    }
}

/// One file's new state, by repository path.
type Edits = BTreeMap<String, Option<(Vec<u8>, bool)>>;

impl WritebackInner {
    fn repo_path(&self, snapshot_path: &str) -> String {
        match &self.source.shared().path {
            Some(prefix) => format!("{}/{snapshot_path}", prefix.trim_end_matches('/')),
            None => snapshot_path.to_owned(),
        }
    }

    /// The new content of every file touched, computed from the deployed revision.
    fn edits(
        &self,
        repo: &gix::Repository,
        deployed: gix::ObjectId,
        drifted: &[Drifted],
    ) -> Result<Edits, WritebackError> {
        let tree = repo
            .find_commit(deployed)
            .and_then(|c| c.tree())
            .map_err(|e| failed(format!("commit {deployed}: {}", chain(&e)), false))?;
        let mut edits: Edits = BTreeMap::new();
        // Later documents first, so removing one does not shift the others.
        let mut order: Vec<&Drifted> = drifted.iter().collect();
        order.sort_by(|a, b| {
            (&a.resource.origin.path, b.resource.origin.document)
                .cmp(&(&b.resource.origin.path, a.resource.origin.document))
        });
        for d in order {
            let path = self.repo_path(&d.resource.origin.path);
            let current = match edits.get(&path) {
                Some(Some((data, executable))) => SnapshotFile {
                    data: data.clone().into(),
                    executable: *executable,
                },
                // The file is already removed by an earlier document's edit.
                Some(None) => continue,
                None => {
                    let entry = tree
                        .lookup_entry_by_path(&path)
                        .map_err(|e| failed(format!("{path}: {}", chain(&e)), false))?
                        .filter(|e| e.mode().is_blob())
                        .ok_or_else(|| {
                            failed(format!("{path} is not a file in {deployed}"), false)
                        })?;
                    let executable = entry.mode().is_executable();
                    let blob = repo
                        .find_blob(entry.object_id())
                        .map_err(|e| failed(format!("{path}: {}", chain(&e)), false))?;
                    SnapshotFile {
                        data: blob.data.clone().into(),
                        executable,
                    }
                }
            };
            let edit = self
                .render
                .write_back(&current, &d.resource, d.observed.as_ref())
                .map_err(|e| WritebackError::Failed {
                    message: e.to_string(),
                    transient: false,
                    source: Some(Box::new(e)),
                })?;
            let next = match edit {
                FileEdit::Write { data, executable } => Some((data, executable)),
                FileEdit::Remove => None,
            };
            edits.insert(path, next);
        }
        Ok(edits)
    }

    /// Writes the edited tree on top of `parent` and a commit; `None` when
    /// the tree does not change.
    fn commit(
        &self,
        repo: &gix::Repository,
        parent: gix::ObjectId,
        edits: &Edits,
        message: &str,
    ) -> Result<Option<gix::ObjectId>, WritebackError> {
        let git = |what: &str, e: &dyn std::error::Error| failed(format!("{what}: {e}"), false);
        let parent_tree = repo
            .find_commit(parent)
            .and_then(|c| c.tree_id())
            .map_err(|e| git("parent tree", &e))?
            .detach();
        let mut editor = repo
            .edit_tree(parent_tree)
            .map_err(|e| git("edit tree", &e))?;
        for (path, edit) in edits {
            match edit {
                Some((data, executable)) => {
                    let blob = repo.write_blob(data).map_err(|e| git("write blob", &e))?;
                    let kind = if *executable {
                        gix::object::tree::EntryKind::BlobExecutable
                    } else {
                        gix::object::tree::EntryKind::Blob
                    };
                    editor
                        .upsert(path.as_str(), kind, blob.detach())
                        .map_err(|e| git(path, &e))?;
                }
                None => {
                    editor.remove(path.as_str()).map_err(|e| git(path, &e))?;
                }
            }
        }
        let tree = editor.write().map_err(|e| git("write tree", &e))?.detach();
        if tree == parent_tree {
            return Ok(None);
        }
        let now = gix::date::Time::now_utc();
        let signature = |who: &Identity| gix::actor::Signature {
            name: who.name.as_str().into(),
            email: who.email.as_str().into(),
            time: now,
        };
        let mut commit = gix::objs::Commit {
            tree,
            parents: [parent].into_iter().collect(),
            author: signature(&self.author),
            committer: signature(&self.committer),
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        if let Some(key) = &self.signer {
            use gix::objs::WriteTo as _;
            let mut payload = Vec::new();
            commit
                .write_to(&mut payload)
                .map_err(|e| git("serialise commit", &e))?;
            let signature = key
                .sign("git", ssh_key::HashAlg::Sha512, &payload)
                .and_then(|s| s.to_pem(ssh_key::LineEnding::LF))
                .map_err(|e| failed(format!("signing the commit: {e}"), false))?;
            commit
                .extra_headers
                .push(("gpgsig".into(), signature.trim_end().into()));
        }
        let id = repo
            .write_object(&commit)
            .map_err(|e| git("write commit", &e))?;
        Ok(Some(id.detach()))
    }

    /// The first edited path that changed between the deployed commit and
    /// `parent` to something other than the edit itself: a file upstream
    /// already holding exactly the new content (the engine's own earlier
    /// commit, or someone recording the same change) is not a conflict.
    fn conflicting_path(
        repo: &gix::Repository,
        deployed: gix::ObjectId,
        parent: gix::ObjectId,
        edits: &Edits,
    ) -> Result<Option<String>, WritebackError> {
        use gix::object::tree::EntryKind;
        let tree = |id: gix::ObjectId| {
            repo.find_commit(id)
                .and_then(|c| c.tree())
                .map_err(|e| failed(format!("commit {id}: {}", chain(&e)), true))
        };
        let (ta, tb) = (tree(deployed)?, tree(parent)?);
        for (path, edit) in edits {
            let entry = |t: &gix::Tree<'_>| {
                t.lookup_entry_by_path(path)
                    .map(|e| e.map(|e| (e.mode().kind(), e.object_id())))
                    .map_err(|e| failed(format!("{path}: {}", chain(&e)), true))
            };
            let upstream = entry(&tb)?;
            if entry(&ta)? == upstream {
                continue;
            }
            let wanted = match edit {
                Some((data, executable)) => {
                    let id =
                        gix::objs::compute_hash(repo.object_hash(), gix::object::Kind::Blob, data)
                            .map_err(|e| failed(format!("{path}: hashing: {e}"), false))?;
                    let kind = if *executable {
                        EntryKind::BlobExecutable
                    } else {
                        EntryKind::Blob
                    };
                    Some((kind, id))
                }
                None => None,
            };
            if upstream != wanted {
                return Ok(Some(path.clone()));
            }
        }
        Ok(None)
    }

    fn message(&self, request: &WritebackRequest<'_>) -> String {
        let resources: Vec<String> = request
            .drifted
            .iter()
            .map(|d| {
                let what = if d.observed.is_some() {
                    "changed"
                } else {
                    "deleted"
                };
                // The file as the repository names it, not as the snapshot does.
                let origin = gitops_core::Origin {
                    path: self.repo_path(&d.resource.origin.path),
                    document: d.resource.origin.document,
                };
                format!("- {} ({origin}, {what} in the target)", d.resource.id)
            })
            .collect();
        let time =
            gix::date::Time::now_utc().format_or_unix(gix::date::time::format::ISO8601_STRICT);
        let values = [
            ("{engine}", request.engine.to_owned()),
            ("{count}", request.drifted.len().to_string()),
            ("{resources}", resources.join("\n")),
            ("{previous}", request.revision.to_string()),
            ("{time}", time),
        ];
        expand(&self.template, &values)
    }

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

/// Replaces each placeholder of `template` in one pass: a value that
/// contains a placeholder (a resource named `{time}`) is not expanded again.
fn expand(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match values.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
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
