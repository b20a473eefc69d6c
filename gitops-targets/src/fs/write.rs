//! Writing managed paths: apply (an atomic rename of a temporary file) and
//! delete (with the directories it empties).

use std::io::{self, Write as _};
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};
use gitops_core::{Resource, ResourceId, TargetError};

use super::spec::{FileSpec, Fingerprint, path_of};
use super::stat_cache::{self, Origin, StatKey, Time, content_digest};
use super::{Durability, Inner, TEMP_PREFIX, io_error, is_not_found, split_parent};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Inner {
    pub(super) fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
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
        // Before the write: the entry is never newer than the file's stat.
        let recorded = Time::now();
        let stat = match self.write_atomically(&dir, base, &file) {
            Ok(stat) => stat,
            Err(e) => {
                if is_new {
                    self.inner_files().fetch_sub(1, Ordering::SeqCst);
                }
                return Err(io_error(id, format!("write {}", file.path), e));
            }
        };
        self.writes.fetch_add(1, Ordering::SeqCst);
        let digest = content_digest(&file.bytes);
        if let Some(cache) = &self.stat_cache {
            let mut cache = stat_cache::lock(cache);
            match stat {
                Some(key) => cache.record(file.path, key, digest, recorded, Origin::Written),
                None => cache.forget(file.path),
            }
        }
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Fingerprint::from_digest(digest, file.mode));
        Ok(())
    }

    fn inner_files(&self) -> &AtomicUsize {
        &self.files
    }

    /// Writes a temporary file and renames it to `base`; the `fstat` of the
    /// file after the rename (which moves its ctime), if it succeeded.
    fn write_atomically(
        &self,
        dir: &Dir,
        base: &str,
        file: &FileSpec<'_>,
    ) -> io::Result<Option<StatKey>> {
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
            dir.rename(&temp, dir, base)
        })();
        if let Err(e) = written {
            let _ = dir.remove_file(&temp);
            return Err(e);
        }
        let stat = rustix::fs::fstat(&handle).ok().map(|s| StatKey::of(&s));
        drop(handle);
        if self.options.durability == Durability::PerFile {
            // cap-std holds directories as O_PATH descriptors: open a real one.
            dir.open(".")?.sync_all()?;
        }
        Ok(stat)
    }

    pub(super) fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let path = path_of(id)?;
        // Whatever happens below, the next observe reads the path again.
        self.forget(path);
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
        // The engine forgets a pruned resource (saves the inventory) once
        // this returns: the unlink must be on disk first, or a crash could
        // bring back a file nothing manages any more. Concurrent deletes of
        // a wave share one `syncfs`.
        if self.options.durability == Durability::PerWave {
            self.sync_blocking()
                .map_err(|e| io_error(id, "sync the target filesystem".to_owned(), e))?;
        }
        Ok(())
    }
}
