//! The stored vocabulary: what the state stores write — [`HistoryEntry`],
//! [`AuditRecord`], [`EngineRecord`] and the enums inside them — and the
//! [`FORMAT_VERSION`] that names their layout.
//!
//! This module sits below both the stores and the engine: it uses the model,
//! the plan summary and gate results, never the engine. A renamed variant
//! here changes stored data, so the rule of `docs/stored-data.md` applies:
//! any change to what the stores write bumps [`FORMAT_VERSION`] and keeps
//! reading the previous version; a newer version is refused.
//!
//! ```
//! use gitops_core::record::{SyncResult, Trigger};
//! // Stored as snake_case strings.
//! assert_eq!(serde_json::to_string(&SyncResult::GateFailed)?, "\"gate_failed\"");
//! assert_eq!(serde_json::to_string(&Trigger::Drift)?, "\"drift\"");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::gate::GateResult;
use crate::id::ResourceId;
use crate::model::Revision;
use crate::plan::Summary;

/// The record format this build writes. It reads this one and every older
/// one ([`OLDEST_READABLE_FORMAT`] and up).
///
/// - 1: times as serde's `{"secs_since_epoch": …, "nanos_since_epoch": …}`.
/// - 2: times as RFC 3339 text (`"2026-12-03T12:00:00.5Z"`); nothing else
///   changed, so format-1 records read as they are.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest record format this build still reads.
pub const OLDEST_READABLE_FORMAT: u32 = 1;

/// Whether this build reads records of `format`.
pub fn readable(format: u32) -> bool {
    (OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&format)
}

/// Why a reconcile ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The poll interval found a new revision.
    Poll,
    /// `EngineHandle::reconcile_now` (what a webhook receiver calls).
    Webhook,
    /// The drift-check interval.
    Drift,
    /// A scheduled retry after a transient failure, or an explicit
    /// `EngineHandle::retry`.
    Retry,
    /// An explicit `sync_once` (push mode).
    Manual,
    /// A rollback to a recorded revision.
    Rollback,
    /// A pipeline promoted the revision past a stage (audit records only).
    Promotion,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Drift => "drift",
            Trigger::Retry => "retry",
            Trigger::Manual => "manual",
            Trigger::Rollback => "rollback",
            Trigger::Promotion => "promotion",
        })
    }
}

/// What happened to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Created.
    Created,
    /// Updated.
    Updated,
    /// Already as desired.
    Unchanged,
    /// Deleted because it left Git.
    Pruned,
    /// Drifted and left alone by policy (`ignore`), or handed to write-back.
    DriftKept,
    /// Apply, delete or health failed.
    Failed {
        /// The error text.
        error: String,
        /// Whether a retry may help.
        transient: bool,
    },
    /// Applied, but did not become healthy (`Degraded`, or still
    /// `Progressing` at the health timeout).
    Unhealthy {
        /// Why, in the target's words.
        reason: String,
    },
    /// Not attempted because a dependency did not succeed.
    Skipped {
        /// The dependency that blocked it.
        blocked_by: ResourceId,
    },
    /// Not attempted: shutdown or a newer revision interrupted the sync.
    Cancelled,
}

impl Outcome {
    /// Whether the resource ended as Git wants it.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Created
                | Outcome::Updated
                | Outcome::Unchanged
                | Outcome::Pruned
                | Outcome::DriftKept
        )
    }
}

/// One resource's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceOutcome {
    /// The resource.
    pub id: ResourceId,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How the reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResult {
    /// Every resource is as desired and healthy.
    Converged,
    /// Some resources failed; see the outcomes.
    Failed,
    /// A newer revision arrived while waiting; the engine moves to it.
    Superseded,
    /// Shutdown interrupted the sync.
    Interrupted,
    /// A plan only (dry run); nothing was changed.
    Planned,
    /// A pre-sync gate failed; nothing was applied.
    GateFailed,
    /// A sync window closed during the sync and the policy is to stop at
    /// the next wave boundary; the rest is applied when the windows allow.
    WindowClosed,
    /// A sync window or a dependency held the sync back before it started;
    /// nothing was changed and it is tried again later (the report says
    /// what blocks it). Never stored: a blocked sync records no history.
    Blocked,
    /// The engine is suspended; nothing was changed. Never stored.
    Suspended,
    /// A second shutdown request aborted the sync where it stood. Never
    /// stored.
    Aborted,
}

impl SyncResult {
    /// Whether the sync ran at all (a history entry is recorded for it):
    /// false for [`Blocked`](Self::Blocked), [`Suspended`](Self::Suspended)
    /// and [`Aborted`](Self::Aborted).
    pub fn ran(self) -> bool {
        !matches!(
            self,
            SyncResult::Blocked | SyncResult::Suspended | SyncResult::Aborted
        )
    }
}

