//! Admission: whether a reconcile may start now (sync windows, dependencies
//! on other applications), and whether a sync in progress stops at a wave
//! boundary because a window closed.
//!
//! A blocked reconcile changes nothing, records no history entry, holds
//! nothing and schedules no retry: the engine looks again on its next poll,
//! drift check, retry or trigger, and, when a window blocked it, as the window
//! opens; [`Status::blocked`](crate::Status::blocked) says what blocks it and
//! until when.

use tokio::time::Instant;

use super::state::{Inner, LoopState};
use super::{EngineHandle, Event};
use crate::model::Revision;
use crate::record::Trigger;
use crate::status::{BlockReason, Blocked, ConditionKind, Reason};
use crate::window::InProgress;

/// What an application needs from an application it depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Needs {
    /// Ready at this application's commit, or at a commit that descends from
    /// it according to this application's source
    /// ([`Source::is_ancestor`](crate::Source::is_ancestor); a source that
    /// cannot tell only accepts the same commit). Meant for applications
    /// deployed from the same repository. The default.
    #[default]
    SameOrNewerRevision,
    /// Ready at any revision (applications from different repositories).
    Ready,
}

/// A dependency on another application: this engine syncs only while that
/// one is Ready (at a revision that satisfies [`Needs`]).
///
/// [`on`](Self::on) watches an engine of the same process (its live Ready
/// condition); [`on_app`](Self::on_app) reads the application's durable
/// record from this engine's own [`StateStore`](crate::StateStore), so it
/// works across processes and replicas that share a store (`EtcdStore`).
#[derive(Debug, Clone)]
pub struct Dependency {
    upstream: Upstream,
    needs: Needs,
}

#[derive(Debug, Clone)]
enum Upstream {
    Engine(EngineHandle),
    Stored(String),
}

impl Dependency {
    /// Depends on the engine behind `handle`, at the same or a newer revision.
    pub fn on(handle: &EngineHandle) -> Self {
        Self {
            upstream: Upstream::Engine(handle.clone()),
            needs: Needs::default(),
        }
    }

    /// Depends on application `app` as recorded in this engine's store,
    /// wherever it runs: satisfied by the last revision `app` applied and
    /// found healthy (what an automatic rollback would return to), at the
    /// same or a newer revision. Looked at on each reconcile (poll, drift
    /// check, trigger) of this engine.
    pub fn on_app(app: impl Into<String>) -> Self {
        Self {
            upstream: Upstream::Stored(app.into()),
            needs: Needs::default(),
        }
    }

    /// What is needed of it (default [`Needs::SameOrNewerRevision`]).
    pub fn needs(mut self, needs: Needs) -> Self {
        self.needs = needs;
        self
    }

    /// The name of the application depended on.
    pub fn name(&self) -> &str {
        match &self.upstream {
            Upstream::Engine(handle) => handle.name(),
            Upstream::Stored(app) => app,
        }
    }
}

impl EngineHandle {
    /// The application name of the engine.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

/// Manual syncs are the ones a person asked for: `sync_once` and rollbacks.
pub(super) fn is_manual(trigger: Trigger) -> bool {
    matches!(trigger, Trigger::Manual | Trigger::Rollback)
}

impl Inner {
    /// What blocks the reconcile of `revision`, when a window or a
    /// dependency holds it back; clears the blocked status otherwise.
    pub(super) async fn admit(&self, trigger: Trigger, revision: &Revision) -> Result<(), Blocked> {
        let blocked = |reason, message: String, until| Blocked {
            reason,
            message,
            until,
            revision: Some(revision.clone()),
        };
        if let Err(block) = self
            .config
            .windows
            .check(self.parts.clock.now(), is_manual(trigger))
        {
            return Err(blocked(
                BlockReason::SyncWindowClosed,
                block.to_string(),
                block.until,
            ));
        }
        for dependency in &self.parts.dependencies {
            if let Some(message) = self.dependency_waits(dependency, revision).await {
                return Err(blocked(BlockReason::DependencyNotReady, message, None));
            }
        }
        if self.status.borrow().blocked.is_some() {
            self.status.send_modify(|s| s.blocked = None);
        }
        Ok(())
    }

    /// Why `dependency` is not yet good enough for `revision`, if it is not.
    async fn dependency_waits(
        &self,
        dependency: &Dependency,
        revision: &Revision,
    ) -> Option<String> {
        let name = dependency.name();
        let applied = match &dependency.upstream {
            Upstream::Engine(handle) => {
                let status = handle.status();
                let ready = status.condition(ConditionKind::Ready);
                let Some(applied) = status.last_applied.clone().filter(|_| ready.status) else {
                    let why = if ready.message.is_empty() {
                        ready.reason.to_string()
                    } else {
                        format!("{}: {}", ready.reason, ready.message)
                    };
                    return Some(format!("waiting for app `{name}`: not ready ({why})"));
                };
                applied
            }
            Upstream::Stored(app) => match self.parts.store.load_record(app).await {
                Ok(record) => match record.value.last_healthy {
                    Some(applied) => applied,
                    None => {
                        return Some(format!(
                            "waiting for app `{name}`: not yet applied and healthy"
                        ));
                    }
                },
                Err(e) => {
                    return Some(format!(
                        "waiting for app `{name}`: cannot read its state: {e}"
                    ));
                }
            },
        };
        if dependency.needs == Needs::Ready || applied.id == revision.id {
            return None;
        }
        match self.parts.source.is_ancestor(revision, &applied).await {
            Ok(Some(true)) => None,
            Ok(_) => Some(format!(
                "waiting for app `{name}`: at {applied}, needs {revision} or a descendant"
            )),
            Err(e) => Some(format!(
                "waiting for app `{name}`: at {applied}, needs {revision}; cannot compare: {e}"
            )),
        }
    }

    /// Whether a sync in progress stops before its next wave: the policy
    /// says so and the windows no longer allow this sync.
    pub(super) fn window_stops(&self, trigger: Trigger) -> bool {
        let windows = &self.config.windows;
        windows.in_progress_policy() == InProgress::StopAtWaveBoundary
            && windows
                .check(self.parts.clock.now(), is_manual(trigger))
                .is_err()
    }

    /// Records a block in the status (and an event when it changes). A due
    /// retry waits a poll interval, so a closed window is no hot loop.
    pub(super) fn set_blocked(&self, state: &mut LoopState, blocked: &Blocked) {
        if let Some(retry) = state.retry.as_mut() {
            retry.due = retry
                .due
                .max(super::after(Instant::now(), self.config.interval));
        }
        let changed = self
            .status
            .borrow()
            .blocked
            .as_ref()
            .is_none_or(|b| b.message != blocked.message);
        if changed {
            tracing::info!(reason = blocked.reason.as_str(), message = %blocked.message, "blocked");
            self.emit(Event::Blocked {
                revision: blocked.revision.clone(),
                reason: blocked.reason,
                message: blocked.message.clone(),
            });
        }
        let reason: Reason = blocked.reason.into();
        self.status.send_modify(|s| {
            s.blocked = Some(blocked.clone());
            match blocked.reason {
                // The target is as the last sync left it; only syncing waits.
                BlockReason::SyncWindowClosed => {
                    s.set(
                        ConditionKind::Reconciling,
                        false,
                        reason,
                        blocked.message.clone(),
                    );
                }
                // Flux's dependsOn: not Ready until the dependency is.
                BlockReason::DependencyNotReady => {
                    s.set(ConditionKind::Reconciling, false, reason, "");
                    s.set(ConditionKind::Ready, false, reason, blocked.message.clone());
                }
            }
        });
    }
}
