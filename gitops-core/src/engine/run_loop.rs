//! Pull mode: the loop that polls, checks drift, retries and answers
//! triggers. What runs next is decided by the pure [`next_trigger`] and
//! [`poll_skips`]; the loop only waits and acts.

use std::time::Duration;

use tokio::time::Instant;

use super::repair;
use super::state::{GRACEFUL, Inner, LoopState};
use super::{EngineError, SyncReport};
use crate::record::{SyncResult, Trigger};
use crate::sync::LockExt as _;

/// When the next poll and drift check are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Schedule {
    pub next_poll: Instant,
    pub next_drift: Instant,
}

/// Work the loop state holds due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Due {
    /// A scheduled retry.
    pub retry: Option<Instant>,
    /// An automatic or requested rollback waits to run.
    pub rollback: bool,
    /// A sync window held back this trigger and opens then.
    pub window_opens: Option<(Instant, Trigger)>,
}

impl Due {
    fn of(state: &LoopState) -> Self {
        Self {
            retry: state.retry.as_ref().map(|r| r.due),
            rollback: state.rollback_due,
            window_opens: state.window_opens,
        }
    }
}

/// When the loop wakes by itself.
pub(super) fn wake_at(schedule: &Schedule, due: &Due, now: Instant) -> Instant {
    if due.rollback {
        return now;
    }
    [
        Some(schedule.next_poll),
        Some(schedule.next_drift),
        due.retry,
        due.window_opens.map(|(at, _)| at),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(schedule.next_poll)
}

/// Why the loop woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// Its own timer: due work, or nothing.
    Timer,
    /// [`EngineHandle::reconcile_now`](super::EngineHandle::reconcile_now): look at the source now.
    Webhook,
    /// [`EngineHandle::retry`](super::EngineHandle::retry): clear the hold and try again.
    Retry,
}

/// What the loop runs when it wakes at `now`, and whether it is what a sync
/// window held back (which is then released). First match wins: a due
/// rollback, an explicit retry, a webhook, what a window held back (it runs
/// as what it was), a due retry, a due drift check, a poll.
pub(super) fn next_trigger(
    now: Instant,
    wake: Wake,
    schedule: &Schedule,
    due: &Due,
) -> (Trigger, bool) {
    if due.rollback {
        (Trigger::Rollback, false)
    } else if wake == Wake::Retry {
        (Trigger::Retry, false)
    } else if wake == Wake::Webhook {
        (Trigger::Webhook, false)
    } else if let Some((_, held)) = due.window_opens.filter(|(at, _)| *at <= now) {
        (held, true)
    } else if due.retry.is_some_and(|at| at <= now) {
        (Trigger::Retry, false)
    } else if schedule.next_drift <= now {
        (Trigger::Drift, false)
    } else {
        (Trigger::Poll, false)
    }
}

/// Whether a poll that saw commit `head` needs no reconcile: the commit is
/// bad, already applied, awaiting a retry, or held.
pub(super) fn poll_skips(head: &str, state: &LoopState) -> bool {
    webhook_skips(head, state) || state.last_applied.as_deref() == Some(head)
}

/// Whether a webhook ("look now") that saw commit `head` needs no
/// reconcile: the commit is bad, awaiting a retry, or held. Unlike a poll,
/// an applied commit is reconciled again (a webhook is also "check now"); a
/// stall or hold is only lifted by a newer commit or an explicit retry.
pub(super) fn webhook_skips(head: &str, state: &LoopState) -> bool {
    let known = |id: Option<&String>| id.is_some_and(|id| id == head);
    let bad = state
        .record
        .as_ref()
        .is_some_and(|r| r.value.bad.iter().any(|b| b == head));
    bad || known(state.retry.as_ref().and_then(|r| r.revision.as_ref()))
        || known(state.hold.as_ref().and_then(|h| h.revision.as_ref()))
}

impl Inner {
    fn jittered_interval(&self) -> Duration {
        let jitter = self.config.interval_jitter.max(0.0) * fastrand::f64();
        // Saturates: `Duration::MAX` stays "never by itself".
        Duration::try_from_secs_f64(self.config.interval.as_secs_f64() * (1.0 + jitter))
            .unwrap_or(Duration::MAX)
    }

