//! Publishing a commit (or tag) to a reference of the source's repository:
//! a compare-and-swap in a local repository, `git push` to a remote.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gitops_core::WritebackError;

use crate::credentials::{Credentials, scrub};
use crate::error::chain;
use crate::source::Inner;

pub(crate) fn failed(message: String, transient: bool) -> WritebackError {
    WritebackError::Failed {
        message,
        transient,
        source: None,
    }
}

/// What the reference must hold for the update to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// Exactly this object (a release branch: never overwrite unseen work).
    Expect(gix::ObjectId),
    /// Anything (a reference owned by the engine).
    Force,
    /// Nothing: the reference must not exist yet (a tag).
    Absent,
}

/// How a publish ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    Done,
    /// The reference no longer holds what the lease expected.
    Moved,
}

/// Where updates go, and how.
pub(crate) struct Publisher<'a> {
    pub(crate) shared: &'a Inner,
    pub(crate) timeout: Duration,
    /// Name and e-mail for the reflog of a local repository.
    pub(crate) committer: (&'a str, &'a str),
}

/// The directory of a local repository URL (plain path or `file://`).
pub(crate) fn local_path(shared: &Inner) -> Option<PathBuf> {
    use gix::bstr::ByteSlice as _;
    matches!(shared.url.scheme, gix::url::Scheme::File)
        .then(|| PathBuf::from(shared.url.path.to_os_str_lossy().into_owned()))
}

/// The repository objects are written to: the local remote itself, or the cache.
pub(crate) fn work_repo(shared: &Inner) -> Result<gix::Repository, WritebackError> {
    match local_path(shared) {
        Some(path) => gix::open_opts(&path, gix::open::Options::isolated())
            .map_err(|e| failed(format!("open {}: {}", path.display(), chain(&e)), true)),
        None => Ok(shared.repo.to_thread_local()),
    }
}

/// What `reference` points at in `repo` (peeled), if it exists.
pub(crate) fn local_head(
    repo: &gix::Repository,
    reference: &str,
) -> Result<Option<gix::ObjectId>, WritebackError> {
    repo.try_find_reference(reference)
        .map_err(|e| failed(format!("{reference}: {}", chain(&e)), true))?
        .map(|mut r| {
            r.peel_to_id()
                .map(|id| id.detach())
                .map_err(|e| failed(format!("{reference}: {}", chain(&e)), true))
        })
        .transpose()
}

/// The `Authorization` header for `credentials`; adds what in it is secret
/// (the encoded `user:password` pair is as secret as the password) to `secrets`.
fn authorization(credentials: &Credentials, secrets: &mut Vec<String>) -> String {
    match credentials {
        Credentials::Bearer(token) => format!("Authorization: Bearer {}", token.expose()),
        Credentials::Basic { username, password } => {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose()));
            secrets.push(encoded.clone());
            format!("Authorization: Basic {encoded}")
        }
    }
}

