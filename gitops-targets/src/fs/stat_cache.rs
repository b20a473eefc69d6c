//! The stat cache (the technique of Git's index): for each managed file, the
//! `(device, inode, size, mtime, ctime, mode)` seen at its last write or
//! content read, with the SHA-256 of the content it held then. `observe`
//! reads a file only when [`needs_read`] says so; otherwise it reports
//! "unchanged since the content with digest D" without opening it.
//!
//! Why a stat is enough: every write to a file moves its ctime, and ctime
//! cannot be set from user space (`touch -r` and `utimensat` set atime and
//! mtime only). Why it is not always enough: timestamps have a granularity,
//! so a file changed again within one clock tick of when it was stat'ed can
//! keep its whole tuple. Such an entry is *racily clean* ([`is_racy`]) and
//! is read again, as Git does. What no stat can see (a filesystem that does
//! not update ctime, bit rot, a raw write to the device) is what the
//! periodic verification ([`FsOptions::verify_every`](super::FsOptions::verify_every)) is for.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::stat_file;

/// Below this age (newest of mtime and ctime, at the time of the stat) an
/// entry is racily clean, on filesystems with sub-second timestamps: more
/// than the kernel's coarse clock tick (1–10 ms) that stamps files.
pub(super) const RACY_WINDOW: Duration = Duration::from_millis(100);

/// The same on filesystems whose timestamps have whole seconds only (both
/// nanosecond fields zero).
pub(super) const RACY_WINDOW_COARSE: Duration = Duration::from_secs(1);

/// A changed cache is written by `observe_many` at most this often; it is
/// also written by [`FsTarget::save_stat_cache`](super::FsTarget::save_stat_cache)
/// and when the target is dropped.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the stat cache could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatCacheError {
    /// Writing the temporary file or renaming it over the cache failed.
    #[error("cannot write the stat cache {path}: {source}")]
    Write {
        /// The cache file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A time as the filesystem stores it: seconds and nanoseconds since 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Time {
    pub(super) sec: i64,
    pub(super) nsec: u32,
}

impl Time {
    /// Now, by the wall clock (the clock file timestamps come from). A
    /// clock before 1970 gives zero: every entry is then racy, never wrongly clean.
    pub(super) fn now() -> Self {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            },
            Err(_) => Time::default(),
        }
    }

    fn nanos(self) -> i128 {
        i128::from(self.sec) * 1_000_000_000 + i128::from(self.nsec)
    }
}

/// What a `stat` says about a file, as far as a change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatKey {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: Time,
    pub(super) ctime: Time,
    /// `st_mode`: file type and permission bits.
    pub(super) mode: u32,
}

fn clamp_u64(value: i128) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn time(sec: i128, nsec: i128) -> Time {
    Time {
        sec: i64::try_from(sec).unwrap_or(i64::MAX),
        nsec: u32::try_from(nsec).unwrap_or(0),
    }
}

impl StatKey {
    /// The fields of `stat` (whatever their integer types on this platform).
    #[allow(clippy::useless_conversion)]
    pub(super) fn of(stat: &rustix::fs::Stat) -> Self {
        Self {
            dev: clamp_u64(i128::from(stat.st_dev)),
            ino: clamp_u64(i128::from(stat.st_ino)),
            size: clamp_u64(i128::from(stat.st_size)),
            mtime: time(i128::from(stat.st_mtime), i128::from(stat.st_mtime_nsec)),
            ctime: time(i128::from(stat.st_ctime), i128::from(stat.st_ctime_nsec)),
            mode: u32::try_from(i128::from(stat.st_mode)).unwrap_or(0),
        }
    }

    pub(super) fn is_regular_file(&self) -> bool {
        rustix::fs::FileType::from_raw_mode(self.mode) == rustix::fs::FileType::RegularFile
    }

    /// The permission bits.
    pub(super) fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// What the cache knows about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) key: StatKey,
    /// SHA-256 of the content the file held at `key`.
    pub(super) digest: [u8; 32],
    /// Whether `digest` may answer `observe`: content this target wrote,
    /// or content found equal to a desired resource (see [`trusted_after`]).
    pub(super) trusted: bool,
    /// When `key` was taken (read before the `stat`, so never later).
    pub(super) recorded: Time,
    /// Answers from the cache since the content was last read (kept in
    /// memory only); see [`needs_read`].
    pub(super) hits: u32,
}

