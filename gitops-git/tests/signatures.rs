//! SSH-signed commits and tags (signed by git with ssh-keygen), verified in
//! process: good, unsigned, wrong key, tampered; modes Head, Tag, TagAndHead.

mod support;

use gitops_core::{Cancel, Revision, Source, SourceError};
use gitops_git::{AllowedSigners, GitSource, ReferencePolicy, VerifyMode};
use support::{Fixture, git, git_stdin, runtime, ssh_keygen, use_signing_key};

struct Keys {
    good: std::path::PathBuf,
    wrong: std::path::PathBuf,
    signers: AllowedSigners,
}

fn keys(fx: &Fixture) -> Keys {
    let (good, good_pub) = ssh_keygen(fx.dir.path(), "trusted");
    let (wrong, _) = ssh_keygen(fx.dir.path(), "stranger");
    let signers = AllowedSigners::parse(&format!(
        "# release signers\nrelease@example.com namespaces=\"git\" {good_pub}\n"
    ))
    .expect("allowed signers");
    Keys {
        good,
        wrong,
        signers,
    }
}

fn signed_commit(fx: &Fixture, key: &std::path::Path, file: &str, message: &str) -> String {
    use_signing_key(&fx.work, key);
    std::fs::write(fx.work.join("f"), file).expect("write");
    git(&fx.work, &["add", "-A"]);
    git(&fx.work, &["commit", "-q", "-S", "-m", message]);
    fx.head()
}

fn source(
    fx: &Fixture,
    policy: ReferencePolicy,
    mode: VerifyMode,
    keys: &Keys,
    cache: &str,
) -> GitSource {
    GitSource::builder(fx.url_file(), policy)
        .cache_dir(fx.cache(cache))
        .verify(mode, keys.signers.clone())
        .build()
        .expect("build")
}

fn expect_verification(err: SourceError, commit: &str, reason: &str) {
    match &err {
        SourceError::Verification {
            commit: c,
            reason: r,
        } => {
            assert_eq!(c, commit, "{err}");
            assert!(r.contains(reason), "reason {r:?} should mention {reason:?}");
        }
        other => panic!("expected a verification error, got {other:?}"),
    }
    assert!(!err.is_transient());
}

#[test]
fn head_mode_good_unsigned_wrong_key_tampered() {
    let fx = Fixture::new();
    let keys = keys(&fx);
    let rt = runtime();
    let src = source(
        &fx,
        ReferencePolicy::branch("main"),
        VerifyMode::Head,
        &keys,
        "c",
    );

    let good = signed_commit(&fx, &keys.good, "good", "good release");
    fx.push();
    let rev = rt.block_on(src.poll()).expect("good signature");
    assert_eq!(rev.id, good);
    assert_eq!(
        rt.block_on(src.snapshot(&rev, &Cancel::new()))
            .expect("snap")
            .get("f"),
        Some(&b"good"[..])
    );

    let unsigned = fx.commit(&[("f", "unsigned")], "unsigned");
    fx.push();
    let err = rt.block_on(src.poll()).expect_err("unsigned");
    expect_verification(err, &unsigned, "not signed");
    // Nothing of it is deployed: the snapshot is refused too.
    let err = rt
        .block_on(src.snapshot(&Revision::new("main", unsigned.clone()), &Cancel::new()))
        .expect_err("snapshot of an unsigned commit");
    expect_verification(err, &unsigned, "not signed");
    assert_eq!(src.last_good().map(|r| r.id), Some(good.clone()));

    let wrong = signed_commit(&fx, &keys.wrong, "wrong", "signed by a stranger");
    fx.push();
    let err = rt.block_on(src.poll()).expect_err("wrong key");
    expect_verification(err, &wrong, "not in the allowed signers");

    // Tamper with a good signed commit: same signature, different message.
    let signed = signed_commit(&fx, &keys.good, "ok", "deploy 1 replica");
    let raw = git(&fx.work, &["cat-file", "commit", &signed]);
    let forged = raw.replace("deploy 1 replica", "deploy 100 replicas") + "\n";
    let tampered = git_stdin(
        &fx.work,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(forged.as_bytes()),
    );
    git(&fx.work, &["update-ref", "refs/heads/main", &tampered]);
    fx.push();
    let err = rt.block_on(src.poll()).expect_err("tampered");
    expect_verification(err, &tampered, "bad signature");

    // Back to a properly signed commit.
    git(&fx.work, &["update-ref", "refs/heads/main", &signed]);
    fx.push();
    assert_eq!(rt.block_on(src.poll()).expect("signed again").id, signed);
}

#[test]
fn tag_modes() {
    let fx = Fixture::new();
    let keys = keys(&fx);
    let rt = runtime();

    // An unsigned commit with a signed tag.
    let unsigned = fx.commit(&[("f", "1")], "one");
    use_signing_key(&fx.work, &keys.good);
    git(&fx.work, &["tag", "-s", "v1.0.0", "-m", "release 1.0.0"]);
    fx.push();
    let tag_only = source(
        &fx,
        ReferencePolicy::semver("1.x"),
        VerifyMode::Tag,
        &keys,
        "t1",
    );
    let rev = rt.block_on(tag_only.poll()).expect("signed tag");
    assert_eq!(rev.id, unsigned);
    assert_eq!(rev.reference, "v1.0.0");
    let both = source(
        &fx,
        ReferencePolicy::tag("v1.0.0"),
        VerifyMode::TagAndHead,
        &keys,
        "t2",
    );
    let err = rt.block_on(both.poll()).expect_err("commit unsigned");
    expect_verification(err, &unsigned, "not signed");

    // Signed commit and signed tag: TagAndHead passes.
    let signed = signed_commit(&fx, &keys.good, "2", "two");
    git(&fx.work, &["tag", "-s", "v1.1.0", "-m", "release 1.1.0"]);
    fx.push();
    let both = source(
        &fx,
        ReferencePolicy::tag("v1.1.0"),
        VerifyMode::TagAndHead,
        &keys,
        "t3",
    );
    assert_eq!(rt.block_on(both.poll()).expect("both signed").id, signed);

    // Unsigned annotated tag, lightweight tag, tag signed by a stranger.
    git(&fx.work, &["tag", "-a", "v1.2.0", "-m", "unsigned tag"]);
    git(&fx.work, &["tag", "v1.3.0"]);
    use_signing_key(&fx.work, &keys.wrong);
    git(&fx.work, &["tag", "-s", "v1.4.0", "-m", "stranger"]);
    fx.push();
    for (tag, reason) in [
        ("v1.2.0", "tag is not signed"),
        ("v1.3.0", "lightweight"),
        ("v1.4.0", "not in the allowed signers"),
    ] {
        let src = source(&fx, ReferencePolicy::tag(tag), VerifyMode::Tag, &keys, tag);
        let err = rt.block_on(src.poll()).expect_err(tag);
        expect_verification(err, &signed, reason);
    }
    // The semver source now selects v1.4.0, signed by a stranger: refused.
    let err = rt.block_on(tag_only.poll()).expect_err("stranger's tag");
    expect_verification(err, &signed, "v1.4.0");

    // Tag verification needs a tag policy.
    assert!(
        GitSource::builder(fx.url_file(), ReferencePolicy::branch("main"))
            .cache_dir(fx.cache("bad"))
            .verify(VerifyMode::Tag, keys.signers.clone())
            .build()
            .is_err()
    );
}
