//! A failing authenticated fetch never shows the secret: not in the error's
//! `Display`, `Debug` or source chain, not in any log line (all tracing output
//! captured at TRACE level), not in the source's `Debug`.

mod support;

use gitops_core::{Source, SourceError};
use gitops_git::{Credentials, GitSource, ReferencePolicy};
use support::http::HttpServer;
use support::{Fixture, Logs, runtime};

fn all_text(err: &SourceError) -> String {
    let mut text = format!("{err}\n{err:?}\n");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    text
}

#[test]
fn wrong_credentials_never_leak() {
    let logs = Logs::capture();

    let fx = Fixture::new();
    fx.commit(&[("a", "1")], "one");
    fx.push();
    let server = HttpServer::start(&fx.root, Some(("deploy", "right-password")), None);
    let rt = runtime();
    let secrets = [
        "wrong-password-XYZZY",
        "bearer-token-PLUGH",
        "url-password-FROTZ",
        "url-token-GRUE",
    ];

    let cases: Vec<(String, GitSource)> = vec![
        (
            "basic".into(),
            GitSource::builder(server.url("repo.git"), ReferencePolicy::branch("main"))
                .cache_dir(fx.cache("basic"))
                .allow_insecure_http_credentials(true)
                .credentials(Credentials::basic("deploy", secrets[0]))
                .build()
                .expect("build"),
        ),
        (
            "bearer".into(),
            GitSource::builder(server.url("repo.git"), ReferencePolicy::branch("main"))
                .cache_dir(fx.cache("bearer"))
                .allow_insecure_http_credentials(true)
                .credentials(Credentials::bearer(secrets[1]))
                .build()
                .expect("build"),
        ),
        (
            "url".into(),
            GitSource::builder(
                server
                    .url("repo.git")
                    .replace("http://", &format!("http://deploy:{}@", secrets[2])),
                ReferencePolicy::branch("main"),
            )
            .cache_dir(fx.cache("url"))
            .allow_insecure_http_credentials(true)
            .build()
            .expect("build"),
        ),
        (
            "token as url user".into(),
            GitSource::builder(
                server
                    .url("repo.git")
                    .replace("http://", &format!("http://{}@", secrets[3])),
                ReferencePolicy::branch("main"),
            )
            .cache_dir(fx.cache("token"))
            .allow_insecure_http_credentials(true)
            .build()
            .expect("build"),
        ),
    ];
    let mut texts = String::new();
    for (name, src) in &cases {
        let err = rt.block_on(src.poll()).expect_err("wrong credentials");
        assert!(
            matches!(err, SourceError::Authentication { .. }),
            "{name}: {err:?}"
        );
        assert!(!err.is_transient(), "{name}");
        assert!(
            err.to_string().contains("authentication failed"),
            "{name}: a clear error: {err}"
        );
        texts.push_str(&all_text(&err));
        texts.push_str(&format!("{src:?}\n{}\n", src.location()));
    }
    // The server did see the secrets (so the test is meaningful).
    let seen = server.stats.log.lock().expect("log").join("\n");
    assert!(
        server
            .stats
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3
    );
    assert!(seen.contains("Bearer bearer-token-PLUGH"), "{seen}");

    let logs = logs.text();
    assert!(
        logs.contains("git poll failed"),
        "logs were captured: {logs}"
    );
    for secret in secrets {
        assert!(
            !texts.contains(secret),
            "secret {secret} in errors: {texts}"
        );
        assert!(!logs.contains(secret), "secret {secret} in logs: {logs}");
    }
}