/// Why `observe` reads a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadReason {
    /// The cache has no entry for the path.
    NotCached,
    /// The stat differs from the one recorded.
    Changed,
    /// The file changed too shortly before it was recorded ([`is_racy`]).
    Racy,
    /// The recorded content was read, not written or confirmed as desired:
    /// it may be drift, whose content the engine needs (write-back, diffs).
    Unconfirmed,
    /// The periodic verification is due.
    Verify,
}

/// Whether an entry's stat may hide a later change: the file's newest
/// timestamp (mtime or ctime) is not strictly older than `recorded` minus
/// the timestamp granularity ([`RACY_WINDOW`], or [`RACY_WINDOW_COARSE`]
/// for whole-second timestamps). A write after `recorded` gets a timestamp
/// at least `recorded` minus one clock tick, so for a non-racy entry it
/// always moves ctime away from the recorded one.
pub(super) fn is_racy(key: &StatKey, recorded: Time) -> bool {
    let window = if key.mtime.nsec == 0 && key.ctime.nsec == 0 {
        RACY_WINDOW_COARSE
    } else {
        RACY_WINDOW
    };
    let window = i128::try_from(window.as_nanos()).unwrap_or(i128::MAX);
    let newest = key.mtime.max(key.ctime).nanos();
    newest.saturating_add(window) >= recorded.nanos()
}

/// Whether `observe` must read the content of a file whose current stat is
/// `stat`: `None` when `entry` answers, else why not. `verify_every` (0:
/// never) reads the content at the latest on the Nth answer.
pub(super) fn needs_read(
    entry: Option<&Entry>,
    stat: &StatKey,
    verify_every: u32,
) -> Option<ReadReason> {
    let Some(entry) = entry else {
        return Some(ReadReason::NotCached);
    };
    if entry.key != *stat {
        Some(ReadReason::Changed)
    } else if is_racy(&entry.key, entry.recorded) {
        Some(ReadReason::Racy)
    } else if !entry.trusted {
        Some(ReadReason::Unconfirmed)
    } else if verify_every > 0 && entry.hits.saturating_add(1) >= verify_every {
        Some(ReadReason::Verify)
    } else {
        None
    }
}

/// How a recorded content came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// This target wrote it (`apply`).
    Written,
    /// `observe` read it.
    Read,
}

/// Whether a new entry may answer `observe`: content written by this
/// target, or read back equal (content and mode) to what a trusted entry
/// held. Content read for the first time, or different from the trusted
/// one (drift), is not, until the engine finds it equal to the desired
/// resource ([`StatCache::confirm`]).
pub(super) fn trusted_after(
    old: Option<&Entry>,
    origin: Origin,
    digest: &[u8; 32],
    key: &StatKey,
) -> bool {
    match origin {
        Origin::Written => true,
        Origin::Read => {
            old.is_some_and(|o| o.trusted && o.digest == *digest && o.key.mode == key.mode)
        }
    }
}

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The 32 bytes a 64-digit hex text (either case) stands for.
pub(super) fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// SHA-256 of a file's content.
pub(super) fn content_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The directory a target's root is: a cache written for another
/// directory (or a root deleted and made again) is not used.
pub(super) type RootId = (u64, u64);

/// The entries by path.
pub(super) type Entries = HashMap<Box<str>, Entry>;

/// A new random epoch: 32 hex digits (see [`StatCache::seal`]).
fn new_epoch() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Each `RandomState` has its own random keys (seeded from the OS).
    let half = |salt: u8| RandomState::new().hash_one((now, std::process::id(), salt));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&half(0).to_le_bytes());
    bytes[8..].copy_from_slice(&half(1).to_le_bytes());
    hex(&bytes)
}

/// The entries of one target, and the file they are kept in.
#[derive(Debug)]
pub(super) struct StatCache {
    file: PathBuf,
    root: RootId,
    entries: Entries,
    /// Names the entries' content (digests, stats, trust): replaced by a
    /// new random one after any entry changed ([`Self::seal`]).
    epoch: String,
    /// An entry changed since `epoch` was given out or loaded.
    epoch_stale: bool,
    verify_every: u32,
    max_entries: usize,
    /// Spreads the periodic verification over the passes (random per process).
    phases: RandomState,
    dirty: bool,
    last_save: Instant,
}

