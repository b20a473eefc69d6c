//! OpenPGP-signed commits and tags, made by git with the real `gpg` (ed25519
//! and RSA-3072 keys), verified in process: good, unsigned, untrusted key,
//! tampered; a signature made after the key expired; a revoked key; the
//! Tag and TagAndHead modes; SSH and OpenPGP keys trusted together; key
//! files that are refused.

mod support;

use gitops_core::{Cancel, Revision, Source};
use gitops_git::{
    AllowedSigners, GitSource, PgpKeys, PgpKeysError, ReferencePolicy, TrustedSigners, VerifyMode,
};
use support::gpg::Gpg;
use support::{Fixture, expect_verification, git, git_stdin, runtime, ssh_keygen, use_signing_key};

/// Commits `content` to `f`, signed by `key` (at `at`, gpg's faked time).
fn signed_commit(fx: &Fixture, gpg: &Gpg, key: &str, at: Option<&str>, content: &str) -> String {
    std::fs::write(fx.work.join("f"), content).expect("write");
    git(&fx.work, &["add", "-A"]);
    let mut args = gpg.git_config(key, at);
    args.extend(["commit", "-q", "-S", "-m", content].map(String::from));
    git(
        &fx.work,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    fx.push();
    fx.head()
}

/// An annotated tag `name` on HEAD, signed by `key`.
fn signed_tag(fx: &Fixture, gpg: &Gpg, key: &str, name: &str) {
    let mut args = gpg.git_config(key, None);
    args.extend(["tag", "-s", name, "-m", name].map(String::from));
    git(
        &fx.work,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    fx.push();
}

fn source(
    fx: &Fixture,
    policy: ReferencePolicy,
    mode: VerifyMode,
    keys: impl Into<TrustedSigners>,
    cache: &str,
) -> GitSource {
    GitSource::builder(fx.url_file(), policy)
        .cache_dir(fx.cache(cache))
        .verify(mode, keys)
        .build()
        .expect("build")
}

fn head(fx: &Fixture, keys: impl Into<TrustedSigners>, cache: &str) -> GitSource {
    source(
        fx,
        ReferencePolicy::branch("main"),
        VerifyMode::Head,
        keys,
        cache,
    )
}

#[test]
fn head_mode_ed25519_and_rsa_good_unsigned_untrusted_tampered() {
    let fx = Fixture::new();
    let gpg = Gpg::new();
    let ed = gpg.key("Release Bot <bot@example.com>", "ed25519", "never", None);
    let rsa = gpg.key("Release RSA <rsa@example.com>", "rsa3072", "never", None);
    let stranger = gpg.key("Stranger <x@example.com>", "ed25519", "never", None);
    // Two armored blocks in one text, as `cat a.asc b.asc` makes.
    let trusted = PgpKeys::parse(&(gpg.export(&ed) + &gpg.export(&rsa))).expect("keys");
    assert_eq!(trusted.keys().len(), 2);
    assert_eq!(trusted.keys()[0].fingerprint(), ed);
    assert_eq!(
        trusted.keys()[1].user_ids(),
        ["Release RSA <rsa@example.com>"]
    );
    let rt = runtime();
    let src = head(&fx, trusted, "c");

    let good = signed_commit(&fx, &gpg, &ed, None, "ed25519");
    let rev = rt.block_on(src.poll()).expect("ed25519 signature");
    assert_eq!(rev.id, good);
    let snap = rt
        .block_on(src.snapshot(&rev, &Cancel::new()))
        .expect("snapshot");
    assert_eq!(snap.get("f"), Some(&b"ed25519"[..]));
    let good = signed_commit(&fx, &gpg, &rsa, None, "rsa");
    assert_eq!(rt.block_on(src.poll()).expect("RSA signature").id, good);

    let unsigned = fx.commit(&[("f", "unsigned")], "unsigned");
    fx.push();
    let err = rt.block_on(src.poll()).expect_err("unsigned");
    expect_verification(err, &unsigned, "not signed");
    let err = rt
        .block_on(src.snapshot(&Revision::new("main", unsigned.clone()), &Cancel::new()))
        .expect_err("snapshot of an unsigned commit");
    expect_verification(err, &unsigned, "not signed");
    assert_eq!(src.last_good().map(|r| r.id), Some(good.clone()));

    let untrusted = signed_commit(&fx, &gpg, &stranger, None, "stranger");
    let err = rt.block_on(src.poll()).expect_err("untrusted key");
    expect_verification(
        err,
        &untrusted,
        &format!("not trusted (fingerprint {stranger})"),
    );

    // Same signature, another message: the signed content does not match.
    let signed = signed_commit(&fx, &gpg, &ed, None, "deploy 1 replica");
    let raw = git(&fx.work, &["cat-file", "commit", &signed]);
    let forged = raw.replace("deploy 1 replica", "deploy 100 replicas") + "\n";
    assert!(forged.contains("gpgsig -----BEGIN PGP SIGNATURE-----"));
    let tampered = git_stdin(
        &fx.work,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(forged.as_bytes()),
    );
    git(&fx.work, &["update-ref", "refs/heads/main", &tampered]);
    fx.push();
    let err = rt.block_on(src.poll()).expect_err("tampered");
    expect_verification(err, &tampered, "commit signature: bad signature");
    assert_eq!(src.last_good().map(|r| r.id), Some(good));

    git(&fx.work, &["update-ref", "refs/heads/main", &signed]);
    fx.push();
    assert_eq!(rt.block_on(src.poll()).expect("signed again").id, signed);
}

#[test]
fn a_signature_made_after_the_key_expired_is_refused() {
    let fx = Fixture::new();
    let gpg = Gpg::new();
    // Made on 2020-01-01, valid for one day.
    let key = gpg.key(
        "Rotating <r@example.com>",
        "ed25519",
        "1d",
        Some("20200101T000000"),
    );
    let first_export = gpg.export(&key);
    let rt = runtime();
    let src = head(&fx, PgpKeys::parse(&first_export).expect("keys"), "c");

    // Signed while the key was valid: still deployable after it expired.
    let inside = signed_commit(&fx, &gpg, &key, Some("20200101T120000"), "inside");
    assert_eq!(
        rt.block_on(src.poll()).expect("made while valid").id,
        inside
    );

    // The holder extends the key privately and signs days later: the
    // trusted copy says the key expired before.
    gpg.set_expire(&key, "never", Some("20200101T130000"), None);
    let late = signed_commit(&fx, &gpg, &key, Some("20200105T000000"), "late");
    let err = rt.block_on(src.poll()).expect_err("expired key");
    expect_verification(
        err,
        &late,
        &format!(
            "the OpenPGP key {key} expired at 2020-01-02T00:00:00Z and the signature is dated 2020-01-05T00:00:0"
        ),
    );
    assert_eq!(src.last_good().map(|r| r.id), Some(inside.clone()));

    // With the extension exported, the same commit passes.
    let renewed = head(
        &fx,
        PgpKeys::parse(&gpg.export(&key)).expect("keys"),
        "renewed",
    );
    assert_eq!(rt.block_on(renewed.poll()).expect("renewed key").id, late);
}

#[test]
fn a_signing_subkey_signs_for_its_primary_key_until_it_expires() {
    let fx = Fixture::new();
    let gpg = Gpg::new();
    // The primary key only certifies; a subkey made on 2020-01-01 signs, for a day.
    let at = Some("20200101T000000");
    let (primary, subkey) = gpg.key_with_signing_subkey("Sub <s@example.com>", "1d", at);
    let src = head(
        &fx,
        PgpKeys::parse(&gpg.export(&primary)).expect("keys"),
        "c",
    );
    let rt = runtime();

    let inside = signed_commit(
        &fx,
        &gpg,
        &primary,
        Some("20200101T120000"),
        "by the subkey",
    );
    assert_eq!(
        rt.block_on(src.poll()).expect("subkey signature").id,
        inside
    );

    gpg.set_expire(&primary, "never", Some("20200101T130000"), Some(&subkey));
    let late = signed_commit(&fx, &gpg, &primary, Some("20200105T000000"), "late");
    let err = rt.block_on(src.poll()).expect_err("expired subkey");
    expect_verification(
        err,
        &late,
        &format!("the OpenPGP subkey {subkey} of key {primary} expired at 2020-01-02T00:00:00Z"),
    );
}

#[test]
fn a_revoked_key_vouches_for_nothing() {
    let fx = Fixture::new();
    let gpg = Gpg::new();
    let key = gpg.key("Leaked <l@example.com>", "rsa3072", "never", None);
    let rt = runtime();
    let signed = signed_commit(&fx, &gpg, &key, None, "signed before the leak");
    let before = head(
        &fx,
        PgpKeys::parse(&gpg.export(&key)).expect("keys"),
        "before",
    );
    assert_eq!(
        rt.block_on(before.poll()).expect("not revoked yet").id,
        signed
    );

    gpg.revoke(&key);
    let revoked = head(
        &fx,
        PgpKeys::parse(&gpg.export(&key)).expect("keys"),
        "after",
    );
    let err = rt.block_on(revoked.poll()).expect_err("revoked");
    expect_verification(
        err,
        &signed,
        &format!("the OpenPGP key {key} was revoked at "),
    );
    assert!(revoked.last_good().is_none());
}

#[test]
fn tag_modes_with_openpgp() {
    let fx = Fixture::new();
    let gpg = Gpg::new();
    let rsa = gpg.key("Release RSA <rsa@example.com>", "rsa3072", "never", None);
    let stranger = gpg.key("Stranger <x@example.com>", "ed25519", "never", None);
    let keys = PgpKeys::parse(&gpg.export(&rsa)).expect("keys");
    let rt = runtime();

    let unsigned = fx.commit(&[("f", "1")], "one");
    signed_tag(&fx, &gpg, &rsa, "v1.0.0");
    let semver = source(
        &fx,
        ReferencePolicy::semver("1.x"),
        VerifyMode::Tag,
        keys.clone(),
        "s",
    );
    let rev = rt.block_on(semver.poll()).expect("signed tag");
    assert_eq!(
        (rev.id.as_str(), rev.reference.as_str()),
        (unsigned.as_str(), "v1.0.0")
    );
    let both = source(
        &fx,
        ReferencePolicy::tag("v1.0.0"),
        VerifyMode::TagAndHead,
        keys.clone(),
        "b1",
    );
    let err = rt
        .block_on(both.poll())
        .expect_err("the commit is unsigned");
    expect_verification(err, &unsigned, "not signed");

    let signed = signed_commit(&fx, &gpg, &rsa, None, "two");
    signed_tag(&fx, &gpg, &rsa, "v1.1.0");
    let both = source(
        &fx,
        ReferencePolicy::tag("v1.1.0"),
        VerifyMode::TagAndHead,
        keys.clone(),
        "b2",
    );
    assert_eq!(rt.block_on(both.poll()).expect("both signed").id, signed);

    signed_tag(&fx, &gpg, &stranger, "v1.2.0");
    let err = rt.block_on(semver.poll()).expect_err("a stranger's tag");
    expect_verification(
        err,
        &signed,
        "tag v1.2.0: signed by an OpenPGP key that is not trusted",
    );
}

#[test]
fn ssh_and_openpgp_keys_trusted_together() {
    let fx = Fixture::new();
    let gpg = Gpg::new();
    let pgp = gpg.key("Bot <bot@example.com>", "ed25519", "never", None);
    let (ssh, ssh_pub) = ssh_keygen(fx.dir.path(), "ssh-signer");
    let ssh_only = AllowedSigners::parse(&format!("ops@example.com {ssh_pub}\n")).expect("signers");
    let both = TrustedSigners::new()
        .with_ssh(ssh_only.clone())
        .with_pgp(PgpKeys::parse(&gpg.export(&pgp)).expect("keys"));
    let rt = runtime();
    let src = head(&fx, both, "both");
    let ssh_src = head(&fx, ssh_only, "ssh");

    let by_pgp = signed_commit(&fx, &gpg, &pgp, None, "openpgp");
    assert_eq!(rt.block_on(src.poll()).expect("OpenPGP-signed").id, by_pgp);
    let err = rt
        .block_on(ssh_src.poll())
        .expect_err("no OpenPGP key trusted");
    expect_verification(
        err,
        &by_pgp,
        "an OpenPGP signature, and no OpenPGP key is trusted",
    );

    use_signing_key(&fx.work, &ssh);
    let by_ssh = fx.commit(&[("f", "ssh")], "ssh");
    git(&fx.work, &["commit", "-q", "--amend", "-S", "--no-edit"]);
    fx.push();
    let by_ssh_signed = fx.head();
    assert_ne!(by_ssh, by_ssh_signed);
    assert_eq!(
        rt.block_on(src.poll()).expect("SSH-signed").id,
        by_ssh_signed
    );
    assert_eq!(
        rt.block_on(ssh_src.poll()).expect("SSH-signed").id,
        by_ssh_signed
    );
}

#[test]
fn key_files_that_are_refused() {
    let gpg = Gpg::new();
    let key = gpg.key("Bot <bot@example.com>", "ed25519", "never", None);
    let secret = gpg.run(None, &["--armor", "--export-secret-keys", &key]);
    let err = PgpKeys::parse(&(gpg.export(&key) + &secret)).expect_err("a private key");
    assert_eq!(err, PgpKeysError::PrivateKey { block: 2 });
    let body = |text: &str| text.lines().nth(3).unwrap_or_default().to_owned();
    assert!(!err.to_string().contains(&body(&secret)), "{err}");

    let binary = gpg.run(None, &["--export", &key]);
    assert_eq!(PgpKeys::parse(&binary), Err(PgpKeysError::NoKey));
    let sig = gpg.run(
        None,
        &[
            "--armor",
            "--output",
            "-",
            "--detach-sign",
            "--local-user",
            &key,
            "/dev/null",
        ],
    );
    assert!(matches!(
        PgpKeys::parse(&sig),
        Err(PgpKeysError::Unreadable { block: 1, .. })
    ));
    // A key cut short: refused, naming the block.
    let export = gpg.export(&key);
    let lines: Vec<&str> = export.lines().collect();
    let cut = [&lines[..lines.len() / 2], &lines[lines.len() - 1..]]
        .concat()
        .join("\n");
    let err = PgpKeys::parse(&cut).expect_err("truncated");
    assert!(
        err.to_string().contains("block 1") || err.to_string().contains(&key),
        "{err}"
    );
}
