//! Webhook to deployed: the time from a signed GitHub push webhook to the
//! new commit's file being in the target directory, through the real
//! `gitops-agent` service (HTTP on loopback, Git over `file://`, `FsTarget`)
//! with the poll interval at one hour, so only the webhook can explain it.
//! The commit is made before the clock starts.
//!
//! Run with `cargo bench -p gitops-benches --bench webhook`.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use criterion::Criterion;
use gitops_agent::signing::{WebhookSecret, sign_github};
use gitops_agent::{Agent, AgentArgs};
use gitops_benches::{git, require_tool};
use gitops_targets::{FsOptions, FsTarget};

/// Other files in the repository, so the snapshot is not trivial.
const OTHER_FILES: usize = 200;
/// How long one deploy may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn commit(repo: &Path, version: usize) -> String {
    std::fs::write(repo.join("VERSION"), format!("v{version}\n")).expect("write");
    git(repo, &["commit", "-q", "-am", &format!("v{version}")]);
    let out = std::process::Command::new("git")
        .current_dir(repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn deployed(target: &Path, version: usize) {
    let want = format!("v{version}\n");
    let deadline = Instant::now() + PATIENCE;
    while std::fs::read_to_string(target.join("VERSION"))
        .ok()
        .as_deref()
        != Some(&want)
    {
        assert!(Instant::now() < deadline, "v{version} was not deployed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends one signed GitHub push webhook for `after` and checks it was accepted.
async fn push_webhook(
    client: &reqwest::Client,
    url: &str,
    secret: &WebhookSecret,
    n: usize,
    after: &str,
) {
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{after}"}}"#);
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", format!("bench-{n}"))
        .header("x-hub-signature-256", sign_github(secret, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("webhook request");
    assert!(
        response.status().is_success(),
        "webhook refused: {}",
        response.status()
    );
}

fn main() {
    require_tool("git", &["--version"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let target = dir.path().join("target");
    std::fs::create_dir_all(repo.join("conf")).expect("mkdir");
    git(dir.path(), &["init", "-q", "-b", "main", "repo"]);
    for i in 0..OTHER_FILES {
        std::fs::write(
            repo.join(format!("conf/app-{i}.conf")),
            format!("port = {i}\n"),
        )
        .expect("write");
    }
    std::fs::write(repo.join("VERSION"), "v0\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "v0"]);
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "bench-secret\n").expect("write");
    let secret = WebhookSecret::read(&secret_file).expect("secret");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cli = Cli::parse_from([
        "bench",
        "--repo",
        &format!("file://{}", repo.display()),
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--interval",
        "1h",
        "--drift-interval",
        "1h",
        "--listen",
        &listen,
        "--webhook-secret-file",
        &secret_file.display().to_string(),
    ]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let agent = Agent::new("bench", cli.agent).expect("agent");
    let fs = FsTarget::open_with(&target, FsOptions::default().create_root(true)).expect("target");
    let engine = agent
        .engine(Arc::new(fs))
        .expect("engine")
        .build()
        .expect("engine");
    let handle = engine.handle();
    let running = rt.spawn(async move { agent.run(engine).await });
    rt.block_on(deployed(&target, 0));

    let client = reqwest::Client::new();
    let url = format!("http://{listen}/hooks/github");
    let mut version = 0;
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sample_size(20)
        .configure_from_args();
    c.bench_function(
        "webhook to deployed (gitops-agent, poll interval 1 h)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    version += 1;
                    let after = commit(&repo, version);
                    let started = Instant::now();
                    rt.block_on(async {
                        push_webhook(&client, &url, &secret, version, &after).await;
                        deployed(&target, version).await;
                    });
                    total += started.elapsed();
                }
                total
            });
        },
    );
    handle.shutdown();
    let outcome = rt.block_on(running).expect("join");
    assert!(outcome.is_ok(), "the agent ended with {outcome:?}");
}