impl Publisher<'_> {
    /// Points `reference` at `new` (written in [`work_repo`]) under `lease`.
    pub(crate) fn publish(
        &self,
        repo: &gix::Repository,
        reference: &str,
        lease: Lease,
        new: gix::ObjectId,
        reflog: &str,
    ) -> Result<Published, WritebackError> {
        if local_path(self.shared).is_some() {
            self.local(repo, reference, lease, new, reflog)
        } else {
            self.remote(reference, lease, new)
        }
    }

    fn local(
        &self,
        repo: &gix::Repository,
        reference: &str,
        lease: Lease,
        new: gix::ObjectId,
        reflog: &str,
    ) -> Result<Published, WritebackError> {
        use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
        let name: gix::refs::FullName = reference
            .try_into()
            .map_err(|e| failed(format!("reference {reference}: {e}"), false))?;
        // What `git push` refuses by default (receive.denyCurrentBranch): the
        // work tree and index of a checkout would silently stop matching it.
        if let Some(workdir) = repo.workdir() {
            let head = repo.head_name().map_err(|e| {
                failed(
                    format!("HEAD of {}: {}", workdir.display(), chain(&e)),
                    true,
                )
            })?;
            if head.is_some_and(|head| head == name) {
                return Err(failed(
                    format!(
                        "refusing to move {reference}: it is checked out in {}, whose files would no \
                         longer match it (git refuses the same push); track a bare repository, or \
                         write back to a review branch",
                        workdir.display()
                    ),
                    false,
                ));
            }
        }
        let expected = match lease {
            Lease::Expect(id) => PreviousValue::MustExistAndMatch(gix::refs::Target::Object(id)),
            Lease::Force => PreviousValue::Any,
            Lease::Absent => PreviousValue::MustNotExist,
        };
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: reflog.into(),
                },
                expected,
                new: gix::refs::Target::Object(new),
            },
            name,
            deref: false,
        };
        let committer = gix::actor::SignatureRef {
            name: self.committer.0.into(),
            email: self.committer.1.into(),
            time: "0 +0000",
        };
        match repo.edit_references_as(Some(edit), Some(committer)) {
            Ok(_) => Ok(Published::Done),
            Err(e) => {
                let now = local_head(repo, reference)?;
                let moved = match lease {
                    Lease::Expect(id) => now != Some(id),
                    Lease::Absent => now.is_some(),
                    Lease::Force => false,
                };
                if moved {
                    return Ok(Published::Moved);
                }
                Err(failed(format!("update {reference}: {}", chain(&e)), true))
            }
        }
    }

    /// `git` in the bare cache with an isolated configuration and the
    /// source's credentials in the environment only; returns the secrets to
    /// scrub from its output.
    fn git(&self) -> Result<(Command, Vec<String>), WritebackError> {
        let shared = self.shared;
        let credentials = shared.credentials.get(&shared.location);
        if credentials.is_some()
            && let Some(message) = shared.refuse_credentials()
        {
            return Err(failed(message, false));
        }
        let mut secrets = credentials
            .as_ref()
            .map(Credentials::secrets)
            .unwrap_or_default();
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("GIT_DIR", &shared.cache_dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(home) = std::env::var_os("HOME") {
            // ssh reads ~/.ssh; git itself ignores the global config above.
            cmd.env("HOME", home);
        }
        if let Some(ssh) = shared.ssh.command_line() {
            cmd.env("GIT_SSH_COMMAND", ssh);
        } else if let Some(ssh) = std::env::var_os("GIT_SSH_COMMAND") {
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        // Secrets go through the environment (readable only by this user),
        // never through arguments (visible to everyone in /proc).
        let mut config: Vec<(&str, std::ffi::OsString)> = Vec::new();
        if let Some(header) = credentials.as_ref().map(|c| authorization(c, &mut secrets)) {
            config.push(("http.extraHeader", header.into()));
        }
        if let Some(ca) = &shared.ca {
            config.push(("http.sslCAInfo", ca.path.clone().into_os_string()));
        }
        if !config.is_empty() {
            cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        }
        for (i, (key, value)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        Ok((cmd, secrets))
    }

    /// The commit `reference` names on the remote (a tag peeled), if it exists.
    pub(crate) fn remote_commit(
        &self,
        reference: &str,
    ) -> Result<Option<gix::ObjectId>, WritebackError> {
        let (mut cmd, secrets) = self.git()?;
        // Patterns match whole names: the peeled entry needs its own.
        cmd.arg("ls-remote")
            .arg(&self.shared.location)
            .arg(reference)
            .arg(format!("{reference}^{{}}"));
        let output = run_with_timeout(&mut cmd, self.timeout)
            .map_err(|e| failed(scrub(&e, &secrets), true))?;
        if !output.success {
            return Err(failed(
                scrub(
                    &format!("ls-remote {reference}: {}", output.stderr.trim()),
                    &secrets,
                ),
                true,
            ));
        }
        // A tag lists itself, then `<tag>^{}` with the commit it peels to.
        let mut found = None;
        for line in output.stdout.lines() {
            let Some((id, name)) = line.split_once('\t') else {
                continue;
            };
            let Ok(id) = gix::ObjectId::from_hex(id.as_bytes()) else {
                continue;
            };
            if name == format!("{reference}^{{}}") || (name == reference && found.is_none()) {
                found = Some(id);
            }
        }
        Ok(found)
    }

    /// `git push` from the bare cache.
    fn remote(
        &self,
        reference: &str,
        lease: Lease,
        new: gix::ObjectId,
    ) -> Result<Published, WritebackError> {
        let shared = self.shared;
        let (mut cmd, secrets) = self.git()?;
        cmd.args(["push", "--porcelain", "--atomic", "--no-verify"]);
        let refspec = match lease {
            Lease::Expect(id) => {
                cmd.arg(format!("--force-with-lease={reference}:{id}"));
                format!("{new}:{reference}")
            }
            Lease::Absent => {
                // An empty expected value: the reference must not exist.
                cmd.arg(format!("--force-with-lease={reference}:"));
                format!("{new}:{reference}")
            }
            Lease::Force => format!("+{new}:{reference}"),
        };
        cmd.arg(&shared.location).arg(&refspec);
        let output = run_with_timeout(&mut cmd, self.timeout)
            .map_err(|e| failed(scrub(&e, &secrets), true))?;
        if output.success {
            return Ok(Published::Done);
        }
        let text = scrub(
            &format!("{}\n{}", output.stdout.trim(), output.stderr.trim()),
            &secrets,
        );
        let rejected = text.lines().find(|l| l.starts_with('!'));
        if let Some(line) = rejected
            && (line.contains("stale info")
                || line.contains("fetch first")
                || line.contains("non-fast-forward")
                || line.contains("already exists"))
        {
            return Ok(Published::Moved);
        }
        let auth = is_auth_failure(&text);
        let detail = rejected
            .unwrap_or_else(|| text.trim())
            .trim_start_matches('!')
            .trim();
        Err(failed(
            format!("push to {} was refused: {detail}", shared.location),
            !auth,
        ))
    }
}

/// Whether git's output says the server refused our credentials. Matches
/// git's own phrases only: a bare "401" or "403" also occurs in commit ids
/// and port numbers (`127.0.0.1:44039`), which made a rejected push look
/// like a permanent authentication failure.
fn is_auth_failure(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("authentication failed")
        || lower.contains("returned error: 401")
        || lower.contains("returned error: 403")
        || lower.contains("permission denied")
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd`, killing its process group after `timeout`.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(pipe) = pipe {
                // Capped: a misbehaving server cannot fill our memory.
                let _ = pipe.take(1 << 20).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    // No deadline when it would overflow: `Duration::MAX` means no limit.
    let deadline = Instant::now().checked_add(timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                // The whole group: git's helpers (git-remote-http, ssh) too.
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("git did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for git: {e}")),
        }
    };
    Ok(Output {
        success: status.success(),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endless_timeout_runs_the_command_without_a_deadline() {
        let mut cmd = std::process::Command::new("git");
        cmd.arg("--version")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = super::run_with_timeout(&mut cmd, std::time::Duration::MAX).expect("runs");
        assert!(
            out.success && out.stdout.starts_with("git version"),
            "{}",
            out.stdout
        );
    }

    #[test]
    fn only_git_phrases_mean_an_authentication_failure() {
        use super::is_auth_failure;
        let hook = "To http://127.0.0.1:44039/repo.git\n! 77448613bf4f36:refs/heads/main\t[remote rejected] (pre-receive hook declined)";
        assert!(
            !is_auth_failure(hook),
            "a port with 403 in it is no HTTP 403"
        );
        assert!(!is_auth_failure(
            "! 4011abc:refs/heads/main [remote rejected]"
        ));
        assert!(is_auth_failure(
            "fatal: unable to access 'http://h/r.git/': The requested URL returned error: 403"
        ));
        assert!(is_auth_failure(
            "remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'http://h/r.git/'"
        ));
        assert!(is_auth_failure("git@h: Permission denied (publickey)."));
    }

    use super::*;

    #[test]
    fn no_form_of_the_credentials_survives_scrubbing() {
        for credentials in [
            Credentials::basic("deploy", "hunter2-pw"),
            Credentials::bearer("tok-123456"),
        ] {
            let mut secrets = credentials.secrets();
            let header = authorization(&credentials, &mut secrets);
            let scrubbed = scrub(&format!("> {header}\n< 403"), &secrets);
            assert!(!scrubbed.contains("hunter2-pw"), "{scrubbed}");
            assert!(!scrubbed.contains("tok-123456"), "{scrubbed}");
            assert!(
                !scrubbed.contains("ZGVwbG95"),
                "base64 of the pair: {scrubbed}"
            );
            assert!(scrubbed.contains("***"), "{scrubbed}");
        }
    }
}
