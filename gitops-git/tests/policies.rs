//! Reference policies, cheap polling, force-push, moved and deleted tags,
//! snapshots and history, over plain paths and `file://`.

mod support;

use gitops_core::{Cancel, Source, SourceError};
use gitops_git::{GitSource, ReferencePolicy};
use support::{Fixture, git, runtime};

fn source(fx: &Fixture, url: &str, policy: ReferencePolicy, cache: &str) -> GitSource {
    GitSource::builder(url, policy)
        .cache_dir(fx.cache(cache))
        .build()
        .expect("build source")
}

#[test]
fn branch_over_plain_path_and_file_url() {
    let fx = Fixture::new();
    let first = fx.commit(&[("app/a.yaml", "a: 1\n"), ("readme.md", "hi\n")], "first");
    fx.push();
    let rt = runtime();
    for (i, url) in [fx.url_path(), fx.url_file()].into_iter().enumerate() {
        let src = source(&fx, &url, ReferencePolicy::branch("main"), &format!("c{i}"));
        let rev = rt.block_on(src.poll()).expect("poll");
        assert_eq!(rev.id, first);
        assert_eq!(rev.reference, "main");
        assert_eq!(rev.to_string(), format!("main@sha1:{first}"));
        assert_eq!(rev.author, "Alice Author <alice@example.com>");
        assert_eq!(rev.summary(), "first");
        assert!(rev.committed_at > 0);
        let snap = rt
            .block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snapshot");
        assert_eq!(snap.get("app/a.yaml"), Some(&b"a: 1\n"[..]));
        assert_eq!(snap.get("readme.md"), Some(&b"hi\n"[..]));
        assert_eq!(snap.len(), 2);
        // No worktree: the cache is bare and holds no checked-out files.
        assert!(!src.cache_dir().join("app").exists());
        assert!(src.cache_dir().join("HEAD").exists());
    }
}

#[test]
fn noop_poll_transfers_no_pack_and_returns_the_same_revision() {
    let fx = Fixture::new();
    fx.commit(&[("a", "1")], "one");
    fx.push();
    let rt = runtime();
    let src = source(&fx, &fx.url_file(), ReferencePolicy::branch("main"), "c");
    let first = rt.block_on(src.poll_detailed()).expect("poll");
    assert!(first.pack_received);
    let second = rt.block_on(src.poll_detailed()).expect("poll");
    assert!(
        !second.pack_received,
        "a no-op poll must not receive a pack"
    );
    assert_eq!(first.revision, second.revision);

    // A new commit is picked up, with a pack.
    let next = fx.commit(&[("a", "2")], "two");
    fx.push();
    let third = rt.block_on(src.poll_detailed()).expect("poll");
    assert!(third.pack_received);
    assert_eq!(third.revision.id, next);
    let snap = rt
        .block_on(src.snapshot(&third.revision, &Cancel::new()))
        .expect("snapshot");
    assert_eq!(snap.get("a"), Some(&b"2"[..]));

    // The cache is reused across restarts (a new source on the same directory).
    let again = source(&fx, &fx.url_file(), ReferencePolicy::branch("main"), "c");
    assert_eq!(again.cached_revision().map(|r| r.id), Some(next.clone()));
    let polled = rt.block_on(again.poll_detailed()).expect("poll");
    assert!(!polled.pack_received);
    assert_eq!(polled.revision.id, next);
}

#[test]
fn force_push_is_detected() {
    let fx = Fixture::new();
    let base = fx.commit(&[("f", "base")], "base");
    let old = fx.commit(&[("f", "old")], "old");
    fx.push();
    let rt = runtime();
    let src = source(&fx, &fx.url_file(), ReferencePolicy::branch("main"), "c");
    assert_eq!(rt.block_on(src.poll()).expect("poll").id, old);

    git(&fx.work, &["reset", "-q", "--hard", &base]);
    let rewritten = fx.commit(&[("f", "rewritten")], "rewritten history");
    fx.push();
    let rev = rt.block_on(src.poll()).expect("poll");
    assert_eq!(rev.id, rewritten);
    let snap = rt
        .block_on(src.snapshot(&rev, &Cancel::new()))
        .expect("snapshot");
    assert_eq!(snap.get("f"), Some(&b"rewritten"[..]));
    // The old revision is still readable from the cache (rollback).
    let old_rev = gitops_core::Revision::new("main", old);
    let snap = rt
        .block_on(src.snapshot(&old_rev, &Cancel::new()))
        .expect("old snapshot");
    assert_eq!(snap.get("f"), Some(&b"old"[..]));
}

