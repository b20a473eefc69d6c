//! Every URL kind against a real server started by the test: `git daemon`
//! (git://), `git http-backend` over HTTP, and ssh through a shim.

mod support;

use gitops_core::{Cancel, Source, SourceError};
use gitops_git::{Credentials, GitSource, ReferencePolicy, SshOptions};
use support::http::HttpServer;
use support::{Fixture, GitDaemon, runtime};

#[test]
fn git_daemon_unreachable_then_back() {
    let fx = Fixture::new();
    let first = fx.commit(&[("a", "1")], "one");
    fx.push();
    let mut daemon = GitDaemon::start(&fx.root);
    let port = daemon.port;
    let src = GitSource::builder(daemon.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("c"))
        .build()
        .expect("build");
    let rt = runtime();
    let polled = rt.block_on(src.poll_detailed()).expect("poll");
    assert_eq!(polled.revision.id, first);
    let noop = rt.block_on(src.poll_detailed()).expect("poll");
    assert!(!noop.pack_received);
    assert_eq!(noop.revision, polled.revision);

    daemon.stop();
    let err = rt.block_on(src.poll()).expect_err("daemon down");
    assert!(matches!(err, SourceError::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&format!("last good revision main@sha1:{first}")),
        "{text}"
    );
    // The last good revision is still readable.
    let last = src.last_good().expect("last good");
    let snap = rt
        .block_on(src.snapshot(&last, &Cancel::new()))
        .expect("snapshot while down");
    assert_eq!(snap.get("a"), Some(&b"1"[..]));

    let second = fx.commit(&[("a", "2")], "two");
    fx.push();
    let _daemon = GitDaemon::start_on(&fx.root, port);
    let rev = rt.block_on(src.poll()).expect("poll after restart");
    assert_eq!(rev.id, second);
}

#[test]
fn http_noop_poll_sends_no_fetch_and_5xx_is_transient() {
    let fx = Fixture::new();
    let first = fx.commit(&[("dir/a.yaml", "1")], "one");
    fx.push();
    let server = HttpServer::start(&fx.root, None, None);
    let src = GitSource::builder(server.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("c"))
        .build()
        .expect("build");
    let rt = runtime();
    let rev = rt.block_on(src.poll()).expect("poll");
    assert_eq!(rev.id, first);
    assert_eq!(
        rt.block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snap")
            .get("dir/a.yaml"),
        Some(&b"1"[..])
    );
    let fetches = server
        .stats
        .fetch_commands
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(fetches >= 1);
    let noop = rt.block_on(src.poll_detailed()).expect("poll");
    assert!(!noop.pack_received);
    assert_eq!(noop.revision, rev);
    assert_eq!(
        server
            .stats
            .fetch_commands
            .load(std::sync::atomic::Ordering::SeqCst),
        fetches,
        "a no-op poll only lists references"
    );

    server.set_down(true);
    let err = rt.block_on(src.poll()).expect_err("503");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("still available"), "{err}");
    server.set_down(false);
    let second = fx.commit(&[("dir/a.yaml", "2")], "two");
    fx.push();
    assert_eq!(rt.block_on(src.poll()).expect("back").id, second);
}

