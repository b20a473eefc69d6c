//! Applies what [`settle`](super::settle) decided: writes the history, the
//! holds, retries and pins, the status conditions and the events.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::settle::{Facts, Verdict, settle};
use super::state::{Hold, Inner, LoopState};
use super::{EngineError, Event, SyncReport};
use crate::id::ResourceId;
use crate::model::Revision;
use crate::record::{HistoryEntry, Outcome, SyncResult, Trigger};
use crate::status::Reason;
use crate::status::{ConditionKind, RetryInfo};

impl Inner {
    /// Settles a finished sync and applies the verdict.
    pub(super) async fn after_sync(
        &self,
        state: &mut LoopState,
        trigger: Trigger,
        result: &Result<SyncReport, EngineError>,
    ) {
        let revision = match result {
            Ok(report) => Some(report.revision.clone()),
            Err(e) => e.revision().cloned(),
        };
        let facts = self.facts(state, revision.as_ref());
        let verdict = settle(result, &facts, &self.config);
        if let (Verdict::Blocked, Ok(report)) = (&verdict, result) {
            if let Some(blocked) = &report.blocked {
                self.set_blocked(state, blocked);
                state.window_opens = blocked.until.map(|until| {
                    let wait = until
                        .duration_since(self.parts.clock.now())
                        .unwrap_or_default()
                        // The wall clock and the timer may disagree by a
                        // little: never spin on a window about to open.
                        .max(Duration::from_secs(1));
                    (super::after(Instant::now(), wait), trigger)
                });
            }
            return;
        }
        state.window_opens = None;
        if let Ok(report) = result
            && report.result.ran()
        {
            state.failing = failing(report);
        }
        if verdict != Verdict::Nothing {
            self.record_history(trigger, result).await;
        }
        self.apply_verdict(state, verdict, revision).await;
        if let Ok(report) = result {
            self.flag_not_converging(&report.not_converging);
        }
    }

    /// What `settle` needs from the loop state.
    fn facts(&self, state: &LoopState, revision: Option<&Revision>) -> Facts {
        let id = revision.map(|r| &r.id);
        let attempts = state
            .retry
            .as_ref()
            .filter(|r| r.revision.as_ref() == id)
            .map_or(0, |r| r.attempt);
        let last_healthy = state.record.as_ref().and_then(|r| {
            r.value
                .last_healthy
                .clone()
                .filter(|h| Some(&h.id) != id && !r.value.bad.contains(&h.id))
        });
        Facts {
            attempts,
            last_healthy,
        }
    }

    async fn apply_verdict(
        &self,
        state: &mut LoopState,
        verdict: Verdict,
        revision: Option<Revision>,
    ) {
        match verdict {
            Verdict::Blocked | Verdict::Nothing => {}
            Verdict::Converged => {
                if let Some(revision) = revision {
                    self.converged(state, revision).await;
                }
            }
            Verdict::Paused(reason) => self.status.send_modify(|s| {
                s.set(ConditionKind::Reconciling, false, reason, "");
            }),
            Verdict::Stall { reason, message } => self.stall(state, revision, reason, message),
            Verdict::Retry { reason, message } => {
                self.schedule_retry(state, revision, reason, message).await
            }
            Verdict::Fail {
                message,
                rollback_to,
            } => {
                self.fail_revision(state, revision, message, rollback_to)
                    .await
            }
        }
    }

    async fn converged(&self, state: &mut LoopState, applied: Revision) {
        state.retry = None;
        state.hold = None;
        state.last_applied = Some(applied.id.clone());
        let recorded = applied.clone();
        if let Err(e) = self
            .update_record(state, |r| {
                // A confirmation is spent once its revision has synced.
                if r.confirmed.as_deref() == Some(recorded.id.as_str()) {
                    r.confirmed = None;
                }
                r.last_applied = Some(recorded.clone());
                r.last_healthy = Some(recorded);
            })
            .await
        {
            tracing::warn!(error = %e, "could not record the applied revision");
        }
        let message = format!("applied revision {applied}");
        self.status.send_modify(|s| {
            s.last_applied = Some(applied);
            s.retry = None;
            s.set(
                ConditionKind::Ready,
                true,
                Reason::ReconciliationSucceeded,
                message,
            );
            s.set(ConditionKind::Reconciling, false, Reason::Idle, "");
            s.set(ConditionKind::Stalled, false, Reason::None, "");
            s.set(ConditionKind::Failed, false, Reason::None, "");
        });
    }

