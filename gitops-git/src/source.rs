//! [`GitSource`]: a [`Source`] over a bare cache repository kept up to date with gix.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::{Revision, Snapshot, Source, SourceError, async_trait};
use gix::bstr::ByteSlice;

use crate::credentials::{CredentialSource, Credentials, CredentialsCallback, SshOptions, scrub};
use crate::error::{GitError, chain, join, objects};
use crate::policy::{Policy, ReferencePolicy};
use crate::snapshot::{Limits, ReadOptions, SpecialEntries};
use crate::verify::{AllowedSigners, VerifyMode, split_tag_signature};

/// Builds a [`GitSource`]; see [`GitSource::builder`].
#[derive(Debug)]
#[must_use]
pub struct GitSourceBuilder {
    url: String,
    policy: ReferencePolicy,
    path: Option<String>,
    cache_dir: Option<PathBuf>,
    fetch_timeout: Duration,
    depth: Option<NonZeroU32>,
    limits: Limits,
    special: SpecialEntries,
    credentials: CredentialSource,
    ssh: SshOptions,
    verify: Option<(VerifyMode, AllowedSigners)>,
}

impl GitSourceBuilder {
    /// Only the files under this directory of the repository (relative, `/`-separated)
    /// are part of a snapshot; their paths are relative to it.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The directory of the bare cache repository (created on first use, reused
    /// across polls and restarts). Required.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The longest one poll may take before it fails as transient (default 60 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// History depth to fetch: `Some(1)` (the default) fetches only the release
    /// commit; `None` fetches full history (needed by [`GitSource::history`]).
    /// The `Commit` policy always fetches full history.
    pub fn depth(mut self, depth: Option<NonZeroU32>) -> Self {
        self.depth = depth;
        self
    }

    /// Size and count limits for snapshots.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// What to do with symbolic links and submodules (default: refuse the revision).
    pub fn special_entries(mut self, special: SpecialEntries) -> Self {
        self.special = special;
        self
    }

    /// HTTP(S) credentials. A password in the URL is moved here automatically.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = CredentialSource::Fixed(credentials);
        self
    }

    /// HTTP(S) credentials asked for on every network operation.
    pub fn credentials_callback(mut self, callback: CredentialsCallback) -> Self {
        self.credentials = CredentialSource::Callback(callback);
        self
    }

    /// How to run `ssh` (command, key, known_hosts).
    pub fn ssh(mut self, ssh: SshOptions) -> Self {
        self.ssh = ssh;
        self
    }

    /// Require valid SSH signatures, from one of `signers`, before a revision
    /// is returned by `poll` or read by `snapshot`.
    pub fn verify(mut self, mode: VerifyMode, signers: AllowedSigners) -> Self {
        self.verify = Some((mode, signers));
        self
    }

    /// Validates the settings and creates or opens the cache repository.
    pub fn build(self) -> Result<GitSource, GitError> {
        let policy = Policy::new(&self.policy).map_err(|reason| GitError::Config {
            what: "reference policy",
            reason,
        })?;
        if let Some(path) = &self.path {
            gitops_core::model::validate_relative_path(path).map_err(|e| GitError::Config {
                what: "path",
                reason: e.to_string(),
            })?;
        }
        let cache_dir = self.cache_dir.ok_or(GitError::Config {
            what: "cache_dir",
            reason: "a cache directory is required".to_owned(),
        })?;
        if let Some((VerifyMode::Tag | VerifyMode::TagAndHead, _)) = &self.verify
            && matches!(policy, Policy::Branch(_) | Policy::Commit(_))
        {
            return Err(GitError::Config {
                what: "verify",
                reason: "tag verification needs the Tag or Semver policy".to_owned(),
            });
        }
        let mut url = gix::url::parse(self.url.as_str()).map_err(|e| GitError::Config {
            what: "url",
            reason: scrub(&e.to_string(), &url_secrets(&self.url)),
        })?;
        let mut credentials = self.credentials;
        if let Some(password) = url.password.take() {
            let username = url.user.take().unwrap_or_default();
            if matches!(credentials, CredentialSource::None) {
                credentials = CredentialSource::Fixed(Credentials::basic(username, password));
            }
        } else if matches!(url.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https)
            && url.user.is_some()
            && matches!(credentials, CredentialSource::None)
        {
            // `https://token@host/repo`: the user part is the secret.
            let token = url.user.take().unwrap_or_default();
            credentials = CredentialSource::Fixed(Credentials::basic(token, String::new()));
        }
        let location = url.to_bstring().to_string();
        let repo = open_cache(&cache_dir)?;
        let depth = if policy.allows_shallow() {
            self.depth
        } else {
            None
        };
        Ok(GitSource {
            inner: Arc::new(Inner {
                repo,
                url,
                location,
                policy,
                path: self.path,
                cache_dir,
                fetch_timeout: self.fetch_timeout,
                depth,
                limits: self.limits,
                special: self.special,
                credentials,
                ssh: self.ssh,
                verify: self.verify,
                last_good: Mutex::new(None),
                fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
                blob_cache: Mutex::new(Default::default()),
            }),
        })
    }
}

