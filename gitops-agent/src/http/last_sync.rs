//! [`SyncLog`]: the plan of an application's last sync as the agent saw it
//! happen, kept in memory for the status page.
//!
//! The engine stores each sync's counts and per-resource outcomes in its
//! history, but not the plan itself; the agent follows the engine's events
//! and keeps, per application, what the last sync did to each resource.
//! It is lost on restart: the page then says that no sync was seen since
//! the agent started. Only ids, actions and error messages are kept, never
//! a resource's values.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use gitops_core::engine::{ApplyAction, Event, SyncResult};
use gitops_core::plan::Summary;
use gitops_core::{Engine, ResourceId};
use tokio::sync::broadcast::error::RecvError;

/// The most steps kept for one sync; more are only counted.
const MAX_STEPS: usize = 500;

/// What one sync did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// The resource.
    pub(crate) id: ResourceId,
    /// `created`, `updated`, `pruned`, `failed: <error>`, `skipped: ...`.
    pub(crate) what: String,
}

/// The last sync the agent saw end.
#[derive(Debug, Clone)]
pub(crate) struct LastSync {
    /// The revision id it synced.
    pub(crate) revision: String,
    /// How it ended.
    pub(crate) result: SyncResult,
    /// The plan's counts.
    pub(crate) summary: Summary,
    /// How long it took.
    pub(crate) duration: Duration,
    /// When it ended.
    pub(crate) finished_at: SystemTime,
    /// What it did, resource by resource (at most [`MAX_STEPS`]).
    pub(crate) steps: Vec<Step>,
    /// Steps not kept (beyond [`MAX_STEPS`], or events missed).
    pub(crate) more: usize,
}

#[derive(Debug, Default)]
struct Recording {
    current: Vec<Step>,
    more: usize,
    last: Option<LastSync>,
}

/// One application's in-memory record of its last sync. Cheap to clone;
/// clones share one record.
#[derive(Debug, Clone)]
pub(crate) struct SyncLog {
    started: SystemTime,
    inner: Arc<RwLock<Recording>>,
}

impl Default for SyncLog {
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            inner: Arc::default(),
        }
    }
}

impl SyncLog {
    /// When this record began (the agent, or the application, started).
    pub(crate) fn started(&self) -> SystemTime {
        self.started
    }

    /// The last sync seen, if any since [`started`](Self::started).
    pub(crate) fn last(&self) -> Option<LastSync> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone()
    }

    fn step(recording: &mut Recording, id: ResourceId, what: String) {
        if recording.current.len() < MAX_STEPS {
            recording.current.push(Step { id, what });
        } else {
            recording.more += 1;
        }
    }

    /// Takes one engine event into account.
    pub(crate) fn record(&self, event: Event) {
        let mut recording = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let r = &mut *recording;
        match event {
            Event::SyncStarted { .. } => {
                r.current.clear();
                r.more = 0;
            }
            Event::ResourceApplied { id, action } => {
                let what = match action {
                    ApplyAction::Create => "created",
                    ApplyAction::Update => "updated",
                };
                Self::step(r, id, what.to_owned());
            }
            Event::ResourceFailed { id, error, .. } => {
                Self::step(r, id, format!("failed: {error}"))
            }
            Event::ResourceSkipped { id, blocked_by } => {
                Self::step(r, id, format!("skipped: {blocked_by} did not succeed"));
            }
            Event::ResourcePruned { id } => Self::step(r, id, "pruned".to_owned()),
            Event::SyncFinished {
                revision,
                result,
                duration,
                summary,
            } => {
                r.last = Some(LastSync {
                    revision: revision.id,
                    result,
                    summary,
                    duration,
                    finished_at: SystemTime::now(),
                    steps: std::mem::take(&mut r.current),
                    more: std::mem::take(&mut r.more),
                });
            }
            _ => {}
        }
    }

    /// Follows `engine`'s events into this record until the engine ends
    /// (it does not keep the engine alive).
    pub(crate) fn follow(&self, engine: &Engine) -> impl Future<Output = ()> + Send + 'static {
        let mut events = engine.subscribe();
        let log = self.clone();
        async move {
            loop {
                match events.recv().await {
                    Ok(event) => log.record(event),
                    Err(RecvError::Lagged(missed)) => {
                        let mut r = log.inner.write().unwrap_or_else(|p| p.into_inner());
                        r.more = r.more.saturating_add(usize::try_from(missed).unwrap_or(1));
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gitops_core::Revision;
    use gitops_core::engine::Trigger;

    use super::*;

    fn id(name: &str) -> ResourceId {
        format!("File//{name}").parse().expect("an id")
    }

    #[test]
    fn keeps_the_steps_of_the_last_finished_sync() {
        let log = SyncLog::default();
        assert!(log.last().is_none());
        let revision = Revision::new("main", "ab".repeat(20));
        log.record(Event::SyncStarted {
            revision: revision.clone(),
            trigger: Trigger::Poll,
        });
        log.record(Event::ResourceApplied {
            id: id("a"),
            action: ApplyAction::Create,
        });
        log.record(Event::ResourceFailed {
            id: id("b"),
            error: "permission denied".into(),
            transient: false,
        });
        assert!(log.last().is_none(), "not finished yet");
        log.record(Event::SyncFinished {
            revision,
            result: SyncResult::Failed,
            duration: Duration::from_millis(5),
            summary: Summary::default(),
        });
        let last = log.last().expect("a last sync");
        assert_eq!(last.revision, "ab".repeat(20));
        assert_eq!(last.steps.len(), 2);
        assert_eq!(last.steps[0].what, "created");
        assert_eq!(last.steps[1].what, "failed: permission denied");
    }
}
