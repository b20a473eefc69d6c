//! Git credentials end to end: the `gitops-agent` binary against a real
//! smart-HTTP git server that requires basic auth, over HTTPS with a test CA
//! the agent is told to trust (`--git-ca-file`). Credentials come from a
//! file, the environment or the URL; the secret is searched for in stdout,
//! stderr (at debug level), every file of the state directory, the argv
//! of the agent and its children, the HTTP endpoints (`/status`,
//! `/history`, `/metrics`, `/notifications`) and the notifications sent.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::git_server::{
    Dirs, HttpServer, HttpsGit, Repo, agent, assert_absent, assert_state_clean, text,
};

const FILES: &[(&str, &str)] = &[("app.conf", "port = 8080\n")];
const USER: &str = "deploy-bot";
const SECRET: &str = "s3cret-QUUX-4821";

fn deployed(dirs: &Dirs) -> bool {
    std::fs::read_to_string(dirs.target.join("app.conf")).is_ok_and(|c| c == "port = 8080\n")
}

/// Runs the agent once and checks it deployed, that the server saw
/// credentials, and that the secret is nowhere in its output or state.
fn deploys_once(server: &HttpsGit, cmd: &mut Command, dirs: &Dirs, user: &str, secret: &str) {
    let out = cmd.output().expect("run gitops-agent");
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        deployed(dirs),
        "app.conf was not deployed; stderr:\n{stderr}"
    );
    assert!(
        server.requests().contains("authorization"),
        "the server saw no credentials"
    );
    assert!(
        stderr.contains("DEBUG"),
        "debug logging was on (the search is meaningful): {stderr}"
    );
    assert_absent("stdout", &stdout, user, secret);
    assert_absent("stderr", &stderr, user, secret);
    assert_state_clean(dirs, user, secret);
}

#[test]
fn a_credentials_file_deploys_over_https_with_the_test_ca() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    let file = dirs.secret_file(
        "git-credentials",
        &format!("# the deploy bot\nusername={USER}\npassword={SECRET}\n"),
    );
    let mut cmd = agent(&server.url(), &dirs, "debug");
    cmd.arg("--once")
        .arg("--git-credentials-file")
        .arg(&file)
        .arg("--git-ca-file")
        .arg(&server.ca.ca);
    deploys_once(&server, &mut cmd, &dirs, USER, SECRET);
}

#[test]
fn a_git_credential_store_line_works_and_a_shared_file_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    // As `git credential-store` writes it: percent-encoded, one line per host.
    let line = server
        .url()
        .replace(
            "https://",
            &format!("https://{USER}:{}@", SECRET.replace('-', "%2D")),
        )
        .replace("/app.git", "");
    let file = dirs.secret_file("store", &format!("https://other:x@git.example\n{line}\n"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = agent(&server.url(), &dirs, "warn")
        .arg("--once")
        .arg("--git-credentials-file")
        .arg(&file)
        .arg("--git-ca-file")
        .arg(&server.ca.ca)
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(deployed(&dirs));
    assert!(
        stderr.contains("readable by group or others"),
        "no warning about mode 644: {stderr}"
    );
    assert_absent("stderr", &stderr, USER, SECRET);
}

#[test]
fn environment_username_and_password_or_a_token() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    let mut cmd = agent(&server.url(), &dirs, "debug");
    cmd.arg("--once")
        .env("GITOPS_GIT_USERNAME", USER)
        .env("GITOPS_GIT_PASSWORD", SECRET)
        .env("GITOPS_GIT_CA_FILE", &server.ca.ca);
    deploys_once(&server, &mut cmd, &dirs, USER, SECRET);

    // A token alone is basic auth with the conventional user and the token
    // as password: what GitHub and GitLab accept over smart HTTP.
    let token = "ghp_TOKEN-7d1e0c";
    let server = HttpsGit::start(FILES, "x-access-token", token);
    let dirs = Dirs::new();
    let mut cmd = agent(&server.url(), &dirs, "debug");
    cmd.arg("--once")
        .env("GITOPS_GIT_TOKEN", token)
        .arg("--git-ca-file")
        .arg(&server.ca.ca);
    deploys_once(&server, &mut cmd, &dirs, "x-access-token", token);
}

#[test]
fn without_or_with_wrong_credentials_exit_1_naming_the_remote_not_the_secret() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let wrong = "wrong-PLUGH-9313";
    for (name, password) in [("none", None), ("wrong", Some(wrong))] {
        let dirs = Dirs::new();
        let mut cmd = agent(&server.url(), &dirs, "debug");
        cmd.arg("--once").arg("--git-ca-file").arg(&server.ca.ca);
        if let Some(password) = password {
            cmd.env("GITOPS_GIT_USERNAME", USER)
                .env("GITOPS_GIT_PASSWORD", password);
        }
        let out = cmd.output().expect("run");
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}\n{stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{name}: no error line in {stderr}"));
        let remote = format!("127.0.0.1:{}", server.tls.port);
        assert!(error.contains(&remote), "{name}: names the remote: {error}");
        assert!(
            error.contains("credentials") || error.contains("authentication"),
            "{name}: says why: {error}"
        );
        assert!(!deployed(&dirs), "{name}");
        assert_absent(name, &format!("{stdout}{stderr}"), USER, wrong);
        assert_state_clean(&dirs, USER, wrong);
    }
    assert!(server.requests().contains(&support::git_server::base64(
        format!("{USER}:{wrong}").as_bytes()
    )));
}

