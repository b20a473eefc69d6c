//! Quality gates: checks that run before a revision reaches the target
//! (pre-sync) and after it was applied (post-sync).
//!
//! A failing pre-sync gate blocks the apply (the engine stalls on that
//! revision); a failing post-sync gate marks the revision failed, which
//! triggers automated rollback when that policy is on. A gate that could not
//! reach a verdict ([`GateVerdict::Error`]: it timed out, its runner is down)
//! judged nothing: a transient error is retried with backoff, a permanent
//! one stalls with reason `GateUnavailable`. Gate output is kept in the
//! report, the history and the audit log.
//!
//! ```
//! use gitops_core::gate::{GateInput, GateVerdict, gate_fn};
//! // Refuse any revision that deletes more than 10 resources.
//! let gate = gate_fn("max-deletes", |input: GateInput| async move {
//!     let deletes = input.plan.summary.delete;
//!     if deletes > 10 {
//!         GateVerdict::Failed(format!("{deletes} deletes planned, at most 10 allowed"))
//!     } else {
//!         GateVerdict::Passed(format!("{deletes} deletes planned"))
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

/// What a gate concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// The revision may proceed; the gate's output.
    Passed(String),
    /// The revision is refused; why, in the gate's words.
    Failed(String),
    /// The gate could not reach a verdict (it timed out, its runner failed).
    Error {
        /// What went wrong.
        message: String,
        /// Whether running it again later may succeed (retried with backoff);
        /// a permanent error stalls the revision.
        transient: bool,
    },
}

impl GateVerdict {
    /// Whether the revision may proceed.
    pub fn passed(&self) -> bool {
        matches!(self, GateVerdict::Passed(_))
    }
}

/// `Ok(output)` passes, `Err(reason)` fails: the shape of a closure gate.
impl From<Result<String, String>> for GateVerdict {
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(output) => GateVerdict::Passed(output),
            Err(reason) => GateVerdict::Failed(reason),
        }
    }
}

/// Why a gate reached no verdict (kept in memory, not in the stores: the
/// history records such a gate as not passed, with the error as its output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateError {
    /// Running it again later may succeed.
    Transient,
    /// It cannot run until someone fixes it.
    Permanent,
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
    /// Set when the gate reached no verdict ([`GateVerdict::Error`]);
    /// `passed` is then false. Not stored (see [`GateError`]).
    #[serde(skip)]
    pub error: Option<GateError>,
}

impl GateResult {
    /// The result of one run of gate `name`.
    pub fn new(
        name: impl Into<String>,
        stage: GateStage,
        verdict: GateVerdict,
        duration: Duration,
    ) -> Self {
        let (passed, output, error) = match verdict {
            GateVerdict::Passed(output) => (true, output, None),
            GateVerdict::Failed(reason) => (false, reason, None),
            GateVerdict::Error { message, transient } => {
                let kind = if transient {
                    GateError::Transient
                } else {
                    GateError::Permanent
                };
                (false, format!("could not run: {message}"), Some(kind))
            }
        };
        Self {
            name: name.into(),
            stage,
            passed,
            output,
            duration,
            error,
        }
    }
}

/// A quality gate.
#[async_trait]
pub trait Gate: Send + Sync {
    /// A short name for reports and logs.
    fn name(&self) -> &str;

    /// Runs the check. The engine bounds it by its gate timeout; a gate that
    /// takes longer counts as a transient [`GateVerdict::Error`].
    async fn check(&self, input: &GateInput) -> GateVerdict;
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

/// A gate that runs `check`: an async closure returning a [`GateVerdict`],
/// or `Ok(output)` to pass and `Err(reason)` to fail.
pub fn gate_fn<F, Fut, V>(name: impl Into<String>, check: F) -> Arc<dyn Gate>
where
    F: Fn(GateInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = V> + Send + 'static,
    V: Into<GateVerdict> + 'static,
{
    Arc::new(FnGate {
        name: name.into(),
        check,
    })
}

#[async_trait]
impl<F, Fut, V> Gate for FnGate<F>
where
    F: Fn(GateInput) -> Fut + Send + Sync,
    Fut: Future<Output = V> + Send,
    V: Into<GateVerdict>,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self, input: &GateInput) -> GateVerdict {
        (self.check)(input.clone()).await.into()
    }
}
