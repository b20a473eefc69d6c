//! The run loop: each stage's engine, started once the stage before has
//! promoted something, and beside it the loop that watches the stage,
//! soaks what it becomes Ready at and promotes what passed. What the loop
//! does next is the pure [`next_move`].

use tokio::sync::watch;

use super::promotion::last_promoted;
use super::soak::{Soak, still_at};
use super::{Inner, PipelineError, ready_at};
use crate::id::ResourceId;
use crate::model::Revision;
use crate::status::Status;
use crate::store::AuditQuery;
use crate::sync::LockExt as _;

/// What the promotion loop of a stage does next.
#[derive(Debug, PartialEq, Eq)]
enum Move {
    /// Nothing to promote: wait for the status to change.
    Wait,
    /// The candidate soaked but its promotion failed: check it once more
    /// and promote it, instead of soaking it again.
    Recheck(Revision),
    /// Soak the candidate.
    Soak(Revision),
}

/// The next move, from the stage's status, the id of the last revision
/// that passed it and the one whose promotion failed after its soak: a
/// candidate is what the stage is Ready at and has not passed yet.
fn next_move(status: &Status, passed: Option<&str>, unpromoted: Option<&str>) -> Move {
    let candidate = ready_at(status).filter(|r| passed != Some(r.id.as_str()));
    match candidate {
        None => Move::Wait,
        Some(c) if unpromoted == Some(c.id.as_str()) => Move::Recheck(c),
        Some(c) => Move::Soak(c),
    }
}

impl Inner {
    /// After a restart: each gated stage may keep running what it last
    /// applied (it was promoted to get there), and that counts as passed
    /// by the stage before. The last stage, which hands on to nobody, has
    /// passed what its audit log last records as promoted (so it is not
    /// promoted again).
    pub(super) async fn seed(&self) -> Result<(), PipelineError> {
        if let Some(last) = self.stages.last()
            && last.passed().is_none()
            && let Ok(id) = ResourceId::new("Stage", last.name.clone())
        {
            let query = AuditQuery {
                id: Some(id),
                ..AuditQuery::default()
            };
            let records = self
                .store
                .audit(&last.name, &query)
                .await
                .map_err(|source| PipelineError::Store {
                    stage: last.name.clone(),
                    source,
                })?;
            if let Some(revision) = last_promoted(&records) {
                *last.passed.locked() = Some(revision);
            }
        }
        for (index, stage) in self.stages.iter().enumerate() {
            let Some(gate) = &stage.gate else { continue };
            if gate.current().is_some() {
                continue;
            }
            let record = self
                .store
                .load_record(&stage.name)
                .await
                .map_err(|source| PipelineError::Store {
                    stage: stage.name.clone(),
                    source,
                })?;
            if let Some(applied) = record.value.last_applied {
                *self.stages[index - 1].passed.locked() = Some(applied.id.clone());
                gate.hand_on(applied);
            }
        }
        Ok(())
    }

    /// Runs stage `index`'s engine once the stage before has promoted a
    /// revision (at once for the first stage).
    pub(super) async fn run_engine(&self, index: usize) -> Result<(), PipelineError> {
        let stage = &self.stages[index];
        if let Some(gate) = &stage.gate {
            let mut promoted = gate.subscribe();
            let mut shutdown = self.shutdown.subscribe();
            let first = async move { promoted.wait_for(Option::is_some).await.is_ok() };
            let stop = async move { shutdown.wait_for(|s| *s).await.is_ok() };
            tokio::select! {
                started = first => if !started { return Ok(()) },
                _ = stop => return Ok(()),
            }
        }
        stage
            .engine
            .run()
            .await
            .map_err(|source| PipelineError::Engine {
                stage: stage.name.clone(),
                source,
            })
    }

