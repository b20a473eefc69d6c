//! [`FsTarget`]: keeps a directory equal to the `File` resources of a
//! [`FilesRender`](gitops_core::FilesRender).

mod durable;
mod options;
mod read;
mod spec;
mod stat_cache;
mod stat_file;
mod sweep;
mod unchanged;
mod write;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use cap_std::fs::Dir;
use gitops_core::{
    DesiredState, Diff, Health, Observed, RenderError, Resource, ResourceId, Target, TargetError,
    async_trait,
};

pub use options::{
    DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FILES, Durability, FsOpenError, FsOptions, TEMP_PREFIX,
};
pub use stat_cache::StatCacheError;

use durable::SyncState;
use spec::{Fingerprint, path_of};
use stat_cache::StatCache;
use sweep::sweep;

/// A directory kept equal to Git: manages resources of kind `File` (spec
/// `{ path, content, encoding, mode }`, as made by
/// [`FilesRender`](gitops_core::FilesRender)) under one root.
///
/// Every access is relative to the opened root (`openat2` with
/// `RESOLVE_BENEATH` through `cap-std`): `..`, absolute paths and symlinks
/// that lead outside the root fail instead of escaping, even when the
/// directory is changed by someone else during a sync. The last component of
/// a path is never followed: a symlink planted at a managed path is observed
/// as drift and replaced by the file.
///
/// ```
/// use gitops_core::{FilesRender, Render, Revision, Snapshot, Target};
/// use gitops_targets::FsTarget;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let root = tempfile::tempdir()?;
/// let target = FsTarget::open(root.path())?;
/// let snapshot = Snapshot::from_files(
///     Revision::new("main", "0".repeat(40)),
///     [("etc/app.conf", &b"port = 80\n"[..])],
/// )?;
/// let desired = FilesRender::new().render(&snapshot)?;
/// let file = &desired.resources()[0];
///
/// target.apply(file).await?;
/// assert_eq!(std::fs::read(root.path().join("etc/app.conf"))?, b"port = 80\n");
/// let observed = target.observe(&file.id).await?.expect("present");
/// assert!(target.differs(file, &observed).is_none());
///
/// target.delete(&file.id).await?;
/// assert!(!root.path().join("etc").exists(), "emptied directories go too");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FsTarget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: Dir,
    /// A plain (not `O_PATH`) descriptor of the root, for `syncfs`.
    root_file: std::fs::File,
    root_path: PathBuf,
    options: FsOptions,
    /// Regular files under the root (an estimate kept by apply and delete).
    files: AtomicUsize,
    /// Content and mode last applied per resource, for [`Target::health`].
    applied: Mutex<HashMap<ResourceId, Fingerprint>>,
    /// Number of writes so far (renames and unlinks); for [`Durability::PerWave`].
    writes: AtomicU64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// With [`FsOptions::stat_cache`]: what each managed file's stat was.
    stat_cache: Option<Mutex<StatCache>>,
    /// Regular files whose content `observe` read.
    content_reads: AtomicU64,
}

impl Drop for Inner {
    /// Writes a changed stat cache (best effort: a lost one means reads).
    fn drop(&mut self) {
        if let Some(cache) = &self.stat_cache {
            let _ = stat_cache::lock(cache).save();
        }
    }
}

impl Inner {
    /// The directory `parent` inside the root (the root itself for `""`).
    fn open_parent(&self, parent: &str) -> io::Result<DirRef<'_>> {
        if parent.is_empty() {
            Ok(DirRef::Root(&self.root))
        } else {
            self.root.open_dir(parent).map(DirRef::Sub)
        }
    }
}