impl StatCache {
    /// Loads `file`; a missing, unreadable or corrupt file, or one written
    /// for another root, is an empty cache (every file is read once).
    pub(super) fn load(file: PathBuf, root: RootId, verify_every: u32, max_entries: usize) -> Self {
        let mut cache = Self {
            entries: Entries::new(),
            epoch: new_epoch(),
            epoch_stale: false,
            file,
            root,
            verify_every,
            max_entries,
            phases: RandomState::new(),
            dirty: false,
            last_save: Instant::now(),
        };
        if let Ok((entries, epoch)) = stat_file::read(&cache.file, root, max_entries) {
            cache.entries = entries;
            cache.epoch = epoch;
        }
        for (path, entry) in &mut cache.entries {
            entry.hits = phase(&cache.phases, cache.verify_every, path);
        }
        cache
    }

    /// The recorded digest and permission bits when they answer for the
    /// file at `path` with `stat`, else why the content must be read.
    pub(super) fn lookup(
        &mut self,
        path: &str,
        stat: &StatKey,
    ) -> Result<([u8; 32], u32), ReadReason> {
        let entry = self.entries.get_mut(path);
        match needs_read(entry.as_deref(), stat, self.verify_every) {
            None => {
                let entry = entry.ok_or(ReadReason::NotCached)?;
                entry.hits = entry.hits.saturating_add(1);
                Ok((entry.digest, entry.key.permissions()))
            }
            Some(reason) => {
                if let (ReadReason::Verify, Some(entry)) = (reason, entry) {
                    // The read about to happen starts the next cycle.
                    entry.hits = 0;
                }
                Err(reason)
            }
        }
    }

    /// Records what was written or read at `path`; `recorded` was taken
    /// before the `stat` that gave `key`. Marks the cache changed only
    /// when it learned something.
    pub(super) fn record(
        &mut self,
        path: &str,
        key: StatKey,
        digest: [u8; 32],
        recorded: Time,
        origin: Origin,
    ) {
        let old = self.entries.get(path);
        let trusted = trusted_after(old, origin, &digest, &key);
        let hits = match old {
            Some(o) if o.key == key && o.digest == digest && o.trusted == trusted => {
                if !is_racy(&o.key, o.recorded) {
                    return;
                }
                // The same content, recorded later: the epoch stays.
                o.hits
            }
            Some(_) => {
                self.epoch_stale = true;
                0
            }
            None if self.entries.len() >= self.max_entries => return,
            None => {
                self.epoch_stale = true;
                phase(&self.phases, self.verify_every, path)
            }
        };
        let entry = Entry {
            key,
            digest,
            trusted,
            recorded,
            hits,
        };
        self.entries.insert(path.into(), entry);
        self.dirty = true;
    }

    /// The engine found the content read at `path` (digest and permission
    /// bits) equal to the desired resource: the entry may answer from now on.
    pub(super) fn confirm(&mut self, path: &str, digest: &[u8; 32], permissions: u32) {
        if let Some(entry) = self.entries.get_mut(path)
            && !entry.trusted
            && entry.digest == *digest
            && entry.key.permissions() == permissions
        {
            entry.trusted = true;
            self.dirty = true;
            self.epoch_stale = true;
        }
    }

    /// Whether `path` has an entry that is not trusted (worth confirming).
    pub(super) fn is_unconfirmed(&self, path: &str) -> bool {
        self.entries.get(path).is_some_and(|e| !e.trusted)
    }

    /// Drops the entry of a file that is gone or no longer a regular file.
    pub(super) fn forget(&mut self, path: &str) {
        if self.entries.remove(path).is_some() {
            self.dirty = true;
            self.epoch_stale = true;
        }
    }

    /// The epoch naming the entries as they are now (a new one when any
    /// entry changed since the last was given out), written with them at
    /// the next save. While [`Self::is_sealed_at`] it, every entry is as it
    /// was when it was given out.
    pub(super) fn seal(&mut self) -> String {
        if self.epoch_stale {
            self.epoch = new_epoch();
            self.epoch_stale = false;
            self.dirty = true;
        }
        self.epoch.clone()
    }

