//! [`GitSource`]: a [`Source`] over a bare cache repository kept up to date with gix.
//!
//! `builder` checks the settings, `fetch` polls the remote (`remote` talks
//! to it), `read` serves revisions, history and snapshots from the cache
//! (`cache` keeps it), `signatures` verifies the release.

mod builder;
mod cache;
mod fetch;
mod read;
mod remote;
mod shared;
mod signatures;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::{Cancel, Revision, Snapshot, Source, SourceError, async_trait};

use crate::credentials::{CredentialSource, SshOptions};
use crate::error::{GitError, join, objects};
use crate::policy::{Policy, ReferencePolicy};
use crate::snapshot::{Limits, SpecialEntries};
use crate::trust::TrustedSigners;
use crate::verify::VerifyMode;

pub(crate) use builder::CaFile;
pub use builder::GitSourceBuilder;
pub(crate) use read::{parse_id, revision_of};
pub use shared::SharedRepository;

use fetch::fetch_blocking;
use read::{history_blocking, resolve_commit, snapshot_blocking};

/// A Git repository as a [`Source`]: polls a remote cheaply, selects the release
/// by a [`ReferencePolicy`], and reads snapshots straight from the object
/// database of a bare cache repository (no worktree).
///
/// Cloning is cheap; clones share the cache and the last good revision.
#[derive(Clone)]
pub struct GitSource {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) repo: gix::ThreadSafeRepository,
    pub(crate) url: gix::Url,
    pub(crate) location: String,
    pub(crate) policy: Policy,
    pub(crate) path: Option<String>,
    pub(crate) cache_dir: PathBuf,
    pub(crate) fetch_timeout: Duration,
    pub(crate) depth: Option<NonZeroU32>,
    pub(crate) limits: Limits,
    pub(crate) special: SpecialEntries,
    pub(crate) credentials: CredentialSource,
    pub(crate) ssh: SshOptions,
    pub(crate) ca: Option<CaFile>,
    pub(crate) insecure_http: bool,
    pub(crate) verify: Option<(VerifyMode, TrustedSigners)>,
    pub(crate) last_good: Mutex<Option<Revision>>,
    pub(crate) fetch_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) blob_cache: Mutex<crate::snapshot::BlobCache>,
    /// The repository shared with other sources of the same remote, if any.
    pub(crate) group: Option<Arc<shared::Group>>,
}

impl Inner {
    /// Why credentials must not be sent to this remote: a plain `http://`
    /// URL, unless `allow_insecure_http_credentials(true)`.
    pub(crate) fn refuse_credentials(&self) -> Option<String> {
        (matches!(self.url.scheme, gix::url::Scheme::Http) && !self.insecure_http).then(|| {
            format!(
                "refusing to send credentials to {} over plain http:// (anyone on the path \
                 can read them); use https://, or allow_insecure_http_credentials(true)",
                self.location
            )
        })
    }
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("GitSource")
            .field("location", &i.location)
            .field("policy", &i.policy.describe())
            .field("path", &i.path)
            .field("cache_dir", &i.cache_dir)
            .field("depth", &i.depth)
            .field("credentials", &i.credentials)
            .finish_non_exhaustive()
    }
}

/// The outcome of one poll, with what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollOutcome {
    /// The selected release.
    pub revision: Revision,
    /// Whether a pack was received (`false`: nothing was transferred but the
    /// reference listing).
    pub pack_received: bool,
    /// Whether the remote was contacted at all (`false` for a pinned commit
    /// already in the cache).
    pub contacted_remote: bool,
}

impl GitSource {
    /// Starts a builder for the repository at `url` (a local path, `file://`,
    /// `http(s)://`, `ssh://`, scp-like `user@host:path`, or `git://`).
    pub fn builder(url: impl Into<String>, policy: ReferencePolicy) -> GitSourceBuilder {
        GitSourceBuilder::new(url.into(), policy)
    }

    /// The remote location, without credentials.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The shared state, for the write-back in this crate.
    pub(crate) fn shared(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache_dir
    }

    /// The last revision a poll returned successfully (kept when the remote becomes
    /// unreachable; its snapshot can still be read from the cache).
    pub fn last_good(&self) -> Option<Revision> {
        lock(&self.inner.last_good).clone()
    }

    /// Like [`Source::poll`], also telling whether anything was transferred.
    pub async fn poll_detailed(&self) -> Result<PollOutcome, SourceError> {
        let deadline = tokio::time::Instant::now() + self.inner.fetch_timeout;
        let timed_out = |what: &str| SourceError::Unavailable {
            location: self.inner.location.clone(),
            message: format!("{what} (fetch timeout {:?})", self.inner.fetch_timeout),
            source: None,
        };
        // Polls of one source (of one shared repository) are serialized; a
        // fetch stuck in the network keeps the lock, and later polls report
        // that instead of piling up threads.
        let requested = std::time::Instant::now();
        let result =
            match tokio::time::timeout_at(deadline, self.inner.fetch_lock.clone().lock_owned())
                .await
            {
                Err(_) => Err(timed_out(
                    "fetch timed out: a previous fetch of this source is still running",
                )),
                Ok(guard) => {
                    let inner = self.inner.clone();
                    let interrupt = Arc::new(AtomicBool::new(false));
                    let flag = interrupt.clone();
                    // A caller that stops waiting (the engine's deadline, a
                    // shutdown) drops this future: the fetch stops too.
                    let _stop_when_dropped = SetOnDrop(interrupt.clone());
                    let task = tokio::task::spawn_blocking(move || {
                        let result = fetch_blocking(&inner, &flag, requested);
                        drop(guard);
                        result
                    });
                    match tokio::time::timeout_at(deadline, task).await {
                        Ok(joined) => joined.map_err(join)?,
                        Err(_) => {
                            interrupt.store(true, Ordering::Relaxed);
                            Err(timed_out("fetch timed out"))
                        }
                    }
                }
            };
        match result {
            Ok(outcome) => {
                *lock(&self.inner.last_good) = Some(outcome.revision.clone());
                tracing::debug!(
                    location = %self.inner.location,
                    revision = %outcome.revision,
                    pack_received = outcome.pack_received,
                    "polled git source"
                );
                Ok(outcome)
            }
            Err(err) => {
                let err = self.with_last_good(err);
                tracing::warn!(location = %self.inner.location, error = %err, transient = err.is_transient(), "git poll failed");
                Err(err)
            }
        }
    }

