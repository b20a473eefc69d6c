//! CloudEvents 1.0 (structured JSON) built from engine events: a pure
//! translation that carries ids, revisions, results and counts, never file
//! contents, drift values or error texts.

use gitops_core::Revision;
use gitops_core::engine::{Event, SyncResult, Trigger};
use gitops_core::plan::Summary;
use serde::Serialize;
use serde_json::{Value, json};

/// The `content-type` of a structured-mode CloudEvent.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

/// The CloudEvents `type` of each notification the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// A sync converged: `dev.gitops.sync.succeeded`.
    SyncSucceeded,
    /// A sync failed (a resource or a gate): `dev.gitops.sync.failed`.
    SyncFailed,
    /// The engine stopped retrying until the source changes: `dev.gitops.sync.stalled`.
    SyncStalled,
    /// A resource drifted from Git: `dev.gitops.drift.detected`.
    DriftDetected,
    /// A drifted resource was re-applied: `dev.gitops.drift.reverted`.
    DriftReverted,
    /// A failed revision's retries ran out and the last healthy revision is
    /// being restored: `dev.gitops.rollback.started`.
    RollbackStarted,
    /// A rollback converged: `dev.gitops.rollback.succeeded`.
    RollbackSucceeded,
    /// A rollback failed: `dev.gitops.rollback.failed`.
    RollbackFailed,
}

impl EventType {
    /// The CloudEvents `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SyncSucceeded => "dev.gitops.sync.succeeded",
            EventType::SyncFailed => "dev.gitops.sync.failed",
            EventType::SyncStalled => "dev.gitops.sync.stalled",
            EventType::DriftDetected => "dev.gitops.drift.detected",
            EventType::DriftReverted => "dev.gitops.drift.reverted",
            EventType::RollbackStarted => "dev.gitops.rollback.started",
            EventType::RollbackSucceeded => "dev.gitops.rollback.succeeded",
            EventType::RollbackFailed => "dev.gitops.rollback.failed",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One CloudEvent 1.0 in structured mode (the JSON body of a notification).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CloudEvent {
    /// Always `"1.0"`.
    pub specversion: &'static str,
    /// Unique per event (also the `webhook-id` of every attempt to send it).
    pub id: String,
    /// `/gitops-agent/<app>`.
    pub source: String,
    /// What happened, e.g. `dev.gitops.sync.failed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The application.
    pub subject: String,
    /// When the agent saw it (RFC 3339).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// Revision, result, counts: never file contents or drift values.
    pub data: Value,
}

impl CloudEvent {
    /// A new event about application `app`, with a fresh id and the current time.
    pub fn new(app: &str, event_type: impl Into<String>, data: Value) -> Self {
        Self {
            specversion: "1.0",
            id: format!("msg_{:032x}", fastrand::u128(..)),
            source: format!("/gitops-agent/{app}"),
            event_type: event_type.into(),
            subject: app.to_owned(),
            time: jiff::Timestamp::now().to_string(),
            datacontenttype: "application/json",
            data,
        }
    }
}

/// Turns an engine's events into notifications; remembers what the
/// translation of a later event needs (the trigger of the sync under way).
#[derive(Debug, Default)]
pub(crate) struct Translator {
    trigger: Option<Trigger>,
}

impl Translator {
    /// The notification for `event` of application `app`, if it is one to send.
    pub(crate) fn translate(&mut self, app: &str, event: &Event) -> Option<CloudEvent> {
        let (kind, data) = match event {
            Event::SyncStarted { trigger, .. } => {
                self.trigger = Some(*trigger);
                return None;
            }
            Event::SyncFinished {
                revision,
                result,
                duration,
                summary,
            } => {
                let trigger = self.trigger.take();
                let kind = finished_type(*result, trigger)?;
                let mut data = revision_data(app, Some(revision));
                data["result"] = json!(result_name(*result));
                data["trigger"] = json!(trigger.map(|t| t.to_string()));
                data["duration_seconds"] = json!(duration.as_secs_f64());
                data["summary"] = summary_data(summary);
                (kind, data)
            }
            Event::Stalled {
                revision, reason, ..
            } => {
                let kind = if *reason == "RolledBack" {
                    EventType::RollbackStarted
                } else {
                    EventType::SyncStalled
                };
                let mut data = revision_data(app, revision.as_ref());
                data["reason"] = json!(reason.as_str());
                (kind, data)
            }
            Event::DriftDetected { id, policy, .. } => (
                EventType::DriftDetected,
                json!({ "app": app, "resource": id.to_string(), "policy": policy }),
            ),
            Event::DriftReverted { id } => (
                EventType::DriftReverted,
                json!({ "app": app, "resource": id.to_string() }),
            ),
            _ => return None,
        };
        Some(CloudEvent::new(app, kind.as_str(), data))
    }
}

/// Which notification a finished sync is: succeeded or failed (a rollback's
/// own types when the sync was one); none for other results.
fn finished_type(result: SyncResult, trigger: Option<Trigger>) -> Option<EventType> {
    let rollback = trigger == Some(Trigger::Rollback);
    match result {
        SyncResult::Converged if rollback => Some(EventType::RollbackSucceeded),
        SyncResult::Converged => Some(EventType::SyncSucceeded),
        SyncResult::Failed | SyncResult::GateFailed if rollback => Some(EventType::RollbackFailed),
        SyncResult::Failed | SyncResult::GateFailed => Some(EventType::SyncFailed),
        _ => None,
    }
}

fn result_name(result: SyncResult) -> &'static str {
    match result {
        SyncResult::Converged => "converged",
        SyncResult::Failed => "failed",
        SyncResult::GateFailed => "gate_failed",
        SyncResult::Superseded => "superseded",
        SyncResult::Interrupted => "interrupted",
        SyncResult::Planned => "planned",
        SyncResult::WindowClosed => "window_closed",
        SyncResult::Blocked => "blocked",
        SyncResult::Suspended => "suspended",
        SyncResult::Aborted => "aborted",
    }
}