fn url_secrets(url: &str) -> Vec<String> {
    // user:password@ in an unparsable URL: scrub everything between "//" and "@".
    url.split_once("//")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| vec![userinfo.to_owned()])
        .unwrap_or_default()
}

fn open_cache(dir: &Path) -> Result<gix::ThreadSafeRepository, GitError> {
    let cache_err = |message: String| GitError::Cache {
        path: dir.to_owned(),
        message,
    };
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
        gix::init_bare(dir).map_err(|e| cache_err(chain(&e)))?;
    }
    // Every fetch that brings something adds a pack; leave room for many
    // (gix sizes its index slots once, when the repository is opened).
    let options = gix::open::Options::isolated().object_store_slots(
        gix::odb::store::init::Slots::AsNeededByDiskState {
            multiplier: 2.0,
            minimum: 1024,
        },
    );
    let repo = gix::open_opts(dir, options).map_err(|e| cache_err(chain(&e)))?;
    if !repo.is_bare() {
        return Err(cache_err("not a bare repository".to_owned()));
    }
    Ok(repo.into_sync())
}

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
    pub(crate) verify: Option<(VerifyMode, AllowedSigners)>,
    pub(crate) last_good: Mutex<Option<Revision>>,
    pub(crate) fetch_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) blob_cache: Mutex<crate::snapshot::BlobCache>,
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
        GitSourceBuilder {
            url: url.into(),
            policy,
            path: None,
            cache_dir: None,
            fetch_timeout: Duration::from_secs(60),
            depth: Some(NonZeroU32::MIN),
            limits: Limits::default(),
            special: SpecialEntries::default(),
            credentials: CredentialSource::None,
            ssh: SshOptions::default(),
            verify: None,
        }
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
        // Polls of one source are serialized; a fetch stuck in the network keeps
        // the lock, and later polls report that instead of piling up threads.
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
                    let task = tokio::task::spawn_blocking(move || {
                        let result = fetch_blocking(&inner, &flag);
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

    async fn snapshot(&self, revision: &Revision) -> Result<Snapshot, SourceError> {
        let inner = self.inner.clone();
        let revision = revision.clone();
        tokio::task::spawn_blocking(move || snapshot_blocking(&inner, &revision))
            .await
            .map_err(join)?
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn parse_id(id: &str) -> Result<gix::ObjectId, SourceError> {
    gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| SourceError::Other {
        message: format!("revision id {id:?} is not a full object id: {e}"),
        transient: false,
        source: None,
    })
}

fn not_cached(id: &str) -> SourceError {
    SourceError::ReferenceNotFound {
        reference: id.to_owned(),
        message: "commit is not in the cache repository (poll for it first)".to_owned(),
    }
}

fn snapshot_blocking(inner: &Inner, revision: &Revision) -> Result<Snapshot, SourceError> {
    let repo = inner.repo.to_thread_local();
    let id = parse_id(&revision.id)?;
    if !repo.has_object(id) {
        return Err(not_cached(&revision.id));
    }
    if let Some((VerifyMode::Head | VerifyMode::TagAndHead, signers)) = &inner.verify {
        verify_commit(&repo, id, signers)?;
    }
    // Blobs of the previous snapshot are reused (a concurrent snapshot just
    // finds the cache empty and reads everything).
    let previous = std::mem::take(&mut *lock(&inner.blob_cache));
    let mut next = crate::snapshot::BlobCache::with_capacity(previous.len());
    let snapshot = crate::snapshot::read(
        &repo,
        revision,
        id,
        &ReadOptions {
            path: inner.path.as_deref(),
            limits: inner.limits,
            special: inner.special,
        },
        &previous,
        &mut next,
    );
    *lock(&inner.blob_cache) = if snapshot.is_ok() { next } else { previous };
    snapshot
}

fn history_blocking(
    inner: &Inner,
    from: Option<&str>,
    to: &Revision,
    limit: usize,
) -> Result<Vec<Revision>, SourceError> {
    let repo = inner.repo.to_thread_local();
    let tip = parse_id(&to.id)?;
    if !repo.has_object(tip) {
        return Err(not_cached(&to.id));
    }
    let mut walk = repo
        .rev_walk([tip])
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            Default::default(),
        ));
    if let Some(from) = from {
        let hidden = parse_id(from)?;
        if !repo.has_object(hidden) {
            return Err(not_cached(from));
        }
        walk = walk.with_hidden([hidden]);
    }
    let walk = walk
        .all()
        .map_err(|e| objects(format!("history of {}", to.id), e))?;
    let mut out = Vec::new();
    for info in walk.take(limit) {
        let info = info.map_err(|e| objects(format!("history of {}", to.id), e))?;
        out.push(revision_of(&repo, info.id, to.reference.clone())?);
    }
    Ok(out)
}

