//! OpenPGP-signed releases through the `gitops-agent` binary, with the real
//! `gpg`: `--verify-pgp-keys` (repeatable, and `;`-separated in
//! `GITOPS_VERIFY_PGP_KEYS`) together with `--verify-signers`, and
//! `--verify-mode`. A commit by an untrusted key is refused with its id and
//! the reason while the last good state stays deployed; a bad key file is
//! named, its content never shown.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use support::git_server::{Dirs, Repo, agent, run, text};
use support::gpg::Gpg;

/// Makes the work repository sign every commit and tag with `key` (gpg).
fn sign_with_pgp(repo: &Repo, gpg: &Gpg, key: &str) {
    let program = gpg.program(None);
    for (name, value) in [
        ("gpg.format", "openpgp"),
        ("gpg.program", program.to_str().expect("utf8")),
        ("user.signingkey", key),
        ("commit.gpgSign", "true"),
    ] {
        run(repo.work(), "git", &["config", name, value]);
    }
}

/// Makes the work repository sign every commit with the SSH key `key`.
fn sign_with_ssh(repo: &Repo, key: &Path) {
    run(repo.work(), "git", &["config", "gpg.format", "ssh"]);
    let key = key.to_str().expect("utf8");
    run(repo.work(), "git", &["config", "user.signingkey", key]);
}

/// An ed25519 SSH key (private key path, public key line).
fn ssh_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("ssh-signer");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
        .arg(&key)
        .output()
        .expect("the tests need ssh-keygen (scripts/test installs openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    (key, public.trim().to_owned())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn expect_refused(out: &Output, commit: &str, reason: &str) {
    let (_, err) = text(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(commit) && err.contains(reason), "{err}");
}

#[test]
fn openpgp_and_ssh_keys_verify_releases_through_the_agent() {
    let repo = Repo::with_files(&[("app.conf", "v0\n")]);
    let dirs = Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let gpg = Gpg::new();
    let ed = gpg.key("Bot <bot@example.com>", "ed25519", "never", None);
    let rsa = gpg.key("Release <rel@example.com>", "rsa3072", "never", None);
    let stranger = gpg.key("Stranger <x@example.com>", "ed25519", "never", None);
    let ed_file = gpg.file("ed.asc", &gpg.export(&ed));
    let rsa_file = gpg.file("rsa.asc", &gpg.export(&rsa));
    let (ssh, ssh_pub) = ssh_key(dirs.dir.path());
    let signers = dirs.secret_file("allowed_signers", &format!("ops@example.com {ssh_pub}\n"));
    let app = dirs.target.join("app.conf");
    let both = |cmd: &mut std::process::Command| {
        cmd.arg("--once")
            .arg("--verify-pgp-keys")
            .arg(&ed_file)
            .arg("--verify-pgp-keys")
            .arg(&rsa_file)
            .arg("--verify-signers")
            .arg(&signers)
            .output()
            .expect("run the agent")
    };

    // The first commit is unsigned: refused, nothing deployed.
    let out = both(&mut agent(&url, &dirs, "error"));
    expect_refused(&out, &repo.head(), "commit is not signed");
    assert!(!app.exists());

    sign_with_pgp(&repo, &gpg, &ed);
    repo.commit(&[("app.conf", "v1\n")], "v1 by ed25519");
    let out = both(&mut agent(&url, &dirs, "error"));
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(read(&app), "v1\n");

    // The keys from the environment, `;`-separated; an RSA-signed commit.
    sign_with_pgp(&repo, &gpg, &rsa);
    repo.commit(&[("app.conf", "v2\n")], "v2 by RSA");
    let keys = format!("{};{}", ed_file.display(), rsa_file.display());
    let out = agent(&url, &dirs, "error")
        .env("GITOPS_VERIFY_PGP_KEYS", keys)
        .arg("--once")
        .output()
        .expect("run the agent");
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(read(&app), "v2\n");

    // Untrusted: refused by id and reason; v2 stays.
    sign_with_pgp(&repo, &gpg, &stranger);
    repo.commit(&[("app.conf", "v3\n")], "v3 by a stranger");
    let out = both(&mut agent(&url, &dirs, "error"));
    expect_refused(
        &out,
        &repo.head(),
        &format!("not trusted (fingerprint {stranger})"),
    );
    assert_eq!(read(&app), "v2\n", "the last good state stays");

    // SSH-signed: either set passes.
    sign_with_ssh(&repo, &ssh);
    repo.commit(&[("app.conf", "v4\n")], "v4 by SSH");
    let out = both(&mut agent(&url, &dirs, "error"));
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(read(&app), "v4\n");
}

