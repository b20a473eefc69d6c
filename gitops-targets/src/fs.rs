//! [`FsTarget`]: keeps a directory equal to the `File` resources of a
//! [`FilesRender`](gitops_core::FilesRender).

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use base64::Engine as _;
use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};
use gitops_core::files::FILE_KIND;
use gitops_core::model::validate_relative_path;
use gitops_core::{
    DesiredState, Diff, FieldChange, Health, Observed, RenderError, Resource, ResourceId, Target,
    TargetError, async_trait,
};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// Prefix of the temporary files written before the atomic rename. Files with
/// this prefix that a killed process left behind are removed by [`FsTarget::open`].
pub const TEMP_PREFIX: &str = ".gitops-tmp-";

/// Default for [`FsOptions::max_file_size`]: 16 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 20;

/// Default for [`FsOptions::max_files`].
pub const DEFAULT_MAX_FILES: usize = 1_000_000;

/// Deepest directory nesting [`FsTarget::open`] walks when sweeping temporary files.
const MAX_WALK_DEPTH: usize = 256;

/// When written files reach the disk. See the crate docs for the trade-off.
///
/// ```
/// use gitops_targets::{Durability, FsOptions};
/// let options = FsOptions::default().durability(Durability::PerFile);
/// assert_eq!(options.durability_mode(), Durability::PerFile);
/// assert_eq!(FsOptions::default().durability_mode(), Durability::PerWave);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Atomic rename only; the kernel writes back when it wants (about 30 s on
    /// Linux). A crash can lose any write of the last seconds; a reader never
    /// sees a torn file while the machine is up.
    None,
    /// `fsync` of every file before its rename and of its directory after it:
    /// `apply` returns only when the file is on disk. Slowest.
    PerFile,
    /// The default: writes are atomic renames without `fsync`; one `syncfs`
    /// of the root's filesystem runs when the engine checks health after a
    /// wave (concurrent health calls share it) or on [`FsTarget::sync`]. A
    /// wave is reported healthy only once it is on disk.
    #[default]
    PerWave,
}

/// Options of an [`FsTarget`].
///
/// ```
/// use gitops_targets::FsOptions;
/// let options = FsOptions::default().max_file_size(1 << 20).max_files(50_000);
/// assert_eq!(options.max_file_size_limit(), 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct FsOptions {
    durability: Durability,
    max_file_size: u64,
    max_files: usize,
    create_root: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_files: DEFAULT_MAX_FILES,
            create_root: true,
        }
    }
}

impl FsOptions {
    /// When writes reach the disk (default [`Durability::PerWave`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Largest file, in bytes, that is written or read (default 16 MiB).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// Most regular files the root may hold, counting files it does not
    /// manage (default 1,000,000). Creating one more fails; replacing does not.
    pub fn max_files(mut self, count: usize) -> Self {
        self.max_files = count;
        self
    }

    /// Whether [`FsTarget::open`] creates a missing root (default `true`).
    pub fn create_root(mut self, create: bool) -> Self {
        self.create_root = create;
        self
    }

    /// The configured durability.
    pub fn durability_mode(&self) -> Durability {
        self.durability
    }

    /// The configured file size limit.
    pub fn max_file_size_limit(&self) -> u64 {
        self.max_file_size
    }
}

/// Why an [`FsTarget`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FsOpenError {
    /// The root directory could not be created or opened.
    #[error("cannot open target root {path}: {source}")]
    Root {
        /// The root.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Walking the root (to remove stale temporary files and count files) failed.
    #[error("cannot scan target root {path} at {relative:?}: {source}")]
    Scan {
        /// The root.
        path: PathBuf,
        /// The directory inside the root being read.
        relative: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

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
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every write numbered up to this one is on disk.
    durable_through: u64,
    running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    sha256: [u8; 32],
    mode: u32,
}

impl Fingerprint {
    fn of(bytes: &[u8], mode: u32) -> Self {
        Self {
            sha256: Sha256::digest(bytes).into(),
            mode,
        }
    }
}

/// A validated file spec.
struct FileSpec<'a> {
    path: &'a str,
    bytes: Vec<u8>,
    mode: u32,
}

