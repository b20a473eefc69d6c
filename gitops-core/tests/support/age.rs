//! The real `age`, `age-keygen` and `ssh-keygen` CLIs, for tests of
//! encrypted files (installed by `scripts/test`; a test fails, never
//! skips, when they are missing).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An identity file and its public recipient.
pub struct Key {
    /// The private identity file (`age-keygen` output or an SSH private key).
    pub identity: PathBuf,
    /// The public recipient (`age1…` or the `ssh-ed25519 …` line).
    pub recipient: String,
    /// A file holding the recipient (for `age -R`).
    pub recipients_file: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); scripts/test installs it"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new X25519 key made by `age-keygen` in `dir`.
pub fn x25519(dir: &Path, name: &str) -> Key {
    let identity = dir.join(format!("{name}.txt"));
    run(
        Command::new("age-keygen").arg("-o").arg(&identity),
        "age-keygen",
    );
    let out = run(
        Command::new("age-keygen").arg("-y").arg(&identity),
        "age-keygen -y",
    );
    let recipient = String::from_utf8_lossy(&out).trim().to_owned();
    let recipients_file = dir.join(format!("{name}.pub"));
    std::fs::write(&recipients_file, format!("{recipient}\n")).expect("write recipient");
    Key {
        identity,
        recipient,
        recipients_file,
    }
}

/// A new SSH ed25519 key made by `ssh-keygen` in `dir` (no passphrase).
pub fn ssh_ed25519(dir: &Path, name: &str) -> Key {
    let identity = dir.join(name);
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(&identity),
        "ssh-keygen",
    );
    let recipients_file = dir.join(format!("{name}.pub"));
    let recipient = std::fs::read_to_string(&recipients_file)
        .expect("public key")
        .trim()
        .to_owned();
    Key {
        identity,
        recipient,
        recipients_file,
    }
}

/// `plain` encrypted by `age` to `keys` (`-r age1…` for X25519 keys, `-R`
/// with the public key file for SSH keys),
/// ASCII-armored when `armor`.
pub fn encrypt(keys: &[&Key], armor: bool, plain: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new("age");
    cmd.arg("-e");
    if armor {
        cmd.arg("-a");
    }
    for key in keys {
        if key.recipient.starts_with("age1") {
            cmd.arg("-r").arg(&key.recipient);
        } else {
            cmd.arg("-R").arg(&key.recipients_file);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("age: cannot run; scripts/test installs it");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(plain)
        .expect("write plaintext");
    let out = child.wait_with_output().expect("age");
    assert!(
        out.status.success(),
        "age: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `data` decrypted by `age -d -i identity`.
pub fn decrypt(identity: &Path, data: &[u8]) -> Vec<u8> {
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), data).expect("write");
    run(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(identity)
            .arg(file.path()),
        "age -d",
    )
}
