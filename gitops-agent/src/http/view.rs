//! The JSON the read endpoints answer with: the engine's status and history
//! with RFC 3339 timestamps, and without values unless asked for.
//!
//! Drift diffs hold the target's and Git's values (file contents, settings,
//! possibly secrets); by default a drift entry lists the resource and the
//! changed field paths only. Gate output is treated the same way.

use std::time::SystemTime;

use gitops_core::engine::Outcome;
use gitops_core::plan::Summary;
use gitops_core::record::{AuditAction, AuditRecord, SyncResult, Trigger};
use gitops_core::status::{BlockReason, Blocked, Condition};
use gitops_core::status::{DriftEntry, Reason, RetryInfo};
use gitops_core::{
    ConditionKind, DriftPolicy, GateResult, GateStage, HistoryEntry, ResourceId, Revision, Status,
};
use serde::Serialize;
use serde_json::Value;

use super::owners::Owner;

/// RFC 3339 (`2026-01-02T03:04:05.678Z`); a time jiff cannot represent
/// (before year -9999) shows as `null`.
pub(super) fn rfc3339(at: SystemTime) -> Option<String> {
    jiff::Timestamp::try_from(at).ok().map(|t| t.to_string())
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub(crate) struct StatusView {
    pub(super) app: String,
    pub(super) conditions: Vec<ConditionView>,
    pub(super) last_applied: Option<RevisionView>,
    pub(super) last_attempted: Option<RevisionView>,
    pub(super) drift: Vec<DriftView>,
    pub(super) suspended: bool,
    pub(super) retry: Option<RetryView>,
    pub(super) blocked: Option<BlockedView>,
    /// Restarts of its engine after it ended by itself (many applications).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) restarts: Option<u64>,
    /// Which replica runs it (only when replicas share the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) owner: Option<Owner>,
    /// Its newest sync from the shared store (only for an application
    /// another replica runs: its live status is there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_sync: Option<HistoryView>,
}

impl StatusView {
    /// The view of `status` for application `app`.
    pub(crate) fn new(app: &str, status: Status, expose_values: bool) -> Self {
        Self {
            app: app.to_owned(),
            conditions: status.conditions.into_iter().map(Into::into).collect(),
            last_applied: status.last_applied.map(Into::into),
            last_attempted: status.last_attempted.map(Into::into),
            drift: status
                .drift
                .into_iter()
                .map(|d| DriftView::new(d, expose_values))
                .collect(),
            suspended: status.suspended,
            retry: status.retry.map(Into::into),
            blocked: status.blocked.map(Into::into),
            restarts: None,
            owner: None,
            last_sync: None,
        }
    }

    /// The row of application `app` run elsewhere (or by nobody now): its
    /// owner and its newest sync from the shared store.
    pub(crate) fn elsewhere(app: &str, owner: Owner, last_sync: Option<HistoryView>) -> Self {
        Self {
            app: app.to_owned(),
            conditions: Vec::new(),
            last_applied: None,
            last_attempted: None,
            drift: Vec::new(),
            suspended: false,
            retry: None,
            blocked: None,
            restarts: None,
            owner: Some(owner),
            last_sync,
        }
    }

    /// The same view, saying which replica runs it.
    pub(crate) fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// With the count of its engine's restarts.
    pub(crate) fn restarts(mut self, restarts: u64) -> Self {
        self.restarts = Some(restarts);
        self
    }
}

#[derive(Debug, Serialize)]
pub(super) struct ConditionView {
    #[serde(rename = "type")]
    pub(super) kind: ConditionKind,
    pub(super) status: bool,
    pub(super) reason: Reason,
    pub(super) message: String,
    pub(super) since: Option<String>,
}

impl From<Condition> for ConditionView {
    fn from(c: Condition) -> Self {
        Self {
            kind: c.kind,
            status: c.status,
            reason: c.reason,
            message: c.message,
            since: rfc3339(c.since),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct RevisionView {
    pub(super) id: String,
    pub(super) reference: String,
    pub(super) author: String,
    pub(super) committed_at: Option<String>,
    pub(super) summary: String,
}

impl From<Revision> for RevisionView {
    fn from(r: Revision) -> Self {
        Self {
            committed_at: jiff::Timestamp::from_second(r.committed_at)
                .ok()
                .map(|t| t.to_string()),
            summary: r.summary().to_owned(),
            id: r.id,
            reference: r.reference,
            author: r.author,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct DriftView {
    pub(super) id: ResourceId,
    pub(super) policy: DriftPolicy,
    pub(super) resolved: bool,
    /// The resource is gone from the target (no field list).
    pub(super) deleted: bool,
    pub(super) fields: Vec<FieldView>,
}

#[derive(Debug, Serialize)]
pub(super) struct FieldView {
    pub(super) path: String,
    /// What the target holds (only with `expose_values`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) observed: Option<Value>,
    /// What Git says (only with `expose_values`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) desired: Option<Value>,
}

impl DriftView {
    fn new(entry: DriftEntry, expose_values: bool) -> Self {
        let deleted = entry.diff.is_none();
        let fields = entry
            .diff
            .map(|diff| diff.changes)
            .unwrap_or_default()
            .into_iter()
            .map(|change| FieldView {
                path: change.path,
                observed: change.old.filter(|_| expose_values),
                desired: change.new.filter(|_| expose_values),
            })
            .collect();
        Self {
            id: entry.id,
            policy: entry.policy,
            resolved: entry.resolved,
            deleted,
            fields,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct RetryView {
    pub(super) attempt: usize,
    pub(super) after_seconds: f64,
}

impl From<RetryInfo> for RetryView {
    fn from(r: RetryInfo) -> Self {
        Self {
            attempt: r.attempt,
            after_seconds: r.after.as_secs_f64(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct BlockedView {
    pub(super) reason: BlockReason,
    pub(super) message: String,
    pub(super) until: Option<String>,
    pub(super) revision: Option<RevisionView>,
}

impl From<Blocked> for BlockedView {
    fn from(b: Blocked) -> Self {
        Self {
            reason: b.reason,
            message: b.message,
            until: b.until.and_then(rfc3339),
            revision: b.revision.map(Into::into),
        }
    }
}

/// One entry of `GET /history`.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryView {
    pub(super) revision: RevisionView,
    pub(super) trigger: Trigger,
    pub(super) result: SyncResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    pub(super) summary: Summary,
    pub(super) outcomes: Vec<OutcomeView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) gates: Vec<GateView>,
    pub(super) started_at: Option<String>,
    pub(super) finished_at: Option<String>,
}

impl HistoryView {
    /// The view of one history entry.
    pub(crate) fn new(entry: HistoryEntry, expose_values: bool) -> Self {
        Self {
            revision: entry.revision.into(),
            trigger: entry.trigger,
            result: entry.result,
            error: entry.error,
            summary: entry.summary,
            outcomes: entry
                .outcomes
                .into_iter()
                .map(|o| OutcomeView {
                    id: o.id,
                    outcome: o.outcome,
                })
                .collect(),
            gates: entry
                .gates
                .into_iter()
                .map(|g| GateView::new(g, expose_values))
                .collect(),
            started_at: rfc3339(entry.started_at),
            finished_at: rfc3339(entry.finished_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct OutcomeView {
    pub(super) id: ResourceId,
    #[serde(flatten)]
    pub(super) outcome: Outcome,
}

#[derive(Debug, Serialize)]
pub(super) struct GateView {
    pub(super) name: String,
    pub(super) stage: GateStage,
    pub(super) passed: bool,
    pub(super) duration_seconds: f64,
    /// What the gate printed (only with `expose_values`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) output: Option<String>,
}

impl GateView {
    fn new(gate: GateResult, expose_values: bool) -> Self {
        Self {
            name: gate.name,
            stage: gate.stage,
            passed: gate.passed,
            duration_seconds: gate.duration.as_secs_f64(),
            output: expose_values.then_some(gate.output),
        }
    }
}

/// One record of `GET /apps/{name}/audit`.
#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    pub(super) at: Option<String>,
    pub(super) id: ResourceId,
    pub(super) action: AuditAction,
    pub(super) digest_before: Option<String>,
    pub(super) digest_after: Option<String>,
    pub(super) revision: String,
    pub(super) reference: String,
    pub(super) author: String,
    pub(super) message: String,
    pub(super) trigger: Trigger,
    /// A gate's verdict and output (only with `expose_values`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) detail: Option<String>,
}

impl AuditView {
    /// The view of one audit record.
    pub(crate) fn new(record: AuditRecord, expose_values: bool) -> Self {
        Self {
            at: rfc3339(record.at),
            id: record.id,
            action: record.action,
            digest_before: record.digest_before,
            digest_after: record.digest_after,
            revision: record.revision,
            reference: record.reference,
            author: record.author,
            message: record.message,
            trigger: record.trigger,
            detail: record.detail.filter(|_| expose_values),
        }
    }
}

#[cfg(test)]
mod tests {
    use gitops_core::Diff;
    use gitops_core::diff::FieldChange;
    use serde_json::json;

    use super::*;

    fn drifted() -> Status {
        let mut status = Status::default();
        status.drift.push(DriftEntry {
            id: "File//etc/app.conf".parse().expect("id"),
            policy: DriftPolicy::Revert,
            diff: Some(Diff {
                changes: vec![FieldChange {
                    path: "spec.content".into(),
                    old: Some(json!("password = hunter2")),
                    new: Some(json!("password = from-git")),
                }],
            }),
            resolved: false,
        });
        status.last_applied = Some(Revision::new("main", "ab".repeat(20)));
        status
    }

    #[test]
    fn drift_shows_paths_not_values() {
        let json = serde_json::to_string(&StatusView::new("app", drifted(), false)).expect("json");
        assert!(json.contains("spec.content"), "{json}");
        assert!(json.contains("File//etc/app.conf"), "{json}");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!json.contains("from-git"), "{json}");
        let json = serde_json::to_string(&StatusView::new("app", drifted(), true)).expect("json");
        assert!(json.contains("hunter2"), "{json}");
        assert!(json.contains("from-git"), "{json}");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let view = serde_json::to_value(StatusView::new("app", drifted(), false)).expect("json");
        let since = view["conditions"][0]["since"].as_str().expect("a string");
        assert!(since.parse::<jiff::Timestamp>().is_ok(), "{since}");
        assert_eq!(view["conditions"][0]["type"], "Ready");
        assert_eq!(view["last_applied"]["committed_at"], "1970-01-01T00:00:00Z");
    }
}