#[test]
fn tag_policy_peels_annotated_tags_and_follows_moves_and_deletion() {
    let fx = Fixture::new();
    let one = fx.commit(&[("v", "1")], "one");
    git(&fx.work, &["tag", "-a", "release", "-m", "release tag"]);
    git(&fx.work, &["tag", "light"]);
    fx.push();
    let rt = runtime();
    let annotated = source(&fx, &fx.url_file(), ReferencePolicy::tag("release"), "a");
    let rev = rt.block_on(annotated.poll()).expect("poll");
    assert_eq!(rev.id, one, "annotated tag peeled to its commit");
    assert_eq!(rev.to_string(), format!("release@sha1:{one}"));
    let light = source(&fx, &fx.url_file(), ReferencePolicy::tag("light"), "l");
    assert_eq!(rt.block_on(light.poll()).expect("poll").id, one);

    // Moved tag.
    let two = fx.commit(&[("v", "2")], "two");
    git(&fx.work, &["tag", "-f", "-a", "release", "-m", "moved"]);
    fx.push();
    let rev = rt.block_on(annotated.poll()).expect("poll");
    assert_eq!(rev.id, two, "moved tag detected");
    assert_eq!(
        rt.block_on(annotated.snapshot(&rev, &Cancel::new()))
            .expect("snap")
            .get("v"),
        Some(&b"2"[..])
    );

    // Deleted tag: reported, permanent; the last good revision stays readable.
    git(&fx.work, &["tag", "-d", "release"]);
    fx.push();
    let err = rt.block_on(annotated.poll()).expect_err("deleted tag");
    assert!(
        matches!(err, SourceError::ReferenceNotFound { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(annotated.last_good().map(|r| r.id), Some(two.clone()));
    let snap = rt
        .block_on(annotated.snapshot(&annotated.last_good().expect("last good"), &Cancel::new()))
        .expect("snapshot of last good");
    assert_eq!(snap.get("v"), Some(&b"2"[..]));
}

#[test]
fn semver_picks_highest_match_and_skips_prereleases_and_non_semver() {
    let fx = Fixture::new();
    let mut ids = std::collections::HashMap::new();
    for tag in [
        "v1.0.0",
        "v1.2.0",
        "1.10.0",
        "v2.0.0-rc.1",
        "latest",
        "v1.3",
        "2.1.0",
    ] {
        let id = fx.commit(&[("version", tag)], tag);
        git(&fx.work, &["tag", "-a", tag, "-m", tag]);
        ids.insert(tag, id);
    }
    fx.push();
    let rt = runtime();
    let cases = [
        (">=1.0.0, <2.0.0", "1.10.0"),
        ("~1.2", "v1.2.0"),
        ("^2.0.0-rc.0", "2.1.0"),
        ("=2.0.0-rc.1", "v2.0.0-rc.1"),
        ("<2", "1.10.0"),
    ];
    for (i, (range, want)) in cases.into_iter().enumerate() {
        let src = source(
            &fx,
            &fx.url_file(),
            ReferencePolicy::semver(range),
            &format!("s{i}"),
        );
        let rev = rt.block_on(src.poll()).expect("poll");
        assert_eq!(rev.reference, want, "range {range}");
        assert_eq!(rev.id, ids[want], "range {range}");
        let snap = rt
            .block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snapshot");
        assert_eq!(snap.get("version"), Some(want.as_bytes()));
    }
    // Pre-releases are excluded unless the range names one.
    let src = source(
        &fx,
        &fx.url_file(),
        ReferencePolicy::semver(">=2.0.0, <2.1.0"),
        "none",
    );
    let err = rt.block_on(src.poll()).expect_err("no stable 2.0.x");
    assert!(
        matches!(err, SourceError::ReferenceNotFound { .. }),
        "{err:?}"
    );

    // A new matching tag is picked up; deleting it falls back to the previous highest.
    let id = fx.commit(&[("version", "1.11.0")], "1.11.0");
    git(&fx.work, &["tag", "v1.11.0"]);
    fx.push();
    let src = source(
        &fx,
        &fx.url_file(),
        ReferencePolicy::semver("1.x"),
        "moving",
    );
    assert_eq!(rt.block_on(src.poll()).expect("poll").id, id);
    git(&fx.work, &["tag", "-d", "v1.11.0"]);
    fx.push();
    assert_eq!(rt.block_on(src.poll()).expect("poll").id, ids["1.10.0"]);
}

#[test]
fn commit_policy_full_and_short_ids() {
    let fx = Fixture::new();
    let first = fx.commit(&[("f", "1")], "one");
    let _second = fx.commit(&[("f", "2")], "two");
    git(&fx.work, &["checkout", "-q", "-b", "side", &first]);
    let side = fx.commit(&[("f", "side")], "side");
    git(&fx.work, &["checkout", "-q", "main"]);
    fx.push();
    let rt = runtime();
    let full = source(&fx, &fx.url_file(), ReferencePolicy::commit(&first), "full");
    let rev = rt.block_on(full.poll()).expect("poll");
    assert_eq!(rev.id, first);
    assert_eq!(rev.reference, first);
    assert_eq!(
        rt.block_on(full.snapshot(&rev, &Cancel::new()))
            .expect("snap")
            .get("f"),
        Some(&b"1"[..])
    );
    // Once cached, a pinned commit needs no network.
    let again = rt.block_on(full.poll_detailed()).expect("poll");
    assert!(!again.contacted_remote);

    let short = source(
        &fx,
        &fx.url_file(),
        ReferencePolicy::commit(&side[..10]),
        "short",
    );
    assert_eq!(rt.block_on(short.poll()).expect("poll").id, side);

    let missing = source(
        &fx,
        &fx.url_file(),
        ReferencePolicy::commit("0123456789abcdef0123456789abcdef01234567"),
        "missing",
    );
    let err = rt.block_on(missing.poll()).expect_err("missing commit");
    assert!(
        matches!(err, SourceError::ReferenceNotFound { .. }),
        "{err:?}"
    );
}

#[test]
fn missing_branch_and_invalid_config() {
    let fx = Fixture::new();
    fx.commit(&[("f", "1")], "one");
    fx.push();
    let rt = runtime();
    let src = source(&fx, &fx.url_file(), ReferencePolicy::branch("nope"), "c");
    let err = rt.block_on(src.poll()).expect_err("no branch");
    assert!(
        matches!(err, SourceError::ReferenceNotFound { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());

    assert!(
        GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
            .build()
            .is_err()
    );
    assert!(
        GitSource::builder(fx.url_file(), ReferencePolicy::branch("a..b"))
            .cache_dir(fx.cache("x"))
            .build()
            .is_err()
    );
    assert!(
        GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
            .cache_dir(fx.cache("y"))
            .path("../etc")
            .build()
            .is_err()
    );
}

#[test]
fn subdirectory_path_and_history() {
    let fx = Fixture::new();
    let c1 = fx.commit(
        &[("deploy/prod/a.yaml", "a"), ("other/x", "x")],
        "first\n\nbody",
    );
    let c2 = fx.commit(&[("deploy/prod/b.yaml", "b")], "second");
    let c3 = fx.commit(&[("deploy/prod/a.yaml", "a2")], "third");
    fx.push();
    let rt = runtime();
    let src = GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("c"))
        .path("deploy/prod")
        .depth(None)
        .build()
        .expect("build");
    let rev = rt.block_on(src.poll()).expect("poll");
    let snap = rt
        .block_on(src.snapshot(&rev, &Cancel::new()))
        .expect("snapshot");
    let paths: Vec<&str> = snap.files().keys().map(String::as_str).collect();
    assert_eq!(paths, ["a.yaml", "b.yaml"]);

    let first = gitops_core::Revision::new("main", c1.clone());
    let history = rt
        .block_on(src.history(Some(&first), &rev, 100))
        .expect("history");
    let ids: Vec<&str> = history.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [c3.as_str(), c2.as_str()]);
    assert_eq!(history[0].summary(), "third");
    assert_eq!(history[1].author, "Alice Author <alice@example.com>");
    let all = rt.block_on(src.history(None, &rev, 100)).expect("history");
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].message.trim_end(), "first\n\nbody");
    let limited = rt.block_on(src.history(None, &rev, 1)).expect("history");
    assert_eq!(limited.len(), 1);

    // A subdirectory that does not exist is refused.
    let bad = GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("c"))
        .path("deploy/staging")
        .build()
        .expect("build");
    let err = rt
        .block_on(bad.snapshot(&rev, &Cancel::new()))
        .expect_err("no such dir");
    assert!(matches!(err, SourceError::Rejected { .. }), "{err:?}");
}