    /// Whether no entry changed since [`Self::seal`] gave out `epoch`.
    pub(super) fn is_sealed_at(&self, epoch: &str) -> bool {
        !self.epoch_stale && self.epoch == epoch
    }

    /// Whether the trusted entry of `path` answers for a file whose current
    /// stat is `key` and whose content, just read, has `digest` (the
    /// entry's stat may be racy or its verification due: the read proves
    /// the content).
    pub(super) fn vouches_for_read(&self, path: &str, key: &StatKey, digest: &[u8; 32]) -> bool {
        self.entries
            .get(path)
            .is_some_and(|e| e.trusted && e.key == *key && e.digest == *digest)
    }

    /// Whether the cache changed and was last written long enough ago.
    pub(super) fn save_due(&self) -> bool {
        self.dirty && self.last_save.elapsed() >= SAVE_INTERVAL
    }

    /// Writes the cache if it changed: a temporary file renamed over it.
    /// No `fsync`: a cache lost or torn by a crash is read as corrupt,
    /// which only means reading every file once.
    pub(super) fn save(&mut self) -> Result<(), StatCacheError> {
        if !self.dirty {
            return Ok(());
        }
        if self.epoch_stale {
            // Never the old epoch with changed entries.
            self.epoch = new_epoch();
            self.epoch_stale = false;
        }
        stat_file::write(&self.file, self.root, &self.epoch, &self.entries).map_err(|source| {
            StatCacheError::Write {
                path: self.file.clone(),
                source,
            }
        })?;
        self.dirty = false;
        self.last_save = Instant::now();
        Ok(())
    }
}

/// Where a file starts in the verification cycle, so that the files of one
/// pass are not all verified in the same later pass.
fn phase(phases: &RandomState, verify_every: u32, path: &str) -> u32 {
    if verify_every <= 1 {
        return 0;
    }
    u32::try_from(phases.hash_one(path) % u64::from(verify_every)).unwrap_or(0)
}

