//! Hostile trees built with `git mktree`/`git hash-object`: unsafe names,
//! symlinks, submodules, a 100 MiB blob and 200,000 files are refused with a
//! clear error, checked before content is read.

mod support;

use gitops_core::{Source, SourceError};
use gitops_git::{GitSource, Limits, ReferencePolicy, SpecialEntries};
use support::{Fixture, git, git_stdin, runtime};

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
    rt.block_on(src.snapshot(&rev))
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