#[test]
fn verify_mode_tag_and_bad_key_files() {
    let repo = Repo::with_files(&[("app.conf", "v1\n")]);
    let dirs = Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let gpg = Gpg::new();
    let key = gpg.key("Release <rel@example.com>", "rsa3072", "never", None);
    let key_file = gpg.file("release.asc", &gpg.export(&key));
    sign_with_pgp(&repo, &gpg, &key);
    run(repo.work(), "git", &["tag", "-s", "v1.0.0", "-m", "1.0.0"]);
    let remote = repo.root.join("app.git");
    run(
        repo.work(),
        "git",
        &["push", "-q", remote.to_str().expect("utf8"), "v1.0.0"],
    );

    let tag_mode = |extra: &[&str]| {
        agent(&url, &dirs, "error")
            .args(["--once", "--verify-mode", "tag"])
            .arg("--verify-pgp-keys")
            .arg(&key_file)
            .args(extra)
            .output()
            .expect("run the agent")
    };
    let out = tag_mode(&["--semver", ">=1.0.0"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(read(&dirs.target.join("app.conf")), "v1\n");
    let out = tag_mode(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("--verify-mode: "), "{}", text(&out).1);

    // A mode without keys is refused.
    let out = agent(&url, &dirs, "error")
        .args(["--once", "--verify-mode", "head"])
        .output()
        .expect("run the agent");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("--verify-mode: no keys to verify with"),
        "{}",
        text(&out).1
    );

    // A private key given by mistake, a missing file: named, never shown.
    let secret = gpg.run(None, &["--armor", "--export-secret-keys", &key]);
    let secret_file = gpg.file("secret.asc", &secret);
    for (file, reason) in [
        (secret_file.clone(), "armored block 1 is a private key"),
        (dirs.dir.path().join("missing.asc"), "No such file"),
    ] {
        let out = agent(&url, &dirs, "error")
            .arg("--once")
            .arg("--verify-pgp-keys")
            .arg(&file)
            .output()
            .expect("run the agent");
        let (stdout, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let named = format!("--verify-pgp-keys {}: {reason}", file.display());
        assert!(err.contains(&named), "{err}");
        for line in secret.lines().filter(|l| l.len() > 20) {
            assert!(!err.contains(line) && !stdout.contains(line), "{err}");
        }
    }
}

/// Waits until `done`, or fails with the agent's log.
fn wait_for(what: &str, log: &Path, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn a_running_agent_keeps_the_last_good_state_when_a_signature_is_refused() {
    let repo = Repo::with_files(&[("app.conf", "v0\n")]);
    let dirs = Dirs::new();
    let gpg = Gpg::new();
    let key = gpg.key("Bot <bot@example.com>", "ed25519", "never", None);
    let stranger = gpg.key("Stranger <x@example.com>", "ed25519", "never", None);
    let key_file = gpg.file("bot.asc", &gpg.export(&key));
    sign_with_pgp(&repo, &gpg, &key);
    repo.commit(&[("app.conf", "good\n")], "good");
    let log = dirs.dir.path().join("agent.log");
    let url = format!("file://{}", repo.root.join("app.git").display());
    let child = agent(&url, &dirs, "info")
        .args(["--interval", "200ms", "--verify-pgp-keys"])
        .arg(&key_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn gitops-agent");
    let app = dirs.target.join("app.conf");
    wait_for("the signed commit", &log, &|| read(&app) == "good\n");

    sign_with_pgp(&repo, &gpg, &stranger);
    repo.commit(&[("app.conf", "evil\n")], "evil");
    let evil = repo.head();
    wait_for("the refusal", &log, &|| {
        let text = read(&log);
        text.contains(&evil) && text.contains("not trusted")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&app), "good\n", "the last good state stays");

    sign_with_pgp(&repo, &gpg, &key);
    repo.commit(&[("app.conf", "fixed\n")], "fixed");
    wait_for("the next signed commit", &log, &|| read(&app) == "fixed\n");
    stop(child);
}

/// Per-application OpenPGP keys with `--config` (issue 18):
/// `verify_pgp_keys` in `[defaults]` and in an `[[app]]` (which replaces
/// it), checked with the real `gpg` through `--once`; a bad key file and a
/// `verify_mode` that cannot apply are refused naming the line and key.
#[test]
fn each_app_of_a_config_verifies_with_its_own_openpgp_keys() {
    let repo = Repo::with_files(&[("app.conf", "v0\n")]);
    let dirs = Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let gpg = Gpg::new();
    let ed = gpg.key("Bot <bot@example.com>", "ed25519", "never", None);
    let stranger = gpg.key("Stranger <x@example.com>", "ed25519", "never", None);
    let ed_file = gpg.file("ed.asc", &gpg.export(&ed));
    let stranger_file = gpg.file("stranger.asc", &gpg.export(&stranger));
    sign_with_pgp(&repo, &gpg, &ed);
    repo.commit(&[("app.conf", "v1\n")], "v1 by ed25519");
    let srv = dirs.dir.path().join("srv");
    let config = dirs.dir.path().join("apps.toml");
    let write = |apps: &str| {
        let text = format!(
            "[defaults]\nrepo = {url:?}\nverify_pgp_keys = [{:?}]\n\n{apps}",
            stranger_file.display().to_string()
        );
        std::fs::write(&config, text).expect("write the config");
    };
    let app = |name: &str, extra: &str| {
        let target = srv.join(name).display().to_string();
        format!("[[app]]\nname = {name:?}\ntarget_dir = {target:?}\n{extra}\n")
    };
    let once = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gitops-agent"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "error")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&dirs.state)
            .arg("--once")
            .output()
            .expect("run the agent")
    };
    let ed_key = format!("verify_pgp_keys = [{:?}]", ed_file.display().to_string());
    write(&format!(
        "{}{}",
        app("trusted", &ed_key),
        app("defaults", "")
    ));
    let out = once();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("trusted: converged"), "{err}");
    assert!(
        err.contains("defaults: failed: ") && err.contains(&repo.head()),
        "the defaults' key does not trust the commit: {err}"
    );
    assert!(
        err.contains(&format!("not trusted (fingerprint {ed})")),
        "{err}"
    );
    assert_eq!(read(&srv.join("trusted").join("app.conf")), "v1\n");
    assert!(!srv.join("defaults").join("app.conf").exists());

    // A key file that cannot be read: refused before anything runs,
    // naming the line and the key.
    let missing = dirs.dir.path().join("missing.asc");
    let bad_key = format!("verify_pgp_keys = [{:?}]", missing.display().to_string());
    write(&format!(
        "{}{}",
        app("trusted", &ed_key),
        app("bad", &bad_key)
    ));
    let out = once();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let expected = format!(
        "{}:9: app \"bad\": verify_pgp_keys: {}: ",
        config.display(),
        missing.display()
    );
    assert!(err.contains(&expected), "{err}");

    // A tag mode on a branch: the line of `verify_mode`.
    write(&app("trusted", &format!("{ed_key}\nverify_mode = \"tag\"")));
    let out = once();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let expected = format!(
        "{}:9: app \"trusted\": verify_mode: a tag is only verified",
        config.display()
    );
    assert!(err.contains(&expected), "{err}");
}
