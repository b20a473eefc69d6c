//! `GitPromoter`: promotions recorded as branches and annotated tags, in a
//! local repository and over HTTP.

mod support;

use gitops_core::Source;
use gitops_git::{GitPromoter, GitSource, Identity, PromotionRef, ReferencePolicy};
use support::http::HttpServer;
use support::{Fixture, git, runtime};

fn source(fx: &Fixture, url: String, cache: &str) -> GitSource {
    GitSource::builder(url, ReferencePolicy::branch("main"))
        .cache_dir(fx.cache(cache))
        .build()
        .expect("source")
}

#[test]
fn a_promotion_over_http_creates_an_annotated_tag_and_moves_a_branch() {
    let fx = Fixture::new();
    let first = fx.commit(&[("app.yaml", "kind: App\n")], "release one");
    fx.push();
    git(&fx.remote, &["config", "http.receivepack", "true"]);
    let server = HttpServer::start(&fx.root, None, None);
    let rt = runtime();
    let src = source(&fx, server.url("repo.git"), "http");
    let tags = GitPromoter::builder(&src, PromotionRef::Tag("passed-{stage}-{short}".into()))
        .tagger(Identity::new("Pipeline", "pipeline@example.com"))
        .build()
        .expect("promoter");
    let branch = GitPromoter::builder(&src, PromotionRef::Branch("env/{stage}".into()))
        .build()
        .expect("promoter");
    rt.block_on(async {
        let rev = src.poll().await.expect("poll");
        let tag = tags
            .promote_revision("staging", &rev)
            .await
            .expect("tagged");
        assert_eq!(tag, format!("refs/tags/passed-staging-{}", &first[..12]));
        let moved = branch
            .promote_revision("production", &rev)
            .await
            .expect("branch moved");
        assert_eq!(moved, "refs/heads/env/production");
        // A tag is never moved: the same name at another commit is refused.
        let second = fx.commit(&[("app.yaml", "kind: App\nmetadata: {}\n")], "two");
        // Only main: a mirror push would delete the promotion refs.
        git(
            &fx.work,
            &["push", "-q", fx.remote.to_str().expect("utf8"), "main"],
        );
        let rev2 = src.poll().await.expect("poll");
        assert_eq!(rev2.id, second);
        let fixed = GitPromoter::builder(&src, PromotionRef::Tag("release-{stage}".into()))
            .build()
            .expect("promoter");
        fixed
            .promote_revision("prod", &rev)
            .await
            .expect("first tag");
        // A repeat (another tag object: another tagger) finds its own tag.
        let repeat = GitPromoter::builder(&src, PromotionRef::Tag("release-{stage}".into()))
            .tagger(Identity::new("Restarted", "restarted@example.com"))
            .build()
            .expect("promoter");
        assert_eq!(
            repeat
                .promote_revision("prod", &rev)
                .await
                .expect("a repeated promotion is a no-op"),
            "refs/tags/release-prod"
        );
        let err = fixed
            .promote_revision("prod", &rev2)
            .await
            .expect_err("an existing tag is never moved");
        assert!(err.to_string().contains("release-prod"), "{err}");
        assert!(err.to_string().contains(&first), "names where it is: {err}");
        let moved = branch
            .promote_revision("production", &rev2)
            .await
            .expect("branch moved again");
        assert_eq!(moved, "refs/heads/env/production");
    });
    let tagged = git(
        &fx.remote,
        &[
            "for-each-ref",
            "--format=%(objecttype) %(*objectname) %(taggername) %(contents:subject)",
            &format!("refs/tags/passed-staging-{}", &first[..12]),
        ],
    );
    assert_eq!(
        tagged,
        format!("tag {first} Pipeline Promoted past stage staging"),
        "an annotated tag naming the stage"
    );
    assert_eq!(
        git(&fx.remote, &["rev-parse", "release-prod^{commit}"]),
        first,
        "the tag stayed where it was"
    );
    assert_eq!(
        git(&fx.remote, &["rev-parse", "refs/heads/env/production"]),
        git(&fx.remote, &["rev-parse", "main"])
    );
}

#[test]
fn a_promotion_in_a_local_repository_is_idempotent() {
    let fx = Fixture::new();
    let first = fx.commit(&[("app.yaml", "kind: App\n")], "release one");
    fx.push();
    let rt = runtime();
    let src = source(&fx, fx.url_path(), "local");
    let tags = GitPromoter::builder(&src, PromotionRef::Tag("release-{stage}".into()))
        .build()
        .expect("promoter");
    rt.block_on(async {
        let rev = src.poll().await.expect("poll");
        let a = tags.promote_revision("v1", &rev).await.expect("tag");
        let b = tags.promote_revision("v1", &rev).await.expect("again");
        assert_eq!(a, b);
    });
    assert_eq!(
        git(&fx.remote, &["rev-parse", "release-v1^{commit}"]),
        first
    );
    assert!(
        GitPromoter::builder(&src, PromotionRef::Branch("bad..name".into()))
            .build()
            .is_err(),
        "an invalid reference is refused when built"
    );
}
