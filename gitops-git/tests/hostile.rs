//! Hostile trees built with `git mktree`/`git hash-object`: unsafe names,
//! symlinks, submodules, a 100 MiB blob, 200,000 files, a tree bomb and a
//! too-deep chain of directories are refused with a clear error, checked
//! before content is read; a walk that is no longer wanted stops.

mod support;

use gitops_core::{Cancel, Source, SourceError};
use gitops_git::{GitSource, Limits, ReferencePolicy, SpecialEntries};
use support::{Fixture, git, git_stdin, runtime, tree_bomb};

/// Commits a tree made of raw `mktree` lines on top of `main` and pushes it.
fn commit_tree(fx: &Fixture, lines: &[u8], message: &str) -> String {
    let tree = git_stdin(&fx.work, &["mktree", "--missing"], Some(lines));
    let commit = git(&fx.work, &["commit-tree", &tree, "-m", message]);
    git(&fx.work, &["update-ref", "refs/heads/main", &commit]);
    fx.push();
    commit
}

fn blob(fx: &Fixture, content: &[u8]) -> String {
    git_stdin(&fx.work, &["hash-object", "-w", "--stdin"], Some(content))
}

fn expect_rejected(err: SourceError, path_contains: &str, reason_contains: &str) {
    match &err {
        SourceError::Rejected { path, reason } => {
            assert!(path.contains(path_contains), "path {path:?} in {err}");
            assert!(
                reason.contains(reason_contains),
                "reason {reason:?} in {err}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_transient());
}

fn poll_and_snapshot(
    fx: &Fixture,
    cache: &str,
    configure: impl FnOnce(gitops_git::GitSourceBuilder) -> gitops_git::GitSourceBuilder,
) -> Result<gitops_core::Snapshot, SourceError> {
    let builder = GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache(cache));
    let src = configure(builder).build().expect("build");
    let rt = runtime();
    let rev = rt.block_on(src.poll()).expect("poll");
    rt.block_on(src.snapshot(&rev, &Cancel::new()))
}

#[test]
fn unsafe_names_are_refused() {
    let fx = Fixture::new();
    fx.commit(&[("ok", "ok")], "base");
    let b = blob(&fx, b"payload\n");
    let cases: [(&[u8], &str, &str); 7] = [
        (b"..", "..", ""),
        (b".git", ".git", ""),
        (b".GIT", ".GIT", ""),
        (b"GIT~1", "GIT~1", ""),
        (b"git~1", "git~1", ""),
        (b"bad\x01name", "bad\\u{1}name", "non-printable"),
        (b"\xffname", "name", "UTF-8"),
    ];
    for (i, (name, path, reason)) in cases.into_iter().enumerate() {
        let mut line = format!("100644 blob {b}\t").into_bytes();
        line.extend_from_slice(name);
        line.push(b'\n');
        // Nested, to show the full path is reported.
        let inner = git_stdin(&fx.work, &["mktree", "--missing"], Some(&line));
        let outer = format!("040000 tree {inner}\tdir\n100644 blob {b}\tfine.yaml\n");
        commit_tree(&fx, outer.as_bytes(), "hostile");
        let err = poll_and_snapshot(&fx, &format!("c{i}"), |b| b).expect_err("refused");
        expect_rejected(err, path, reason);
        assert!(
            matches!(poll_and_snapshot(&fx, &format!("d{i}"), |b| b), Err(SourceError::Rejected { ref path, .. }) if path.starts_with("dir/")),
            "the full path is reported"
        );
    }
}

#[test]
fn symlinks_and_submodules_are_refused_or_skipped() {
    let fx = Fixture::new();
    let target = blob(&fx, b"/etc/passwd");
    let file = blob(&fx, b"kind: x\n");
    let tree = format!("120000 blob {target}\tpasswd\n100644 blob {file}\tapp.yaml\n");
    commit_tree(&fx, tree.as_bytes(), "symlink");
    let err = poll_and_snapshot(&fx, "refuse", |b| b).expect_err("symlink refused");
    expect_rejected(err, "passwd", "symbolic link");
    let snap = poll_and_snapshot(&fx, "skip", |b| b.special_entries(SpecialEntries::Skip))
        .expect("symlink skipped");
    assert_eq!(snap.len(), 1);
    assert_eq!(snap.get("app.yaml"), Some(&b"kind: x\n"[..]));
    assert!(snap.get("passwd").is_none());

    // A submodule (gitlink) to a commit that is not in the repository.
    let tree = format!(
        "160000 commit 0123456789abcdef0123456789abcdef01234567\tvendor\n100644 blob {file}\tapp.yaml\n"
    );
    commit_tree(&fx, tree.as_bytes(), "submodule");
    let err = poll_and_snapshot(&fx, "sub-refuse", |b| b).expect_err("submodule refused");
    expect_rejected(err, "vendor", "submodule");
    let snap = poll_and_snapshot(&fx, "sub-skip", |b| b.special_entries(SpecialEntries::Skip))
        .expect("submodule skipped");
    assert_eq!(snap.len(), 1);
}

#[test]
fn a_100_mib_blob_is_refused_by_its_header() {
    let fx = Fixture::new();
    let big = vec![b'x'; 100 * 1024 * 1024];
    let big_id = blob(&fx, &big);
    drop(big);
    let small = blob(&fx, b"small\n");
    let tree = format!("100644 blob {small}\ta.yaml\n100644 blob {big_id}\tbig.bin\n");
    commit_tree(&fx, tree.as_bytes(), "big");
    let err = poll_and_snapshot(&fx, "default", |b| b).expect_err("too big");
    expect_rejected(err, "big.bin", "104857600 bytes");

    // Total-size and per-file limits are configurable.
    let err = poll_and_snapshot(&fx, "file", |b| {
        b.limits(Limits {
            max_file_bytes: 3,
            ..Limits::default()
        })
    })
    .expect_err("per-file limit");
    expect_rejected(err, "a.yaml", "max_file_bytes");
    let err = poll_and_snapshot(&fx, "total", |b| {
        b.limits(Limits {
            max_total_bytes: 50 * 1024 * 1024,
            max_file_bytes: u64::MAX,
            ..Limits::default()
        })
    })
    .expect_err("total limit");
    expect_rejected(err, "big.bin", "max_total_bytes");
}

#[test]
fn two_hundred_thousand_files_are_refused() {
    let fx = Fixture::new();
    let b = blob(&fx, b"x");
    let mut lines = Vec::with_capacity(200_000 * 60);
    for i in 0..200_000 {
        lines.extend_from_slice(format!("100644 blob {b}\tf{i:06}\n").as_bytes());
    }
    commit_tree(&fx, &lines, "many files");
    let err = poll_and_snapshot(&fx, "default", |b| b).expect_err("too many files");
    expect_rejected(err, "f", "more than 100000 files");
    let err = poll_and_snapshot(&fx, "small", |b| {
        b.limits(Limits {
            max_files: 10,
            ..Limits::default()
        })
    })
    .expect_err("too many files");
    expect_rejected(err, "f000010", "max_files");
}

/// Commits the tree `tree` (an id) on top of `main` and pushes it.
fn commit_tree_id(fx: &Fixture, tree: &str, message: &str) -> String {
    let parent = fx.head();
    let commit = git(
        &fx.work,
        &["commit-tree", tree, "-p", &parent, "-m", message],
    );
    git(&fx.work, &["update-ref", "refs/heads/main", &commit]);
    fx.push();
    commit
}

/// A chain of `n` nested directories `d/d/.../d` with `f.yaml` at the bottom.
fn chain(fx: &Fixture, n: usize) -> String {
    let b = blob(fx, b"kind: x\n");
    let mut tree = git_stdin(
        &fx.work,
        &["mktree"],
        Some(format!("100644 blob {b}\tf.yaml\n").as_bytes()),
    );
    for _ in 0..n {
        let line = format!("040000 tree {tree}\td\n");
        tree = git_stdin(&fx.work, &["mktree"], Some(line.as_bytes()));
    }
    tree
}

#[test]
fn a_tree_bomb_is_refused_by_its_entry_count_before_any_walk() {
    let fx = Fixture::new();
    fx.commit(&[("ok.yaml", "ok")], "base");
    // 64 copies of a subtree, 6 levels deep, empty trees at the bottom:
    // 7 tree objects, 64^6 (6.9e10) visits for a walk that follows them.
    let bomb = tree_bomb(&fx.work, 64, 6);
    git(&fx.work, &["fsck", "--strict", "--no-dangling"]);
    commit_tree_id(&fx, &bomb, "bomb");
    let started = std::time::Instant::now();
    let err = poll_and_snapshot(&fx, "bomb", |b| b).expect_err("refused");
    let took = started.elapsed();
    eprintln!("tree bomb (64^6) refused in {took:?} (poll included)");
    expect_rejected(err, "d", "more than 1000000 tree entries");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");

    // The limit is configurable, and names itself.
    let err = poll_and_snapshot(&fx, "small", |b| {
        b.limits(Limits {
            max_entries: 100,
            ..Limits::default()
        })
    })
    .expect_err("refused");
    expect_rejected(err, "d", "limit max_entries");
}

#[test]
fn directories_nested_deeper_than_the_limit_are_refused() {
    let fx = Fixture::new();
    fx.commit(&[("ok.yaml", "ok")], "base");
    // 64 levels is the default limit: read.
    commit_tree_id(&fx, &chain(&fx, 64), "deep but allowed");
    let snap = poll_and_snapshot(&fx, "64", |b| b).expect("64 levels read");
    let deepest = format!("{}f.yaml", "d/".repeat(64));
    assert_eq!(snap.get(&deepest), Some(&b"kind: x\n"[..]));
    // 65: refused, naming the limit and the first directory too deep.
    commit_tree_id(&fx, &chain(&fx, 65), "too deep");
    let err = poll_and_snapshot(&fx, "65", |b| b).expect_err("refused");
    let too_deep = format!("{}d", "d/".repeat(64));
    expect_rejected(err, &too_deep, "more than 64 levels deep (limit max_depth)");
    let err = poll_and_snapshot(&fx, "small", |b| {
        b.limits(Limits {
            max_depth: 3,
            ..Limits::default()
        })
    })
    .expect_err("refused");
    expect_rejected(err, "d/d/d/d", "limit max_depth");
}

#[test]
fn a_tree_object_over_the_size_limit_is_refused_by_its_header() {
    let fx = Fixture::new();
    let b = blob(&fx, b"x");
    let lines: String = (0..1_000)
        .map(|i| format!("100644 blob {b}\tf{i:04}.yaml\n"))
        .collect();
    commit_tree(&fx, lines.as_bytes(), "wide");
    poll_and_snapshot(&fx, "default", |b| b).expect("1,000 files read under the defaults");
    let err = poll_and_snapshot(&fx, "small", |b| {
        b.limits(Limits {
            max_tree_bytes: 1_000,
            ..Limits::default()
        })
    })
    .expect_err("refused");
    expect_rejected(err, "/", "limit of 1000 bytes (max_tree_bytes)");
}

#[test]
fn a_real_repository_reads_under_the_default_limits() {
    let fx = Fixture::new();
    let mut files = Vec::new();
    for a in 0..10 {
        for b in 0..10 {
            for c in 0..30 {
                files.push((format!("apps/a{a}/b{b}/c{c}.yaml"), format!("n: {c}\n")));
            }
        }
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    fx.commit(&refs, "3,000 files in 111 directories");
    fx.push();
    let snap = poll_and_snapshot(&fx, "real", |b| b).expect("reads");
    assert_eq!(snap.len(), 3_000);
    assert_eq!(snap.get("apps/a9/b9/c29.yaml"), Some(&b"n: 29\n"[..]));
}

#[test]
fn a_cancelled_walk_stops_and_a_dropped_snapshot_frees_its_thread() {
    let fx = Fixture::new();
    fx.commit(&[("ok.yaml", "ok")], "base");
    commit_tree_id(&fx, &tree_bomb(&fx.work, 64, 6), "bomb");
    // Without the entry limit the walk would take hours.
    let unlimited = |b: gitops_git::GitSourceBuilder| {
        b.limits(Limits {
            max_entries: u64::MAX,
            ..Limits::default()
        })
    };
    let src = unlimited(
        GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
            .cache_dir(fx.cache("cancel")),
    )
    .build()
    .expect("build");
    let rt = runtime();
    let rev = rt.block_on(src.poll()).expect("poll");

    // A flag set while the walk runs ends it with a transient error.
    let cancel = Cancel::new();
    let setter = cancel.clone();
    let started = std::time::Instant::now();
    let err = rt
        .block_on(async {
            let walk = src.snapshot(&rev, &cancel);
            let stop = async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                setter.cancel();
                std::future::pending::<()>().await
            };
            tokio::select! { r = walk => r, () = stop => unreachable!() }
        })
        .expect_err("cancelled");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A caller that stops waiting (here a timeout) stops the walk too: the
    // runtime, which waits for its blocking threads, shuts down promptly.
    let timed_out = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(300),
            src.snapshot(&rev, &Cancel::new()),
        )
        .await
    });
    assert!(timed_out.is_err(), "still walking after 300 ms");
    let started = std::time::Instant::now();
    drop(rt);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "runtime shutdown took {took:?}"
    );
}