impl fmt::Display for SyncResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncResult::Converged => "converged",
            SyncResult::Failed => "failed",
            SyncResult::Superseded => "superseded",
            SyncResult::Interrupted => "interrupted",
            SyncResult::Planned => "planned",
            SyncResult::GateFailed => "blocked by a gate",
            SyncResult::WindowClosed => "stopped by a sync window",
            SyncResult::Blocked => "blocked",
            SyncResult::Suspended => "suspended",
            SyncResult::Aborted => "aborted",
        })
    }
}

/// One entry of the sync history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The revision: id, reference, author, committer time, message.
    pub revision: Revision,
    /// Why the sync ran.
    pub trigger: Trigger,
    /// How it ended.
    pub result: SyncResult,
    /// Why it could not run, when it failed before applying anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Plan counts.
    pub summary: Summary,
    /// Outcomes of the resources that changed, failed or were skipped
    /// (unchanged ones are only counted, to keep entries small).
    pub outcomes: Vec<ResourceOutcome>,
    /// Gates that ran, with their output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// Resources whose difference came back after they were applied (see
    /// [`NotConverging`]); absent from entries without any, so entries
    /// without them are written exactly as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_converging: Vec<NotConverging>,
    /// When it started (RFC 3339).
    #[serde(with = "crate::rfc3339")]
    pub started_at: SystemTime,
    /// When it ended (RFC 3339).
    #[serde(with = "crate::rfc3339")]
    pub finished_at: SystemTime,
}

/// A resource whose difference from Git came back, the same, after the
/// engine applied it: the target stores something else than it was given
/// (`true` as `1`), so comparing never says equal. Re-applied with backoff,
/// not on every drift check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotConverging {
    /// The resource.
    pub id: ResourceId,
    /// The paths of the fields that still differ (`spec.enabled`; never
    /// their values); empty when the resource stays absent.
    pub fields: Vec<String>,
    /// Applies of the same spec against the same difference so far.
    pub applies: usize,
}

/// What an audited change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    /// Created in the target.
    Create,
    /// Updated in the target.
    Update,
    /// Deleted from the target.
    Delete,
    /// Drift recorded in Git instead of reverted.
    Writeback,
    /// A quality gate ran (the id is `Gate/<name>`; `detail` has its output).
    Gate,
    /// A revision passed a pipeline stage and was promoted (the id is
    /// `Stage/<name>`; `reference` is the promoted reference, `detail` says
    /// where to).
    Promote,
}

/// One change applied to the target: who, why, what, when, from which revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the change was made (RFC 3339).
    #[serde(with = "crate::rfc3339")]
    pub at: SystemTime,
    /// The resource.
    pub id: ResourceId,
    /// What was done.
    pub action: AuditAction,
    /// Digest of what was applied before (`None` for a create).
    pub digest_before: Option<String>,
    /// Digest of what is applied now (`None` for a delete).
    pub digest_after: Option<String>,
    /// The commit id it came from.
    pub revision: String,
    /// The reference (branch, tag) it was selected through.
    pub reference: String,
    /// Who: the commit author.
    pub author: String,
    /// Why: the first line of the commit message.
    pub message: String,
    /// What triggered the sync.
    pub trigger: Trigger,
    /// Extra detail: a gate's verdict and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the engine must remember about revisions across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EngineRecord {
    /// The last revision fully applied.
    pub last_applied: Option<Revision>,
    /// The last revision applied and healthy (the automatic rollback target).
    pub last_healthy: Option<Revision>,
    /// A revision pinned by a rollback: automatic advance stops until resume.
    pub pinned: Option<Revision>,
    /// With a pin: the head it was rolled back from. When set, a commit
    /// other than this one (and the pinned one) ends the pin by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpin_after: Option<String>,
    /// Revisions that failed and are not retried until a newer commit (ids).
    pub bad: Vec<String>,
    /// A revision someone confirmed past the deletion or change limits
    /// (its id), kept until it has synced. Omitted when unset, so records
    /// without it are written as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<String>,
    /// The last sync that converged with every resource equal to Git, and
    /// what vouches for it: a later reconcile of the same revision with the
    /// same settings, whose target proves nothing changed, skips snapshot,
    /// render and plan. Omitted when unset (records without it are written
    /// as before); an older build ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Seal>,
}

/// A converged state the engine can recognise without rendering: the
/// revision, a digest of the settings it was rendered and applied with, the
/// inventory it left and the target's token for what it held. Holds no
/// resource content, no spec and no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The revision id (the commit).
    pub revision: String,
    /// SHA-256 (hex) of the source's, the renderer's and the engine's
    /// settings.
    pub settings: String,
    /// The inventory's version in the store after that sync.
    pub inventory: u64,
    /// The target's [`seal`](crate::Target::seal) token after that sync.
    pub target: String,
}