#[test]
fn http_basic_bearer_and_callback_credentials() {
    let fx = Fixture::new();
    let first = fx.commit(&[("a", "1")], "one");
    fx.push();
    let rt = runtime();

    let basic = HttpServer::start(&fx.root, Some(("deploy", "s3cret-basic")), None);
    let src = GitSource::builder(basic.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("basic"))
        .allow_insecure_http_credentials(true)
        .credentials(Credentials::basic("deploy", "s3cret-basic"))
        .build()
        .expect("build");
    assert_eq!(rt.block_on(src.poll()).expect("basic").id, first);
    assert!(!format!("{src:?}").contains("s3cret-basic"));

    // Credentials in the URL are moved out of it (and out of the location).
    let url = basic
        .url("repo.git")
        .replace("http://", "http://deploy:s3cret-basic@");
    let src = GitSource::builder(url, ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("in-url"))
        .allow_insecure_http_credentials(true)
        .build()
        .expect("build");
    assert!(!src.location().contains("s3cret"));
    assert_eq!(rt.block_on(src.poll()).expect("url credentials").id, first);

    let bearer = HttpServer::start(&fx.root, None, Some("tok-123-bearer"));
    let src = GitSource::builder(bearer.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("bearer"))
        .allow_insecure_http_credentials(true)
        .credentials(Credentials::bearer("tok-123-bearer"))
        .build()
        .expect("build");
    assert_eq!(rt.block_on(src.poll()).expect("bearer").id, first);

    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let src = GitSource::builder(basic.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("callback"))
        .allow_insecure_http_credentials(true)
        .credentials_callback(std::sync::Arc::new(move |req| {
            assert!(req.location.starts_with("http://127.0.0.1:"));
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(Credentials::basic("deploy", "s3cret-basic"))
        }))
        .build()
        .expect("build");
    assert_eq!(rt.block_on(src.poll()).expect("callback").id, first);
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // No credentials at all: an authentication error, not a prompt.
    let src = GitSource::builder(basic.url("repo.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("none"))
        .allow_insecure_http_credentials(true)
        .build()
        .expect("build");
    let err = rt.block_on(src.poll()).expect_err("no credentials");
    assert!(matches!(err, SourceError::Authentication { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[test]
fn ssh_urls_through_a_shim() {
    let fx = Fixture::new();
    let first = fx.commit(&[("a", "1")], "one");
    fx.push();
    let shim = support::ssh_shim(fx.dir.path());
    let rt = runtime();
    let urls = [
        format!("ssh://git@localhost{}", fx.url_path()),
        format!("git@localhost:{}", fx.url_path()),
    ];
    for (i, url) in urls.into_iter().enumerate() {
        let src = GitSource::builder(url.clone(), ReferencePolicy::branch("main"))
            .cache_dir(fx.cache(&format!("ssh{i}")))
            .ssh(SshOptions {
                command: Some(shim.to_str().expect("utf8").to_owned()),
                key: Some(fx.dir.path().join("id_test")),
                known_hosts: Some(fx.dir.path().join("known_hosts")),
            })
            .build()
            .expect("build");
        let rev = rt.block_on(src.poll()).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(fx.dir.path().join("ssh-shim.log"));
            panic!("{url}: {e}\nshim log: {log:?}")
        });
        assert_eq!(rev.id, first);
        let noop = rt.block_on(src.poll_detailed()).expect("poll");
        assert!(!noop.pack_received);
        let snap = rt
            .block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snap");
        assert_eq!(snap.get("a"), Some(&b"1"[..]));
    }
    let log = std::fs::read_to_string(fx.dir.path().join("ssh-shim.log")).expect("shim log");
    assert!(log.contains("git-upload-pack"), "{log}");
    assert!(log.contains("BatchMode=yes"), "{log}");
    assert!(log.contains("StrictHostKeyChecking=yes"), "{log}");
    assert!(log.contains("id_test"), "{log}");
}

#[test]
fn a_silent_server_times_out_as_transient() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let fx = Fixture::new();
    let rt = runtime();
    for url in [
        format!("http://127.0.0.1:{port}/repo.git"),
        format!("git://127.0.0.1:{port}/repo.git"),
    ] {
        let src = GitSource::builder(url.clone(), ReferencePolicy::branch("main"))
            .cache_dir(fx.cache(if url.starts_with("http") { "h" } else { "g" }))
            .fetch_timeout(std::time::Duration::from_millis(500))
            .build()
            .expect("build");
        let err = rt.block_on(src.poll()).expect_err("timeout");
        assert!(
            matches!(err, SourceError::Unavailable { .. }),
            "{url}: {err:?}"
        );
        assert!(err.is_transient());
        assert!(err.to_string().contains("timed out"), "{url}: {err}");
        assert!(
            err.to_string().contains("no revision has been fetched yet"),
            "{err}"
        );
        // A second poll while the first fetch may still be stuck also fails as transient.
        let err = rt
            .block_on(src.poll())
            .expect_err("still stuck or timed out");
        assert!(err.is_transient(), "{err:?}");
    }
    // git:// has no socket timeout in gix: the stuck worker thread is left behind
    // (a runtime drop would wait for it).
    rt.shutdown_background();
}

#[test]
fn a_missing_repository_is_reported() {
    let fx = Fixture::new();
    let server = HttpServer::start(&fx.root, None, None);
    let rt = runtime();
    let src = GitSource::builder(server.url("nope.git"), ReferencePolicy::branch("main"))
        .cache_dir(fx.cache("c"))
        .build()
        .expect("build");
    let err = rt.block_on(src.poll()).expect_err("404");
    assert!(err.to_string().contains("nope.git"), "{err}");
}

#[test]
fn credentials_over_plain_http_are_refused_unless_allowed() {
    let fx = Fixture::new();
    fx.commit(&[("a", "1")], "one");
    fx.push();
    let rt = runtime();
    let server = HttpServer::start(&fx.root, Some(("deploy", "s3cret-plain")), None);
    for (name, credentials) in [
        ("basic", Credentials::basic("deploy", "s3cret-plain")),
        ("bearer", Credentials::bearer("s3cret-plain")),
    ] {
        let src = GitSource::builder(server.url("repo.git"), ReferencePolicy::branch("main"))
            .cache_dir(fx.cache(name))
            .credentials(credentials)
            .build()
            .expect("build");
        let err = rt.block_on(src.poll()).expect_err("refused");
        assert!(
            matches!(err, SourceError::Authentication { .. }),
            "{name}: {err:?}"
        );
        assert!(
            err.to_string().contains("over plain http://"),
            "{name}: {err}"
        );
    }
    assert_eq!(
        server
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent"
    );
}

/// A `kill -9` mid-fetch leaves lock files in the cache (`shallow.lock`, a
/// ref's `.lock`); the next process must not fail on them for good (found
/// by the agent's soak harness). Locks this process takes later stay.
#[test]
fn lock_files_a_killed_process_left_in_the_cache_are_swept() {
    let fx = Fixture::new();
    fx.commit(&[("a", "1")], "one");
    fx.push();
    let cache = fx.cache("c");
    let build = || {
        GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
            .cache_dir(&cache)
            .build()
            .expect("build")
    };
    let rt = runtime();
    rt.block_on(build().poll()).expect("first poll");
    let second = fx.commit(&[("a", "2")], "two");
    fx.push();
    // What a killed fetch leaves behind, from before this process used the cache.
    let long_ago =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let mut stale = vec![cache.join("shallow.lock"), cache.join("packed-refs.lock")];
    let refs = cache.join("refs").join("remotes").join("origin");
    std::fs::create_dir_all(&refs).expect("mkdir");
    stale.push(refs.join("main.lock"));
    for lock in &stale {
        let file = std::fs::File::create(lock).expect("lock");
        file.set_modified(long_ago).expect("mtime");
    }
    // A lock taken now (by a live user of the cache) is not touched.
    let fresh = cache.join("fresh.lock");
    std::fs::write(&fresh, "").expect("lock");
    let rev = rt.block_on(build().poll()).expect("a poll after the crash");
    assert_eq!(rev.id, second);
    for lock in &stale {
        assert!(!lock.exists(), "{} was left", lock.display());
    }
    assert!(fresh.exists(), "a live lock was removed");
}

#[test]
fn an_endless_fetch_timeout_polls_and_reads() {
    let fx = Fixture::new();
    fx.commit(&[("a.yaml", "a: 1\n")], "one");
    fx.push();
    let server = HttpServer::start(&fx.root, None, None);
    let rt = runtime();
    for (name, url) in [("file", fx.url_file()), ("http", server.url("repo.git"))] {
        let src = GitSource::builder(url, ReferencePolicy::branch("main"))
            .cache_dir(fx.cache(name))
            .fetch_timeout(std::time::Duration::MAX)
            .build()
            .expect("build");
        let rev = rt.block_on(src.poll()).expect("poll");
        let snap = rt
            .block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snapshot");
        assert_eq!(snap.get("a.yaml"), Some(&b"a: 1\n"[..]), "{name}");
    }
}
