//! FsTarget's stat cache against real files: unchanged files are answered
//! without reading them; a same-size edit with its mtime put back, racily
//! clean entries, drift and a corrupt or missing cache all mean reading;
//! the cache lives outside the root and survives a restart; the periodic
//! verification catches a change that kept the whole stat.

mod support;

use support::file;

use std::fs::{File, FileTimes};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gitops_core::{Observed, Resource, ResourceId, Target};
use gitops_targets::{FsOpenError, FsOptions, FsTarget};

/// More than the racy window (100 ms): entries recorded after it are clean.
const SETTLE: Duration = Duration::from_millis(150);

/// A root to manage and a state directory beside it.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let cache = dir.path().join("state/fs-stat-cache");
    Fixture {
        _dir: dir,
        root,
        cache,
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

/// Observes every resource of `files` in one batch: each present, and
/// what `differs` says of it (which also confirms content read as desired).
async fn observe_all(target: &FsTarget, files: &[Resource]) -> Vec<(Observed, bool)> {
    let ids: Vec<ResourceId> = files.iter().map(|f| f.id.clone()).collect();
    let results = target.observe_many(&ids).await;
    results
        .into_iter()
        .zip(files)
        .map(|(result, f)| {
            let observed = result.expect("observe").expect("present");
            let drift = target.differs(f, &observed).is_some();
            (observed, drift)
        })
        .collect()
}

/// Counts the content reads of one `observe_many` of `files`.
async fn reads_of(target: &FsTarget, files: &[Resource]) -> u64 {
    let before = target.content_reads();
    observe_all(target, files).await;
    target.content_reads() - before
}

fn three_files() -> Vec<Resource> {
    vec![
        file("a.conf", b"alpha\n"),
        file("etc/b.conf", b"bravo\n"),
        file("etc/deep/c.conf", b"charlie\n"),
    ]
}

async fn apply_all(target: &FsTarget, files: &[Resource]) {
    for f in files {
        target.apply(f).await.expect("apply");
    }
}

#[tokio::test]
async fn unchanged_files_are_answered_without_reading_them() {
    let fx = fixture();
    let target = fx.open(0);
    let files = three_files();
    apply_all(&target, &files).await;
    tokio::time::sleep(SETTLE).await;
    // An entry written by apply is always racy (recorded before the
    // write): the first observe reads back what was written.
    assert_eq!(reads_of(&target, &files).await, 3);
    for _ in 0..3 {
        assert_eq!(reads_of(&target, &files).await, 0, "answered by the cache");
    }
    for (observed, drift) in observe_all(&target, &files).await {
        assert!(!drift);
        assert!(observed.spec.get("content").is_none(), "not read");
        assert_eq!(
            observed.spec.to_value()["sha256"].as_str().map(str::len),
            Some(64)
        );
    }
    // Without a cache, every observe reads every file.
    let plain = FsTarget::open(&fx.root).expect("open");
    assert_eq!(reads_of(&plain, &files).await, 3);
    assert_eq!(reads_of(&plain, &files).await, 3);
}

#[tokio::test]
async fn a_same_size_edit_with_its_mtime_put_back_is_caught() {
    let fx = fixture();
    let target = fx.open(0);
    let wanted = file("app.conf", b"port = 80\n");
    apply_all(&target, std::slice::from_ref(&wanted)).await;
    tokio::time::sleep(SETTLE).await;
    observe_all(&target, std::slice::from_ref(&wanted)).await;
    assert_eq!(reads_of(&target, std::slice::from_ref(&wanted)).await, 0);

    let path = fx.root.join("app.conf");
    let before = std::fs::metadata(&path).expect("stat");
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&path, b"port = 81\n").expect("edit in place");
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(before.modified()?)))
        .expect("put the mtime back");
    let after = std::fs::metadata(&path).expect("stat");
    // Everything but ctime is as it was: ctime alone gives the edit away.
    assert_eq!(
        (
            after.ino(),
            after.size(),
            after.mtime(),
            after.mtime_nsec(),
            after.mode()
        ),
        (
            before.ino(),
            before.size(),
            before.mtime(),
            before.mtime_nsec(),
            before.mode()
        )
    );
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );

    let observed = observe_all(&target, std::slice::from_ref(&wanted)).await;
    assert!(observed[0].1, "drift found");
    assert_eq!(observed[0].0.spec.to_value()["content"], "port = 81\n");
    target.apply(&wanted).await.expect("revert");
    assert_eq!(std::fs::read(&path).expect("read"), b"port = 80\n");
}

#[tokio::test]
async fn racily_clean_entries_are_read_again() {
    let fx = fixture();
    let target = fx.open(0);
    let wanted = file("app.conf", b"x\n");
    let one = std::slice::from_ref(&wanted);
    apply_all(&target, one).await;
    // However late it comes, the observe after an apply reads.
    assert_eq!(reads_of(&target, one).await, 1);
    // A file whose timestamp is not older than when it was recorded (here
    // a clock skewed into the future) is read every time.
    let path = fx.root.join("app.conf");
    let future = SystemTime::now() + Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(future)))
        .expect("set mtime");
    for _ in 0..3 {
        assert_eq!(reads_of(&target, one).await, 1, "racy: read");
    }
    // Once older than the window, one more read records it clean.
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(SystemTime::UNIX_EPOCH)))
        .expect("set mtime");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(reads_of(&target, one).await, 1);
    assert_eq!(reads_of(&target, one).await, 0);
}

