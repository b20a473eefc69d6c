//! Engine status in the style of Flux's conditions.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::diff::Diff;
use crate::id::ResourceId;
use crate::model::{DriftPolicy, Revision};

/// The kinds of condition, always all present in [`Status::conditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ConditionKind {
    /// The target matches the last attempted revision and is healthy.
    Ready,
    /// A reconcile is in progress.
    Reconciling,
    /// Retrying will not help until the source changes or someone asks
    /// (render error, permanent target error, verification failure).
    Stalled,
    /// The retry budget of the revision ran out.
    Failed,
}

/// One condition: whether it holds, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// Which condition.
    pub kind: ConditionKind,
    /// Whether it holds.
    pub status: bool,
    /// Why, e.g. [`Reason::ReconciliationSucceeded`] (serialised as its
    /// CamelCase name).
    pub reason: Reason,
    /// A human message.
    pub message: String,
    /// When `status` last changed (serialised as RFC 3339).
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub since: SystemTime,
}

/// Why a condition is as it is. Serialised (and displayed) as its CamelCase
/// name, the strings Flux-style tooling expects; compares equal to that
/// string (`reason == "Stalled"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum Reason {
    /// No reconcile has finished yet.
    Initializing,
    /// No reconcile is running.
    Idle,
    /// The condition does not hold; nothing to report.
    None,
    /// A reconcile is running.
    Progressing,
    /// The last reconcile converged.
    ReconciliationSucceeded,
    /// A newer revision replaced the one being synced.
    Superseded,
    /// Shutdown interrupted the sync.
    Interrupted,
    /// A sync window is closed.
    SyncWindowClosed,
    /// An application this one depends on is not ready.
    DependencyNotReady,
    /// A pre-sync gate failed.
    GateFailed,
    /// A post-sync gate failed.
    PostSyncGateFailed,
    /// A gate could not reach a verdict (it timed out, or its runner failed).
    GateUnavailable,
    /// A resource failed to apply, delete or become healthy.
    ResourceFailed,
    /// The source, the target or the store could not be reached.
    SourceOrTargetUnavailable,
    /// The revision could not be rendered.
    RenderFailed,
    /// The revision would delete every managed resource.
    EmptyRevisionRefused,
    /// The revision would delete or change more than the limits allow and
    /// waits for someone to confirm it.
    ConfirmationRequired,
    /// A rollback named a revision the source cannot provide.
    RollbackFailed,
    /// The source refused the revision for good (e.g. verification).
    SourceFailed,
    /// Any other reason a reconcile could not run.
    ReconciliationFailed,
    /// An automatic rollback is under way.
    RollingBack,
    /// The revision failed and the last healthy one was restored.
    RolledBack,
    /// The retry budget of the revision ran out.
    RetriesExhausted,
    /// The engine waits for a new revision or an explicit reconcile.
    Stalled,
    /// A retry is scheduled.
    RetryScheduled,
    /// The revision failed.
    Failed,
    /// A resource still differs after it was applied (the target stores
    /// other values than Git's); it is re-applied with backoff.
    NotConverging,
}

impl Reason {
    /// The CamelCase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initializing => "Initializing",
            Reason::Idle => "Idle",
            Reason::None => "None",
            Reason::Progressing => "Progressing",
            Reason::ReconciliationSucceeded => "ReconciliationSucceeded",
            Reason::Superseded => "Superseded",
            Reason::Interrupted => "Interrupted",
            Reason::SyncWindowClosed => "SyncWindowClosed",
            Reason::DependencyNotReady => "DependencyNotReady",
            Reason::GateFailed => "GateFailed",
            Reason::PostSyncGateFailed => "PostSyncGateFailed",
            Reason::GateUnavailable => "GateUnavailable",
            Reason::ResourceFailed => "ResourceFailed",
            Reason::SourceOrTargetUnavailable => "SourceOrTargetUnavailable",
            Reason::RenderFailed => "RenderFailed",
            Reason::EmptyRevisionRefused => "EmptyRevisionRefused",
            Reason::ConfirmationRequired => "ConfirmationRequired",
            Reason::RollbackFailed => "RollbackFailed",
            Reason::SourceFailed => "SourceFailed",
            Reason::ReconciliationFailed => "ReconciliationFailed",
            Reason::RollingBack => "RollingBack",
            Reason::RolledBack => "RolledBack",
            Reason::RetriesExhausted => "RetriesExhausted",
            Reason::Stalled => "Stalled",
            Reason::RetryScheduled => "RetryScheduled",
            Reason::Failed => "Failed",
            Reason::NotConverging => "NotConverging",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<BlockReason> for Reason {
    fn from(reason: BlockReason) -> Self {
        match reason {
            BlockReason::SyncWindowClosed => Reason::SyncWindowClosed,
            BlockReason::DependencyNotReady => Reason::DependencyNotReady,
        }
    }
}

/// A resource found drifted by the last reconcile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftEntry {
    /// The resource.
    pub id: ResourceId,
    /// Its policy.
    pub policy: DriftPolicy,
    /// The differing fields; `None` when it was deleted in the target.
    pub diff: Option<Diff>,
    /// Whether the engine resolved it (reverted or written back).
    pub resolved: bool,
}