fn revision_data(app: &str, revision: Option<&Revision>) -> Value {
    json!({
        "app": app,
        "revision": revision.map(Revision::to_string),
        "commit": revision.map(|r| r.id.clone()),
        "reference": revision.map(|r| r.reference.clone()),
    })
}

fn summary_data(summary: &Summary) -> Value {
    json!({
        "created": summary.create,
        "updated": summary.update,
        "deleted": summary.delete,
        "unchanged": summary.unchanged,
        "retained": summary.retained,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gitops_core::diff::{Diff, FieldChange};
    use gitops_core::status::Reason;
    use gitops_core::{DriftPolicy, ResourceId};

    use super::*;

    fn finished(result: SyncResult) -> Event {
        Event::SyncFinished {
            revision: Revision::new("main", "abc123"),
            result,
            duration: Duration::from_millis(1500),
            summary: Summary {
                create: 1,
                ..Default::default()
            },
        }
    }

    fn started(trigger: Trigger) -> Event {
        Event::SyncStarted {
            revision: Revision::new("main", "abc123"),
            trigger,
        }
    }

    fn id() -> ResourceId {
        match "Config/web".parse() {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_finished_sync_is_a_cloudevent() {
        let mut t = Translator::default();
        assert!(t.translate("web", &started(Trigger::Poll)).is_none());
        let event = t.translate("web", &finished(SyncResult::Converged));
        let Some(event) = event else {
            panic!("no notification for a converged sync")
        };
        assert_eq!(event.event_type, "dev.gitops.sync.succeeded");
        assert_eq!(event.subject, "web");
        assert_eq!(event.source, "/gitops-agent/web");
        assert_eq!(event.data["revision"], "main@sha1:abc123");
        assert_eq!(event.data["trigger"], "poll");
        assert_eq!(event.data["summary"]["created"], 1);
        assert!(
            event.time.parse::<jiff::Timestamp>().is_ok(),
            "{}",
            event.time
        );
        let other = t.translate("web", &finished(SyncResult::Failed));
        assert!(other.is_some_and(|o| o.id != event.id && o.event_type.ends_with("failed")));
    }

    #[test]
    fn a_rollback_has_its_own_types() {
        let mut t = Translator::default();
        t.translate("web", &started(Trigger::Rollback));
        let kind = t
            .translate("web", &finished(SyncResult::Converged))
            .map(|e| e.event_type);
        assert_eq!(kind.as_deref(), Some("dev.gitops.rollback.succeeded"));
        let stalled = Event::Stalled {
            revision: None,
            reason: Reason::RolledBack,
            message: "retries ran out; rolling back".to_owned(),
        };
        let kind = t.translate("web", &stalled).map(|e| e.event_type);
        assert_eq!(kind.as_deref(), Some("dev.gitops.rollback.started"));
        // The next ordinary sync is no rollback.
        t.translate("web", &started(Trigger::Retry));
        let kind = t
            .translate("web", &finished(SyncResult::Failed))
            .map(|e| e.event_type);
        assert_eq!(kind.as_deref(), Some("dev.gitops.sync.failed"));
    }

    #[test]
    fn uneventful_results_send_nothing() {
        let mut t = Translator::default();
        for result in [
            SyncResult::Superseded,
            SyncResult::Blocked,
            SyncResult::Planned,
        ] {
            assert!(t.translate("web", &finished(result)).is_none());
        }
    }

    #[test]
    fn drift_carries_no_values_and_stalls_no_messages() {
        let mut t = Translator::default();
        let drift = Event::DriftDetected {
            id: id(),
            policy: DriftPolicy::Revert,
            diff: Some(Diff {
                changes: vec![FieldChange {
                    path: "/password".to_owned(),
                    old: Some(serde_json::json!("hunter2-observed")),
                    new: Some(serde_json::json!("hunter2-desired")),
                }],
            }),
        };
        let stalled = Event::Stalled {
            revision: None,
            reason: Reason::RenderFailed,
            message: "app.yaml line 3: token: hunter2-in-file".to_owned(),
        };
        for event in [drift, stalled] {
            let Some(note) = t.translate("web", &event) else {
                panic!("no notification for {event:?}")
            };
            let body = serde_json::to_string(&note).unwrap_or_default();
            assert!(!body.is_empty() && !body.contains("hunter2"), "{body}");
        }
    }
}
