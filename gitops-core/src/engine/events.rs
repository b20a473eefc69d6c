//! Events an engine broadcasts while it works.

use std::time::Duration;

use serde::Serialize;

use crate::diff::Diff;
use crate::id::ResourceId;
use crate::model::{DriftPolicy, Revision};
use crate::plan::Summary;
use crate::record::{SyncResult, Trigger};
use crate::render::RenderWarning;
use crate::status::{BlockReason, Reason};

/// What an apply did to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// It did not exist in the target.
    Create,
    /// It existed and differed.
    Update,
}

impl std::fmt::Display for ApplyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyAction::Create => "create",
            ApplyAction::Update => "update",
        })
    }
}

/// Something that happened; subscribe with `Engine::subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A reconcile began.
    SyncStarted {
        /// The revision being synced.
        revision: Revision,
        /// Why.
        trigger: Trigger,
    },
    /// A reconcile ended.
    SyncFinished {
        /// The revision.
        revision: Revision,
        /// How it ended (the value the history records).
        result: SyncResult,
        /// How long it took.
        duration: Duration,
        /// The plan's counts: created, updated, deleted, unchanged.
        summary: Summary,
    },
    /// A resource was created or updated.
    ResourceApplied {
        /// The resource.
        id: ResourceId,
        /// Created or updated.
        action: ApplyAction,
    },
    /// Applying, or waiting for the health of, a resource failed.
    ResourceFailed {
        /// The resource.
        id: ResourceId,
        /// The error text.
        error: String,
        /// Whether a retry may help.
        transient: bool,
    },
    /// A resource was not applied because a dependency failed.
    ResourceSkipped {
        /// The resource.
        id: ResourceId,
        /// The failed dependency.
        blocked_by: ResourceId,
    },
    /// A resource gone from Git was deleted from the target.
    ResourcePruned {
        /// The resource.
        id: ResourceId,
    },
    /// The target differs from what was applied from Git.
    DriftDetected {
        /// The resource.
        id: ResourceId,
        /// The policy that decides what happens next.
        policy: DriftPolicy,
        /// The differing fields (`None`: deleted in the target).
        diff: Option<Diff>,
    },
    /// A drifted resource was re-applied from Git.
    DriftReverted {
        /// The resource.
        id: ResourceId,
    },
    /// Drifted resources were written back to the source.
    WrittenBack {
        /// The resources.
        ids: Vec<ResourceId>,
        /// The new commit, if one was made.
        revision: Option<Revision>,
        /// The reference it was published to.
        published_to: Option<String>,
    },
    /// A write-back found the same file changed upstream: nothing was
    /// overwritten; the engine fell back to its conflict policy.
    WritebackConflict {
        /// The resources.
        ids: Vec<ResourceId>,
        /// The file that changed upstream.
        path: String,
        /// Detail.
        message: String,
        /// The fallback taken.
        fallback: super::config::WritebackConflict,
    },
    /// Write-back failed; the drift stays reported.
    WritebackFailed {
        /// The resources.
        ids: Vec<ResourceId>,
        /// The error text.
        error: String,
    },
    /// A revision rendered with warnings (values YAML 1.1 and 1.2 read
    /// differently, a sensitive resource whose drift is reverted instead of
    /// written back); sent once, when the revision is first rendered. The
    /// plan shows the same warnings.
    Warnings {
        /// The revision rendered.
        revision: Revision,
        /// What may not mean what its author meant, naming file and line.
        warnings: Vec<RenderWarning>,
    },
    /// The engine stopped retrying until the source changes or a manual trigger.
    Stalled {
        /// The revision, when one was read.
        revision: Option<Revision>,
        /// Why, as the status condition says it.
        reason: Reason,
        /// What happened, in words.
        message: String,
    },
    /// A sync window or a dependency holds the engine back (sent when the
    /// reason changes, not on every check).
    Blocked {
        /// The revision that waits.
        revision: Option<Revision>,
        /// A window or a dependency.
        reason: BlockReason,
        /// What blocks it and until when.
        message: String,
    },
    /// A resource's difference came back, the same, after it was applied:
    /// it does not converge and is re-applied with backoff (sent when it is
    /// first found, not on every check).
    NotConverging {
        /// The resource.
        id: ResourceId,
        /// The paths of the fields that still differ (no values).
        fields: Vec<String>,
        /// Applies of the same spec against the same difference so far.
        applies: usize,
        /// What to do about it, in words.
        message: String,
    },
    /// A retry is scheduled.
    RetryScheduled {
        /// The revision, when one was read.
        revision: Option<Revision>,
        /// 1 for the first retry.
        attempt: usize,
        /// Delay until the retry.
        after: Duration,
        /// Why the retry is needed, as the status condition says it.
        reason: Reason,
        /// The failure, in words.
        message: String,
    },
}
