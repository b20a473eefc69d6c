//! How an [`FsTarget`](super::FsTarget) is opened: [`FsOptions`],
//! [`Durability`], limits, and [`FsOpenError`].

use std::io;
use std::path::PathBuf;

/// Prefix of the temporary files written before the atomic rename. Files with
/// this prefix that a killed process left behind are removed by [`FsTarget::open`](super::FsTarget::open).
pub const TEMP_PREFIX: &str = ".gitops-tmp-";

/// Default for [`FsOptions::max_file_size`]: 10 MiB, the same limit as a Git
/// snapshot's ([`gitops_core::MAX_FILE_BYTES`]), so a file this target holds
/// and writes back is never one the source then refuses.
pub const DEFAULT_MAX_FILE_SIZE: u64 = gitops_core::MAX_FILE_BYTES;

/// Default for [`FsOptions::max_files`].
pub const DEFAULT_MAX_FILES: usize = 1_000_000;

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
    /// wave (concurrent health calls share it) or on [`FsTarget::sync`](super::FsTarget::sync). A
    /// wave is reported healthy only once it is on disk.
    #[default]
    PerWave,
}

/// Options of an [`FsTarget`](super::FsTarget).
///
/// ```
/// use gitops_targets::FsOptions;
/// let options = FsOptions::default().max_file_size(1 << 20).max_files(50_000);
/// assert_eq!(options.max_file_size_limit(), 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub(super) durability: Durability,
    pub(super) max_file_size: u64,
    pub(super) max_files: usize,
    pub(super) create_root: bool,
    pub(super) stat_cache: Option<PathBuf>,
    pub(super) verify_every: u32,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_files: DEFAULT_MAX_FILES,
            create_root: true,
            stat_cache: None,
            verify_every: 0,
        }
    }
}

impl FsOptions {
    /// When writes reach the disk (default [`Durability::PerWave`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Largest file, in bytes, that is written or read (default 10 MiB, [`gitops_core::MAX_FILE_BYTES`]).
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

    /// Whether [`FsTarget::open`](super::FsTarget::open) creates a missing root (default `true`).
    pub fn create_root(mut self, create: bool) -> Self {
        self.create_root = create;
        self
    }

    /// Keeps a stat cache in `file`: `observe` then reads a file's content
    /// only when its `(device, inode, size, mtime, ctime, mode)` differs
    /// from the one recorded at this target's last write or read of it, or
    /// when that record is too recent to be sure of ("racily clean", as in
    /// Git's index). Otherwise it reports the file as holding the content
    /// recorded then, by digest, without opening it (the spec has `sha256`
    /// instead of `content`; [`FsTarget::file_diff`](super::FsTarget::file_diff)
    /// compares either). Content that was only read, never written by this
    /// target nor found equal to a desired resource (drift), is read on every
    /// observe, so drift always comes with its content.
    ///
    /// The file must be outside the root (a state directory);
    /// [`FsTarget::open_with`](super::FsTarget::open_with) refuses one inside
    /// and creates its directory. It holds paths, stats and SHA-256 digests,
    /// never contents; it is written (temporary file and rename) by
    /// `observe_many` at most every few seconds when it changed, by
    /// [`FsTarget::save_stat_cache`](super::FsTarget::save_stat_cache) and when
    /// the target is dropped. A missing, corrupt or foreign cache (another
    /// root) only means every file is read once. Off by default.
    ///
    /// ```
    /// use gitops_targets::FsOptions;
    /// let options = FsOptions::default()
    ///     .stat_cache("/var/lib/agent/fs-stat-cache")
    ///     .verify_every(100);
    /// assert!(options.stat_cache_file().is_some());
    /// ```
    pub fn stat_cache(mut self, file: impl Into<PathBuf>) -> Self {
        self.stat_cache = Some(file.into());
        self
    }

    /// With a [stat cache](Self::stat_cache), reads each file's content at
    /// the latest on every `n`th observe even when its stat is unchanged: a
    /// periodic full verification, for what no stat shows (a filesystem that
    /// does not update ctime, bit rot). The passes are staggered per file, so
    /// that each observe of everything reads about `1/n` of the files.
    /// `1` reads every time, `0` (the default) never.
    pub fn verify_every(mut self, n: u32) -> Self {
        self.verify_every = n;
        self
    }

    /// The stat cache file, if any.
    pub fn stat_cache_file(&self) -> Option<&std::path::Path> {
        self.stat_cache.as_deref()
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

/// Why an [`FsTarget`](super::FsTarget) could not be opened.
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
    /// The stat cache would be inside the root, where it would be managed
    /// content (and could be pruned or overwritten by a commit).
    #[error(
        "the stat cache {cache} is inside the target root {root}; keep it in a state directory outside"
    )]
    StatCacheInsideRoot {
        /// The cache file.
        cache: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// The stat cache's directory cannot be created or resolved.
    #[error("cannot use the directory of the stat cache {cache}: {source}")]
    StatCacheDir {
        /// The cache file.
        cache: PathBuf,
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
