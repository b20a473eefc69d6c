//! The health wait after each wave: every applied resource must become
//! healthy within the health timeout; a newer revision or a shutdown cuts
//! the wait short.

use tokio::time::Instant;

use super::executor::{BoxFuture, Run, bounded, timed};
use super::state::Inner;
use crate::model::{Health, Revision};
use crate::record::{Outcome, SyncResult};
use crate::render::DesiredState;

impl Inner {
    /// Resolves when the source reports a revision other than `current`:
    /// checked every poll interval, and at once on `reconcile_now`.
    fn wait_newer_revision(&self, current: String) -> BoxFuture<'_, Revision> {
        Box::pin(async move {
            loop {
                let tick = tokio::time::sleep(self.config.interval);
                let webhook: BoxFuture<'_, ()> = Box::pin(self.trigger.notified());
                tokio::select! {
                    _ = tick => {}
                    _ = webhook => {}
                }
                match self.parts.source.poll().await {
                    Ok(rev) if rev.id != current => return rev,
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "poll during health wait failed"),
                }
            }
        })
    }

    /// Waits until every resource in `applied` is healthy: `Progressing` and
    /// `Missing` keep waiting up to the health timeout, `Degraded` fails at
    /// once. A newer revision or a shutdown ends the wait early.
    pub(super) async fn wait_healthy(
        &self,
        desired: &DesiredState,
        applied: &[usize],
        run: &mut Run<'_>,
    ) -> HealthResult {
        let resources = desired.resources();
        let mut pending: Vec<usize> = applied.to_vec();
        let deadline = super::after(Instant::now(), self.config.health_timeout);
        let mut newer = self.wait_newer_revision(desired.revision().id.clone());
        loop {
            let calls: Vec<BoxFuture<'_, _>> = pending
                .iter()
                .map(|&pos| -> BoxFuture<'_, _> {
                    let id = &resources[pos].id;
                    Box::pin(async move {
                        let h =
                            timed(id, self.config.call_timeout, self.parts.target.health(id)).await;
                        (pos, h)
                    })
                })
                .collect();
            let checks = bounded(calls, self.config.concurrency).await;
            let mut still = Vec::new();
            for (pos, health) in checks {
                let id = &resources[pos].id;
                match health {
                    Ok(Health::Healthy) => {
                        let outcome = if run.rechecking[pos] {
                            Outcome::Unchanged
                        } else if run.creating[pos] {
                            Outcome::Created
                        } else {
                            Outcome::Updated
                        };
                        run.outcome(id, outcome);
                    }
                    Ok(Health::Degraded { reason }) => {
                        run.unhealthy(pos, format!("{id}: degraded: {reason}"));
                    }
                    Ok(Health::Progressing | Health::Missing) => still.push(pos),
                    Err(e) => run.fail(pos, &e),
                }
            }
            if still.is_empty() {
                return HealthResult::Done;
            }
            still.sort_unstable();
            if Instant::now() >= deadline {
                for pos in still {
                    let id = &resources[pos].id;
                    let msg = format!("{id}: not healthy after {:?}", self.config.health_timeout);
                    run.unhealthy(pos, msg);
                }
                return HealthResult::Done;
            }
            pending = still;
            let pause = self.config.health_poll.min(deadline - Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                newer = &mut newer => {
                    tracing::info!(revision = %newer, "newer revision: health wait cancelled");
                    for pos in pending {
                        run.ok[pos] = false;
                        run.outcome(&resources[pos].id, Outcome::Cancelled);
                    }
                    return HealthResult::Superseded;
                }
                _ = Box::pin(self.graceful_shutdown()) as BoxFuture<'_, ()> => {
                    for pos in pending {
                        run.ok[pos] = false;
                        run.outcome(&resources[pos].id, Outcome::Cancelled);
                    }
                    return HealthResult::Interrupted;
                }
            }
        }
    }
}

pub(super) enum HealthResult {
    Done,
    Superseded,
    Interrupted,
}

impl HealthResult {
    /// How the sync ends when the wait was cut short.
    pub(super) fn cut(self) -> Option<SyncResult> {
        match self {
            HealthResult::Done => None,
            HealthResult::Superseded => Some(SyncResult::Superseded),
            HealthResult::Interrupted => Some(SyncResult::Interrupted),
        }
    }
}