    /// Pull mode until shutdown (see [`Engine::run`](super::Engine::run)).
    pub(super) async fn run(&self) -> Result<(), EngineError> {
        self.load_record(&mut *self.state.lock().await).await?;
        let mut shutdown = self.shutdown.subscribe();
        let mut schedule = Schedule {
            next_poll: Instant::now(),
            next_drift: super::after(Instant::now(), self.config.drift_interval),
        };
        loop {
            if *shutdown.borrow() >= GRACEFUL {
                return Ok(());
            }
            let due = Due::of(&*self.state.lock().await);
            let woken = tokio::select! {
                _ = tokio::time::sleep_until(wake_at(&schedule, &due, Instant::now())) => false,
                _ = self.trigger.notified() => true,
                _ = shutdown.changed() => continue,
            };
            let mut state = self.state.lock().await;
            let retry = self.take_requests(&mut state).await;
            let wake = match (woken, retry) {
                (_, true) => Wake::Retry,
                (true, false) => Wake::Webhook,
                (false, false) => Wake::Timer,
            };
            let now = Instant::now();
            if self.suspended() {
                // Due work waits for resume(), which triggers a reconcile.
                schedule.next_poll = schedule
                    .next_poll
                    .max(super::after(now, self.config.interval));
                schedule.next_drift = schedule
                    .next_drift
                    .max(super::after(now, self.config.drift_interval));
                continue;
            }
            let (trigger, released) = next_trigger(now, wake, &schedule, &Due::of(&state));
            if released {
                state.window_opens = None;
            }
            if wake == Wake::Retry {
                // An explicit retry: what held the revision no longer does.
                state.hold = None;
                state.retry = None;
                // And resources that did not converge are applied again.
                state.converging.clear();
            }
            if matches!(trigger, Trigger::Poll | Trigger::Webhook) {
                schedule.next_poll = super::after(now, self.jittered_interval());
            }
            if matches!(trigger, Trigger::Drift | Trigger::Webhook) {
                schedule.next_drift = super::after(now, self.config.drift_interval);
            }
            state.rollback_due = false;
            if !self.admit_trigger(&mut state, trigger).await {
                continue;
            }
            if trigger == Trigger::Drift
                && let Some(passes) = repair::passes(&state)
            {
                // A revision is held or awaits a retry: repair drift only.
                tokio::select! {
                    () = self.repair(&mut state, passes) => continue,
                    () = self.abort() => return Ok(()),
                }
            }
            let pinned = state.pinned();
            let result = self.guarded_reconcile(&mut state, trigger, pinned).await;
            self.after_sync(&mut state, trigger, &result).await;
            drop(state);
            match &result {
                Ok(report) if report.result == SyncResult::Aborted => return Ok(()),
                // A newer revision, or our own write-back commit: deploy it now.
                Ok(report) if Self::poll_again(report) => schedule.next_poll = Instant::now(),
                _ => {}
            }
        }
    }

    fn poll_again(report: &SyncReport) -> bool {
        report.result == SyncResult::Superseded || report.written_back.is_some()
    }

    /// Takes what handles asked for: a resume clears the pin, a rollback
    /// pins its revision and is due at once. Returns whether an explicit
    /// retry was asked for.
    async fn take_requests(&self, state: &mut LoopState) -> bool {
        let (resume, rollback, retry, confirm) = {
            let mut requests = self.requests.locked();
            (
                std::mem::take(&mut requests.resume),
                requests.rollback.take(),
                std::mem::take(&mut requests.retry),
                requests.confirm.take(),
            )
        };
        if let Some(id) = confirm
            && let Err(e) = self.update_record(state, |r| r.confirmed = Some(id)).await
        {
            tracing::warn!(error = %e, "could not record the confirmation");
        }
        if resume {
            self.unpin(state).await;
        }
        if let Some(revision) = rollback {
            if let Err(e) = self.pin_requested(state, revision).await {
                tracing::warn!(error = %e, "could not record the rollback pin");
            }
            state.rollback_due = true;
        }
        retry
    }