/// A scheduled retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryInfo {
    /// 1 for the first retry.
    pub attempt: usize,
    /// Delay from the failure to the retry.
    pub after: Duration,
}

/// What holds an engine back from syncing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BlockReason {
    /// A sync window is closed (a deny window is open, or no allow window is).
    SyncWindowClosed,
    /// An application this one depends on is not Ready at the needed revision.
    DependencyNotReady,
}

impl BlockReason {
    /// The CamelCase reason used in conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::SyncWindowClosed => "SyncWindowClosed",
            BlockReason::DependencyNotReady => "DependencyNotReady",
        }
    }
}

/// Why the last attempt to sync did not start, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// Window or dependency.
    pub reason: BlockReason,
    /// What blocks it, e.g. "sync blocked by deny window freeze until
    /// 2026-11-27T06:00:00Z" or "waiting for app `db`: at main@sha1:abc,
    /// needs main@sha1:def or a descendant".
    pub message: String,
    /// When a closed window opens again (`None` for a dependency, or no
    /// opening within the look-ahead). Serialised as RFC 3339.
    #[serde(serialize_with = "crate::rfc3339::option::serialize")]
    pub until: Option<SystemTime>,
    /// The revision that waits.
    pub revision: Option<Revision>,
}

/// What an engine is doing and what it last did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// `Ready`, `Reconciling`, `Stalled`, `Failed`, in that order.
    pub conditions: Vec<Condition>,
    /// The last revision fully applied and healthy.
    pub last_applied: Option<Revision>,
    /// The last revision a reconcile started on.
    pub last_attempted: Option<Revision>,
    /// Drift found by the last reconcile.
    pub drift: Vec<DriftEntry>,
    /// Whether automatic reconciles are suspended.
    pub suspended: bool,
    /// The next retry, if one is scheduled.
    pub retry: Option<RetryInfo>,
    /// Set while a sync window or a dependency holds the engine back;
    /// cleared when a sync starts. Checked again on every poll, drift
    /// check, retry and trigger.
    pub blocked: Option<Blocked>,
}

impl Default for Status {
    fn default() -> Self {
        let now = SystemTime::now();
        let condition = |kind, reason| Condition {
            kind,
            status: false,
            reason,
            message: String::new(),
            since: now,
        };
        Self {
            conditions: vec![
                condition(ConditionKind::Ready, Reason::Initializing),
                condition(ConditionKind::Reconciling, Reason::Idle),
                condition(ConditionKind::Stalled, Reason::None),
                condition(ConditionKind::Failed, Reason::None),
            ],
            last_applied: None,
            last_attempted: None,
            drift: Vec::new(),
            suspended: false,
            retry: None,
            blocked: None,
        }
    }
}

impl Status {
    /// One condition.
    pub fn condition(&self, kind: ConditionKind) -> &Condition {
        // All four kinds are always present (see Default); fall back to the first.
        self.conditions
            .iter()
            .find(|c| c.kind == kind)
            .unwrap_or(&self.conditions[0])
    }

    /// Whether a condition holds.
    pub fn is(&self, kind: ConditionKind) -> bool {
        self.condition(kind).status
    }

    /// Sets a condition; `since` moves only when the status flips.
    pub fn set(
        &mut self,
        kind: ConditionKind,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) {
        if let Some(c) = self.conditions.iter_mut().find(|c| c.kind == kind) {
            if c.status != status {
                c.since = SystemTime::now();
            }
            c.status = status;
            c.reason = reason;
            c.message = message.into();
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let holding: Vec<&Condition> = self.conditions.iter().filter(|c| c.status).collect();
        match holding.first() {
            Some(c) => write!(f, "{:?}: {} ({})", c.kind, c.message, c.reason)?,
            None => {
                let ready = self.condition(ConditionKind::Ready);
                write!(f, "not ready: {} ({})", ready.message, ready.reason)?
            }
        }
        if self.suspended {
            f.write_str(" [suspended]")?;
        }
        if let Some(b) = &self.blocked {
            write!(f, " [blocked: {}]", b.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_serialise_as_rfc3339() {
        let mut status = Status::default();
        let at = UNIX_EPOCH + Duration::from_millis(1_796_302_146_500);
        for c in &mut status.conditions {
            c.since = at;
        }
        status.blocked = Some(Blocked {
            reason: BlockReason::SyncWindowClosed,
            message: "frozen".into(),
            until: Some(at),
            revision: None,
        });
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["conditions"][0]["since"], "2026-12-03T12:49:06.5Z");
        assert_eq!(json["blocked"]["until"], "2026-12-03T12:49:06.5Z");
        assert!(!json.to_string().contains("secs_since_epoch"));
    }
}
