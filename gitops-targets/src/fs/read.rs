//! Reading what is at managed paths: observe (one or a sorted batch) and
//! health.

use std::io::{self, Read as _};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::fs::{Dir, FileTypeExt as _, OpenOptions, OpenOptionsExt as _};
use gitops_core::{Health, Observed, ResourceId, TargetError};

use super::spec::{Fingerprint, Found, cached_spec, observed_content, observed_spec, path_of};
use super::stat_cache::{self, Origin, StatCacheError, StatKey, Time, content_digest};
use super::{Durability, Inner, io_error, is_not_found, split_parent};

/// The kind observed for an entry this process is not allowed to read.
const UNREADABLE: &str = "unreadable file";

/// A parent directory opened for a batch of observes: the handle, `None`
/// when it does not exist, or why it could not be opened.
type OpenedParent = Result<Option<Dir>, (io::ErrorKind, String)>;

impl Inner {
    pub(super) fn read(&self, path: &str) -> io::Result<Option<Found>> {
        self.read_at(&self.root, path)
    }

    /// Reads `path` relative to `dir` (a directory inside the root).
    pub(super) fn read_at(&self, dir: &Dir, path: &str) -> io::Result<Option<Found>> {
        Ok(self.read_stat_at(dir, path)?.map(|(found, _)| found))
    }

    /// [`read_at`](Self::read_at), with the `fstat` of a regular file read.
    pub(super) fn read_stat_at(
        &self,
        dir: &Dir,
        path: &str,
    ) -> io::Result<Option<(Found, Option<StatKey>)>> {
        let found = |found| Ok(Some((found, None)));
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
                return found(Found::Other { kind: "symlink" });
            }
            // Something is there that this process may not read (mode 000,
            // another owner): drift of this resource alone, which an apply
            // replaces, not an error that stops the whole application.
            // (EACCES from the kernel only: cap-std's refusal of a path
            // leading outside the root stays an error.)
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::ACCESS.raw_os_error()) => {
                return found(Found::Other { kind: UNREADABLE });
            }
            // A Unix socket (or a device without a driver) cannot be opened.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                let socket = dir
                    .symlink_metadata(path)
                    .is_ok_and(|m| m.file_type().is_socket());
                let kind = if socket { "socket" } else { "special" };
                return found(Found::Other { kind });
            }
            Err(e) => return Err(e),
        };
        let stat = rustix::fs::fstat(&file)?;
        let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        let mode = stat.st_mode & 0o7777;
        match file_type {
            rustix::fs::FileType::RegularFile => {}
            rustix::fs::FileType::Directory => return found(Found::Other { kind: "directory" }),
            _ => return found(Found::Other { kind: "special" }),
        }
        // Size first: a file over the limit is reported, not read.
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let limit = self.options.max_file_size;
        if size > limit {
            return found(Found::TooLarge { size, mode });
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
            return found(Found::TooLarge {
                size: bytes.len() as u64,
                mode,
            });
        }
        Ok(Some((
            Found::File { bytes, mode },
            Some(StatKey::of(&stat)),
        )))
    }

    /// Observes `base` in `dir` (the directory of `path` inside the root):
    /// from the stat cache when it answers, else by reading the file, which
    /// the cache then records.
    fn observe_at(&self, dir: &Dir, base: &str, path: &str) -> io::Result<Option<Observed>> {
        let Some(cache) = &self.stat_cache else {
            let read = self.read_stat_at(dir, base)?;
            return Ok(read.map(|(found, stat)| {
                if stat.is_some() {
                    self.content_reads.fetch_add(1, Ordering::Relaxed);
                }
                Observed::new(observed_spec(path, found))
            }));
        };
        let flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
        match rustix::fs::statat(dir, base, flags) {
            Ok(stat) => {
                let key = StatKey::of(&stat);
                if key.is_regular_file()
                    && let Ok((digest, mode)) = stat_cache::lock(cache).lookup(path, &key)
                {
                    return Ok(Some(Observed::new(cached_spec(path, &digest, mode))));
                }
            }
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
                stat_cache::lock(cache).forget(path);
                return Ok(None);
            }
            // Whatever it is, the read below reports it.
            Err(_) => {}
        }
        // Taken before the read's fstat: the entry is never newer than its stat.
        let recorded = Time::now();
        let read = self.read_stat_at(dir, base)?;
        match &read {
            Some((Found::File { bytes, .. }, Some(key))) => {
                self.content_reads.fetch_add(1, Ordering::Relaxed);
                let digest = content_digest(bytes);
                stat_cache::lock(cache).record(path, *key, digest, recorded, Origin::Read);
            }
            _ => stat_cache::lock(cache).forget(path),
        }
        Ok(read.map(|(found, _)| Observed::new(observed_spec(path, found))))
    }

    /// Observes `ids` (sorted by path) one directory at a time: each parent
    /// is opened once, beneath the root, and its files relative to it.
    pub(super) fn observe_sorted(
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
                let read_error = |e| io_error(&id, format!("read {path}"), e);
                if parent.is_empty() {
                    return self.observe_at(&self.root, path, path).map_err(read_error);
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
                    _ => {
                        self.forget(path);
                        return Ok(None);
                    }
                };
                self.observe_at(dir, base, path).map_err(read_error)
            })();
            out.push((index, result));
        }
        out
    }

    pub(super) fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let path = path_of(id)?;
        let (parent, base) = split_parent(path);
        let dir = match self.open_parent(parent) {
            Ok(dir) => dir,
            Err(e) if is_not_found(&e) => {
                self.forget(path);
                return Ok(None);
            }
            Err(e) => return Err(io_error(id, format!("open directory {parent}"), e)),
        };
        self.observe_at(&dir, base, path)
            .map_err(|e| io_error(id, format!("read {path}"), e))
    }

    /// Drops the stat cache's entry for `path`, if there is a cache.
    pub(super) fn forget(&self, path: &str) {
        if let Some(cache) = &self.stat_cache {
            stat_cache::lock(cache).forget(path);
        }
    }

    /// The engine found `observed` (read from the file of `id`) equal to
    /// the desired resource: the stat cache may answer for it from now on.
    /// Costs a digest only for an entry not yet confirmed.
    pub(super) fn confirm(&self, id: &ResourceId, observed: &Observed) {
        let Some(cache) = &self.stat_cache else {
            return;
        };
        let Ok(path) = path_of(id) else {
            return;
        };
        if !stat_cache::lock(cache).is_unconfirmed(path) {
            return;
        }
        if let Some((bytes, mode)) = observed_content(id, observed) {
            let digest = content_digest(&bytes);
            stat_cache::lock(cache).confirm(path, &digest, mode);
        }
    }

    /// Writes the stat cache if it changed.
    pub(super) fn save_stat_cache(&self) -> Result<(), StatCacheError> {
        match &self.stat_cache {
            Some(cache) => stat_cache::lock(cache).save(),
            None => Ok(()),
        }
    }

    pub(super) fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
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
            Some(Found::Other { kind: UNREADABLE }) => Health::Degraded {
                reason: format!("{path} cannot be read (permission denied)"),
            },
            Some(Found::Other { kind }) => Health::Degraded {
                reason: format!("{path} is a {kind}, not a regular file"),
            },
        })
    }
}