/// Three files applied and observed clean, the cache written; the target dropped.
async fn settled_cache(fx: &Fixture, files: &[Resource]) {
    let target = fx.open(0);
    apply_all(&target, files).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(reads_of(&target, files).await, 3);
    target.save_stat_cache().expect("save");
}

#[tokio::test]
async fn the_cache_survives_a_restart_and_a_bad_one_means_reading_once() {
    let fx = fixture();
    let files = three_files();
    settled_cache(&fx, &files).await;
    assert_eq!(
        reads_of(&fx.open(0), &files).await,
        0,
        "restarted: no reads"
    );

    let good = std::fs::read(&fx.cache).expect("cache");
    let corrupt: [(&str, Vec<u8>); 4] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"\x00\xffnot a cache\n".to_vec()),
        ("empty", Vec::new()),
        ("one flipped digit", {
            let mut bytes = good.clone();
            let at = bytes.iter().position(|b| *b == b'\n').expect("header") + 5;
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            bytes
        }),
    ];
    for (what, bytes) in corrupt {
        std::fs::write(&fx.cache, bytes).expect("corrupt");
        let target = fx.open(0);
        assert_eq!(reads_of(&target, &files).await, 3, "{what}: full read");
        // Content read with no record is trusted once found as desired
        // (`differs`, inside `reads_of`): then the cache answers again.
        assert_eq!(reads_of(&target, &files).await, 0, "{what}: healed");
        target.save_stat_cache().expect("save");
    }
    std::fs::remove_file(&fx.cache).expect("rm");
    let target = fx.open(0);
    assert_eq!(reads_of(&target, &files).await, 3, "missing: full read");
    assert_eq!(reads_of(&target, &files).await, 0);
}

#[tokio::test]
async fn the_cache_lives_outside_the_root() {
    let fx = fixture();
    let inside = FsOptions::default().stat_cache(fx.root.join(".state/cache"));
    let refused = FsTarget::open_with(&fx.root, inside).expect_err("inside the root");
    assert!(
        matches!(refused, FsOpenError::StatCacheInsideRoot { .. }),
        "{refused}"
    );
    // Nor through a symlink that leads into it.
    let link = fx.root.parent().expect("parent").join("link");
    std::os::unix::fs::symlink(&fx.root, &link).expect("symlink");
    let sneaky = FsOptions::default().stat_cache(link.join("cache"));
    assert!(matches!(
        FsTarget::open_with(&fx.root, sneaky),
        Err(FsOpenError::StatCacheInsideRoot { .. })
    ));

    let files = three_files();
    settled_cache(&fx, &files).await;
    assert!(fx.cache.is_file());
    let mut listing: Vec<String> = walk(&fx.root);
    listing.sort();
    assert_eq!(listing, ["a.conf", "etc/b.conf", "etc/deep/c.conf"]);
    let text = std::fs::read_to_string(&fx.cache).expect("cache");
    assert!(
        !text.contains("alpha") && !text.contains("bravo"),
        "no contents"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("ls") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("inside");
                out.push(relative.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn drift_is_read_every_time_and_deleted_files_are_dropped() {
    let fx = fixture();
    let files = three_files();
    settled_cache(&fx, &files).await;
    let target = fx.open(0);
    std::fs::write(fx.root.join("a.conf"), b"hand edit\n").expect("drift");
    tokio::time::sleep(SETTLE).await;
    for _ in 0..3 {
        // Content that was read but never written nor found as desired is
        // read again: drift comes with its content (write-back needs it).
        let observed = observe_all(&target, &files[..1]).await;
        assert!(observed[0].1);
        assert_eq!(observed[0].0.spec.to_value()["content"], "hand edit\n");
    }
    target.delete(&files[1].id).await.expect("delete");
    target.save_stat_cache().expect("save");
    let text = std::fs::read_to_string(&fx.cache).expect("cache");
    assert!(!text.contains("etc/b.conf"), "{text}");
    assert!(text.contains("etc/deep/c.conf"));
}

#[tokio::test]
async fn the_periodic_verification_catches_a_change_the_stat_does_not_show() {
    let fx = fixture();
    let wanted = file("app.conf", b"port = 80\n");
    let one = std::slice::from_ref(&wanted);
    settled_cache(&fx, &three_files()).await;
    {
        let target = fx.open(0);
        apply_all(&target, one).await;
        tokio::time::sleep(SETTLE).await;
        observe_all(&target, one).await;
        target.save_stat_cache().expect("save");
    }
    let path = fx.root.join("app.conf");
    std::fs::write(&path, b"port = 81\n").expect("edit");
    support::forge_stat_cache_entry(&fx.cache, "app.conf", &path);
    let pristine = std::fs::read(&fx.cache).expect("cache");

    // Without verification the cache is fooled: it answers "as applied".
    let blind = fx.open(0);
    for _ in 0..5 {
        let observed = observe_all(&blind, one).await;
        assert!(!observed[0].1, "the stat cannot show this change");
    }
    drop(blind);

    // Every 3rd observe at the latest, the content is read: drift found.
    std::fs::write(&fx.cache, &pristine).expect("restore");
    let verifying = fx.open(3);
    let mut caught_at = None;
    for pass in 1..=3 {
        if observe_all(&verifying, one).await[0].1 {
            caught_at = Some(pass);
            break;
        }
    }
    assert!(caught_at.is_some(), "caught within 3 observes");
    drop(verifying);

    // verify_every(1) (the agent's --verify-content): at once.
    std::fs::write(&fx.cache, &pristine).expect("restore");
    let always = fx.open(1);
    assert!(observe_all(&always, one).await[0].1);
}
