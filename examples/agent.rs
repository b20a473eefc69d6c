//! The reference pull agent: keeps a directory equal to a Git repository.
//!
//! ```text
//! cargo run --release --example agent -- --repo <path|url> [--branch B | --tag T | --semver RANGE | --commit SHA]
//!     [--path SUBDIR] [--render files|manifests] --target-dir DIR [--state-dir DIR]
//!     [--interval 30s] [--drift-interval 60s] [--once] [--plan] [--json]
//!     [--verify-signers ALLOWED_SIGNERS_FILE] [--prune | --no-prune]
//!     [--drift revert|ignore|writeback] [--writeback-branch B] [--writeback-key FILE]
//!     [--listen 127.0.0.1:PORT] [--allow WINDOW]... [--deny WINDOW]...
//! ```
//!
//! Defaults: `--branch main`, `--render files`, `--state-dir
//! <target-dir>/../.gitops-state`, prune on, drift revert. `--once` syncs once
//! and exits 0 when converged, 1 otherwise; `--plan` prints the plan and exits
//! 0 when nothing would change, 2 when changes are pending, 1 on error;
//! `--json` prints the report or plan as JSON on stdout (logs stay on stderr).
//! Drift under the `writeback` policy (`--drift writeback`, or a manifest's
//! `gitops.rs/drift: writeback`) is committed to the tracked branch, or to
//! `--writeback-branch` for review, signed with `--writeback-key` when given.
//! `--allow` and `--deny` add sync windows, each one argument `NAME SCHEDULE
//! DURATION [ZONE] [manual]`: a 5-field cron schedule (or `@daily`…), a
//! duration like `2h`, then optionally an IANA zone (`Europe/Berlin`) or an
//! offset (`+05:30`), and `manual` to let `--once` through, e.g.
//! `--deny "freeze 0 18 * * FRI 62h Europe/Berlin manual"`.
//! Otherwise it runs until SIGINT or SIGTERM (the first finishes the
//! resources in flight, a second aborts); SIGHUP, or any HTTP request to
//! `--listen` other than the read-only `GET /status`, `GET /history` (JSON)
//! and `GET /healthz`, triggers a reconcile (the webhook). Logs: `RUST_LOG`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::engine::Event;
use gitops_core::manifest::DRIFT_ANNOTATION;
use gitops_core::{
    DesiredState, DriftPolicy, Engine, EngineConfig, FileEdit, FilesRender, ManifestRender,
    Observed, RedbStore, Render, RenderError, Resource, Snapshot, SnapshotFile, SyncWindow,
    SyncWindows,
};
use gitops_git::{AllowedSigners, GitSource, GitWriteback, ReferencePolicy, VerifyMode};
use gitops_targets::{FsOptions, FsTarget};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: agent --repo <path|url> --target-dir DIR [--branch B | --tag T | --semver RANGE | --commit SHA] [--path SUBDIR] [--render files|manifests] [--state-dir DIR] [--interval 30s] [--drift-interval 60s] [--once] [--plan] [--json] [--verify-signers FILE] [--prune | --no-prune] [--drift revert|ignore|writeback] [--writeback-branch B] [--writeback-key FILE] [--listen 127.0.0.1:PORT] [--allow|--deny \"NAME SCHEDULE DURATION [ZONE] [manual]\"]...";

#[derive(Debug)]
struct Args {
    repo: String,
    policy: ReferencePolicy,
    path: Option<String>,
    manifests: bool,
    target_dir: PathBuf,
    state_dir: PathBuf,
    interval: Duration,
    drift_interval: Duration,
    once: bool,
    plan: bool,
    json: bool,
    verify_signers: Option<PathBuf>,
    prune: bool,
    drift: Option<DriftPolicy>,
    writeback_branch: Option<String>,
    writeback_key: Option<PathBuf>,
    listen: Option<SocketAddr>,
    windows: SyncWindows,
}

fn duration(flag: &str, value: &str) -> Result<Duration, String> {
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{flag} {value:?}: expected a duration like 30s, 5m, 500ms"))?;
    let too_long = || format!("{flag} {value:?}: longer than a year");
    let seconds = |per: u64| n.checked_mul(per).ok_or_else(too_long);
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(seconds(60)?),
        "h" => Duration::from_secs(seconds(3600)?),
        _ => {
            return Err(format!(
                "{flag} {value:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    if duration.is_zero() {
        return Err(format!("{flag} {value:?}: must be longer than zero"));
    }
    if duration > Duration::from_secs(366 * 86_400) {
        return Err(too_long());
    }
    Ok(duration)
}

/// `NAME SCHEDULE DURATION [ZONE] [manual]`, as described in the module docs.
fn window(flag: &str, spec: &str) -> Result<SyncWindow, String> {
    let bad = |why: String| format!("{flag} {spec:?}: {why}");
    let tokens: Vec<&str> = spec.split_whitespace().collect();
    let (name, rest) = tokens
        .split_first()
        .ok_or_else(|| bad("expected NAME SCHEDULE DURATION [ZONE] [manual]".into()))?;
    let fields = if rest.first().is_some_and(|t| t.starts_with('@')) {
        1
    } else {
        5
    };
    if rest.len() < fields + 1 {
        return Err(bad(format!(
            "expected NAME, a {fields}-field schedule and a DURATION, then optionally a ZONE and `manual`"
        )));
    }
    let schedule = rest[..fields].join(" ");
    let length = duration("duration", rest[fields]).map_err(bad)?;
    let mut window = match flag {
        "--allow" => SyncWindow::allow(*name, &schedule, length),
        _ => SyncWindow::deny(*name, &schedule, length),
    }
    .map_err(|e| bad(e.to_string()))?;
    for extra in &rest[fields + 1..] {
        window = match *extra {
            "manual" => Ok(window.manual_sync(true)),
            offset if offset == "Z" || offset.starts_with(['+', '-']) => window.utc_offset(offset),
            zone => window.time_zone(zone),
        }
        .map_err(|e| bad(e.to_string()))?;
    }
    Ok(window)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut repo, mut policy, mut path, mut manifests) = (None, None, None, false);
    let (mut target_dir, mut state_dir, mut verify_signers, mut drift, mut listen) =
        (None, None, None, None, None);
    let (mut interval, mut drift_interval) = (Duration::from_secs(30), Duration::from_secs(60));
    let (mut once, mut plan, mut json, mut prune) = (false, false, false, true);
    let (mut writeback_branch, mut writeback_key) = (None, None);
    let mut windows = SyncWindows::new();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let mut set_policy = |p: ReferencePolicy| match policy.replace(p) {
            Some(_) => Err("give only one of --branch, --tag, --semver, --commit".to_owned()),
            None => Ok(()),
        };
        match flag.as_str() {
            "--repo" => repo = Some(value()?),
            "--branch" => set_policy(ReferencePolicy::branch(value()?))?,
            "--tag" => set_policy(ReferencePolicy::tag(value()?))?,
            "--semver" => set_policy(ReferencePolicy::semver(value()?))?,
            "--commit" => set_policy(ReferencePolicy::commit(value()?))?,
            "--path" => path = Some(value()?),
            "--render" => match value()?.as_str() {
                "files" => manifests = false,
                "manifests" => manifests = true,
                other => return Err(format!("--render {other:?}: expected files or manifests")),
            },
            "--target-dir" => target_dir = Some(PathBuf::from(value()?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
            "--interval" => interval = duration("--interval", &value()?)?,
            "--drift-interval" => drift_interval = duration("--drift-interval", &value()?)?,
            "--once" => once = true,
            "--plan" => plan = true,
            "--json" => json = true,
            "--verify-signers" => verify_signers = Some(PathBuf::from(value()?)),
            "--prune" => prune = true,
            "--no-prune" => prune = false,
            "--drift" => {
                drift = Some(match value()?.as_str() {
                    "revert" => DriftPolicy::Revert,
                    "ignore" => DriftPolicy::Ignore,
                    "writeback" => DriftPolicy::Writeback,
                    other => {
                        return Err(format!(
                            "--drift {other:?}: expected revert, ignore or writeback"
                        ));
                    }
                })
            }
            "--writeback-branch" => writeback_branch = Some(value()?),
            "--writeback-key" => writeback_key = Some(PathBuf::from(value()?)),
            "--listen" => {
                let v = value()?;
                let addr: SocketAddr = v.parse().map_err(|_| {
                    format!("--listen {v:?}: expected an address like 127.0.0.1:8080")
                })?;
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "--listen {addr}: only loopback addresses are allowed (put a proxy in front)"
                    ));
                }
                listen = Some(addr);
            }
            "--allow" | "--deny" => windows = windows.with(window(&flag, &value()?)?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let repo = repo.ok_or("--repo is required")?;
    let target_dir: PathBuf = target_dir.ok_or("--target-dir is required")?;
    if once && plan {
        return Err("give --once or --plan, not both".into());
    }
    let state_dir = state_dir.unwrap_or_else(|| {
        let parent = target_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        parent.join(".gitops-state")
    });
    Ok(Args {
        repo,
        policy: policy.unwrap_or_else(|| ReferencePolicy::branch("main")),
        path,
        manifests,
        target_dir,
        state_dir,
        interval,
        drift_interval,
        once,
        plan,
        json,
        verify_signers,
        prune,
        drift,
        writeback_branch,
        writeback_key,
        listen,
        windows,
    })
}

/// Applies `--drift` to every resource whose manifest does not choose its own policy.
struct DefaultDrift {
    inner: Box<dyn Render>,
    drift: DriftPolicy,
}

impl Render for DefaultDrift {
    fn render(&self, snapshot: &Snapshot) -> Result<DesiredState, RenderError> {
        let desired = self.inner.render(snapshot)?;
        let revision = desired.revision().clone();
        let resources = desired
            .into_resources()
            .into_iter()
            .map(|mut r| {
                if !r.annotations.contains_key(DRIFT_ANNOTATION) {
                    r.policy.drift = self.drift;
                }
                r
            })
            .collect();
        DesiredState::new(revision, resources)
    }

    fn write_back(
        &self,
        file: &SnapshotFile,
        resource: &Resource,
        observed: Option<&Observed>,
    ) -> Result<FileEdit, RenderError> {
        self.inner.write_back(file, resource, observed)
    }
}

fn build(args: &Args) -> Result<Engine, String> {
    let mut source = GitSource::builder(args.repo.clone(), args.policy.clone())
        .cache_dir(args.state_dir.join("cache"));
    if let Some(path) = &args.path {
        source = source.path(path.clone());
    }
    if let Some(file) = &args.verify_signers {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--verify-signers {}: {e}", file.display()))?;
        let signers = AllowedSigners::parse(&text)
            .map_err(|e| format!("--verify-signers {}: {e}", file.display()))?;
        source = source.verify(VerifyMode::Head, signers);
    }
    let source = source.build().map_err(|e| e.to_string())?;
    let render: Box<dyn Render> = if args.manifests {
        Box::new(ManifestRender::new())
    } else {
        Box::new(FilesRender::new())
    };
    let render: Arc<dyn Render> = match args.drift {
        Some(drift) => Arc::new(DefaultDrift {
            inner: render,
            drift,
        }),
        None => Arc::from(render),
    };
    // Write-back needs a branch to commit to: the tracked one, or a review branch.
    let mut writeback = GitWriteback::builder(&source, render.clone());
    if let Some(branch) = &args.writeback_branch {
        writeback = writeback.review_branch(branch.clone());
    }
    if let Some(key) = &args.writeback_key {
        writeback = writeback.signing_key(key.clone());
    }
    let writeback = match writeback.build() {
        Ok(w) => Some(w),
        Err(e) if args.drift == Some(DriftPolicy::Writeback) || args.writeback_key.is_some() => {
            return Err(format!("--drift writeback: {e}"));
        }
        // Without a branch, writeback-policy drift is only reported.
        Err(_) => None,
    };
    let target = FsTarget::open_with(&args.target_dir, FsOptions::default().create_root(true))
        .map_err(|e| format!("--target-dir {}: {e}", args.target_dir.display()))?;
    let store = RedbStore::open(&args.state_dir)
        .map_err(|e| format!("--state-dir {}: {e}", args.state_dir.display()))?;
    let mut engine = Engine::builder()
        .source(Arc::new(source))
        .render(render)
        .target(Arc::new(target))
        .store(Arc::new(store));
    if let Some(writeback) = writeback {
        engine = engine.writeback(Arc::new(writeback));
    }
    engine
        .config(
            EngineConfig::default()
                .interval(args.interval)
                .drift_interval(args.drift_interval)
                .prune(args.prune)
                .windows(args.windows.clone()),
        )
        .name("agent")
        .build()
        .map_err(|e| e.to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}

/// Prints a progress bar while a sync runs and one summary line when it ends.
async fn narrate(engine: Engine) {
    let mut events = engine.subscribe();
    let mut bar: Option<ProgressBar> = None;
    while let Ok(event) = events.recv().await {
        match event {
            Event::SyncStarted { .. } => {
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template("{spinner} {pos} resources {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.enable_steady_tick(Duration::from_millis(120));
                bar = Some(b);
            }
            Event::ResourceApplied { id, action } => {
                if let Some(b) = &bar {
                    b.inc(1);
                    b.set_message(format!("{action} {id}"));
                }
            }
            Event::ResourcePruned { id } => {
                if let Some(b) = &bar {
                    b.inc(1);
                    b.set_message(format!("delete {id}"));
                }
            }
            Event::ResourceFailed { error, .. } => eprintln!("  failed: {error}"),
            Event::Stalled { reason, .. } => eprintln!("stalled: {reason}"),
            Event::WrittenBack {
                ids,
                revision: Some(revision),
                published_to,
            } => eprintln!(
                "wrote {} drifted resource(s) back: commit {} on {}",
                ids.len(),
                revision.id,
                published_to.unwrap_or_default()
            ),
            Event::WritebackConflict { path, message, .. } => {
                eprintln!("write-back conflict on {path}: {message}")
            }
            Event::WritebackFailed { error, .. } => eprintln!("write-back failed: {error}"),
            Event::Blocked { message, .. } => eprintln!("{message}"),
            Event::SyncFinished {
                revision,
                result,
                duration,
                summary,
            } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                eprintln!(
                    "{revision}: {result}, {} created, {} updated, {} deleted, {} unchanged in {duration:.1?}",
                    summary.create, summary.update, summary.delete, summary.unchanged
                );
            }
            _ => {}
        }
    }
}

/// What a request to the listener gets: `GET /status` and `GET /history`
/// read (JSON), `GET /healthz` answers `ok`; anything else is a webhook and
/// triggers a reconcile.
async fn answer(request: &[u8], engine: &Engine) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or_default();
    let json = |result: Result<String, String>| match result {
        Ok(body) => ("200 OK", JSON, body + "\n"),
        Err(e) => ("500 Internal Server Error", TEXT, e + "\n"),
    };
    match (method, path) {
        ("GET", "/healthz") => ("200 OK", TEXT, "ok\n".into()),
        ("GET", "/status") => json(to_json(&engine.handle().status())),
        ("GET", "/history") => json(match engine.history(20).await {
            Ok(history) => to_json(&history),
            Err(e) => Err(e.to_string()),
        }),
        _ => {
            engine.handle().reconcile_now();
            ("202 Accepted", TEXT, String::new())
        }
    }
}

/// The listener: read-only endpoints, and any other request is a webhook.
async fn webhook(addr: SocketAddr, engine: Engine) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    tracing::info!(%addr, "webhook listening");
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
            let len = match read {
                Ok(Ok(n)) => n,
                _ => 0,
            };
            let (status, content_type, body) = answer(&buf[..len], &engine).await;
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        });
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let engine = build(&args)?;
    if args.plan {
        let plan = engine.plan().await.map_err(|e| e.to_string())?;
        println!(
            "{}",
            if args.json {
                to_json(&plan)?
            } else {
                plan.to_string()
            }
        );
        return Ok(if plan.has_changes() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    if args.once {
        let report = engine.sync_once().await.map_err(|e| e.to_string())?;
        // A sync that did not run is no success: say why on one error line.
        if let Some(blocked) = &report.blocked {
            return Err(format!("revision {}: {}", report.revision, blocked.message));
        }
        println!(
            "{}",
            if args.json {
                to_json(&report)?
            } else {
                report.to_string()
            }
        );
        return Ok(if report.converged() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    if !args.json {
        tokio::spawn(narrate(engine.clone()));
    }
    if let Some(addr) = args.listen {
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(e) = webhook(addr, engine).await {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        });
    }
    let handle = engine.handle();
    let agent = tokio::spawn(async move { engine.run().await });
    tokio::pin!(agent);
    loop {
        tokio::select! {
            result = &mut agent => {
                return match result {
                    Ok(Ok(())) => Ok(ExitCode::SUCCESS),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
            }
            _ = interrupt.recv() => { eprintln!("shutting down (again to abort)"); handle.shutdown() }
            _ = terminate.recv() => { eprintln!("shutting down (again to abort)"); handle.shutdown() }
            _ = hangup.recv() => handle.reconcile_now(),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) if e == USAGE => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One-shot runs end with one clear line; the long-lived agent logs warnings.
    let default_filter = if args.once || args.plan {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