#[test]
fn history_on_a_shallow_cache_stops_at_the_boundary() {
    let fx = Fixture::new();
    fx.commit(&[("f", "1")], "one");
    let two = fx.commit(&[("f", "2")], "two");
    fx.push();
    let rt = runtime();
    let src = source(&fx, &fx.url_file(), ReferencePolicy::branch("main"), "c");
    let rev = rt.block_on(src.poll()).expect("poll");
    let history = rt.block_on(src.history(None, &rev, 10)).expect("history");
    let ids: Vec<&str> = history.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [two.as_str()], "depth 1 keeps only the release commit");
    let three = fx.commit(&[("f", "3")], "three");
    fx.push();
    let next = rt.block_on(src.poll()).expect("poll");
    assert_eq!(next.id, three);
    let history = rt
        .block_on(src.history(Some(&rev), &next, 10))
        .expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, three);
}

#[test]
fn concurrent_polls_of_one_source_agree() {
    let fx = Fixture::new();
    let id = fx.commit(&[("f", "1")], "one");
    fx.push();
    let rt = runtime();
    let src = source(&fx, &fx.url_file(), ReferencePolicy::branch("main"), "c");
    let results = rt.block_on(async {
        let a = src.clone();
        let b = src.clone();
        let (x, y) = tokio::join!(a.poll(), b.poll());
        vec![x, y]
    });
    for r in results {
        assert_eq!(r.expect("poll").id, id);
    }
}