    /// Whether `trigger` leads to a reconcile: a poll only for a revision
    /// not yet applied, not awaiting a retry, not held, not bad; retries
    /// not while a revision is held.
    async fn admit_trigger(&self, state: &mut LoopState, trigger: Trigger) -> bool {
        match trigger {
            Trigger::Poll | Trigger::Webhook => match self.parts.source.poll().await {
                Ok(head) => {
                    let skips = match trigger {
                        Trigger::Webhook => webhook_skips(&head.id, state),
                        _ => poll_skips(&head.id, state),
                    };
                    if self.pin_holds(state, &head).await || skips {
                        return false;
                    }
                    state.hold = None;
                    true
                }
                // Cut short by a shutdown: the loop ends next.
                Err(_) if self.shutting_down() => false,
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed");
                    self.after_sync(state, trigger, &Err(EngineError::Source(e)))
                        .await;
                    false
                }
            },
            // A drift check always runs: while a revision is held it
            // repairs drift only (see `repair`).
            Trigger::Retry => state.hold.is_none(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RetryPolicy;
    use crate::engine::retry::Retry;
    use crate::engine::state::Hold;
    use crate::record::EngineRecord;
    use crate::store::Versioned;

    fn at(now: Instant, secs: u64) -> Instant {
        now + Duration::from_secs(secs)
    }

    fn schedule(now: Instant) -> Schedule {
        Schedule {
            next_poll: at(now, 30),
            next_drift: at(now, 60),
        }
    }

    #[test]
    fn wakes_at_the_earliest_due_work() {
        let now = Instant::now();
        let s = schedule(now);
        assert_eq!(wake_at(&s, &Due::default(), now), at(now, 30));
        let retry = Due {
            retry: Some(at(now, 5)),
            ..Due::default()
        };
        assert_eq!(wake_at(&s, &retry, now), at(now, 5));
        let window = Due {
            window_opens: Some((at(now, 2), Trigger::Drift)),
            ..retry
        };
        assert_eq!(wake_at(&s, &window, now), at(now, 2));
        let rollback = Due {
            rollback: true,
            ..window
        };
        assert_eq!(wake_at(&s, &rollback, now), now);
    }

    #[test]
    fn picks_the_trigger_by_precedence() {
        let now = Instant::now();
        let s = schedule(now);
        let nothing = Due::default();
        assert_eq!(
            next_trigger(at(now, 30), Wake::Timer, &s, &nothing),
            (Trigger::Poll, false)
        );
        assert_eq!(
            next_trigger(at(now, 60), Wake::Timer, &s, &nothing),
            (Trigger::Drift, false)
        );
        assert_eq!(
            next_trigger(now, Wake::Webhook, &s, &nothing),
            (Trigger::Webhook, false)
        );
        let retry = Due {
            retry: Some(at(now, 5)),
            ..nothing
        };
        assert_eq!(
            next_trigger(at(now, 5), Wake::Timer, &s, &retry),
            (Trigger::Retry, false)
        );
        assert_eq!(
            next_trigger(at(now, 4), Wake::Timer, &s, &retry),
            (Trigger::Poll, false),
            "not yet due"
        );
        let held = Due {
            window_opens: Some((at(now, 5), Trigger::Drift)),
            ..retry
        };
        assert_eq!(
            next_trigger(at(now, 5), Wake::Timer, &s, &held),
            (Trigger::Drift, true),
            "runs as what it was, and releases the window"
        );
        assert_eq!(
            next_trigger(at(now, 5), Wake::Webhook, &s, &held),
            (Trigger::Webhook, false)
        );
        let rollback = Due {
            rollback: true,
            ..held
        };
        assert_eq!(
            next_trigger(at(now, 5), Wake::Webhook, &s, &rollback),
            (Trigger::Rollback, false)
        );
        assert_eq!(
            next_trigger(at(now, 5), Wake::Retry, &s, &held),
            (Trigger::Retry, false),
            "an explicit retry comes before a webhook and what a window held"
        );
    }

    #[test]
    fn polls_skip_known_held_and_bad_commits() {
        let mut state = LoopState::default();
        assert!(!poll_skips("new", &state));
        state.last_applied = Some("applied".into());
        assert!(poll_skips("applied", &state));
        state.retry = Some(Retry::new(Some("retrying".into()), &RetryPolicy::default()));
        assert!(poll_skips("retrying", &state));
        state.hold = Some(Hold {
            revision: Some("held".into()),
        });
        assert!(poll_skips("held", &state));
        state.record = Some(Versioned {
            version: 1,
            value: EngineRecord {
                bad: vec!["bad".into()],
                ..EngineRecord::default()
            },
        });
        assert!(poll_skips("bad", &state));
        assert!(!poll_skips("new", &state));
    }

    #[test]
    fn webhooks_look_again_at_applied_but_not_at_held_or_bad_commits() {
        let mut state = LoopState {
            last_applied: Some("applied".into()),
            ..LoopState::default()
        };
        assert!(!webhook_skips("applied", &state), "a webhook also checks");
        state.retry = Some(Retry::new(Some("retrying".into()), &RetryPolicy::default()));
        assert!(webhook_skips("retrying", &state), "the backoff stands");
        state.hold = Some(Hold {
            revision: Some("stalled".into()),
        });
        assert!(webhook_skips("stalled", &state), "never clears a stall");
        state.record = Some(Versioned {
            version: 1,
            value: EngineRecord {
                bad: vec!["bad".into()],
                ..EngineRecord::default()
            },
        });
        assert!(webhook_skips("bad", &state));
        assert!(!webhook_skips("newer", &state));
    }
}
