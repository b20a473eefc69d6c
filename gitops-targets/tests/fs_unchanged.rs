//! FsTarget's seal against real files: `unchanged_since` proves files
//! unchanged by their stats, and says "changed" for a same-size edit whose
//! mtime was put back, a deleted file, a file replaced by a directory, any
//! write by the target since the seal, and a missing or corrupt cache.

mod support;

use support::file;

use std::fs::{File, FileTimes};
use std::path::PathBuf;
use std::time::Duration;

use gitops_core::{Resource, ResourceId, Target};
use gitops_targets::{FsOptions, FsTarget};

/// More than the racy window (100 ms), so that an edit gets another ctime.
const SETTLE: Duration = Duration::from_millis(150);

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    Fixture {
        root: dir.path().join("root"),
        cache: dir.path().join("state/fs-stat-cache"),
        _dir: dir,
    }
}

impl Fixture {
    fn open(&self, verify_every: u32) -> FsTarget {
        let options = FsOptions::default()
            .stat_cache(&self.cache)
            .verify_every(verify_every);
        FsTarget::open_with(&self.root, options).expect("open")
    }
}

fn files() -> Vec<Resource> {
    vec![
        file("a.conf", b"alpha\n"),
        file("etc/b.conf", b"bravo\n"),
        file("etc/deep/c.conf", b"charlie\n"),
    ]
}

fn ids(files: &[Resource]) -> Vec<ResourceId> {
    files.iter().map(|f| f.id.clone()).collect()
}

/// Applies `files` and seals.
async fn applied_and_sealed(target: &FsTarget, files: &[Resource]) -> String {
    for f in files {
        target.apply(f).await.expect("apply");
    }
    target.seal().expect("a target with a stat cache seals")
}

#[tokio::test]
async fn untouched_files_are_proven_unchanged_by_their_stats() {
    let fx = fixture();
    let target = fx.open(0);
    let files = files();
    let seal = applied_and_sealed(&target, &files).await;
    // Just written: racy, so read once and compared.
    assert!(target.unchanged_since(&ids(&files), &seal).await);
    let reads = target.content_reads();
    assert_eq!(
        target.seal().as_deref(),
        Some(seal.as_str()),
        "nothing changed"
    );
    tokio::time::sleep(SETTLE).await;
    assert!(target.unchanged_since(&ids(&files), &seal).await);
    assert!(target.unchanged_since(&ids(&files), &seal).await);
    assert!(target.content_reads() <= reads + 3, "then stats only");
    // Another process, the cache written: the same seal holds.
    target.save_stat_cache().expect("save");
    drop(target);
    let again = fx.open(0);
    assert!(again.unchanged_since(&ids(&files), &seal).await);
    let before = again.content_reads();
    assert!(again.unchanged_since(&ids(&files), &seal).await);
    assert_eq!(again.content_reads(), before, "stats only");
    assert!(
        !again
            .unchanged_since(&ids(&files), "0".repeat(32).as_str())
            .await
    );
}

#[tokio::test]
async fn a_same_size_edit_with_its_mtime_put_back_is_a_change() {
    let fx = fixture();
    let target = fx.open(0);
    let files = files();
    let seal = applied_and_sealed(&target, &files).await;
    tokio::time::sleep(SETTLE).await;
    assert!(target.unchanged_since(&ids(&files), &seal).await);

    let path = fx.root.join("etc/b.conf");
    let before = std::fs::metadata(&path).expect("stat");
    std::fs::write(&path, b"BRAVO\n").expect("same size");
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(before.modified()?)))
        .expect("put the mtime back");
    assert!(!target.unchanged_since(&ids(&files), &seal).await);
    // A full observe reads it, the engine reverts it; a new seal holds.
    target.apply(&files[1]).await.expect("revert");
    let seal = target.seal().expect("seal");
    assert!(target.unchanged_since(&ids(&files), &seal).await);
}

#[tokio::test]
async fn deleted_replaced_or_rewritten_files_are_changes() {
    let fx = fixture();
    let target = fx.open(0);
    let files = files();
    let seal = applied_and_sealed(&target, &files).await;
    let all = ids(&files);

    std::fs::remove_file(fx.root.join("a.conf")).expect("rm");
    assert!(!target.unchanged_since(&all, &seal).await, "deleted");
    target.apply(&files[0]).await.expect("again");
    assert!(
        !target.unchanged_since(&all, &seal).await,
        "a write by the target ends the seal"
    );
    let seal = target.seal().expect("seal");
    assert!(target.unchanged_since(&all, &seal).await);

    std::fs::remove_file(fx.root.join("a.conf")).expect("rm");
    std::fs::create_dir(fx.root.join("a.conf")).expect("a directory in the way");
    assert!(!target.unchanged_since(&all, &seal).await, "not a file");
    std::fs::remove_dir(fx.root.join("a.conf")).expect("rmdir");

    // An id the cache never saw.
    let extra = file("new.conf", b"n\n");
    std::fs::write(fx.root.join("new.conf"), b"n\n").expect("write");
    let mut more = all.clone();
    more.push(extra.id.clone());
    target.apply(&files[0]).await.expect("again");
    let seal = target.seal().expect("seal");
    assert!(!target.unchanged_since(&more, &seal).await, "not cached");
}

#[tokio::test]
async fn a_missing_or_corrupt_cache_proves_nothing() {
    let fx = fixture();
    let files = files();
    let target = fx.open(0);
    let seal = applied_and_sealed(&target, &files).await;
    target.save_stat_cache().expect("save");
    drop(target);

    let good = std::fs::read(&fx.cache).expect("cache");
    std::fs::write(&fx.cache, &good[..good.len() / 2]).expect("truncate");
    assert!(
        !fx.open(0).unchanged_since(&ids(&files), &seal).await,
        "truncated"
    );
    std::fs::remove_file(&fx.cache).expect("rm");
    assert!(
        !fx.open(0).unchanged_since(&ids(&files), &seal).await,
        "missing"
    );
    // Without a cache there is no seal at all.
    let plain = FsTarget::open(&fx.root).expect("open");
    assert_eq!(plain.seal(), None);
    assert!(!plain.unchanged_since(&ids(&files), &seal).await);
}

#[tokio::test]
async fn a_due_verification_reads_and_still_proves() {
    let fx = fixture();
    let files = files();
    // Every answer is a verification: each file is read and compared.
    let target = fx.open(1);
    let seal = applied_and_sealed(&target, &files).await;
    tokio::time::sleep(SETTLE).await;
    let before = target.content_reads();
    assert!(target.unchanged_since(&ids(&files), &seal).await);
    assert_eq!(target.content_reads(), before + 3, "verified by reading");
    assert!(
        target.unchanged_since(&ids(&files), &seal).await,
        "still sealed"
    );
}
