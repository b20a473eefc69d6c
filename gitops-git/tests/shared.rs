//! [`SharedRepository`]: sources of one remote share one cache and one
//! fetch per poll round, counted on a real `git http-backend` server.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gitops_core::{Cancel, Source};
use gitops_git::{GitSource, ReferencePolicy, SharedRepository};
use support::http::HttpServer;
use support::{Fixture, git, runtime};

/// Reference listings the server answered (one per contact with the remote).
fn listings(server: &HttpServer) -> usize {
    server
        .stats
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|line| line.contains("/info/refs"))
        .count()
}

#[test]
fn sources_of_one_remote_share_one_fetch_per_poll_round() {
    let fx = Fixture::new();
    let first = fx.commit(
        &[("apps/db/a.conf", "db 1"), ("apps/web/b.conf", "web 1")],
        "one",
    );
    git(&fx.work, &["tag", "v1.0.0"]);
    fx.push();
    let server = HttpServer::start(&fx.root, None, None);
    let url = server.url("repo.git");
    let shared = SharedRepository::open(&url, fx.cache("shared")).expect("open");
    let source = |policy: ReferencePolicy, path: &str| {
        GitSource::builder(url.clone(), policy)
            .path(path)
            .shared(&shared)
            .build()
            .expect("build")
    };
    let db = source(ReferencePolicy::branch("main"), "apps/db");
    let web = source(ReferencePolicy::branch("main"), "apps/web");
    let tagged = source(ReferencePolicy::semver("^1"), "apps/web");
    let rt = runtime();

    // Three polls within the coalescing window: one fetch.
    shared.set_window(Duration::from_secs(60));
    let (a, b, c) = rt.block_on(async { tokio::join!(db.poll(), web.poll(), tagged.poll()) });
    let (a, b, c) = (a.expect("db"), b.expect("web"), c.expect("tagged"));
    assert_eq!(
        (a.id.as_str(), b.id.as_str()),
        (first.as_str(), first.as_str())
    );
    assert_eq!(c.reference, "v1.0.0");
    assert_eq!(shared.fetches(), 1);
    assert_eq!(listings(&server), 1, "one reference listing");
    let snapshot = rt
        .block_on(web.snapshot(&b, &Cancel::new()))
        .expect("snapshot");
    assert_eq!(snapshot.get("b.conf"), Some(&b"web 1"[..]));

    // Without a window, polls one after the other each fetch...
    shared.set_window(Duration::ZERO);
    let second = fx.commit(&[("apps/db/a.conf", "db 2")], "two");
    fx.push();
    assert_eq!(rt.block_on(db.poll()).expect("db").id, second);
    assert_eq!(rt.block_on(web.poll()).expect("web").id, second);
    assert_eq!(shared.fetches(), 3);

    // ...and with one, a fetch that recent still answers.
    shared.set_window(Duration::from_secs(60));
    shared.expire();
    let before = server.stats.requests.load(Ordering::SeqCst);
    for source in [&db, &web, &tagged, &db] {
        rt.block_on(source.poll()).expect("poll");
    }
    assert_eq!(shared.fetches(), 4, "one fetch for four polls");
    assert!(server.stats.requests.load(Ordering::SeqCst) > before);

    // A webhook's expiry makes the next poll fetch, and the new commit shows.
    let third = fx.commit(&[("apps/web/b.conf", "web 3")], "three");
    fx.push();
    assert_eq!(rt.block_on(web.poll()).expect("web").id, second, "stale");
    shared.expire();
    assert_eq!(rt.block_on(web.poll()).expect("web").id, third);
    assert_eq!(rt.block_on(db.poll()).expect("db").id, third);
    assert_eq!(shared.fetches(), 5);
    assert_eq!(listings(&server), 5);
}

#[test]
fn a_source_must_name_the_shared_remote() {
    let fx = Fixture::new();
    fx.commit(&[("a", "1")], "one");
    fx.push();
    let shared = SharedRepository::open(&fx.url_file(), fx.cache("shared")).expect("open");
    let other = GitSource::builder(
        "https://git.example/other.git",
        ReferencePolicy::branch("main"),
    )
    .shared(&shared)
    .build()
    .expect_err("another remote");
    assert!(other.to_string().contains("shared"), "{other}");
    let same = GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
        .shared(&shared)
        .build()
        .expect("the same remote");
    assert_eq!(same.cache_dir(), shared.cache_dir());
}