/// What is at a path, as read.
enum Found {
    File { bytes: Vec<u8>, mode: u32 },
    TooLarge { size: u64, mode: u32 },
    Other { kind: &'static str },
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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

fn invalid(id: &ResourceId, message: impl Into<String>) -> TargetError {
    TargetError::InvalidSpec {
        id: id.clone(),
        message: message.into(),
    }
}

/// The path a `File` id manages, after checking kind, namespace and path.
fn path_of(id: &ResourceId) -> Result<&str, TargetError> {
    if id.kind() != FILE_KIND {
        return Err(invalid(
            id,
            format!(
                "FsTarget manages kind {FILE_KIND:?} only, not {:?}",
                id.kind()
            ),
        ));
    }
    if id.namespace().is_some() {
        return Err(invalid(id, "File resources have no namespace"));
    }
    let path = id.name();
    validate_relative_path(path).map_err(|e| invalid(id, e.to_string()))?;
    if path
        .rsplit('/')
        .next()
        .is_some_and(|base| base.starts_with(TEMP_PREFIX))
    {
        return Err(invalid(
            id,
            format!("file names starting with {TEMP_PREFIX:?} are reserved"),
        ));
    }
    Ok(path)
}

fn parse_mode(id: &ResourceId, mode: Option<&Value>) -> Result<u32, TargetError> {
    match mode {
        None => Ok(0o644),
        Some(Value::String(m)) if m == "0644" || m == "644" => Ok(0o644),
        Some(Value::String(m)) if m == "0755" || m == "755" => Ok(0o755),
        Some(other) => Err(invalid(
            id,
            format!(
                "mode {other} refused: only \"0644\" and \"0755\" are allowed (no setuid, setgid, sticky or world-writable bits)"
            ),
        )),
    }
}

fn decode_content(id: &ResourceId, spec: &Value) -> Result<Vec<u8>, TargetError> {
    let content = match spec.get("content") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid(id, "\"content\" must be a string")),
        None => return Err(invalid(id, "\"content\" is missing")),
    };
    match spec
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or("utf-8")
    {
        "utf-8" | "utf8" => Ok(content.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| invalid(id, format!("\"content\" is not valid base64: {e}"))),
        other => Err(invalid(
            id,
            format!("encoding {other:?} is not \"utf-8\" or \"base64\""),
        )),
    }
}

impl<'a> FileSpec<'a> {
    fn parse(resource: &'a Resource, max_size: u64) -> Result<Self, TargetError> {
        let id = &resource.id;
        let path = path_of(id)?;
        let spec = &resource.spec;
        if !spec.is_object() {
            return Err(invalid(id, "spec must be an object"));
        }
        match spec.get("path") {
            None => {}
            Some(Value::String(p)) if p == path => {}
            Some(other) => {
                return Err(invalid(
                    id,
                    format!("spec.path {other} differs from the resource name {path:?}"),
                ));
            }
        }
        let bytes = decode_content(id, spec)?;
        if bytes.len() as u64 > max_size {
            return Err(invalid(
                id,
                format!(
                    "content is {} bytes, more than the limit of {max_size}",
                    bytes.len()
                ),
            ));
        }
        let mode = parse_mode(id, spec.get("mode"))?;
        Ok(Self { path, bytes, mode })
    }
}

fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// The observed spec in the shape [`gitops_core::files::file_spec`] produces.
fn observed_spec(path: &str, found: Found) -> Value {
    let mut spec = Map::new();
    spec.insert("path".to_owned(), Value::String(path.to_owned()));
    match found {
        Found::File { bytes, mode } => {
            // Text moves into the JSON string without a copy.
            let (content, encoding) = match String::from_utf8(bytes) {
                Ok(text) => (text, "utf-8"),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    "base64",
                ),
            };
            spec.insert("content".to_owned(), Value::String(content));
            spec.insert("encoding".to_owned(), Value::String(encoding.to_owned()));
            spec.insert("mode".to_owned(), Value::String(mode_string(mode)));
        }
        Found::TooLarge { size, mode } => {
            spec.insert("size".to_owned(), json!(size));
            spec.insert("mode".to_owned(), Value::String(mode_string(mode)));
        }
        Found::Other { kind } => {
            spec.insert("type".to_owned(), Value::String(kind.to_owned()));
        }
    }
    Value::Object(spec)
}

fn field<'v>(spec: &'v Value, key: &str) -> Option<&'v str> {
    spec.get(key).and_then(Value::as_str)
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