impl FsTarget {
    /// Opens (and creates, if missing) `root` with default [`FsOptions`].
    ///
    /// Removes temporary files a killed process left behind (names starting
    /// with [`TEMP_PREFIX`]) and counts the files already there.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, FsOpenError> {
        Self::open_with(root, FsOptions::default())
    }

    /// Opens `root` with `options`.
    pub fn open_with(root: impl AsRef<Path>, options: FsOptions) -> Result<Self, FsOpenError> {
        let root_path = root.as_ref().to_owned();
        let root_error = |source| FsOpenError::Root {
            path: root_path.clone(),
            source,
        };
        if options.create_root {
            std::fs::create_dir_all(&root_path).map_err(root_error)?;
        }
        let root =
            Dir::open_ambient_dir(&root_path, cap_std::ambient_authority()).map_err(root_error)?;
        let root_file = std::fs::File::open(&root_path).map_err(root_error)?;
        let files = sweep(&root, &root_path)?;
        let stat_cache = open_stat_cache(&options, &root_file, &root_path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                root_file,
                root_path,
                options,
                files: AtomicUsize::new(files),
                applied: Mutex::new(HashMap::new()),
                writes: AtomicU64::new(0),
                sync: Mutex::new(SyncState::default()),
                synced: Condvar::new(),
                stat_cache,
                content_reads: AtomicU64::new(0),
            }),
        })
    }

    /// The root directory, as given to [`open`](Self::open).
    pub fn root(&self) -> &Path {
        &self.inner.root_path
    }

    /// Regular files currently counted under the root (managed or not).
    pub fn file_count(&self) -> usize {
        self.inner.files.load(Ordering::SeqCst)
    }

    /// Makes every completed write durable now (one `syncfs`). With
    /// [`Durability::PerWave`] the engine's health check does this; call it
    /// yourself when you apply without health checks.
    pub async fn sync(&self) -> io::Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.sync_blocking()).await?
    }

    /// Writes the [stat cache](FsOptions::stat_cache) now if it changed
    /// (`observe_many` writes it at most every few seconds, and dropping the
    /// target writes it too). Call it before the process exits. Blocks for
    /// the write: a few milliseconds per 10,000 files.
    pub fn save_stat_cache(&self) -> Result<(), StatCacheError> {
        self.inner.save_stat_cache()
    }

    /// The stat cache file, when there is one.
    pub fn stat_cache_file(&self) -> Option<&Path> {
        self.inner.options.stat_cache.as_deref()
    }

    /// How many regular files' contents `observe` and `observe_many` have
    /// read (files answered by the stat cache are not), for metrics and tests.
    pub fn content_reads(&self) -> u64 {
        self.inner.content_reads.load(Ordering::Relaxed)
    }

    /// Drift between a desired file and an observed one: compares the decoded
    /// bytes and the mode, whatever the encodings. Same as [`Target::differs`].
    /// An observation from the stat cache (`sha256` instead of `content`) is
    /// compared by digest; the old value of a content change is then
    /// `"sha256:<hex>"`.
    pub fn file_diff(desired: &Resource, observed: &Observed) -> Option<Diff> {
        spec::file_diff(desired, observed)
    }
}

/// The stat cache `options` ask for, loaded; refused inside the root.
fn open_stat_cache(
    options: &FsOptions,
    root_file: &std::fs::File,
    root_path: &Path,
) -> Result<Option<Mutex<StatCache>>, FsOpenError> {
    let Some(file) = &options.stat_cache else {
        return Ok(None);
    };
    let dir_error = |source| FsOpenError::StatCacheDir {
        cache: file.clone(),
        source,
    };
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let root = root_path
        .canonicalize()
        .map_err(|source| FsOpenError::Root {
            path: root_path.to_owned(),
            source,
        })?;
    // Checked before anything is created: nothing is made inside the root.
    if resolved(parent).map_err(dir_error)?.starts_with(&root) {
        return Err(FsOpenError::StatCacheInsideRoot {
            cache: file.clone(),
            root: root_path.to_owned(),
        });
    }
    std::fs::create_dir_all(parent).map_err(dir_error)?;
    let stat = rustix::fs::fstat(root_file).map_err(|e| FsOpenError::Root {
        path: root_path.to_owned(),
        source: e.into(),
    })?;
    let root_id = stat_cache::StatKey::of(&stat);
    Ok(Some(Mutex::new(StatCache::load(
        file.clone(),
        (root_id.dev, root_id.ino),
        options.verify_every,
        options.max_files,
    ))))
}

/// `path` with its longest existing prefix resolved (symlinks, `..`) and
/// the missing rest appended.
fn resolved(path: &Path) -> io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        match existing.canonicalize() {
            Ok(mut real) => {
                real.extend(missing.iter().rev());
                return Ok(real);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (existing.parent(), existing.file_name()) {
                    (Some(parent), Some(name)) => {
                        missing.push(name.to_owned());
                        existing = if parent.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            parent
                        };
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs blocking file work on Tokio's blocking pool when a runtime is
/// there, inline otherwise.
async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.map_err(io::Error::other),
        Err(_) => Ok(f()),
    }
}

fn joined(id: &ResourceId, e: io::Error) -> TargetError {
    TargetError::Transient {
        id: id.clone(),
        message: format!("file worker failed: {e}"),
        source: Some(Box::new(e)),
    }
}

/// An I/O error about `id`: transient when retrying may help (a full
/// disk, an interrupted call), permanent otherwise.
fn io_error(id: &ResourceId, what: String, e: io::Error) -> TargetError {
    let message = format!("{what}: {e}");
    let transient = matches!(
        e.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ResourceBusy
    );
    if transient {
        TargetError::Transient {
            id: id.clone(),
            message,
            source: Some(Box::new(e)),
        }
    } else {
        TargetError::Permanent {
            id: id.clone(),
            message,
            source: Some(Box::new(e)),
        }
    }
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, base)) => (parent, base),
        None => ("", path),
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory
}

/// A directory inside the root: the root itself or an opened subdirectory.
enum DirRef<'a> {
    Root(&'a Dir),
    Sub(Dir),
}

impl std::ops::Deref for DirRef<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            DirRef::Root(d) => d,
            DirRef::Sub(d) => d,
        }
    }
}

