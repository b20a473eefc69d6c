//! SSH-signed commits and tags (signed by git with ssh-keygen), verified in
//! process: good, unsigned, wrong key, tampered; modes Head, Tag, TagAndHead;
//! a key's validity window (against the committer or tagger time, as git
//! does); `cert-authority` lines refused.

mod support;

use gitops_core::{Cancel, Revision, Source};
use gitops_git::{AllowedSigners, GitSource, ReferencePolicy, VerifyMode};
use support::{
    Fixture, expect_verification, git, git_cmd, git_stdin, runtime, ssh_keygen, use_signing_key,
};

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

/// Runs git with `GIT_COMMITTER_DATE` (also the tagger date of a tag).
fn git_dated(fx: &Fixture, date: &str, args: &[&str]) {
    let out = git_cmd(&fx.work)
        .env("GIT_COMMITTER_DATE", date)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What git itself says of `object`'s signature with the same allowed
/// signers file (git passes the committer or tagger time to ssh-keygen).
fn git_accepts(fx: &Fixture, signers: &std::path::Path, verb: &str, object: &str) -> bool {
    let file = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    git_cmd(&fx.work)
        .args(["-c", &file, verb, object])
        .output()
        .expect("git verify")
        .status
        .success()
}

#[test]
fn a_key_only_vouches_for_what_is_dated_inside_its_window() {
    let fx = Fixture::new();
    let (key, public) = ssh_keygen(fx.dir.path(), "rotating");
    let text = format!(
        "release@example.com valid-after=\"20200101Z\",valid-before=\"20201231Z\" {public}\n"
    );
    let file = fx.dir.path().join("allowed_signers");
    std::fs::write(&file, &text).expect("write");
    let keys = Keys {
        good: key.clone(),
        wrong: key.clone(),
        signers: AllowedSigners::parse(&text).expect("allowed signers"),
    };
    let rt = runtime();
    let src = source(
        &fx,
        ReferencePolicy::branch("main"),
        VerifyMode::Head,
        &keys,
        "w",
    );
    use_signing_key(&fx.work, &key);
    let commit_at = |date: &str, content: &str| {
        std::fs::write(fx.work.join("f"), content).expect("write");
        git(&fx.work, &["add", "-A"]);
        git_dated(&fx, date, &["commit", "-q", "-S", "-m", content]);
        fx.push();
        fx.head()
    };

    let early = commit_at("2019-06-01T12:00:00Z", "before the window");
    let err = rt.block_on(src.poll()).expect_err("not yet valid");
    expect_verification(
        err,
        &early,
        "not valid until 2020-01-01T00:00:00Z (valid-after)",
    );
    assert!(!git_accepts(&fx, &file, "verify-commit", &early));

    let inside = commit_at("2020-06-01T12:00:00Z", "inside the window");
    assert_eq!(rt.block_on(src.poll()).expect("inside").id, inside);
    assert!(git_accepts(&fx, &file, "verify-commit", &inside));

    let late = commit_at("2021-06-01T12:00:00Z", "after the window");
    let err = rt.block_on(src.poll()).expect_err("expired");
    expect_verification(err, &late, "expired at 2020-12-31T00:00:00Z (valid-before)");
    assert!(err_mentions_line(&rt, &src, 1));
    assert!(!git_accepts(&fx, &file, "verify-commit", &late));

    // Tags: the tagger time counts.
    git_dated(
        &fx,
        "2020-07-01T00:00:00Z",
        &["tag", "-s", "v1.0.0", "-m", "in"],
    );
    git_dated(
        &fx,
        "2022-01-01T00:00:00Z",
        &["tag", "-s", "v1.1.0", "-m", "out"],
    );
    fx.push();
    let tag = |name: &str| {
        source(
            &fx,
            ReferencePolicy::tag(name),
            VerifyMode::Tag,
            &keys,
            name,
        )
    };
    assert_eq!(
        rt.block_on(tag("v1.0.0").poll()).expect("tag inside").id,
        late
    );
    assert!(git_accepts(&fx, &file, "verify-tag", "v1.0.0"));
    let err = rt.block_on(tag("v1.1.0").poll()).expect_err("tag after");
    expect_verification(err, &late, "tag v1.1.0: the key");
    assert!(!git_accepts(&fx, &file, "verify-tag", "v1.1.0"));
}

fn err_mentions_line(rt: &tokio::runtime::Runtime, src: &GitSource, line: usize) -> bool {
    let err = rt.block_on(src.poll()).expect_err("still refused");
    err.to_string()
        .contains(&format!("(allowed signers line {line})"))
}

#[test]
fn cert_authority_lines_are_refused_at_parse_naming_the_line() {
    let fx = Fixture::new();
    let (_, public) = ssh_keygen(fx.dir.path(), "ca");
    let text = format!(
        "# release signers\nrelease@example.com {public}\n*@example.com cert-authority {public}\n"
    );
    let err = AllowedSigners::parse(&text).expect_err("cert-authority");
    assert_eq!(err.line, 3);
    assert!(
        err.to_string()
            .starts_with("allowed signers line 3: cert-authority: certificates are not supported"),
        "{err}"
    );
}
