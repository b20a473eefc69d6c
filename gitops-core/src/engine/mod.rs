//! The convergent engine: keeps a [`Target`](crate::Target) equal to the
//! release in a [`Source`](crate::Source), in push mode
//! ([`Engine::sync_once`], [`Engine::plan`]) or pull mode ([`Engine::run`])
//! — one code path for both.
//!
//! The loop is level-triggered: a poll tick, a webhook
//! ([`EngineHandle::reconcile_now`]), a drift tick or a retry only says "look
//! again"; every reconcile reads the current revision and observes the
//! target afresh. At most one reconcile runs per engine at a time.
//!
//! ```
//! use std::sync::Arc;
//! use gitops_core::engine::Engine;
//! use gitops_core::testing::{MemorySource, MemoryTarget};
//! use gitops_core::ManifestRender;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let source = Arc::new(MemorySource::new("main"));
//! source.commit([("app.yaml", "kind: Config\nmetadata: { name: web }\nspec: { port: 80 }\n")]);
//! let target = Arc::new(MemoryTarget::new());
//! let engine = Engine::builder()
//!     .source(source.clone())
//!     .render(Arc::new(ManifestRender::new()))
//!     .target(target.clone())
//!     .build()?;
//! let report = engine.sync_once().await?;
//! println!("{report}");
//! assert!(report.converged());
//! assert_eq!(target.get(&"Config/web".parse()?).unwrap()["port"], 80);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//!
//! One concept per file. The public faces are [`builder`](EngineBuilder)
//! and `handle` ([`Engine`], [`EngineHandle`]); `state` holds the loop state
//! and handle requests under two documented locks; `run_loop` is pull mode
//! (what runs next is the pure `next_trigger`); `reconcile` runs one sync
//! phase by phase (`admission`, `prepare`, `gates`, `executor` with
//! `health`, `writeback`); `settle` decides what a finished sync means (a
//! pure verdict) and `verdict` applies it (`retry`, `pin`).

mod admission;
mod blast;
mod builder;
mod config;
mod converge;
mod error;
mod events;
mod executor;
mod gates;
mod guard;
mod handle;
mod health;
mod pin;
mod prepare;
mod reconcile;
mod repair;
mod report;
mod retry;
mod run_loop;
mod settle;
mod state;
mod unchanged;
mod verdict;
mod writeback;

use std::time::Duration;

use tokio::time::Instant;

pub use admission::{Dependency, Needs};
pub use blast::ChangeLimit;
pub use builder::EngineBuilder;
pub use config::{EngineConfig, RetryPolicy, WritebackConflict};
pub use error::{ConfigError, EngineError};
pub use events::{ApplyAction, Event};
pub use handle::{Engine, EngineHandle};
// The stored vocabulary a report speaks in (defined in `crate::record`).
pub use crate::record::{NotConverging, Outcome, ResourceOutcome, SyncResult, Trigger};
pub use report::{SyncReport, Timings};

/// `now + wait`, or about thirty years from now when `wait` is too long for
/// the clock: a `Duration::MAX` interval or timeout means "not by itself",
/// never a panic.
pub(crate) fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}