#[async_trait]
impl Target for FsTarget {
    /// Refuses, before anything is written, a resource this target cannot
    /// hold (another kind, a namespace, a path escaping the root), naming
    /// its file: a commit is applied whole or not at all.
    fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
        for resource in desired.resources() {
            if let Err(e) = path_of(&resource.id) {
                return Err(RenderError::Invalid {
                    origin: resource.origin.clone(),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let inner = Arc::clone(&self.inner);
        let owned = id.clone();
        blocking(move || inner.observe(&owned))
            .await
            .unwrap_or_else(|e| Err(joined(id, e)))
    }

    /// Reads the files in a few large batches, one per core, sorted by path
    /// so that each directory is opened once, instead of one task per file.
    async fn observe_many(&self, ids: &[ResourceId]) -> Vec<Result<Option<Observed>, TargetError>> {
        let mut order: Vec<(usize, ResourceId)> = ids.iter().cloned().enumerate().collect();
        order.sort_unstable_by(|a, b| a.1.name().cmp(b.1.name()));
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = order.len().div_ceil(workers).max(256);
        let mut tasks = Vec::new();
        while !order.is_empty() {
            let rest = order.split_off(chunk.min(order.len()));
            let part = std::mem::replace(&mut order, rest);
            let inner = Arc::clone(&self.inner);
            let indices: Vec<usize> = part.iter().map(|(i, _)| *i).collect();
            tasks.push((indices, blocking(move || inner.observe_sorted(part))));
        }
        let mut out: Vec<Option<Result<Option<Observed>, TargetError>>> =
            (0..ids.len()).map(|_| None).collect();
        for (part, task) in tasks {
            match task.await {
                Ok(results) => {
                    for (index, result) in results {
                        out[index] = Some(result);
                    }
                }
                Err(e) => {
                    for index in part {
                        let error = io::Error::new(e.kind(), e.to_string());
                        out[index] = Some(Err(joined(&ids[index], error)));
                    }
                }
            }
        }
        if let Some(cache) = &self.inner.stat_cache
            && stat_cache::lock(cache).save_due()
        {
            let inner = Arc::clone(&self.inner);
            // A failed write is tried again next time; `save_stat_cache` reports it.
            let _ = blocking(move || inner.save_stat_cache()).await;
        }
        out.into_iter()
            .zip(ids)
            .map(|(result, id)| {
                result.unwrap_or_else(|| Err(TargetError::transient(id, "not observed")))
            })
            .collect()
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let inner = Arc::clone(&self.inner);
        let owned = resource.clone();
        blocking(move || inner.apply(&owned))
            .await
            .unwrap_or_else(|e| Err(joined(&resource.id, e)))
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let inner = Arc::clone(&self.inner);
        let owned = id.clone();
        blocking(move || inner.delete(&owned))
            .await
            .unwrap_or_else(|e| Err(joined(id, e)))
    }

    /// `Missing` when absent; `Healthy` when present with the content last
    /// applied (or with any content, if this target did not apply it);
    /// `Degraded` when someone changed it since, or a non-file is in the way.
    /// With [`Durability::PerWave`], first makes the wave's writes durable.
    async fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        let inner = Arc::clone(&self.inner);
        let owned = id.clone();
        blocking(move || inner.health(&owned))
            .await
            .unwrap_or_else(|e| Err(joined(id, e)))
    }

    /// [`FsTarget::file_diff`]. When the content read from a file is the
    /// desired one, the stat cache may answer for it from now on.
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        let diff = Self::file_diff(desired, observed);
        if diff.is_none() {
            self.inner.confirm(&desired.id, observed);
        }
        diff
    }

    /// With a [stat cache](FsOptions::stat_cache): its epoch, which changes
    /// whenever an entry does (a write, a delete, content read that
    /// differs, a confirmation). Without one: `None`.
    fn seal(&self) -> Option<String> {
        let cache = self.inner.stat_cache.as_ref()?;
        Some(stat_cache::lock(cache).seal())
    }

    /// `true` when the stat cache is still at `seal` and every file's stat
    /// equals its trusted entry (racy entries and those due for
    /// verification are read and compared): one `fstatat` per file, in
    /// one batch per core.
    async fn unchanged_since(&self, ids: &[ResourceId], seal: &str) -> bool {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = ids.len().div_ceil(workers).max(1024);
        let mut tasks = Vec::new();
        for part in ids.chunks(chunk) {
            let inner = Arc::clone(&self.inner);
            let (part, seal) = (part.to_vec(), seal.to_owned());
            tasks.push(blocking(move || inner.unchanged_since(&part, &seal)));
        }
        let mut proven = true;
        for task in tasks {
            proven &= task.await.unwrap_or(false);
        }
        // Each batch checked the epoch before and after its files.
        proven
            && self
                .inner
                .stat_cache
                .as_ref()
                .is_some_and(|c| stat_cache::lock(c).is_sealed_at(seal))
    }
}