    fn with_last_good(&self, err: SourceError) -> SourceError {
        match err {
            SourceError::Unavailable {
                location,
                message,
                source,
            } => {
                let last = self.last_good().or_else(|| self.cached_revision());
                let message = match last {
                    Some(rev) => format!(
                        "{message}; the last good revision {rev} is still available from the cache"
                    ),
                    None => format!("{message}; no revision has been fetched yet"),
                };
                SourceError::Unavailable {
                    location,
                    message,
                    source,
                }
            }
            other => other,
        }
    }

    /// The revision the cache holds for the policy without contacting the remote
    /// (after a restart, before the first successful poll). `None` for `Semver`
    /// or when nothing was fetched yet.
    pub fn cached_revision(&self) -> Option<Revision> {
        let inner = &self.inner;
        let repo = inner.repo.to_thread_local();
        let (local, name) = match &inner.policy {
            Policy::Branch(b) => (Policy::local_ref(&format!("refs/heads/{b}"))?, b.clone()),
            Policy::Tag(t) => (Policy::local_ref(&format!("refs/tags/{t}"))?, t.clone()),
            Policy::Semver { .. } => return None,
            Policy::Commit(c) => {
                let id = resolve_commit(&repo, c).ok().flatten()?;
                return revision_of(&repo, id, id.to_string()).ok();
            }
        };
        let mut reference = repo.try_find_reference(local.as_str()).ok()??;
        let commit = reference.peel_to_commit().ok()?;
        revision_of(&repo, commit.id, name).ok()
    }

    /// The commits reachable from `to` but not from `from` (all of `to`'s history
    /// when `from` is `None`), newest first, at most `limit`. With a shallow cache
    /// (the default depth 1) history stops at the shallow boundary; use
    /// [`GitSourceBuilder::depth`]`(None)` for the full audit trail.
    pub async fn history(
        &self,
        from: Option<&Revision>,
        to: &Revision,
        limit: usize,
    ) -> Result<Vec<Revision>, SourceError> {
        let inner = self.inner.clone();
        let from = from.map(|r| r.id.clone());
        let to = to.clone();
        tokio::task::spawn_blocking(move || history_blocking(&inner, from.as_deref(), &to, limit))
            .await
            .map_err(join)?
    }
}

#[async_trait]
impl Source for GitSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        self.poll_detailed().await.map(|o| o.revision)
    }

    /// Reads the tree in a blocking thread that checks `cancel`, which is
    /// also set when this future is dropped.
    async fn snapshot(
        &self,
        revision: &Revision,
        cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        let inner = self.inner.clone();
        let revision = revision.clone();
        let flag = cancel.clone();
        let guard = cancel.on_drop();
        let result =
            tokio::task::spawn_blocking(move || snapshot_blocking(&inner, &revision, &flag))
                .await
                .map_err(join)?;
        guard.disarm();
        result
    }

    /// Walks the cache's history from `descendant`. A shallow cache (the
    /// default depth of 1) usually cannot tell: `None` unless the commits
    /// are the same or the ancestor is within the fetched history; set
    /// `depth(None)` for full answers.
    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        if ancestor.id == descendant.id {
            return Ok(Some(true));
        }
        let inner = self.inner.clone();
        let (ancestor, descendant) = (parse_id(&ancestor.id)?, parse_id(&descendant.id)?);
        tokio::task::spawn_blocking(move || {
            let repo = inner.repo.to_thread_local();
            if !repo.has_object(descendant) || !repo.has_object(ancestor) {
                return Ok(None);
            }
            let walk = repo
                .rev_walk([descendant])
                .all()
                .map_err(|e| objects(format!("history of {descendant}"), e))?;
            for info in walk {
                match info {
                    Ok(info) if info.id == ancestor => return Ok(Some(true)),
                    Ok(_) => {}
                    // A missing parent: the history is cut here.
                    Err(_) => return Ok(None),
                }
            }
            Ok((!repo.is_shallow().unwrap_or(true)).then_some(false))
        })
        .await
        .map_err(join)?
    }

    /// The repository (scheme, host, port and path: never a user name or
    /// password), the reference policy, the path inside the repository,
    /// the limits, how special entries are handled and the signature policy.
    fn fingerprint(&self) -> Option<String> {
        let inner = &self.inner;
        let url = &inner.url;
        Some(format!(
            "git {:?} {:?} {:?} {:?} policy {:?} path {:?} limits {:?} special {:?} verify {:?}",
            url.scheme,
            url.host(),
            url.port,
            url.path,
            inner.policy,
            inner.path,
            inner.limits,
            inner.special,
            inner.verify,
        ))
    }
}

/// Sets its flag when dropped (gix's fetch interrupt).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<GitSource>();
    let _ = GitError::is_transient;
}