/// Builds a [`Revision`] from a commit in the cache.
pub(crate) fn revision_of(
    repo: &gix::Repository,
    id: gix::ObjectId,
    reference: String,
) -> Result<Revision, SourceError> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| objects(format!("commit {id}"), e))?;
    let mut revision = Revision::new(reference, id.to_string());
    if let Ok(author) = commit.author() {
        revision.author = format!("{} <{}>", author.name, author.email);
    }
    revision.committed_at = commit.time().map(|t| t.seconds).unwrap_or_default();
    revision.message = commit.message_raw_sloppy().to_str_lossy().into_owned();
    Ok(revision)
}

/// Resolves a full or abbreviated commit id in the cache. `Ok(None)`: not present.
fn resolve_commit(
    repo: &gix::Repository,
    prefix: &str,
) -> Result<Option<gix::ObjectId>, SourceError> {
    if prefix.len() == repo.object_hash().len_in_hex() {
        let id = parse_id(prefix)?;
        return Ok(repo.find_commit(id).ok().map(|c| c.id));
    }
    let Ok(prefix_id) = gix::hash::Prefix::from_hex(prefix) else {
        return Ok(None);
    };
    match repo.objects.lookup_prefix(prefix_id, None) {
        Ok(Some(Ok(id))) => Ok(repo.find_commit(id).ok().map(|c| c.id)),
        Ok(Some(Err(()))) => Err(SourceError::ReferenceNotFound {
            reference: prefix.to_owned(),
            message: "the abbreviated commit id is ambiguous; use more digits".to_owned(),
        }),
        Ok(None) => Ok(None),
        Err(e) => Err(objects(format!("looking up commit {prefix}"), e)),
    }
}

fn verify_commit(
    repo: &gix::Repository,
    id: gix::ObjectId,
    signers: &AllowedSigners,
) -> Result<(), SourceError> {
    let fail = |reason: String| SourceError::Verification {
        commit: id.to_string(),
        reason,
    };
    let commit = repo
        .find_commit(id)
        .map_err(|e| objects(format!("commit {id}"), e))?;
    let signature = commit
        .signature()
        .map_err(|e| fail(format!("unreadable commit: {e}")))?;
    let Some((armored, signed)) = signature else {
        return Err(fail("commit is not signed".to_owned()));
    };
    let payload = signed.to_bstring();
    let principal = signers
        .verify(&payload, armored.as_bytes())
        .map_err(|r| fail(format!("commit signature: {r}")))?;
    tracing::debug!(commit = %id, signer = %principal, "commit signature verified");
    Ok(())
}