/// A parent directory opened for a batch of observes: the handle, `None`
/// when it does not exist, or why it could not be opened.
type OpenedParent = Result<Option<Dir>, (io::ErrorKind, String)>;

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

impl Inner {
    fn open_parent(&self, parent: &str) -> io::Result<DirRef<'_>> {
        if parent.is_empty() {
            Ok(DirRef::Root(&self.root))
        } else {
            self.root.open_dir(parent).map(DirRef::Sub)
        }
    }

    fn read(&self, path: &str) -> io::Result<Option<Found>> {
        self.read_at(&self.root, path)
    }

    /// Reads `path` relative to `dir` (a directory inside the root).
    fn read_at(&self, dir: &Dir, path: &str) -> io::Result<Option<Found>> {
        let mut options = OpenOptions::new();
        options.read(true);
        options.follow(FollowSymlinks::No);
        // Never block on a FIFO planted at a managed path.
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
        let file = match dir.open_with(path, &options) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Ok(None),
            // O_NOFOLLOW on a symlink: ELOOP.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Ok(Some(Found::Other { kind: "symlink" }));
            }
            Err(e) => return Err(e),
        };
        let stat = rustix::fs::fstat(&file)?;
        let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        let mode = stat.st_mode & 0o7777;
        match file_type {
            rustix::fs::FileType::RegularFile => {}
            rustix::fs::FileType::Directory => return Ok(Some(Found::Other { kind: "directory" })),
            _ => return Ok(Some(Found::Other { kind: "special" })),
        }
        // Size first: a file over the limit is reported, not read.
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let limit = self.options.max_file_size;
        if size > limit {
            return Ok(Some(Found::TooLarge { size, mode }));
        }
        // One read of size + 1 bytes: getting exactly `size` means end of
        // file. A file that changed size since fstat is read to its end,
        // never past the limit.
        let mut bytes = vec![0u8; size as usize + 1];
        let n = loop {
            match (&file).read(&mut bytes) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        bytes.truncate(n);
        if n as u64 != size {
            (&file).take(limit + 1 - n as u64).read_to_end(&mut bytes)?;
        }
        if bytes.len() as u64 > limit {
            return Ok(Some(Found::TooLarge {
                size: bytes.len() as u64,
                mode,
            }));
        }
        Ok(Some(Found::File { bytes, mode }))
    }

    /// Observes `ids` (sorted by path) one directory at a time: each parent
    /// is opened once, beneath the root, and its files relative to it.
    fn observe_sorted(
        &self,
        ids: Vec<(usize, ResourceId)>,
    ) -> Vec<(usize, Result<Option<Observed>, TargetError>)> {
        let mut out = Vec::with_capacity(ids.len());
        // The open parent: its path and the handle, or why it cannot be opened.
        let mut current: Option<(String, OpenedParent)> = None;
        for (index, id) in ids {
            let result = (|| {
                let path = path_of(&id)?;
                let (parent, base) = split_parent(path);
                if parent.is_empty() {
                    let found = self
                        .read(path)
                        .map_err(|e| io_error(&id, format!("read {path}"), e))?;
                    return Ok(found.map(|f| Observed::new(observed_spec(path, f))));
                }
                if current.as_ref().is_none_or(|(p, _)| p != parent) {
                    let opened = match self.root.open_dir(parent) {
                        Ok(d) => Ok(Some(d)),
                        Err(e) if is_not_found(&e) => Ok(None),
                        Err(e) => Err((e.kind(), e.to_string())),
                    };
                    current = Some((parent.to_owned(), opened));
                }
                let dir = match current.as_ref().map(|(_, d)| d) {
                    Some(Ok(Some(dir))) => dir,
                    Some(Err((kind, message))) => {
                        return Err(io_error(
                            &id,
                            format!("open directory {parent}"),
                            io::Error::new(*kind, message.clone()),
                        ));
                    }
                    _ => return Ok(None),
                };
                let found = self
                    .read_at(dir, base)
                    .map_err(|e| io_error(&id, format!("read {path}"), e))?;
                Ok(found.map(|f| Observed::new(observed_spec(path, f))))
            })();
            out.push((index, result));
        }
        out
    }

    fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let path = path_of(id)?;
        let found = self
            .read(path)
            .map_err(|e| io_error(id, format!("read {path}"), e))?;
        Ok(found.map(|f| Observed::new(observed_spec(path, f))))
    }

    fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let id = &resource.id;
        let file = FileSpec::parse(resource, self.options.max_file_size)?;
        let (parent, base) = split_parent(file.path);
        let dir = match self.open_parent(parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.root
                    .create_dir_all(parent)
                    .map_err(|e| io_error(id, format!("create directory {parent}"), e))?;
                self.open_parent(parent)
                    .map_err(|e| io_error(id, format!("open directory {parent}"), e))?
            }
            Err(e) => return Err(io_error(id, format!("open directory {parent}"), e)),
        };
        let is_new = match dir.symlink_metadata(base) {
            Ok(m) if m.is_dir() => {
                return Err(TargetError::permanent(
                    id,
                    format!("{} is a directory; refusing to replace it", file.path),
                ));
            }
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_error(id, format!("inspect {}", file.path), e)),
        };
        if is_new {
            let before = self.inner_files().fetch_add(1, Ordering::SeqCst);
            if before >= self.options.max_files {
                self.inner_files().fetch_sub(1, Ordering::SeqCst);
                return Err(TargetError::permanent(
                    id,
                    format!(
                        "the root already holds {before} files, the limit is {}",
                        self.options.max_files
                    ),
                ));
            }
        }
        let result = self.write_atomically(&dir, base, &file);
        if let Err(e) = result {
            if is_new {
                self.inner_files().fetch_sub(1, Ordering::SeqCst);
            }
            return Err(io_error(id, format!("write {}", file.path), e));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Fingerprint::of(&file.bytes, file.mode));
        Ok(())
    }

    fn inner_files(&self) -> &AtomicUsize {
        &self.files
    }

    fn write_atomically(&self, dir: &Dir, base: &str, file: &FileSpec<'_>) -> io::Result<()> {
        let temp = format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        options.follow(FollowSymlinks::No);
        let mut handle = dir.open_with(&temp, &options)?;
        let written = (|| {
            handle.write_all(&file.bytes)?;
            rustix::fs::fchmod(&handle, rustix::fs::Mode::from_raw_mode(file.mode))?;
            if self.options.durability == Durability::PerFile {
                handle.sync_all()?;
            }
            drop(handle);
            dir.rename(&temp, dir, base)
        })();
        if let Err(e) = written {
            let _ = dir.remove_file(&temp);
            return Err(e);
        }
        if self.options.durability == Durability::PerFile {
            // cap-std holds directories as O_PATH descriptors: open a real one.
            dir.open(".")?.sync_all()?;
        }
        Ok(())
    }

    fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let path = path_of(id)?;
        let (parent, base) = split_parent(path);
        let dir = match self.open_parent(parent) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(io_error(id, format!("open directory {parent}"), e)),
        };
        match dir.symlink_metadata(base) {
            Ok(m) if m.is_dir() => {
                return Err(TargetError::permanent(
                    id,
                    format!("{path} is a directory, not a file; refusing to remove it"),
                ));
            }
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(io_error(id, format!("inspect {path}"), e)),
        }
        match dir.remove_file(base) {
            Ok(()) => {
                let _ = self
                    .files
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(io_error(id, format!("remove {path}"), e)),
        }
        if self.options.durability == Durability::PerFile {
            dir.open(".")
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(id, format!("sync directory {parent:?}"), e))?;
        }
        drop(dir);
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        // Remove the parents that became empty, deepest first; stop at the
        // first one that still holds anything (rmdir never removes content).
        let mut ancestor = parent;
        while !ancestor.is_empty() {
            if self.root.remove_dir(ancestor).is_err() {
                break;
            }
            ancestor = split_parent(ancestor).0;
        }
        Ok(())
    }

    fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        let path = path_of(id)?;
        if self.options.durability == Durability::PerWave {
            self.sync_blocking()
                .map_err(|e| io_error(id, "sync the target filesystem".to_owned(), e))?;
        }
        let found = self
            .read(path)
            .map_err(|e| io_error(id, format!("read {path}"), e))?;
        let expected = self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied();
        Ok(match found {
            None => Health::Missing,
            Some(Found::File { bytes, mode }) => match expected {
                Some(fp) if fp != Fingerprint::of(&bytes, mode) => Health::Degraded {
                    reason: format!("{path} was changed after it was applied"),
                },
                _ => Health::Healthy,
            },
            Some(Found::TooLarge { size, .. }) => Health::Degraded {
                reason: format!("{path} is {size} bytes, over the size limit"),
            },
            Some(Found::Other { kind }) => Health::Degraded {
                reason: format!("{path} is a {kind}, not a regular file"),
            },
        })
    }

    /// Makes every write that finished before this call durable. Concurrent
    /// callers share one `syncfs` (group commit).
    fn sync_blocking(&self) -> io::Result<()> {
        let needed = self.writes.load(Ordering::SeqCst);
        let mut state = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.durable_through >= needed {
                return Ok(());
            }
            if state.running {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            let covers = self.writes.load(Ordering::SeqCst);
            drop(state);
            let result = rustix::fs::syncfs(&self.root_file);
            state = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
            state.running = false;
            if result.is_ok() {
                state.durable_through = state.durable_through.max(covers);
            }
            self.synced.notify_all();
            result?;
        }
    }
}

