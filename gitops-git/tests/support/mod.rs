//! Test support: repositories built with the git CLI, and real git servers
//! (git daemon, `git http-backend` behind a small HTTP server, an ssh shim).
#![allow(dead_code, unreachable_pub)]

pub mod gpg;
pub mod http;
pub mod writeback;

use gitops_core::sync::LockExt as _;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails (never skips) when a tool the tests need is missing.
pub fn require_tool(tool: &str, args: &[&str]) {
    let ok = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "the tests need `{tool}` on PATH (scripts/test installs it: apt-get install -y git openssh-client)"
    );
}

/// Runs git with an isolated configuration and fixed identities; panics with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_stdin(dir, args, None)
}

pub fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice Author")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Carl Committer")
        .env("GIT_COMMITTER_EMAIL", "carl@example.com")
        .env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

pub fn git_stdin(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    require_tool("git", &["--version"]);
    let mut child = git_cmd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(data) = stdin {
            input.write_all(data).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("git output");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A work repository where commits are made and a bare "remote" it is pushed to.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub work: PathBuf,
    pub remote: PathBuf,
    pub root: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("srv");
        let work = dir.path().join("work");
        let remote = root.join("repo.git");
        std::fs::create_dir_all(&root).expect("mkdir");
        git(
            dir.path(),
            &["init", "-q", "-b", "main", work.to_str().expect("utf8")],
        );
        git(
            dir.path(),
            &["init", "-q", "--bare", remote.to_str().expect("utf8")],
        );
        // Serve every object a client asks for (as hosting services do), for pinned commits.
        git(
            &remote,
            &["config", "uploadpack.allowAnySHA1InWant", "true"],
        );
        Self {
            dir,
            work,
            remote,
            root,
        }
    }

    /// Writes files (path, content) into the work tree and commits them all; returns the id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.head()
    }

    pub fn remove(&self, path: &str) {
        git(&self.work, &["rm", "-q", "-r", path]);
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Mirrors the work repository to the bare remote (force, deletions included).
    pub fn push(&self) {
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--mirror",
                "--force",
                self.remote.to_str().expect("utf8"),
            ],
        );
    }

    pub fn url_path(&self) -> String {
        self.remote.to_str().expect("utf8").to_owned()
    }

    pub fn url_file(&self) -> String {
        format!("file://{}", self.url_path())
    }

    pub fn cache(&self, name: &str) -> PathBuf {
        self.dir.path().join("caches").join(name)
    }
}

/// A tree bomb built with `git mktree` in `dir`'s object database: `width`
/// entries per level, each the same subtree, `depth` levels, empty trees at
/// the bottom (`width^depth` visits from `depth + 1` tree objects). Returns
/// the root tree id.
pub fn tree_bomb(dir: &Path, width: usize, depth: usize) -> String {
    let mut tree = git_stdin(dir, &["mktree"], Some(b""));
    for _ in 0..depth {
        let lines: String = (0..width)
            .map(|i| format!("040000 tree {tree}\td{i:02}\n"))
            .collect();
        tree = git_stdin(dir, &["mktree"], Some(lines.as_bytes()));
    }
    tree
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git daemon` serving `root` over `git://127.0.0.1:port/`; killed on drop.
pub struct GitDaemon {
    pub port: u16,
    child: Child,
}

impl GitDaemon {
    pub fn start(root: &Path) -> Self {
        Self::start_on(root, free_port())
    }

    pub fn start_on(root: &Path, port: u16) -> Self {
        require_tool("git", &["--version"]);
        let root_s = root.to_str().expect("utf8");
        let child = git_cmd(root)
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={root_s}"),
                "--export-all",
                root_s,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn git daemon");
        wait_for_port(port);
        Self { port, child }
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Kills the daemon's process group (`git daemon` runs `git-daemon` as a child).
    fn kill_group(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        self.kill_group();
        // Wait until the port refuses connections.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// An ssh stand-in for `GIT_SSH_COMMAND`/`core.sshCommand`: runs the requested
/// `git-upload-pack '<path>'` locally, and records its arguments.
pub fn ssh_shim(dir: &Path) -> PathBuf {
    let path = dir.join("ssh-shim");
    let log = dir.join("ssh-shim.log");
    let script = format!(
        r#"#!/bin/sh
# ssh stand-in: skips ssh options and the host, runs the remote command locally
echo "$@" >> '{}'
while [ $# -gt 0 ]; do
  case "$1" in
    -G) exit 0 ;;
    -o|-i|-p|-F|-l) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift
exec sh -c "$*"
"#,
        log.display()
    );
    std::fs::write(&path, script).expect("write shim");
    let mut perms = std::fs::metadata(&path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    path
}

/// An ed25519 key pair made with ssh-keygen: (private key path, public key line).
pub fn ssh_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    require_tool("ssh-keygen", &["-?"]);
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub key");
    (key, public.trim().to_owned())
}

/// Makes `repo` sign commits and tags with `key` (SSH format).
pub fn use_signing_key(repo: &Path, key: &Path) {
    git(repo, &["config", "gpg.format", "ssh"]);
    git(
        repo,
        &["config", "user.signingkey", key.to_str().expect("utf8")],
    );
}

/// Asserts `err` is a permanent verification error about `commit` whose
/// reason mentions `reason`.
pub fn expect_verification(err: gitops_core::SourceError, commit: &str, reason: &str) {
    match &err {
        gitops_core::SourceError::Verification {
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

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Everything `tracing` logs in this test binary, at every level, by every
/// thread: installs the global subscriber, so call it once per binary.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> Self {
        let logs = Self::default();
        let writer = logs.clone();
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        )
        .expect("the only global subscriber in this test binary");
        logs
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.locked()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.locked().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
