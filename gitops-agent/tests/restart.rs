//! A dead application engine restarts by itself (issue 18): through the
//! library API (`Apps::new(args, targets)`), with a target factory whose
//! target panics on its first apply, over a real Git repository served over
//! smart HTTP and real directories. The engine of that application ends
//! with the panic, the supervisor runs it again after its backoff, its
//! `/status` row and `gitops_app_restarts_total` count the restart, and
//! the other application is never touched: it keeps following its branch
//! with no restart.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use clap::Parser;
use gitops_agent::config::{AppSpec, AppTarget};
use gitops_agent::{AgentArgs, Apps};
use gitops_core::{
    DesiredState, Diff, Health, Observed, RenderError, Resource, ResourceId, Target, TargetError,
};
use gitops_targets::{FsOptions, FsTarget};
use support::apps::{Served, app, get, get_json, read, wait_until};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

/// A directory target that panics on its first apply.
struct PanicOnce {
    inner: FsTarget,
    armed: AtomicBool,
}

#[async_trait]
impl Target for PanicOnce {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        self.inner.observe(id).await
    }

    async fn observe_many(&self, ids: &[ResourceId]) -> Vec<Result<Option<Observed>, TargetError>> {
        self.inner.observe_many(ids).await
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the test target panics on its first apply");
        }
        self.inner.apply(resource).await
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        self.inner.delete(id).await
    }

    async fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        self.inner.health(id).await
    }

    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        self.inner.differs(desired, observed)
    }

    fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
        self.inner.check(desired)
    }
}

fn dir_target(app: &AppSpec) -> Result<FsTarget, String> {
    match &app.target {
        AppTarget::Dir(dir) => FsTarget::open_with(dir, FsOptions::default().create_root(true))
            .map_err(|e| e.to_string()),
        other => Err(format!("unsupported target {other:?}")),
    }
}

/// `flaky` panics on its first apply; every other application is a plain
/// directory.
fn targets(app: &AppSpec) -> Result<Arc<dyn Target>, String> {
    let inner = dir_target(app)?;
    if app.name == "flaky" {
        return Ok(Arc::new(PanicOnce {
            inner,
            armed: AtomicBool::new(true),
        }));
    }
    Ok(Arc::new(inner))
}

fn restarts(port: u16, name: &str) -> Option<u64> {
    let status = get_json(port, "/status");
    status["apps"]
        .as_array()?
        .iter()
        .find(|a| a["app"] == name)?["restarts"]
        .as_u64()
}

#[test]
fn an_engine_that_panics_is_restarted_and_the_others_are_untouched() {
    let ops = Served::start(&[("flaky/f.conf", "f = 1\n"), ("steady/s.conf", "s = 1\n")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let target = |name: &str| root.join("srv").join(name);
    let config = root.join("apps.toml");
    let text = format!(
        "[defaults]\ninterval = \"1s\"\ndrift_interval = \"1h\"\n\n{}{}",
        app("flaky", &ops.url(), "flaky", &target("flaky"), ""),
        app("steady", &ops.url(), "steady", &target("steady"), ""),
    );
    std::fs::write(&config, text).expect("write the config");
    let port = support::free_port();
    let args = Cli::try_parse_from([
        "agent",
        "--config",
        path(&config),
        "--state-dir",
        path(&root.join("state")),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .expect("valid flags")
    .agent;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let apps = Apps::new(args, targets).expect("the agent starts");
    let running = runtime.spawn(apps.run());

    let (flaky, steady) = (
        target("flaky").join("f.conf"),
        target("steady").join("s.conf"),
    );
    wait_until("steady deployed", || read(&steady) == "s = 1\n");
    wait_until("flaky restarted and deployed", || {
        read(&flaky) == "f = 1\n" && restarts(port, "flaky") == Some(1)
    });
    assert_eq!(
        restarts(port, "steady"),
        Some(0),
        "steady was never restarted"
    );
    assert_eq!(
        get_json(port, "/apps/flaky/status")["restarts"],
        1,
        "its own status says so too"
    );
    let metrics = get(port, "/metrics").1;
    assert!(
        metrics.contains("gitops_app_restarts_total{app=\"flaky\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("gitops_app_restarts_total{app=\"steady\"}"),
        "{metrics}"
    );

    // Both keep following their branch; neither restarts again.
    ops.repo.commit(
        &[("flaky/f.conf", "f = 2\n"), ("steady/s.conf", "s = 2\n")],
        "two",
    );
    wait_until("both follow the new commit", || {
        read(&flaky) == "f = 2\n" && read(&steady) == "s = 2\n"
    });
    assert_eq!(restarts(port, "flaky"), Some(1));
    assert_eq!(restarts(port, "steady"), Some(0));
    assert!(!running.is_finished(), "the agent keeps running");
    runtime.shutdown_background();
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
