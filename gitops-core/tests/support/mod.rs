//! Fixtures shared by gitops-core's integration tests.
#![allow(dead_code)] // each test binary uses its own part of it

use std::time::Duration;

pub mod age;
pub mod world;

use gitops_core::{Engine, EngineError, ResourceId};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A resource id from `Kind/name`.
pub fn id(s: &str) -> ResourceId {
    s.parse().expect("valid id")
}

/// An audit record of an update of `id` (`Kind/name`) at `at`.
pub fn audit_record(id: &str, at: std::time::SystemTime) -> gitops_core::AuditRecord {
    gitops_core::AuditRecord {
        at,
        id: self::id(id),
        action: gitops_core::store::AuditAction::Update,
        digest_before: None,
        digest_after: Some("d".into()),
        revision: "abc".into(),
        reference: "main".into(),
        author: "a".into(),
        message: "m".into(),
        trigger: gitops_core::engine::Trigger::Poll,
        detail: None,
    }
}

/// Polls `cond` every 100 ms of (paused) time, up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// An engine running in pull mode on its own task.
pub struct Agent {
    engine: Engine,
    run: JoinHandle<Result<(), EngineError>>,
}

impl Agent {
    /// Starts `engine.run()`.
    pub fn start(engine: &Engine) -> Self {
        let running = engine.clone();
        Self {
            engine: engine.clone(),
            run: tokio::spawn(async move { running.run().await }),
        }
    }

    /// Asks for a graceful shutdown and waits until the loop ended cleanly.
    pub async fn stop(self) {
        self.engine.handle().shutdown();
        self.join().await.expect("run ends cleanly");
    }

    /// Waits until the loop ends, however it was asked to.
    pub async fn join(self) -> Result<(), EngineError> {
        self.run.await.expect("joins")
    }
}
