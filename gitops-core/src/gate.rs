//! Quality gates: checks that run before a revision reaches the target
//! (pre-sync) and after it was applied (post-sync).
//!
//! A failing pre-sync gate blocks the apply (the engine stalls on that
//! revision); a failing post-sync gate marks the revision failed, which
//! triggers automated rollback when that policy is on. Gate output is kept
//! in the report, the history and the audit log.
//!
//! ```
//! use gitops_core::gate::{GateInput, gate_fn};
//! // Refuse any revision that deletes more than 10 resources.
//! let gate = gate_fn("max-deletes", |input: GateInput| async move {
//!     let deletes = input.plan.summary.delete;
//!     if deletes > 10 {
//!         Err(format!("{deletes} deletes planned, at most 10 allowed"))
//!     } else {
//!         Ok(format!("{deletes} deletes planned"))
//!     }
//! });
//! # let _ = gate;
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::Revision;
use crate::plan::Plan;

/// When a gate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStage {
    /// After planning, before anything is applied.
    PreSync,
    /// After every resource was applied, found healthy and pruned.
    PostSync,
}

/// What a gate is given: the stage, the revision and the plan.
#[derive(Debug, Clone)]
pub struct GateInput {
    /// Pre- or post-sync.
    pub stage: GateStage,
    /// The revision being synced.
    pub revision: Revision,
    /// The plan (shared, cheap to clone).
    pub plan: Arc<Plan>,
}

/// A gate's verdict and what it printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateResult {
    /// The gate's name.
    pub name: String,
    /// Pre- or post-sync.
    pub stage: GateStage,
    /// Whether it passed.
    pub passed: bool,
    /// Its output (capped by the gate; a command gate keeps the tail).
    pub output: String,
    /// How long it took.
    pub duration: Duration,
}

/// A quality gate. `Ok(output)` passes, `Err(output)` fails.
#[async_trait]
pub trait Gate: Send + Sync {
    /// A short name for reports and logs.
    fn name(&self) -> &str;

    /// Runs the check.
    async fn check(&self, input: &GateInput) -> Result<String, String>;
}

/// A gate from an async closure; see [`gate_fn`].
pub struct FnGate<F> {
    name: String,
    check: F,
}

impl<F> std::fmt::Debug for FnGate<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnGate").field("name", &self.name).finish()
    }
}

/// A gate that runs `check` (an async closure returning `Ok(output)` to pass
/// or `Err(output)` to fail).
pub fn gate_fn<F, Fut>(name: impl Into<String>, check: F) -> Arc<dyn Gate>
where
    F: Fn(GateInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    Arc::new(FnGate {
        name: name.into(),
        check,
    })
}

#[async_trait]
impl<F, Fut> Gate for FnGate<F>
where
    F: Fn(GateInput) -> Fut + Send + Sync,
    Fut: Future<Output = Result<String, String>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self, input: &GateInput) -> Result<String, String> {
        (self.check)(input.clone()).await
    }
}