    /// One history entry per reconcile that read a revision.
    async fn record_history(&self, trigger: Trigger, result: &Result<SyncReport, EngineError>) {
        let now = SystemTime::now();
        let entry = match result {
            Ok(report) => HistoryEntry {
                revision: report.revision.clone(),
                trigger: report.trigger,
                result: report.result,
                error: None,
                summary: report.plan.summary,
                outcomes: report
                    .outcomes
                    .iter()
                    .filter(|o| o.outcome != Outcome::Unchanged)
                    .cloned()
                    .collect(),
                gates: report.gates.clone(),
                not_converging: report.not_converging.clone(),
                started_at: report.started_at,
                finished_at: now,
            },
            Err(e) => {
                let Some(revision) = e.revision() else {
                    return;
                };
                HistoryEntry {
                    revision: revision.clone(),
                    trigger,
                    result: SyncResult::Failed,
                    error: Some(e.to_string()),
                    summary: Default::default(),
                    outcomes: Vec::new(),
                    gates: Vec::new(),
                    not_converging: Vec::new(),
                    started_at: now,
                    finished_at: now,
                }
            }
        };
        if let Err(e) = self
            .parts
            .store
            .append_history(&self.name, &entry, self.config.history_limit)
            .await
        {
            tracing::warn!(error = %e, "could not append to history");
        }
    }

    /// The revision failed for good: mark it bad and, given a revision,
    /// redeploy it (never a bad one, so two revisions never flip-flop).
    async fn fail_revision(
        &self,
        state: &mut LoopState,
        revision: Option<Revision>,
        message: String,
        rollback_to: Option<Revision>,
    ) {
        let failed_id = revision.as_ref().map(|r| r.id.clone());
        if let Some(id) = failed_id.clone()
            && let Err(e) = self
                .update_record(state, |r| {
                    if !r.bad.contains(&id) {
                        r.bad.push(id);
                    }
                })
                .await
        {
            tracing::warn!(error = %e, "could not mark the revision bad");
        }
        state.retry = None;
        let Some(healthy) = rollback_to else {
            state.hold = Some(Hold {
                revision: failed_id,
            });
            self.status.send_modify(|s| {
                s.retry = None;
                s.set(
                    ConditionKind::Ready,
                    false,
                    Reason::RetriesExhausted,
                    message.clone(),
                );
                s.set(ConditionKind::Reconciling, false, Reason::Failed, "");
                s.set(
                    ConditionKind::Failed,
                    true,
                    Reason::RetriesExhausted,
                    message.clone(),
                );
            });
            self.emit(Event::Stalled {
                revision,
                reason: Reason::RetriesExhausted,
                message,
            });
            return;
        };
        tracing::warn!(failed = ?failed_id, to = %healthy, %message, "automatic rollback");
        state.hold = None;
        if let Err(e) = self.pin(state, healthy, failed_id).await {
            tracing::warn!(error = %e, "could not record the rollback pin");
        }
        state.rollback_due = true;
        self.status.send_modify(|s| {
            s.retry = None;
            s.set(
                ConditionKind::Ready,
                false,
                Reason::RollingBack,
                message.clone(),
            );
            s.set(
                ConditionKind::Failed,
                true,
                Reason::RolledBack,
                message.clone(),
            );
        });
        self.emit(Event::Stalled {
            revision,
            reason: Reason::RolledBack,
            message: format!("{message}; rolling back"),
        });
    }

    fn stall(
        &self,
        state: &mut LoopState,
        revision: Option<Revision>,
        reason: Reason,
        message: String,
    ) {
        tracing::warn!(%reason, %message, "stalled: waiting for a new revision or an explicit retry");
        state.retry = None;
        state.hold = Some(Hold {
            revision: revision.as_ref().map(|r| r.id.clone()),
        });
        self.status.send_modify(|s| {
            s.retry = None;
            s.set(ConditionKind::Ready, false, reason, message.clone());
            s.set(ConditionKind::Reconciling, false, Reason::Stalled, "");
            s.set(ConditionKind::Stalled, true, reason, message.clone());
        });
        self.emit(Event::Stalled {
            revision,
            reason,
            message,
        });
    }

    async fn schedule_retry(
        &self,
        state: &mut LoopState,
        revision: Option<Revision>,
        reason: Reason,
        message: String,
    ) {
        let id = revision.as_ref().map(|r| r.id.clone());
        let mut retry = match state.retry.take() {
            Some(r) if r.revision == id => r,
            _ => super::retry::Retry::new(id, &self.config.retry),
        };
        let delay = retry.schedule(Instant::now(), &self.config.retry);
        let info = RetryInfo {
            attempt: retry.attempt,
            after: delay,
        };
        tracing::info!(attempt = retry.attempt, ?delay, %message, "retry scheduled");
        self.status.send_modify(|s| {
            s.retry = Some(info);
            s.set(ConditionKind::Ready, false, reason, message.clone());
            s.set(
                ConditionKind::Reconciling,
                false,
                Reason::RetryScheduled,
                "",
            );
        });
        self.emit(Event::RetryScheduled {
            revision,
            attempt: retry.attempt,
            after: delay,
            reason,
            message,
        });
        state.retry = Some(retry);
    }
}

/// The resources whose apply or delete failed in `report`.
fn failing(report: &SyncReport) -> HashSet<ResourceId> {
    report
        .outcomes
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Failed { .. }))
        .map(|o| o.id.clone())
        .collect()
}