#[test]
fn a_password_in_the_repo_url_works_and_warns_about_the_process_list() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    let url = server
        .url()
        .replace("https://", &format!("https://{USER}:{SECRET}@"));
    let out = agent(&url, &dirs, "warn")
        .arg("--once")
        .arg("--git-ca-file")
        .arg(&server.ca.ca)
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(deployed(&dirs));
    assert!(
        stderr.contains("WARN") && stderr.contains("process list"),
        "no process-list warning: {stderr}"
    );
    assert_absent("stderr", &stderr, USER, SECRET);
    assert_state_clean(&dirs, USER, SECRET);
}

#[test]
fn https_is_refused_without_the_ca_and_the_ca_file_must_exist() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    let out = agent(&server.url(), &dirs, "error")
        .arg("--once")
        .env("GITOPS_GIT_TOKEN", SECRET)
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "a certificate error: {stderr}"
    );
    assert!(!deployed(&dirs));

    let out = agent(&server.url(), &dirs, "error")
        .arg("--once")
        .arg("--git-ca-file")
        .arg(dirs.dir.path().join("missing.pem"))
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--git-ca-file"), "{stderr}");
}

#[test]
fn a_bad_credentials_file_names_the_file_and_line_never_the_value() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    let file = dirs.secret_file(
        "creds",
        &format!("username={USER}\npasswd={SECRET}\n{SECRET}\n"),
    );
    let out = agent(&server.url(), &dirs, "debug")
        .arg("--once")
        .arg("--git-credentials-file")
        .arg(&file)
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "error: --git-credentials-file {}, line 2: unknown key `passwd`",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_absent("output", &format!("{stdout}{stderr}"), USER, SECRET);
}

#[test]
fn plain_http_credentials_need_the_explicit_flag() {
    let repo = Repo::with_files(FILES);
    let http = HttpServer::start(&repo.root, Some((USER, SECRET)), None);
    let dirs = Dirs::new();
    let out = agent(&http.url("app.git"), &dirs, "debug")
        .arg("--once")
        .env("GITOPS_GIT_USERNAME", USER)
        .env("GITOPS_GIT_PASSWORD", SECRET)
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to send credentials over plain http://")
            && stderr.contains("--allow-insecure-http-credentials"),
        "{stderr}"
    );
    assert_eq!(
        http.stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent"
    );
    assert_absent("output", &format!("{stdout}{stderr}"), USER, SECRET);

    let out = agent(&http.url("app.git"), &dirs, "debug")
        .arg("--once")
        .arg("--allow-insecure-http-credentials")
        .env("GITOPS_GIT_USERNAME", USER)
        .env("GITOPS_GIT_PASSWORD", SECRET)
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(deployed(&dirs));
    assert_absent("output", &format!("{stdout}{stderr}"), USER, SECRET);
    assert_state_clean(&dirs, USER, SECRET);
}

/// The long-lived agent: its argv and its children's never hold a secret
/// given by file or environment, and a rotated credentials file is read
/// again on the next poll.
/// The bodies of the agent's read endpoints.
async fn endpoints(port: u16) -> String {
    let client = reqwest::Client::new();
    let mut all = String::new();
    for path in [
        "/status",
        "/history",
        "/metrics",
        "/notifications",
        "/readyz",
    ] {
        let url = format!("http://127.0.0.1:{port}{path}");
        let body = client
            .get(&url)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        all.push_str(&format!("--- {path}\n{body}\n"));
    }
    all
}

#[test]
fn a_long_lived_agent_keeps_secrets_out_of_argv_and_rereads_a_rotated_file() {
    let server = HttpsGit::start(FILES, USER, SECRET);
    let dirs = Dirs::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = rt.block_on(support::receiver::Receiver::start());
    let port = support::free_port();
    let stale = "stale-XYZZY-1147";
    let file = dirs.secret_file(
        "git-credentials",
        &format!("username={USER}\npassword={stale}\n"),
    );
    let child = agent(&server.url(), &dirs, "debug")
        .args(["--interval", "200ms"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--notify", &receiver.url("/events")])
        .arg("--git-credentials-file")
        .arg(&file)
        .arg("--git-ca-file")
        .arg(&server.ca.ca)
        .env("GITOPS_GIT_TOKEN", "env-token-GRUE-55")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("a refused poll", &|| {
        server
            .http
            .stats
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    });
    assert!(!deployed(&dirs));
    // Rotate: the next poll reads the file again.
    std::fs::write(&file, format!("username={USER}\npassword={SECRET}\n")).expect("rotate");
    wait_for("the deploy after rotation", &|| deployed(&dirs));
    // What the HTTP service shows and what notifications carry, once the
    // successful sync is counted and notified.
    let served = || {
        let mut all = rt.block_on(endpoints(port));
        for event in receiver.received() {
            all.push_str(&format!("--- notification\n{}\n", event.text()));
        }
        all
    };
    wait_for("the sync in /metrics and a notification", &|| {
        let all = served();
        all.contains("gitops_sync_total{") && all.contains("dev.gitops.sync.succeeded")
    });
    let served = served();

    let mut argv = String::new();
    for proc_pid in std::iter::once(pid).chain(children(pid)) {
        let cmdline = std::fs::read(format!("/proc/{proc_pid}/cmdline")).unwrap_or_default();
        argv.push_str(&String::from_utf8_lossy(&cmdline).replace('\0', " "));
        argv.push('\n');
    }
    assert!(argv.contains("--git-credentials-file"), "read argv: {argv}");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for secret in [SECRET, stale, "env-token-GRUE-55"] {
        assert_absent(
            "the HTTP endpoints and notifications",
            &served,
            USER,
            secret,
        );
        assert_absent("argv", &argv, USER, secret);
        assert_absent("stdout", &stdout, USER, secret);
        assert_absent("stderr", &stderr, USER, secret);
        assert_state_clean(&dirs, USER, secret);
    }
}

/// The ids of the processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
