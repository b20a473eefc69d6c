//! A throw-away GnuPG home for signing tests with the real `gpg` (Debian
//! `gnupg`): keys without passphrases, made and used at chosen times
//! (`--faked-system-time`), exported armored, revoked; and a `gpg.program`
//! for git that signs with this home at a chosen time. Self-contained (the
//! agent's tests include it by path). Its `gpg-agent` is stopped on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A `GNUPGHOME` in a temporary directory.
pub struct Gpg {
    dir: tempfile::TempDir,
}

impl Gpg {
    /// A new, empty home. Fails (never skips) without `gpg`.
    pub fn new() -> Self {
        let ok = Command::new("gpg")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the tests need `gpg` on PATH (scripts/test installs it: apt-get install -y gnupg)"
        );
        // Short: gpg-agent's socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let home = dir.path().join("h");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        Self { dir }
    }

    /// The `GNUPGHOME`.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("h")
    }

    /// Runs `gpg --batch` in this home, at `at` (`20200101T000000`) if
    /// given; returns stdout, panics with stderr on failure.
    pub fn run(&self, at: Option<&str>, args: &[&str]) -> String {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        if let Some(at) = at {
            cmd.args(["--faked-system-time", at]);
        }
        let out = cmd.args(args).output().expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new signing key for `uid` (`ed25519` or `rsa3072`) that expires
    /// after `expire` (`never`, `1d`, ...), made at `at`; its fingerprint.
    pub fn key(&self, uid: &str, algo: &str, expire: &str, at: Option<&str>) -> String {
        self.run(at, &["--quick-gen-key", uid, algo, "sign", expire]);
        self.fingerprints(uid).swap_remove(0)
    }

    /// A new key for `uid` that only certifies, with an ed25519 subkey for
    /// signing that expires after `expire`, made at `at`: (primary, subkey)
    /// fingerprints.
    pub fn key_with_signing_subkey(
        &self,
        uid: &str,
        expire: &str,
        at: Option<&str>,
    ) -> (String, String) {
        self.run(at, &["--quick-gen-key", uid, "ed25519", "cert", "never"]);
        let primary = self.fingerprints(uid).swap_remove(0);
        self.run(
            at,
            &["--quick-add-key", &primary, "ed25519", "sign", expire],
        );
        let subkey = self.fingerprints(uid).swap_remove(1);
        (primary, subkey)
    }

    /// The fingerprints of `uid`'s key: the primary key's, then its subkeys'.
    pub fn fingerprints(&self, uid: &str) -> Vec<String> {
        let listing = self.run(None, &["--with-colons", "--list-keys", uid]);
        let fingerprints: Vec<String> = listing
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .collect();
        assert!(!fingerprints.is_empty(), "no key for {uid}: {listing}");
        fingerprints
    }

    /// The armored public key (`gpg --armor --export`).
    pub fn export(&self, fingerprint: &str) -> String {
        self.run(None, &["--armor", "--export", fingerprint])
    }

    /// Sets the key's expiry (`never`, `2d`, ...) at `at`; of its subkey
    /// `subkey` instead, if given.
    pub fn set_expire(
        &self,
        fingerprint: &str,
        expire: &str,
        at: Option<&str>,
        subkey: Option<&str>,
    ) {
        let mut args = vec!["--quick-set-expire", fingerprint, expire];
        args.extend(subkey);
        self.run(at, &args);
    }

    /// Revokes the key with the revocation certificate gpg made with it.
    pub fn revoke(&self, fingerprint: &str) {
        let cert = self
            .home()
            .join("openpgp-revocs.d")
            .join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(&cert).expect("revocation certificate");
        // gpg writes it with a ':' before the armor so that it is not imported by accident.
        let armored = text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let file = self.dir.path().join("revoke.asc");
        std::fs::write(&file, armored).expect("write");
        self.run(None, &["--import", file.to_str().expect("utf8")]);
    }

    /// A `gpg.program` for git: gpg in this home, at `at` if given.
    pub fn program(&self, at: Option<&str>) -> PathBuf {
        let name = format!("gpg-at-{}", at.unwrap_or("now"));
        let path = self.dir.path().join(name);
        let faked = at
            .map(|at| format!(" --faked-system-time {at}"))
            .unwrap_or_default();
        let script = format!(
            "#!/bin/sh\nGNUPGHOME='{}' exec gpg{faked} \"$@\"\n",
            self.home().display()
        );
        std::fs::write(&path, script).expect("write gpg program");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        path
    }

    /// The `git -c` settings that sign with `fingerprint` (at `at`).
    pub fn git_config(&self, fingerprint: &str, at: Option<&str>) -> Vec<String> {
        vec![
            "-c".to_owned(),
            "gpg.format=openpgp".to_owned(),
            "-c".to_owned(),
            format!("gpg.program={}", self.program(at).display()),
            "-c".to_owned(),
            format!("user.signingkey={fingerprint}"),
        ]
    }

    /// Writes `text` to a file beside the home; its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // Only this home's agent.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home())
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
