//! [`SyncReport`]: what one reconcile did, for people (`Display`) and tools (`Serialize`).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::gate::GateResult;
use crate::model::Revision;
use crate::plan::Plan;
use crate::record::{NotConverging, Outcome, ResourceOutcome, SyncResult, Trigger};
use crate::status::Blocked;

/// Time spent in each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Timings {
    /// Reading the snapshot (zero when the revision was already rendered).
    pub fetch: Duration,
    /// Rendering it (zero when cached).
    pub render: Duration,
    /// Observe and plan.
    pub plan: Duration,
    /// Apply waves, including health waits.
    pub apply: Duration,
    /// Deletes.
    pub prune: Duration,
    /// The whole reconcile.
    pub total: Duration,
}

/// The result of one reconcile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    /// The revision synced.
    pub revision: Revision,
    /// Why it ran.
    pub trigger: Trigger,
    /// When it started.
    pub started_at: SystemTime,
    /// How it ended.
    pub result: SyncResult,
    /// The plan it executed.
    pub plan: Plan,
    /// Per-resource results, in execution order; resources not touched
    /// (unchanged) are included.
    pub outcomes: Vec<ResourceOutcome>,
    /// Pre- and post-sync gates that ran, with their output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// Time per phase.
    pub timings: Timings,
    /// The commit that recorded `writeback`-policy drift in Git, when one
    /// was made on the reference the engine deploys from (the next release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_back: Option<Revision>,
    /// What held the sync back, when the result is [`SyncResult::Blocked`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// Resources whose difference came back after they were applied; they
    /// are re-applied with backoff, not on every drift check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_converging: Vec<NotConverging>,
}

impl SyncReport {
    /// A report of a sync of `revision` that changed nothing and ended as
    /// `result` (blocked, suspended, aborted).
    pub fn untouched(revision: Revision, trigger: Trigger, result: SyncResult) -> Self {
        Self {
            plan: crate::plan::Plan::empty(revision.clone()),
            revision,
            trigger,
            started_at: SystemTime::now(),
            result,
            outcomes: Vec::new(),
            gates: Vec::new(),
            timings: Timings::default(),
            written_back: None,
            blocked: None,
            not_converging: Vec::new(),
        }
    }

    /// Whether the target now matches the revision.
    pub fn converged(&self) -> bool {
        self.result == SyncResult::Converged
    }

    /// Counts of created, updated, pruned, unchanged, failed, skipped resources.
    pub fn counts(&self) -> [usize; 6] {
        let mut c = [0; 6];
        for o in &self.outcomes {
            let i = match o.outcome {
                Outcome::Created => 0,
                Outcome::Updated => 1,
                Outcome::Pruned => 2,
                Outcome::Unchanged | Outcome::DriftKept => 3,
                Outcome::Failed { .. } | Outcome::Unhealthy { .. } => 4,
                Outcome::Skipped { .. } | Outcome::Cancelled => 5,
            };
            c[i] += 1;
        }
        c
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [created, updated, pruned, unchanged, failed, skipped] = self.counts();
        write!(
            f,
            "{} {} ({}): {created} created, {updated} updated, {pruned} deleted, {unchanged} unchanged",
            self.revision, self.result, self.trigger
        )?;
        if let Some(blocked) = &self.blocked {
            return write!(f, "\n  {}", blocked.message);
        }
        if failed + skipped > 0 {
            write!(f, ", {failed} failed, {skipped} skipped")?;
        }
        write!(f, " in {:.1?}", self.timings.total)?;
        let kept = self
            .outcomes
            .iter()
            .filter(|o| o.outcome == Outcome::DriftKept)
            .count();
        if let Some(commit) = &self.written_back {
            write!(f, "\n  drift written back to Git as {commit}")?;
        } else if kept > 0 {
            write!(
                f,
                "\n  {kept} drifted resource(s) kept (ignore or write-back policy)"
            )?;
        }
        for g in &self.gates {
            let verdict = if g.passed { "passed" } else { "FAILED" };
            write!(f, "\n  gate {} ({:?}) {verdict}", g.name, g.stage)?;
            if !g.passed && !g.output.is_empty() {
                write!(f, ": {}", g.output.trim())?;
            }
        }
        for n in &self.not_converging {
            let fields = if n.fields.is_empty() {
                "(absent)".to_owned()
            } else {
                n.fields.join(", ")
            };
            write!(
                f,
                "\n  ! {}: does not converge ({fields} still differs after {} applies)",
                n.id, n.applies
            )?;
        }
        for o in &self.outcomes {
            match &o.outcome {
                // Errors already name their resource.
                Outcome::Failed { error, .. } => write!(f, "\n  ✗ {error}")?,
                Outcome::Unhealthy { reason } => write!(f, "\n  ✗ {reason}")?,
                Outcome::Skipped { blocked_by } => {
                    write!(f, "\n  - {}: skipped, blocked by {blocked_by}", o.id)?
                }
                _ => {}
            }
        }
        Ok(())
    }
}