fn verify_tag(
    repo: &gix::Repository,
    tag_name: &str,
    tag_id: Option<gix::ObjectId>,
    commit: gix::ObjectId,
    signers: &AllowedSigners,
) -> Result<(), SourceError> {
    let fail = |reason: String| SourceError::Verification {
        commit: commit.to_string(),
        reason: format!("tag {tag_name}: {reason}"),
    };
    let Some(tag_id) = tag_id else {
        return Err(fail(
            "is a lightweight tag; only annotated tags carry signatures".to_owned(),
        ));
    };
    let object = repo
        .find_object(tag_id)
        .map_err(|e| objects(format!("tag {tag_name}"), e))?;
    let Some((payload, armored)) = split_tag_signature(&object.data) else {
        return Err(fail("tag is not signed".to_owned()));
    };
    let principal = signers.verify(payload, armored).map_err(fail)?;
    tracing::debug!(tag = tag_name, signer = %principal, "tag signature verified");
    Ok(())
}

/// Configures the thread-local repository for one network operation.
fn configure(
    repo: &mut gix::Repository,
    inner: &Inner,
    credentials: Option<&Credentials>,
) -> gix::Result<()> {
    let mut values: Vec<String> = Vec::new();
    if let Some(cmd) = inner.ssh.command_line() {
        values.push(format!("core.sshCommand={cmd}"));
    }
    if let Some(Credentials::Bearer(token)) = credentials {
        values.push(format!(
            "http.extraHeader=Authorization: Bearer {}",
            token.expose()
        ));
    }
    let connect_ms = inner.fetch_timeout.as_millis().min(u128::from(u32::MAX));
    values.push(format!("gitoxide.http.connectTimeout={connect_ms}"));
    let mut config = repo.config_snapshot_mut();
    config.append_config(values.iter().map(String::as_str), gix::config::Source::Api)?;
    config.commit()?;
    Ok(())
}

/// HTTP transport options from the repository configuration, plus a whole-request
/// timeout (reqwest's default has none, so a silent server would hang a fetch).
fn http_options(
    repo: &gix::Repository,
    inner: &Inner,
) -> gix::Result<Option<Box<dyn std::any::Any>>> {
    use gix::protocol::transport::client::blocking_io::http;
    if !matches!(
        inner.url.scheme,
        gix::url::Scheme::Http | gix::url::Scheme::Https
    ) {
        return Ok(None);
    }
    let url = inner.url.to_bstring();
    let Some(options) = repo.transport_options(url.as_bstr(), None)? else {
        return Ok(None);
    };
    let Ok(mut options) = options.downcast::<http::Options>() else {
        return Ok(None);
    };
    let timeout = inner.fetch_timeout;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(builder.timeout(timeout).connect_timeout(timeout))
        })),
        configure_request: None,
    };
    options.backend = Some(Arc::new(Mutex::new(backend)));
    Ok(Some(options))
}

/// Maps a gix error of the network phase onto a [`SourceError`], with every
/// secret scrubbed from the message.
fn remote_error(
    inner: &Inner,
    err: &gix::Error,
    secrets: &[String],
    credentials: Option<&Credentials>,
) -> SourceError {
    let mut message = scrub(&chain(err), secrets);
    if message.contains("No credentials were returned") {
        // gix asked for basic credentials after a 401; say what really happened.
        message = match credentials {
            Some(Credentials::Bearer(_)) => {
                "the bearer token was not accepted by the remote (HTTP 401)".to_owned()
            }
            _ => "the remote requires credentials and none are configured (or ssh was refused)"
                .to_owned(),
        };
    }
    let location = inner.location.clone();
    let lower = message.to_ascii_lowercase();
    let auth = err.is_unauthenticated()
        || err.is_permission_denied()
        || lower.contains("401")
        || lower.contains("403")
        || lower.contains("authentication")
        || lower.contains("permission denied (publickey");
    if auth {
        return SourceError::Authentication { location, message };
    }
    let permanent = err.is_validation() || err.is_unsupported();
    let detail = GitError::Remote {
        location: location.clone(),
        message: message.clone(),
        transient: !permanent,
    };
    if permanent {
        SourceError::Other {
            message: format!("fetch from {location} failed: {message}"),
            transient: false,
            source: Some(Box::new(detail)),
        }
    } else {
        SourceError::Unavailable {
            location,
            message,
            source: Some(Box::new(detail)),
        }
    }
}