/// Walks the root: removes stale temporary files, counts regular files.
fn sweep(root: &Dir, root_path: &Path) -> Result<usize, FsOpenError> {
    let scan_error = |relative: &str, source| FsOpenError::Scan {
        path: root_path.to_owned(),
        relative: relative.to_owned(),
        source,
    };
    let mut files = 0;
    let mut stack: Vec<(String, Option<Dir>)> = vec![(String::new(), None)];
    while let Some((relative, dir)) = stack.pop() {
        let dir_ref = dir.as_ref().unwrap_or(root);
        let entries = dir_ref.entries().map_err(|e| scan_error(&relative, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| scan_error(&relative, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let file_type = entry.file_type().map_err(|e| scan_error(&relative, e))?;
            let child = if relative.is_empty() {
                name.to_string()
            } else {
                format!("{relative}/{name}")
            };
            if file_type.is_dir() {
                if stack.len() + child.matches('/').count() > MAX_WALK_DEPTH {
                    continue;
                }
                let sub = entry.open_dir().map_err(|e| scan_error(&child, e))?;
                stack.push((child, Some(sub)));
            } else if file_type.is_file() && name.starts_with(TEMP_PREFIX) {
                dir_ref
                    .remove_file(entry.file_name())
                    .map_err(|e| scan_error(&child, e))?;
            } else if file_type.is_file() {
                files += 1;
            }
        }
    }
    Ok(files)
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

    /// Drift between a desired file and an observed one: compares the decoded
    /// bytes and the mode, whatever the encodings. Same as [`Target::differs`].
    pub fn file_diff(desired: &Resource, observed: &Observed) -> Option<Diff> {
        let want = &desired.spec;
        let have = &observed.spec;
        // Fast path, no allocation: same encoding, same text, same mode.
        if have.get("type").is_none()
            && field(want, "content").is_some()
            && field(want, "content") == field(have, "content")
            && field(want, "encoding").unwrap_or("utf-8")
                == field(have, "encoding").unwrap_or("utf-8")
            && matches!(
                (field(want, "mode").unwrap_or("0644"), field(have, "mode")),
                ("0644" | "644", Some("0644")) | ("0755" | "755", Some("0755"))
            )
        {
            return None;
        }
        let want_bytes = decode_content(&desired.id, want).ok();
        let have_bytes = decode_content(&desired.id, have).ok();
        let want_mode = parse_mode(&desired.id, want.get("mode")).ok();
        let have_mode = have.get("mode").and_then(Value::as_str);
        let mut changes = Vec::new();
        if want_bytes.is_none() || want_bytes != have_bytes {
            changes.push(FieldChange {
                path: "spec.content".to_owned(),
                old: have.get("content").cloned(),
                new: want.get("content").cloned(),
            });
        }
        if want_mode.map(mode_string).as_deref() != have_mode {
            changes.push(FieldChange {
                path: "spec.mode".to_owned(),
                old: have.get("mode").cloned(),
                new: want.get("mode").cloned(),
            });
        }
        if let Some(kind) = have.get("type") {
            changes.push(FieldChange {
                path: "spec.type".to_owned(),
                old: Some(kind.clone()),
                new: Some(json!("file")),
            });
        }
        (!changes.is_empty()).then_some(Diff { changes })
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

    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        Self::file_diff(desired, observed)
    }
}