#[test]
fn many_changes_keep_the_cache_usable_and_packs_bounded() {
    let fx = Fixture::new();
    fx.commit(&[("f", "0")], "zero");
    fx.push();
    let rt = runtime();
    let src = source(&fx, &fx.url_file(), ReferencePolicy::branch("main"), "c");
    let mut first = None;
    for i in 1..=70 {
        let id = fx.commit(&[("f", &i.to_string())], &format!("change {i}"));
        fx.push();
        let rev = rt.block_on(src.poll()).expect("poll");
        assert_eq!(rev.id, id, "poll {i}");
        let snap = rt
            .block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snapshot");
        assert_eq!(snap.get("f"), Some(i.to_string().as_bytes()));
        first.get_or_insert(rev);
    }
    let packs = std::fs::read_dir(src.cache_dir().join("objects/pack"))
        .expect("pack dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
        .count();
    assert!(packs <= 51, "{packs} packs");
    // Earlier revisions are still readable after consolidation.
    let first = first.expect("polled");
    let snap = rt
        .block_on(src.snapshot(&first, &Cancel::new()))
        .expect("old snapshot");
    assert_eq!(snap.get("f"), Some(&b"1"[..]));
}

#[test]
fn ancestry_is_answered_from_full_history_and_unknown_past_a_shallow_boundary() {
    let fx = Fixture::new();
    let one = fx.commit(&[("f", "1")], "one");
    let two = fx.commit(&[("f", "2")], "two");
    fx.push();
    let rt = runtime();
    let rev = |id: &str| gitops_core::Revision::new("main", id.to_owned());
    let full = GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("full"))
        .depth(None)
        .build()
        .expect("build");
    rt.block_on(full.poll()).expect("poll");
    let ask = |src: &GitSource, a: &str, d: &str| {
        rt.block_on(src.is_ancestor(&rev(a), &rev(d)))
            .expect("is_ancestor")
    };
    assert_eq!(ask(&full, &one, &two), Some(true));
    assert_eq!(ask(&full, &two, &one), Some(false));
    assert_eq!(ask(&full, &two, &two), Some(true));
    // A fork of `one`: not a descendant of `two`.
    git(&fx.work, &["checkout", "-q", "-b", "fork", &one]);
    let fork = fx.commit(&[("g", "x")], "fork");
    fx.push();
    let fetched = GitSource::builder(fx.url_file(), ReferencePolicy::branch("fork"))
        .cache_dir(fx.cache("full"))
        .depth(None)
        .build()
        .expect("build");
    rt.block_on(fetched.poll()).expect("poll the fork");
    assert_eq!(ask(&full, &two, &fork), Some(false));
    assert_eq!(ask(&full, &one, &fork), Some(true));

    let shallow = source(
        &fx,
        &fx.url_file(),
        ReferencePolicy::branch("main"),
        "shallow",
    );
    rt.block_on(shallow.poll()).expect("poll");
    assert_eq!(
        ask(&shallow, &one, &two),
        None,
        "depth 1 cannot see the parent"
    );
}