fn fetch_blocking(inner: &Inner, interrupt: &AtomicBool) -> Result<PollOutcome, SourceError> {
    let mut repo = inner.repo.to_thread_local();

    // A pinned commit never changes: no network once it is in the cache.
    if let Policy::Commit(prefix) = &inner.policy
        && let Some(id) = resolve_commit(&repo, prefix)?
    {
        let revision = finish(inner, &repo, id, None, id.to_string())?;
        return Ok(PollOutcome {
            revision,
            pack_received: false,
            contacted_remote: false,
        });
    }

    let credentials = inner.credentials.get(&inner.location);
    let secrets: Vec<String> = credentials.iter().flat_map(Credentials::secrets).collect();
    let net = |e: gix::Error| remote_error(inner, &e, &secrets, credentials.as_ref());
    configure(&mut repo, inner, credentials.as_ref()).map_err(net)?;
    let remote = repo
        .remote_at(inner.url.clone())
        .and_then(|r| {
            r.with_refspecs(
                inner.policy.refspecs().iter().map(String::as_str),
                gix::remote::Direction::Fetch,
            )
        })
        .map_err(net)?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut connection = remote.connect(gix::remote::Direction::Fetch).map_err(net)?;
    if let Some(options) = http_options(&repo, inner).map_err(net)? {
        connection = connection.with_transport_options(options);
    }
    let basic = match &credentials {
        Some(Credentials::Basic { username, password }) => {
            Some((username.clone(), password.expose().to_owned()))
        }
        _ => None,
    };
    connection.set_credentials(move |action| match action {
        gix::credentials::helper::Action::Get(context) => {
            Ok(basic
                .as_ref()
                .map(|(u, p)| gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: u.clone(),
                        password: p.clone(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
        }
        _ => Ok(None),
    });
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(net)?;

    // Which remote reference is the release?
    let (selected, tag_object) = if let Policy::Commit(_) = &inner.policy {
        (None, None)
    } else {
        let names = prepare
            .ref_map()
            .remote_refs
            .iter()
            .map(|r| r.unpack().0.to_str_lossy().into_owned())
            .collect::<Vec<_>>();
        let Some((full, short)) = inner.policy.select(names.iter().map(String::as_str)) else {
            return Err(SourceError::ReferenceNotFound {
                reference: inner.policy.describe(),
                message: match &inner.policy {
                    Policy::Semver { .. } => format!(
                        "no tag on {} matches the range (pre-releases only match a range that names one)",
                        inner.location
                    ),
                    _ => format!("no such reference on {}", inner.location),
                },
            });
        };
        let advertised = prepare
            .ref_map()
            .remote_refs
            .iter()
            .find(|r| r.unpack().0 == full.as_str())
            .and_then(|r| r.unpack().1.map(ToOwned::to_owned));
        (Some((full, short)), advertised)
    };

    // Skip the pack negotiation entirely when the cache already has it.
    let up_to_date = match (&selected, tag_object) {
        (Some((full, _)), Some(object)) => {
            let local = Policy::local_ref(full);
            repo.has_object(object)
                && local
                    .and_then(|l| repo.try_find_reference(l.as_str()).ok().flatten())
                    .and_then(|r| r.try_id().map(|id| id.detach()))
                    == Some(object)
        }
        _ => false,
    };
    let mut pack_received = false;
    if !up_to_date {
        let shallow = match inner.depth {
            Some(depth) => gix::remote::fetch::Shallow::DepthAtRemote(depth),
            None => gix::remote::fetch::Shallow::NoChange,
        };
        let outcome = prepare
            .with_shallow(shallow)
            .receive(gix::progress::Discard, interrupt)
            .map_err(net)?;
        pack_received = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
        if pack_received {
            consolidate_packs(&inner.cache_dir);
        }
    } else {
        drop(prepare);
    }
    let repo = inner.repo.to_thread_local();

    let revision = match (&selected, tag_object) {
        (Some((_, short)), Some(object)) => {
            let peeled = repo
                .find_object(object)
                .and_then(gix::Object::peel_to_commit)
                .map_err(|e| objects(format!("peeling {short} to a commit"), e))?;
            let tag = (object != peeled.id).then_some(object);
            finish(
                inner,
                &repo,
                peeled.id,
                tag.map(|t| (short.as_str(), t)),
                short.clone(),
            )?
        }
        (Some((full, _)), None) => {
            return Err(SourceError::ReferenceNotFound {
                reference: full.clone(),
                message: "the remote advertised it without an object (unborn)".to_owned(),
            });
        }
        (None, _) => {
            let Policy::Commit(prefix) = &inner.policy else {
                return Err(SourceError::ReferenceNotFound {
                    reference: inner.policy.describe(),
                    message: "nothing selected".to_owned(),
                });
            };
            let id =
                resolve_commit(&repo, prefix)?.ok_or_else(|| SourceError::ReferenceNotFound {
                    reference: prefix.clone(),
                    message: format!(
                        "no commit with this id is reachable from the branches and tags of {}",
                        inner.location
                    ),
                })?;
            finish(inner, &repo, id, None, id.to_string())?
        }
    };
    Ok(PollOutcome {
        revision,
        pack_received,
        contacted_remote: true,
    })
}

/// More packs than this in the cache and they are consolidated.
const MAX_PACKS: usize = 50;

/// Keeps the number of packs bounded: every fetch that brings objects adds one,
/// and gix has no repack. When there are more than [`MAX_PACKS`], runs
/// `git repack -a -d --keep-unreachable` in the cache (earlier revisions stay
/// readable for rollback) (best effort: without the `git` binary the
/// cache keeps growing by one pack per change, and a warning is logged).
fn consolidate_packs(cache_dir: &Path) {
    let pack_dir = cache_dir.join("objects").join("pack");
    let Ok(entries) = std::fs::read_dir(&pack_dir) else {
        return;
    };
    let packs = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
        .count();
    if packs <= MAX_PACKS {
        return;
    }
    let result = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(cache_dir)
        .args([
            "-c",
            "gc.auto=0",
            "repack",
            "-a",
            "-d",
            "-q",
            "--keep-unreachable",
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match result {
        Ok(out) if out.status.success() => {
            tracing::debug!(cache = %cache_dir.display(), packs, "consolidated cache packs");
        }
        Ok(out) => tracing::warn!(
            cache = %cache_dir.display(),
            packs,
            stderr = %String::from_utf8_lossy(&out.stderr),
            "git repack of the cache failed"
        ),
        Err(e) => tracing::warn!(
            cache = %cache_dir.display(),
            packs,
            error = %e,
            "cannot run git to consolidate the cache's packs"
        ),
    }
}

/// Verifies (per mode) and builds the revision.
fn finish(
    inner: &Inner,
    repo: &gix::Repository,
    commit: gix::ObjectId,
    tag: Option<(&str, gix::ObjectId)>,
    reference: String,
) -> Result<Revision, SourceError> {
    if let Some((mode, signers)) = &inner.verify {
        if matches!(mode, VerifyMode::Tag | VerifyMode::TagAndHead) {
            verify_tag(repo, &reference, tag.map(|(_, id)| id), commit, signers)?;
        }
        if matches!(mode, VerifyMode::Head | VerifyMode::TagAndHead) {
            verify_commit(repo, commit, signers)?;
        }
    }
    revision_of(repo, commit, reference)
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<GitSource>();
    let _ = GitError::is_transient;
}