/// Locks the cache, whatever a panicking holder left.
pub(super) fn lock(cache: &Mutex<StatCache>) -> MutexGuard<'_, StatCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn at(sec: i64, nsec: u32) -> Time {
        Time { sec, nsec }
    }

    fn key(changed: Time) -> StatKey {
        StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: changed,
            ctime: changed,
            mode: 0o100644,
        }
    }

    fn entry(changed: Time, recorded: Time, trusted: bool) -> Entry {
        Entry {
            key: key(changed),
            digest: [7; 32],
            trusted,
            recorded,
            hits: 0,
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(&hex(&[0x0f, 0xa0]), "0fa0");
        assert_eq!(unhex(&hex(&bytes).to_uppercase()), Some(bytes));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn racy_means_changed_within_the_granularity_before_the_stat() {
        let changed = at(100, 500_000_000);
        assert!(is_racy(&key(changed), at(100, 550_000_000)));
        assert!(
            is_racy(&key(changed), at(100, 600_000_000)),
            "not strictly older"
        );
        assert!(!is_racy(&key(changed), at(100, 600_000_001)));
        let mut newer_ctime = key(at(90, 1));
        newer_ctime.ctime = changed;
        assert!(is_racy(&newer_ctime, at(100, 550_000_000)), "ctime counts");
        // Whole-second timestamps: a one-second window.
        assert!(is_racy(&key(at(100, 0)), at(100, 900_000_000)));
        assert!(!is_racy(&key(at(100, 0)), at(101, 1)));
        assert!(
            is_racy(&key(changed), Time::default()),
            "a clock before 1970"
        );
    }

    #[test]
    fn needs_read_has_one_reason_per_branch() {
        let old = at(100, 1);
        let later = at(200, 1);
        let clean = entry(old, later, true);
        assert_eq!(needs_read(None, &key(old), 0), Some(ReadReason::NotCached));
        assert_eq!(
            needs_read(Some(&clean), &key(at(150, 1)), 0),
            Some(ReadReason::Changed)
        );
        let mut other_inode = key(old);
        other_inode.ino += 1;
        assert_eq!(
            needs_read(Some(&clean), &other_inode, 0),
            Some(ReadReason::Changed)
        );
        let racy = entry(old, at(100, 2), true);
        assert_eq!(
            needs_read(Some(&racy), &key(old), 0),
            Some(ReadReason::Racy)
        );
        let unconfirmed = entry(old, later, false);
        assert_eq!(
            needs_read(Some(&unconfirmed), &key(old), 0),
            Some(ReadReason::Unconfirmed)
        );
        assert_eq!(needs_read(Some(&clean), &key(old), 0), None);
        assert_eq!(needs_read(Some(&clean), &key(old), 2), None);
        assert_eq!(
            needs_read(Some(&clean), &key(old), 1),
            Some(ReadReason::Verify)
        );
        let hit_once = Entry { hits: 1, ..clean };
        assert_eq!(
            needs_read(Some(&hit_once), &key(old), 2),
            Some(ReadReason::Verify)
        );
    }

    #[test]
    fn only_written_or_reverified_content_is_trusted() {
        let k = key(at(100, 1));
        let trusted = entry(at(100, 1), at(200, 1), true);
        assert!(trusted_after(None, Origin::Written, &[1; 32], &k));
        assert!(!trusted_after(None, Origin::Read, &[7; 32], &k));
        assert!(trusted_after(Some(&trusted), Origin::Read, &[7; 32], &k));
        assert!(
            !trusted_after(Some(&trusted), Origin::Read, &[8; 32], &k),
            "drift"
        );
        let mut chmod = k;
        chmod.mode = 0o100755;
        assert!(!trusted_after(
            Some(&trusted),
            Origin::Read,
            &[7; 32],
            &chmod
        ));
        let untrusted = entry(at(100, 1), at(200, 1), false);
        assert!(!trusted_after(Some(&untrusted), Origin::Read, &[7; 32], &k));
    }

    fn cache(dir: &Path, verify_every: u32) -> StatCache {
        StatCache::load(dir.join("cache"), (1, 1), verify_every, 10)
    }

    #[test]
    fn record_lookup_confirm_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cache(dir.path(), 0);
        let k = key(at(100, 1));
        c.record("a", k, [7; 32], at(200, 1), Origin::Read);
        assert_eq!(c.lookup("a", &k), Err(ReadReason::Unconfirmed));
        assert!(c.is_unconfirmed("a"));
        c.confirm("a", &[8; 32], 0o644);
        assert!(c.is_unconfirmed("a"), "another content is not confirmed");
        c.confirm("a", &[7; 32], 0o644);
        assert_eq!(c.lookup("a", &k), Ok(([7; 32], 0o644)));
        c.save().expect("saves");
        // Nothing new: the cache stays unchanged.
        c.record("a", k, [7; 32], at(300, 1), Origin::Read);
        assert!(!c.dirty);
        c.forget("a");
        assert!(c.dirty);
        assert_eq!(c.lookup("a", &k), Err(ReadReason::NotCached));
    }

    #[test]
    fn entries_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cache(dir.path(), 0);
        for i in 0..20 {
            c.record(
                &format!("f{i}"),
                key(at(100, 1)),
                [0; 32],
                at(200, 1),
                Origin::Written,
            );
        }
        assert_eq!(c.entries.len(), 10);
    }

    #[test]
    fn verification_comes_at_the_latest_every_nth_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cache(dir.path(), 3);
        let k = key(at(100, 1));
        c.record("a", k, [7; 32], at(200, 1), Origin::Written);
        let mut answers = 0;
        let reason = loop {
            match c.lookup("a", &k) {
                Ok(_) => answers += 1,
                Err(reason) => break reason,
            }
            assert!(answers < 3, "verified within 3 observes");
        };
        assert_eq!(reason, ReadReason::Verify);
        // The verifying read re-records the same content: the cycle restarts.
        c.record("a", k, [7; 32], at(300, 1), Origin::Read);
        assert!(c.lookup("a", &k).is_ok());
        assert!(c.lookup("a", &k).is_ok());
        assert_eq!(c.lookup("a", &k), Err(ReadReason::Verify));
    }
}