    /// Watches stage `index`: soaks each revision it becomes Ready at, then
    /// promotes it (to the next stage, through the promoter, into the audit).
    pub(super) async fn promote_from(&self, index: usize) -> Result<(), PipelineError> {
        let stage = &self.stages[index];
        let mut status = stage.engine.handle().watch_status();
        let mut shutdown = self.shutdown.subscribe();
        // A revision that soaked but whose promotion failed: the retry
        // checks it once more instead of soaking it again. Forgotten when
        // the stage is not Ready at it any more (it soaks again then).
        let mut unpromoted: Option<String> = None;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let next = next_move(
                &status.borrow_and_update(),
                stage.passed().as_deref(),
                unpromoted.take().as_deref(),
            );
            let (candidate, soaked) = match next {
                Move::Wait => {
                    tokio::select! {
                        changed = status.changed() => if changed.is_err() { return Ok(()) },
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Move::Recheck(candidate) => {
                    tracing::info!(stage = %stage.name, revision = %candidate, soak = ?stage.soak, "soaking");
                    let soaked = match self.unhealthy(stage, &candidate).await {
                        None => Soak::Passed,
                        Some(reason) => Soak::Unhealthy(reason),
                    };
                    (candidate, soaked)
                }
                Move::Soak(candidate) => {
                    tracing::info!(stage = %stage.name, revision = %candidate, soak = ?stage.soak, "soaking");
                    let soaked = self
                        .soak(stage, &candidate, &mut status, &mut shutdown)
                        .await;
                    (candidate, soaked)
                }
            };
            match soaked {
                Soak::Passed => {
                    if self.pass(index, &candidate).await {
                        *stage.soak_state() = None;
                    } else {
                        let still = self
                            .watch_pause(&candidate, &mut status, &mut shutdown)
                            .await;
                        unpromoted = still.then(|| candidate.id.clone());
                    }
                }
                Soak::Moved => *stage.soak_state() = None,
                Soak::Unhealthy(reason) => {
                    tracing::warn!(stage = %stage.name, revision = %candidate, %reason, "soak restarts");
                    if let Some(state) = stage.soak_state().as_mut() {
                        state.failed(reason);
                    }
                    self.pause(&mut shutdown).await;
                }
                Soak::Shutdown => return Ok(()),
            }
        }
    }

    /// Pauses for one check interval, or until shutdown.
    async fn pause(&self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.check_interval) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// Pauses for one check interval; `false` when the stage was seen
    /// leaving `candidate` meanwhile (not Ready at it, or syncing another
    /// revision).
    async fn watch_pause(
        &self,
        candidate: &Revision,
        status: &mut watch::Receiver<Status>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let until = crate::engine::after(tokio::time::Instant::now(), self.check_interval);
        let mut still = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return still,
                changed = status.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    still &= still_at(&status.borrow_and_update(), candidate);
                }
                _ = shutdown.changed() => return still,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ConditionKind;

    fn ready_at_a() -> Status {
        let mut status = Status::default();
        status.set(
            ConditionKind::Ready,
            true,
            crate::status::Reason::ReconciliationSucceeded,
            "ok",
        );
        status.last_applied = Some(Revision::new("main", "a"));
        status
    }

    #[test]
    fn a_stage_that_is_not_ready_has_nothing_to_promote() {
        let mut status = ready_at_a();
        status.set(
            ConditionKind::Ready,
            false,
            crate::status::Reason::Progressing,
            "applying",
        );
        assert_eq!(next_move(&status, None, None), Move::Wait);
        assert_eq!(next_move(&Status::default(), None, None), Move::Wait);
    }

    #[test]
    fn what_passed_already_is_not_promoted_again() {
        assert_eq!(next_move(&ready_at_a(), Some("a"), None), Move::Wait);
        assert_eq!(next_move(&ready_at_a(), Some("a"), Some("a")), Move::Wait);
    }

    #[test]
    fn a_new_candidate_soaks_and_an_unpromoted_one_is_checked_once_more() {
        let a = Revision::new("main", "a");
        assert_eq!(next_move(&ready_at_a(), None, None), Move::Soak(a.clone()));
        assert_eq!(
            next_move(&ready_at_a(), Some("old"), Some("other")),
            Move::Soak(a.clone())
        );
        assert_eq!(
            next_move(&ready_at_a(), Some("old"), Some("a")),
            Move::Recheck(a)
        );
    }
}
