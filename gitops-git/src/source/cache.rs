//! The bare cache repository on disk: created or opened once, its packs
//! kept few.

use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::error::{GitError, chain};

/// When this process first opened a cache: a lock file older than that was
/// left by a process that is gone (a `kill -9` mid-fetch leaves
/// `shallow.lock` or a ref's `.lock`, and every later fetch would fail on
/// it for good).
static FIRST_OPEN: OnceLock<SystemTime> = OnceLock::new();

/// Removes lock files that a dead process left in the cache's top level
/// and under `refs/`; returns how many. A lock taken by this process (or
/// another live one that started using the cache after us) is newer and
/// stays.
fn sweep_stale_locks(dir: &Path, first_open: SystemTime) -> usize {
    let mut removed = 0;
    let mut todo = vec![(dir.to_owned(), 0)];
    while let Some((current, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let in_refs = depth > 0 || entry.file_name() == "refs";
            if meta.is_dir() && in_refs && depth < 16 {
                todo.push((path, depth + 1));
            } else if meta.is_file()
                && path.extension().is_some_and(|e| e == "lock")
                && meta.modified().is_ok_and(|m| m < first_open)
                && std::fs::remove_file(&path).is_ok()
            {
                tracing::warn!(lock = %path.display(), "removed a lock file a stopped process left in the Git cache");
                removed += 1;
            }
        }
    }
    removed
}

/// Creates (when missing) and opens the bare cache repository at `dir`.
pub(super) fn open_cache(dir: &Path) -> Result<gix::ThreadSafeRepository, GitError> {
    let first_open = *FIRST_OPEN.get_or_init(SystemTime::now);
    let cache_err = |message: String| GitError::Cache {
        path: dir.to_owned(),
        message,
    };
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
        gix::init_bare(dir).map_err(|e| cache_err(chain(&e)))?;
    } else {
        sweep_stale_locks(dir, first_open);
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

/// More packs than this in the cache and they are consolidated.
const MAX_PACKS: usize = 50;

/// Keeps the number of packs bounded: every fetch that brings objects adds one,
/// and gix has no repack. When there are more than [`MAX_PACKS`], runs
/// `git repack -a -d --keep-unreachable` in the cache (earlier revisions stay
/// readable for rollback) (best effort: without the `git` binary the
/// cache keeps growing by one pack per change, and a warning is logged).
pub(super) fn consolidate_packs(cache_dir: &Path) {
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
