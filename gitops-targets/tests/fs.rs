//! FsTarget against real directories, as root: hostile ids, planted and racing
//! symlinks, a concurrent editor process, permission denied, disk full, limits.

mod support;

use support::{file, id};

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gitops_core::files::file_spec;
use gitops_core::{Health, Resource, ResourceId, Target, TargetError};
use gitops_targets::{Durability, FsOptions, FsTarget};
use serde_json::json;
use support::present;

/// A `root/` to manage and an `outside/` sibling that must stay untouched.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&outside).expect("outside");
    Fixture {
        _dir: dir,
        root,
        outside,
    }
}

/// Every path under `dir`, for "nothing was written here" assertions.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            out.push(
                path.strip_prefix(dir)
                    .expect("prefix")
                    .display()
                    .to_string(),
            );
            if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    assert!(
        status.success(),
        "{program} {args:?} failed with {status}; this test needs it (run as root)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_observe_and_exact_drift() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let conf = file("etc/app.conf", b"port = 80\n");
    assert!(target.observe(&conf.id).await.expect("observe").is_none());
    assert_eq!(
        target.health(&conf.id).await.expect("health"),
        Health::Missing
    );

    target.apply(&conf).await.expect("apply");
    let path = f.root.join("etc/app.conf");
    assert_eq!(std::fs::read(&path).expect("read"), b"port = 80\n");
    assert_eq!(
        std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777,
        0o644
    );
    let observed = present(&target, &conf.id).await;
    assert_eq!(
        observed.spec, conf.spec,
        "observed spec has the FilesRender shape"
    );
    assert!(target.differs(&conf, &observed).is_none());
    assert_eq!(
        target.health(&conf.id).await.expect("health"),
        Health::Healthy
    );
    target.apply(&conf).await.expect("apply is idempotent");

    // Content drift, reported exactly.
    std::fs::write(&path, b"port = 81\n").expect("edit");
    let observed = present(&target, &conf.id).await;
    let diff = target.differs(&conf, &observed).expect("drift");
    assert_eq!(diff.changes.len(), 1, "{diff}");
    assert_eq!(diff.changes[0].path, "spec.content");
    assert_eq!(diff.changes[0].old, Some(json!("port = 81\n")));
    assert!(matches!(
        target.health(&conf.id).await.expect("health"),
        Health::Degraded { .. }
    ));

    // Mode drift only.
    std::fs::write(&path, b"port = 80\n").expect("restore");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let observed = present(&target, &conf.id).await;
    let diff = target.differs(&conf, &observed).expect("drift");
    assert_eq!(diff.changes.len(), 1, "{diff}");
    assert_eq!(diff.changes[0].path, "spec.mode");
    assert_eq!(diff.changes[0].old, Some(json!("0600")));
    target.apply(&conf).await.expect("repair");
    let observed = present(&target, &conf.id).await;
    assert!(target.differs(&conf, &observed).is_none());

    // Binary content and an executable, whatever the umask.
    let bin = Resource::new(
        id("bin/tool"),
        file_spec("bin/tool", &[0, 159, 146, 150, 255], true),
    );
    target.apply(&bin).await.expect("apply binary");
    let meta = std::fs::metadata(f.root.join("bin/tool")).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    let observed = present(&target, &bin.id).await;
    assert_eq!(observed.spec.to_value()["encoding"], "base64");
    assert!(target.differs(&bin, &observed).is_none());

    // The same bytes written as base64 by hand compare equal to utf-8.
    let mut as_base64 = conf.clone();
    as_base64.spec = json!({"path": "etc/app.conf", "content": "cG9ydCA9IDgwCg==", "encoding": "base64", "mode": "0644"}).into();
    let observed = present(&target, &conf.id).await;
    assert!(target.differs(&as_base64, &observed).is_none());
    assert!(listing(&f.outside).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_and_specs_are_refused() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let names = [
        "../outside/x",
        "a/../../outside/x",
        "/etc/passwd",
        "a//b",
        "./x",
        ".git/config",
        "a\\..\\x",
        "dir/.gitops-tmp-1-1",
    ];
    for name in names {
        let r = file(name, b"pwned");
        let err = target.apply(&r).await.expect_err(name);
        assert!(
            matches!(err, TargetError::InvalidSpec { .. }),
            "{name}: {err}"
        );
        assert!(target.observe(&r.id).await.is_err(), "{name}");
        assert!(target.delete(&r.id).await.is_err(), "{name}");
    }
    let wrong_kind = Resource::new(
        ResourceId::new("Secret", "x").expect("id"),
        file_spec("x", b"", false),
    );
    let err = target.apply(&wrong_kind).await.expect_err("kind");
    assert!(err.to_string().contains("\"File\""), "{err}");
    let namespaced = Resource::new(
        ResourceId::namespaced("File", "ns", "x").expect("id"),
        file_spec("x", b"", false),
    );
    assert!(target.apply(&namespaced).await.is_err());
    let mut mismatched = file("a.conf", b"x");
    mismatched.spec = mismatched
        .spec
        .edited(|v| v["path"] = json!("../outside/a.conf"));
    let err = target.apply(&mismatched).await.expect_err("path mismatch");
    assert!(
        err.to_string().contains("differs from the resource name"),
        "{err}"
    );
    for mode in [
        json!("4755"),
        json!("2755"),
        json!("1755"),
        json!("0777"),
        json!("0666"),
        json!("0602"),
        json!("6600"),
        json!("1640"),
        json!(493),
    ] {
        let mut r = file("m.conf", b"x");
        r.spec = r.spec.edited(|v| v["mode"] = mode.clone());
        let err = target.apply(&r).await.expect_err("mode");
        assert!(
            matches!(err, TargetError::InvalidSpec { .. }),
            "{mode}: {err}"
        );
    }
    let mut bad = file("b.conf", b"x");
    bad.spec = bad.spec.edited(|v| {
        v["encoding"] = json!("base64");
        v["content"] = json!("!!!");
    });
    assert!(target.apply(&bad).await.is_err());
    assert!(listing(&f.outside).is_empty());
    assert!(listing(&f.root).is_empty(), "{:?}", listing(&f.root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_never_lead_outside() {
    let f = fixture();
    std::fs::write(f.outside.join("secret"), b"SECRET").expect("secret");
    std::fs::write(f.outside.join("x.conf"), b"outside file").expect("outside file");
    symlink(&f.outside, f.root.join("evil")).expect("dir link (absolute)");
    symlink("../outside", f.root.join("evil_rel")).expect("dir link (relative)");
    symlink(f.outside.join("secret"), f.root.join("link.conf")).expect("file link");
    symlink("/", f.root.join("slash")).expect("link to /");
    std::fs::create_dir(f.root.join("sub")).expect("sub");
    symlink("sub", f.root.join("inside")).expect("link staying inside");
    let target = FsTarget::open(&f.root).expect("open");

    for dir in ["evil", "evil_rel"] {
        let r = file(&format!("{dir}/x.conf"), b"pwned");
        let err = target
            .apply(&r)
            .await
            .expect_err("apply through an escaping link");
        assert!(!err.is_transient(), "{err}");
        let err = target
            .observe(&r.id)
            .await
            .expect_err("observe through an escaping link");
        assert!(err.to_string().contains(dir), "{err}");
        assert!(
            target.delete(&r.id).await.is_err(),
            "delete through an escaping link"
        );
    }
    // The batched observe (one open per directory) refuses the same way.
    let batch: Vec<_> = [
        "evil/x.conf",
        "evil/secret",
        "evil_rel/x.conf",
        "slash/etc/passwd",
        "sub/none",
    ]
    .iter()
    .map(|p| id(p))
    .collect();
    let observed = target.observe_many(&batch).await;
    assert!(observed[..4].iter().all(Result::is_err), "{observed:?}");
    assert!(matches!(observed[4], Ok(None)));
    let passwd = file("slash/etc/passwd", b"pwned");
    assert!(target.observe(&passwd.id).await.is_err());
    assert!(target.apply(&passwd).await.is_err());

    // A link at a managed path: observed as drift, never read through...
    let link = file("link.conf", b"managed\n");
    let observed = present(&target, &link.id).await;
    assert_eq!(observed.spec.to_value()["type"], "symlink");
    assert!(!observed.spec.as_str().contains("SECRET"));
    assert!(target.differs(&link, &observed).is_some());
    // ...and replaced (not followed) by apply.
    target.apply(&link).await.expect("replace the link");
    let meta = std::fs::symlink_metadata(f.root.join("link.conf")).expect("meta");
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::fs::read(f.outside.join("secret")).expect("secret"),
        b"SECRET"
    );
    // Deleting a link removes the link only.
    symlink(f.outside.join("secret"), f.root.join("link2.conf")).expect("file link");
    target.delete(&id("link2.conf")).await.expect("delete link");
    assert!(f.outside.join("secret").exists());

    // A link that stays inside the root is followed for directories.
    target
        .apply(&file("inside/y.conf", b"y"))
        .await
        .expect("apply inside");
    assert_eq!(
        std::fs::read(f.root.join("sub/y.conf")).expect("read"),
        b"y"
    );

    assert_eq!(listing(&f.outside), ["secret", "x.conf"]);
    assert_eq!(
        std::fs::read(f.outside.join("x.conf")).expect("read"),
        b"outside file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_swapped_in_during_a_sync_never_leads_outside() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    std::fs::create_dir(f.root.join("d")).expect("d");
    // An unmanaged file keeps d from being pruned when its files are deleted.
    std::fs::write(f.root.join("d/keep"), b"unmanaged").expect("keep");
    symlink(&f.outside, f.root.join("d.link")).expect("link");
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let root = f.root.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Atomically exchange d (a real directory) with d.link (a
                // symlink to outside), so d is always one or the other.
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    root.join("d"),
                    rustix::fs::CWD,
                    root.join("d.link"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("exchange");
                swaps += 1;
            }
            swaps
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2_000 {
        let r = file(&format!("d/f{}.conf", i % 50), b"data");
        match target.apply(&r).await {
            Ok(()) => ok += 1,
            Err(_) => refused += 1,
        }
        let _ = target.observe(&r.id).await;
        if i % 3 == 0 {
            let _ = target.delete(&r.id).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert!(swaps > 10, "the race ran ({swaps} swaps)");
    assert!(
        ok > 0,
        "some applies landed inside ({ok} ok, {refused} refused)"
    );
    assert!(listing(&f.outside).is_empty(), "{:?}", listing(&f.outside));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_edits_and_deletes_between_observe_and_apply() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let files: Vec<_> = (0..20)
        .map(|i| file(&format!("conf/{i}.conf"), format!("value {i}\n").as_bytes()))
        .collect();
    for r in &files {
        target.apply(r).await.expect("apply");
    }
    let ids: Vec<_> = files.iter().map(|r| r.id.clone()).collect();
    let before = target.observe_many(&ids).await;
    assert!(before.iter().all(|o| matches!(o, Ok(Some(_)))));

    // Another process edits half, deletes a quarter, replaces one with a directory.
    let script = "cd \"$1\" && for i in 0 1 2 3 4 5 6 7 8 9; do echo edited > conf/$i.conf; done \
                  && rm conf/10.conf conf/11.conf conf/12.conf conf/13.conf conf/14.conf \
                  && rm conf/19.conf && mkdir conf/19.conf && echo x > conf/19.conf/inner";
    run(
        "sh",
        &["-c", script, "sh", f.root.to_str().expect("utf-8 path")],
    );

    for r in &files[..19] {
        target.apply(r).await.expect("apply over the edits");
    }
    for (i, r) in files[..19].iter().enumerate() {
        let path = f.root.join(format!("conf/{i}.conf"));
        assert_eq!(
            std::fs::read_to_string(path).expect("read"),
            format!("value {i}\n")
        );
        let observed = present(&target, &r.id).await;
        assert!(target.differs(r, &observed).is_none());
    }
    let err = target
        .apply(&files[19])
        .await
        .expect_err("a directory is in the way");
    assert!(err.to_string().contains("is a directory"), "{err}");
    // Deleting what the other process already deleted succeeds.
    std::fs::remove_file(f.root.join("conf/0.conf")).expect("rm");
    target.delete(&ids[0]).await.expect("delete missing");
    let err = target
        .delete(&ids[19])
        .await
        .expect_err("directory not removed");
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(f.root.join("conf/19.conf/inner").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_emptied_directories_only() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let deep = file("a/b/c/deep.conf", b"1");
    let sibling = file("a/b/sibling.conf", b"2");
    target.apply(&deep).await.expect("apply");
    target.apply(&sibling).await.expect("apply");
    std::fs::write(f.root.join("a/unmanaged.txt"), b"keep me").expect("unmanaged");

    target.delete(&deep.id).await.expect("delete");
    assert!(!f.root.join("a/b/c").exists(), "emptied directory removed");
    assert!(f.root.join("a/b/sibling.conf").exists());
    target.delete(&sibling.id).await.expect("delete");
    assert!(!f.root.join("a/b").exists());
    assert!(
        f.root.join("a/unmanaged.txt").exists(),
        "unmanaged file kept"
    );
    assert!(
        f.root.join("a").is_dir(),
        "directory with an unmanaged file kept"
    );
    target
        .delete(&sibling.id)
        .await
        .expect("deleting a missing file succeeds");
    target
        .delete(&id("never/existed.conf"))
        .await
        .expect("missing parent");
    assert!(f.root.is_dir(), "the root itself is never removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_many_keeps_order_and_reads_every_file() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let files: Vec<_> = (0..500)
        .map(|i| file(&format!("d{}/f{i}.conf", i % 7), format!("{i}").as_bytes()))
        .collect();
    for r in files.iter().filter(|r| !r.id.name().ends_with("f13.conf")) {
        target.apply(r).await.expect("apply");
    }
    let mut ids: Vec<_> = files.iter().map(|r| r.id.clone()).collect();
    ids.push(id("../bad"));
    let observed = target.observe_many(&ids).await;
    assert_eq!(observed.len(), ids.len());
    for (r, o) in files.iter().zip(&observed) {
        match o.as_ref().expect("observe") {
            None => assert_eq!(r.id.name(), "d6/f13.conf"),
            Some(o) => assert!(target.differs(r, o).is_none(), "{}", r.id),
        }
    }
    assert!(observed[500].is_err());
    assert_eq!(target.file_count(), 499);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durability_mode_applies_and_reports_healthy() {
    for durability in [Durability::None, Durability::PerFile, Durability::PerWave] {
        let f = fixture();
        let target = FsTarget::open_with(&f.root, FsOptions::default().durability(durability))
            .expect("open");
        let files: Vec<_> = (0..50)
            .map(|i| file(&format!("w/{i}.conf"), b"x"))
            .collect();
        let applies: Vec<_> = files.iter().map(|r| target.apply(r)).collect();
        for result in futures::future::join_all(applies).await {
            result.expect("apply");
        }
        let checks: Vec<_> = files.iter().map(|r| target.health(&r.id)).collect();
        for health in futures::future::join_all(checks).await {
            assert_eq!(health.expect("health"), Health::Healthy, "{durability:?}");
        }
        target.sync().await.expect("sync");
        target.delete(&files[0].id).await.expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_temp_files_are_swept_at_open_and_special_files_observed() {
    let f = fixture();
    std::fs::create_dir_all(f.root.join("a/b")).expect("dirs");
    std::fs::write(f.root.join("a/b/.gitops-tmp-999-1"), b"half written").expect("temp");
    std::fs::write(f.root.join(".gitops-tmp-999-2"), b"half written").expect("temp");
    std::fs::write(f.root.join("a/kept.conf"), b"kept").expect("file");
    run(
        "mkfifo",
        &[f.root.join("fifo.conf").to_str().expect("utf-8")],
    );
    let target = FsTarget::open(&f.root).expect("open");
    assert_eq!(listing(&f.root), ["a", "a/b", "a/kept.conf", "fifo.conf"]);
    assert_eq!(target.file_count(), 1);
    // A FIFO at a managed path: observed without blocking, then replaced.
    let fifo = file("fifo.conf", b"now a file");
    let observed = present(&target, &fifo.id).await;
    assert_eq!(observed.spec.to_value()["type"], "special");
    target.apply(&fifo).await.expect("replace fifo");
    assert_eq!(
        std::fs::read(f.root.join("fifo.conf")).expect("read"),
        b"now a file"
    );
    let d = file("a/b", b"x");
    assert!(
        target
            .apply(&d)
            .await
            .expect_err("dir in the way")
            .to_string()
            .contains("directory")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_count_limits() {
    let f = fixture();
    std::fs::write(f.root.join("unmanaged"), b"u").expect("unmanaged");
    let target = FsTarget::open_with(
        &f.root,
        FsOptions::default().max_file_size(1024).max_files(3),
    )
    .expect("open");
    let big = file("big.conf", &[b'x'; 2048]);
    let err = target.apply(&big).await.expect_err("too big");
    assert!(matches!(err, TargetError::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("limit of 1024"), "{err}");
    // A large file made by someone else is reported by size, not read.
    std::fs::write(f.root.join("big.conf"), vec![b'y'; 4096]).expect("big");
    let observed = present(&target, &big.id).await;
    assert_eq!(observed.spec.to_value()["size"], 4096);
    assert!(observed.spec.get("content").is_none());
    std::fs::remove_file(f.root.join("big.conf")).expect("rm");

    target.apply(&file("one", b"1")).await.expect("2nd file");
    target.apply(&file("two", b"2")).await.expect("3rd file");
    let err = target
        .apply(&file("three", b"3"))
        .await
        .expect_err("4th file");
    assert!(err.to_string().contains("limit is 3"), "{err}");
    target
        .apply(&file("two", b"22"))
        .await
        .expect("replacing is not a new file");
    target.delete(&id("one")).await.expect("delete");
    target
        .apply(&file("three", b"3"))
        .await
        .expect("room again");
}

/// One limit: by default a file over the Git snapshot's limit (10 MiB,
/// `gitops_core::MAX_FILE_BYTES`) is neither written nor read back, so a
/// write-back never commits a file the source then refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_file_limit_is_the_snapshot_limit() {
    assert_eq!(
        gitops_targets::fs::DEFAULT_MAX_FILE_SIZE,
        gitops_core::MAX_FILE_BYTES
    );
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let twelve_mib = vec![b'x'; 12 << 20];
    let big = file("big.conf", &twelve_mib);
    let err = target
        .apply(&big)
        .await
        .expect_err("over the snapshot limit");
    assert!(err.to_string().contains("limit of 10485760"), "{err}");
    std::fs::write(f.root.join("big.conf"), &twelve_mib).expect("big");
    let observed = present(&target, &big.id).await;
    assert_eq!(observed.spec.to_value()["size"], 12 << 20);
    assert!(
        observed.spec.get("content").is_none(),
        "not read, so never written back"
    );
    let at_limit = file("ok.conf", &vec![b'y'; 10 << 20]);
    target.apply(&at_limit).await.expect("10 MiB is allowed");
}

/// Undoes a mount or an attribute even when the test fails.
struct Undo(Vec<(&'static str, Vec<String>)>);

impl Drop for Undo {
    fn drop(&mut self) {
        for (program, args) in self.0.iter().rev() {
            let _ = Command::new(program).args(args).status();
        }
    }
}

/// Root ignores file permissions (CAP_DAC_OVERRIDE), so "permission denied"
/// is made with the two mechanisms that stop root too: the immutable
/// attribute (EPERM) and a read-only bind mount (EROFS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_as_root() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    let kept = file("locked/kept.conf", b"old\n");
    target.apply(&kept).await.expect("apply");
    let locked = f.root.join("locked");
    let locked_s = locked.to_str().expect("utf-8").to_owned();
    run("chattr", &["+i", &locked_s]);
    let _undo = Undo(vec![("chattr", vec!["-i".into(), locked_s.clone()])]);
    let err = target
        .apply(&file("locked/new.conf", b"x"))
        .await
        .expect_err("immutable directory");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("locked/new.conf"), "{err}");
    assert!(err.to_string().contains("not permitted"), "{err}");
    let err = target
        .apply(&file("locked/kept.conf", b"new\n"))
        .await
        .expect_err("replace in an immutable directory");
    assert!(err.to_string().contains("not permitted"), "{err}");
    assert_eq!(
        std::fs::read(locked.join("kept.conf")).expect("read"),
        b"old\n"
    );
    assert!(target.delete(&kept.id).await.is_err());
    assert_eq!(listing(&locked), ["kept.conf"], "no temp file left");
    drop(_undo);

    let ro = f.root.join("ro");
    std::fs::create_dir(&ro).expect("ro");
    let ro_s = ro.to_str().expect("utf-8").to_owned();
    run("mount", &["--bind", &ro_s, &ro_s]);
    let _unmount = Undo(vec![("umount", vec![ro_s.clone()])]);
    run("mount", &["-o", "remount,bind,ro", &ro_s]);
    let err = target
        .apply(&file("ro/x.conf", b"x"))
        .await
        .expect_err("read-only mount");
    assert!(err.to_string().contains("Read-only file system"), "{err}");
    assert!(!err.is_transient());
}

/// A 256 KiB tmpfs: the write that does not fit fails as transient, leaves
/// no temporary file, and the previous content stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_a_tiny_tmpfs() {
    let f = fixture();
    let mnt = f.root.join("small");
    std::fs::create_dir(&mnt).expect("mount point");
    let mnt_s = mnt.to_str().expect("utf-8").to_owned();
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=256k", "tmpfs", &mnt_s],
    );
    let _unmount = Undo(vec![("umount", vec![mnt_s.clone()])]);
    let target = FsTarget::open(&mnt).expect("open");
    let first = file("a.bin", &vec![b'a'; 160 * 1024]);
    target.apply(&first).await.expect("fits");
    let second = file("b.bin", &vec![b'b'; 160 * 1024]);
    let err = target.apply(&second).await.expect_err("disk full");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(err.to_string().contains("b.bin"), "{err}");
    let replace = file("a.bin", &vec![b'c'; 160 * 1024]);
    let err = target
        .apply(&replace)
        .await
        .expect_err("no room for the new copy");
    assert!(err.is_transient(), "{err}");
    assert_eq!(listing(&mnt), ["a.bin"], "no temp file left behind");
    let observed = present(&target, &first.id).await;
    assert!(
        target.differs(&first, &observed).is_none(),
        "old content intact"
    );
}

/// Hands the engine fixed resources, whatever the snapshot holds.
struct Fixed(Vec<Resource>);

impl gitops_core::Render for Fixed {
    fn render(
        &self,
        snapshot: &gitops_core::Snapshot,
    ) -> Result<gitops_core::DesiredState, gitops_core::RenderError> {
        gitops_core::DesiredState::new(snapshot.revision().clone(), self.0.clone())
    }
}

/// A commit holding one resource FsTarget cannot hold is refused whole, as
/// a bad revision naming the file (stalled, not retried as an outage), and
/// none of its files are written.
#[tokio::test]
async fn a_commit_with_a_resource_it_cannot_hold_is_refused_naming_its_file() {
    let fx = fixture();
    let target = Arc::new(FsTarget::open(&fx.root).expect("open"));
    let mut foreign = Resource::new(
        ResourceId::new("Config", "settings").expect("valid id"),
        json!({"a": 1}),
    );
    foreign.origin.path = "deploy/settings.yaml".into();
    let mut resources = vec![file("a.txt", b"a\n"), file("b/c.txt", b"c\n"), foreign];
    resources[2].depends_on.push(id("a.txt"));
    let source = Arc::new(gitops_core::testing::MemorySource::new("main"));
    source.commit([("any", "x")]);
    let engine = gitops_core::Engine::builder()
        .source(source)
        .render(Arc::new(Fixed(resources)))
        .target(target)
        .build()
        .expect("engine");
    let err = engine.sync_once().await.expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains(
            "refused: deploy/settings.yaml: Config/settings: invalid spec: FsTarget manages kind \"File\" only"
        ),
        "{text}"
    );
    assert!(
        matches!(err, gitops_core::EngineError::Render { .. }),
        "{err:?}"
    );
    let status = engine.status();
    let stalled = status.condition(gitops_core::ConditionKind::Stalled);
    assert!(stalled.status, "{status}");
    assert_eq!(stalled.reason, "RenderFailed");
    assert_eq!(listing(&fx.root), Vec::<String>::new(), "nothing written");
}

/// Secrets deploy private: modes 0600 and 0640 are applied exactly
/// (whatever the umask), observed as such and not drift.
#[tokio::test]
async fn private_modes_are_applied_and_observed() {
    let f = fixture();
    let target = FsTarget::open(&f.root).expect("open");
    for (name, mode, bits) in [("s.key", "0600", 0o600), ("g.key", "0640", 0o640)] {
        let mut r = file(name, b"secret\n");
        r.spec = r.spec.edited(|v| v["mode"] = json!(mode));
        target.apply(&r).await.expect("apply");
        let meta = std::fs::metadata(f.root.join(name)).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o7777, bits, "{name}");
        let observed = present(&target, &r.id).await;
        assert_eq!(observed.spec.get("mode"), Some(json!(mode)));
        assert!(target.differs(&r, &observed).is_none(), "{name}");
    }
}
