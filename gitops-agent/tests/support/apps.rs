//! The `gitops-agent` binary with `--config`: repositories served over
//! smart HTTP with a request log (to count fetches), the agent process
//! with its log, plain HTTP requests to it, signals, and waiting on
//! conditions.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::git_server::{HttpServer, Repo};

/// How long a positive condition may take.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A repository served over smart HTTP.
pub struct Served {
    pub repo: Repo,
    pub http: HttpServer,
}

impl Served {
    /// Serves a new repository holding `files` on `main`.
    pub fn start(files: &[(&str, &str)]) -> Self {
        let repo = Repo::with_files(files);
        let http = HttpServer::start(&repo.root, None, None);
        Self { repo, http }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        self.http.url("app.git")
    }

    /// How many times a client listed its references (one per fetch).
    pub fn listings(&self) -> usize {
        self.http
            .stats
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|line| line.contains("/info/refs"))
            .count()
    }
}

/// A `gitops-agent --config` process with its log and HTTP port.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    pub port: u16,
}

/// `file` (UTF-8) or empty.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Agent {
    /// Starts `gitops-agent --state-dir <state> --listen 127.0.0.1:<free>`
    /// with `args` (e.g. `--config FILE`), logging into `<dir>/agent.log`.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let log = dir.join("agent.log");
        let port = super::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gitops-agent"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gitops-agent");
        Self {
            child: Some(child),
            log,
            port,
        }
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        read(&self.log)
    }

    /// Waits until `done`, or fails showing the log.
    pub fn wait_for(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; agent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path`: status and body (0 when the agent does not answer).
    pub fn get(&self, path: &str) -> (u16, String) {
        request(self.port, "GET", path, &[], "")
    }

    /// `POST path` with `headers` and `body`.
    pub fn post(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
        request(self.port, "POST", path, headers, body)
    }

    /// `GET path` as JSON (`null` when it is not).
    pub fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).1).unwrap_or(Value::Null)
    }

    /// The names `GET /status` lists.
    pub fn apps(&self) -> Vec<String> {
        self.json("/status")["apps"]
            .as_array()
            .map(|apps| {
                apps.iter()
                    .filter_map(|a| a["app"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `signal` (`HUP`, `TERM`) to the agent.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the agent to exit by itself; its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` from an agent listening on 127.0.0.1:`port` (in this
/// process, say), as JSON (`null` when it is not).
pub fn get_json(port: u16, path: &str) -> Value {
    serde_json::from_str(&request(port, "GET", path, &[], "").1).unwrap_or(Value::Null)
}

/// `GET path` from 127.0.0.1:`port`: status and body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, &[], "")
}

/// Waits until `done`, or fails saying `what`.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `gitops-agent --config <config> --state-dir <state>` with `args` (e.g.
/// `--once`), an empty environment but `PATH` and `RUST_LOG=error`; run to
/// its end: exit code, stdout, stderr.
pub fn one_shot(config: &Path, state: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gitops-agent"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run gitops-agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `[[app]]` of a file-target config (`path` empty: the repository root).
pub fn app(name: &str, repo: &str, path: &str, target: &Path, extra: &str) -> String {
    let path = if path.is_empty() {
        String::new()
    } else {
        format!("path = {path:?}\n")
    };
    format!(
        "[[app]]\nname = {name:?}\nrepo = {repo:?}\n{path}target_dir = {:?}\n{extra}\n",
        target.display().to_string()
    )
}
