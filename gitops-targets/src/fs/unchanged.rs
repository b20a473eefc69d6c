//! Proving the managed files unchanged since a seal, by their stats: what
//! lets the engine skip snapshot, render and plan for a revision it already
//! converged to ([`Target::unchanged_since`](gitops_core::Target::unchanged_since)).
//!
//! The stat cache's epoch ([`StatCache::seal`](super::stat_cache::StatCache::seal))
//! names its entries: while it is the sealed one, every entry is what it
//! was at the seal, and the engine sealed only after it found every file
//! equal to Git. A file whose stat equals its trusted, non-racy entry still
//! holds that content (every write moves ctime). A racy entry, or one whose
//! periodic verification is due, is read and compared; anything else (no
//! entry, another stat, an untrusted entry, a non-file) is not proven.

use cap_std::fs::Dir;
use gitops_core::ResourceId;

use super::spec::{Found, path_of};
use super::stat_cache::{self, ReadReason, StatKey, Time, content_digest};
use super::{Inner, split_parent};

impl Inner {
    /// Whether every file of `ids` provably holds what it held when the
    /// stat cache gave out `seal`; `false` at the first that does not.
    pub(super) fn unchanged_since(&self, ids: &[ResourceId], seal: &str) -> bool {
        let Some(cache) = &self.stat_cache else {
            return false;
        };
        if !stat_cache::lock(cache).is_sealed_at(seal) {
            return false;
        }
        let mut paths = Vec::with_capacity(ids.len());
        for id in ids {
            match path_of(id) {
                Ok(path) => paths.push(path),
                Err(_) => return false,
            }
        }
        paths.sort_unstable();
        let mut current: Option<(&str, Dir)> = None;
        for path in paths {
            let (parent, base) = split_parent(path);
            let dir = if parent.is_empty() {
                &self.root
            } else {
                if current.as_ref().is_none_or(|(p, _)| *p != parent) {
                    match self.root.open_dir(parent) {
                        Ok(dir) => current = Some((parent, dir)),
                        Err(_) => return false,
                    }
                }
                match &current {
                    Some((_, dir)) => dir,
                    None => return false,
                }
            };
            if !self.file_unchanged(cache, dir, base, path) {
                return false;
            }
        }
        // Nothing changed an entry meanwhile (a read that found new content would).
        stat_cache::lock(cache).is_sealed_at(seal)
    }

    /// Whether `base` in `dir` (the file at `path`) is what its entry says.
    fn file_unchanged(
        &self,
        cache: &std::sync::Mutex<stat_cache::StatCache>,
        dir: &Dir,
        base: &str,
        path: &str,
    ) -> bool {
        let flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
        let Ok(stat) = rustix::fs::statat(dir, base, flags) else {
            return false;
        };
        let key = StatKey::of(&stat);
        if !key.is_regular_file() {
            return false;
        }
        match stat_cache::lock(cache).lookup(path, &key) {
            Ok(_) => return true,
            Err(ReadReason::Racy | ReadReason::Verify) => {}
            Err(_) => return false,
        }
        // Taken before the read's fstat: the entry is never newer than its stat.
        let recorded = Time::now();
        let Ok(Some((Found::File { bytes, .. }, Some(read_key)))) = self.read_stat_at(dir, base)
        else {
            return false;
        };
        self.content_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let digest = content_digest(&bytes);
        let mut cache = stat_cache::lock(cache);
        if read_key != key || !cache.vouches_for_read(path, &key, &digest) {
            return false;
        }
        // The same content, recorded now: no longer racy, its cycle restarts.
        cache.record(path, key, digest, recorded, stat_cache::Origin::Read);
        true
    }
}
