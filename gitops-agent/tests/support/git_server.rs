//! Real Git servers for the agent's tests: a bare repository served over
//! smart HTTP by `git http-backend` behind gitops-git's test server (basic
//! auth, a request log), optionally behind TLS (rustls) with a test CA and
//! server certificate made by the `openssl` CLI; and helpers to run the
//! `gitops-agent` binary against it and search everything it leaves for a
//! secret.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// gitops-git's `git http-backend` server, shared by path rather than copied.
#[path = "../../../gitops-git/tests/support/http.rs"]
#[allow(unreachable_pub)]
pub mod backend;

pub use backend::{HttpServer, base64};

/// Fails (never skips) when a tool the tests need is missing.
pub fn require_tool(tool: &str, args: &[&str]) {
    let ok = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the tests need `{tool}` on PATH (scripts/test installs it: apt-get install -y git openssl)"
    );
}

/// Runs a command in `dir` with an isolated git configuration; panics with
/// its stderr on failure.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    require_tool(program, &["version"]);
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare repository `app.git` under `root`, with one commit on `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
    /// What `GIT_PROJECT_ROOT` is for the server.
    pub root: PathBuf,
    work: PathBuf,
}

impl Repo {
    /// A repository whose `main` holds `files` (path, content).
    pub fn with_files(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("srv");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&root).expect("mkdir");
        run(dir.path(), "git", &["init", "-q", "-b", "main", "work"]);
        run(&root, "git", &["init", "-q", "--bare", "app.git"]);
        let repo = Self { dir, root, work };
        repo.commit(files, "first");
        repo
    }

    /// The work tree the commits are made in.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The id of `main`'s head.
    pub fn head(&self) -> String {
        run(&self.work, "git", &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }

    /// Commits `files` on `main` and pushes them to the bare repository.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) {
        for (path, content) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        run(&self.work, "git", &["add", "-A"]);
        run(&self.work, "git", &["commit", "-q", "-m", message]);
        let remote = self.root.join("app.git");
        let remote = remote.to_str().expect("utf8");
        run(&self.work, "git", &["push", "-q", remote, "main"]);
    }
}

impl Repo {
    /// `git mktree` of `input` (its text format) in the work repository.
    pub fn mktree(&self, input: &str) -> String {
        use std::io::Write as _;
        let mut child = Command::new("git")
            .args(["mktree"])
            .current_dir(&self.work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git mktree");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("mktree");
        assert!(out.status.success(), "git mktree failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A blob of `content` in the work repository.
    pub fn blob(&self, content: &str) -> String {
        let path = self.dir.path().join("blob.tmp");
        std::fs::write(&path, content).expect("write");
        run(
            &self.work,
            "git",
            &["hash-object", "-w", path.to_str().expect("utf8")],
        )
        .trim()
        .to_owned()
    }

    /// Commits the tree `tree` on top of `main` (plumbing: the work tree
    /// is left behind) and pushes it.
    pub fn commit_tree(&self, tree: &str, message: &str) {
        let parent = run(&self.work, "git", &["rev-parse", "main"]);
        let parent = parent.trim();
        let commit = run(
            &self.work,
            "git",
            &["commit-tree", tree, "-p", parent, "-m", message],
        );
        let commit = commit.trim();
        run(
            &self.work,
            "git",
            &["update-ref", "refs/heads/main", commit],
        );
        let remote = self.root.join("app.git");
        run(
            &self.work,
            "git",
            &["push", "-q", remote.to_str().expect("utf8"), "main"],
        );
    }
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 and
/// localhost it signed, made with the `openssl` CLI in `dir`.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gitops-agent-test-ca",
        ]);
        run(dir, "openssl", &ca);
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(dir, "openssl", &req);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        run(
            dir,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// TLS in front of a plain TCP server: every connection to `port` is
/// decrypted (rustls) and relayed to the backend.
pub struct TlsFront {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsFront {
    pub fn start(ca: &TestCa, backend_port: u16) -> Self {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&ca.cert)
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(&ca.key).expect("server.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let _ = tcp.set_nodelay(true);
                            // A client that rejects our certificate ends here.
                            let Ok(mut tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let Ok(mut plain) =
                                tokio::net::TcpStream::connect(("127.0.0.1", backend_port)).await
                            else {
                                return;
                            };
                            let _ = plain.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            port,
            stop: Some(stop),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A repository served over HTTPS (test CA) with basic auth.
pub struct HttpsGit {
    pub repo: Repo,
    pub ca: TestCa,
    pub http: HttpServer,
    pub tls: TlsFront,
}

impl HttpsGit {
    /// Serves `files` at `https://127.0.0.1:<port>/app.git`, only to `user`
    /// with `password`.
    pub fn start(files: &[(&str, &str)], user: &str, password: &str) -> Self {
        let repo = Repo::with_files(files);
        let ca = TestCa::create(&repo.dir.path().join("tls"));
        let http = HttpServer::start(&repo.root, Some((user, password)), None);
        let tls = TlsFront::start(&ca, http.port);
        Self {
            repo,
            ca,
            http,
            tls,
        }
    }

    /// The repository's URL.
    pub fn url(&self) -> String {
        self.tls.url("app.git")
    }

    /// Every request head the server received (to prove credentials were sent).
    pub fn requests(&self) -> String {
        self.http
            .stats
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

/// A target and a state directory for one agent run.
pub struct Dirs {
    pub dir: tempfile::TempDir,
    pub target: PathBuf,
    pub state: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        let state = dir.path().join("state");
        Self { dir, target, state }
    }

    /// A file beside the directories (mode 0600), e.g. a credentials file.
    pub fn secret_file(&self, name: &str, content: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }
}

/// `gitops-agent --repo <url> --target-dir <target> --state-dir <state>`
/// with an empty environment but `PATH` and `RUST_LOG=<log>`; add `--once`
/// (or `--listen 127.0.0.1:0` for a long-lived agent) and credentials.
pub fn agent(url: &str, dirs: &Dirs, log: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops-agent"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", log)
        .arg("--repo")
        .arg(url)
        .arg("--target-dir")
        .arg(&dirs.target)
        .arg("--state-dir")
        .arg(&dirs.state);
    cmd
}

/// stdout and stderr of a finished run, as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file()
                && std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// The forms a secret takes on the wire and on disk: itself and the base64
/// of `user:secret` (an `Authorization: Basic` value).
pub fn forms(user: &str, secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        base64(format!("{user}:{secret}").as_bytes()),
    ]
}

/// Asserts that no form of the secret is in `haystack` (named `what`).
pub fn assert_absent(what: &str, haystack: &str, user: &str, secret: &str) {
    for form in forms(user, secret) {
        assert!(
            !haystack.contains(&form),
            "{what} holds the secret (as {form:?}):\n{haystack}"
        );
    }
}

/// Asserts that no file under the state directory holds the secret.
pub fn assert_state_clean(dirs: &Dirs, user: &str, secret: &str) {
    assert!(dirs.state.is_dir(), "the agent wrote no state directory");
    for form in forms(user, secret) {
        let found = files_containing(&dirs.state, form.as_bytes());
        assert!(found.is_empty(), "the secret is in {found:?}");
    }
}
