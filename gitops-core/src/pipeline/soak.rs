//! Soaking a candidate in a stage: it must stay Ready there, with its gates
//! passed and every resource healthy, for the stage's soak time. The
//! verdicts are pure functions ([`status_problem`], [`gate_problem`],
//! [`health_problem`], [`next_step`]); [`Inner::soak`] and
//! [`Inner::unhealthy`] read the stage and act on them.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Inner, StageRuntime, ready_at};
use crate::engine::SyncResult;
use crate::id::ResourceId;
use crate::model::{Health, Revision};
use crate::status::Status;
use crate::store::HistoryEntry;
use crate::target::TargetError;

/// The revision being soaked in a stage.
pub(super) struct SoakState {
    revision: Revision,
    deadline: Instant,
    restarts: usize,
    last_failure: Option<String>,
}

impl SoakState {
    /// Soaks `candidate` until `deadline`: the same candidate keeps its
    /// restart count and last failure, a new one starts afresh.
    pub(super) fn begin(state: &mut Option<SoakState>, candidate: &Revision, deadline: Instant) {
        match state {
            Some(s) if s.revision.id == candidate.id => s.deadline = deadline,
            _ => {
                *state = Some(SoakState {
                    revision: candidate.clone(),
                    deadline,
                    restarts: 0,
                    last_failure: None,
                })
            }
        }
    }

    /// A check failed: the soak starts over.
    pub(super) fn failed(&mut self, reason: String) {
        self.restarts += 1;
        self.last_failure = Some(reason);
    }

    /// What [`Pipeline::soaking`](super::Pipeline::soaking) reports at `now`.
    pub(super) fn report(&self, now: Instant) -> Soaking {
        Soaking {
            revision: self.revision.clone(),
            remaining: self.deadline.saturating_duration_since(now),
            restarts: self.restarts,
            last_failure: self.last_failure.clone(),
        }
    }
}

/// A revision soaking in a stage: what it waits for before promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soaking {
    /// The candidate.
    pub revision: Revision,
    /// Soak time left if every check from now on passes.
    pub remaining: Duration,
    /// How often a failed check started the soak over.
    pub restarts: usize,
    /// Why the last check failed, e.g. `App/web: degraded: crash loop`.
    pub last_failure: Option<String>,
}

/// How a soak ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Soak {
    Passed,
    /// The stage moved off the candidate (another revision, not Ready).
    Moved,
    Unhealthy(String),
    Shutdown,
}

/// What a soak does after a healthy check.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The soak time is over.
    Passed,
    /// Check again after this long (or when the status changes).
    Wait(Duration),
}

/// After a healthy check at `now`: passed at the deadline, else wait for
/// the next check, which is never after the deadline.
fn next_step(now: Instant, deadline: Instant, check_interval: Duration) -> Step {
    if now >= deadline {
        Step::Passed
    } else {
        Step::Wait(check_interval.min(deadline - now))
    }
}

/// Why the stage's status says `candidate` does not count as healthy:
/// not Ready at it, or a newer revision being applied (Ready stays at the
/// candidate while a newer revision is applied, or was left half-applied
/// by a superseded or stopped sync: the target is no longer at it).
pub(super) fn status_problem(status: &Status, candidate: &Revision) -> Option<String> {
    if ready_at(status).is_none_or(|r| r.id != candidate.id) {
        return Some(format!("not Ready at {candidate}: {status}"));
    }
    match &status.last_attempted {
        Some(attempted) if attempted.id != candidate.id => {
            Some(format!("the stage started syncing {attempted}"))
        }
        _ => None,
    }
}

/// Whether the stage is still at `candidate`: Ready at it and not syncing
/// another revision.
pub(super) fn still_at(status: &Status, candidate: &Revision) -> bool {
    status_problem(status, candidate).is_none()
}

/// Belt and braces: the last sync of `candidate` that ran gates (history
/// is newest first) must have passed them all and converged.
fn gate_problem(history: &[HistoryEntry], candidate: &Revision) -> Option<String> {
    let entry = history
        .iter()
        .find(|h| h.revision.id == candidate.id && !h.gates.is_empty())?;
    if let Some(gate) = entry.gates.iter().find(|g| !g.passed) {
        return Some(format!("gate {} failed", gate.name));
    }
    (entry.result != SyncResult::Converged)
        .then(|| format!("last gated sync ended {}", entry.result))
}

/// Why `id`'s health answer fails the soak; `None` for an answer that did
/// not come within `limit`.
fn health_problem(
    id: &ResourceId,
    answer: Option<Result<Health, TargetError>>,
    limit: Duration,
) -> Option<String> {
    match answer {
        Some(Ok(Health::Healthy)) => None,
        Some(Ok(other)) => Some(format!("{id}: {other}")),
        Some(Err(e)) => Some(e.to_string()),
        None => Some(format!("{id}: health check timed out after {limit:?}")),
    }
}

impl Inner {
    /// Soaks `candidate` in `stage` until its soak time has passed with
    /// every check healthy, a check fails, the stage moves off it, or the
    /// pipeline shuts down.
    pub(super) async fn soak(
        &self,
        stage: &StageRuntime,
        candidate: &Revision,
        status: &mut watch::Receiver<Status>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Soak {
        let deadline = crate::engine::after(Instant::now(), stage.soak);
        SoakState::begin(&mut stage.soak_state(), candidate, deadline);
        loop {
            if let Some(reason) = self.unhealthy(stage, candidate).await {
                return Soak::Unhealthy(reason);
            }
            let pause = match next_step(Instant::now(), deadline, self.check_interval) {
                Step::Passed => return Soak::Passed,
                Step::Wait(pause) => pause,
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                changed = status.changed() => {
                    if changed.is_err() {
                        return Soak::Shutdown;
                    }
                    let still = ready_at(&status.borrow_and_update())
                        .is_some_and(|r| r.id == candidate.id);
                    if !still {
                        return Soak::Moved;
                    }
                }
                _ = shutdown.changed() => return Soak::Shutdown,
            }
        }
    }

    /// Why `candidate` does not count as healthy in `stage` right now.
    pub(super) async fn unhealthy(
        &self,
        stage: &StageRuntime,
        candidate: &Revision,
    ) -> Option<String> {
        if let Some(problem) = status_problem(&stage.engine.status(), candidate) {
            return Some(problem);
        }
        match stage.engine.history(50).await {
            Ok(history) => {
                if let Some(problem) = gate_problem(&history, candidate) {
                    return Some(problem);
                }
            }
            Err(e) => return Some(format!("cannot read history: {e}")),
        }
        let inventory = match self.store.load_inventory(&stage.name).await {
            Ok(v) => v.value,
            Err(e) => return Some(format!("cannot read the inventory: {e}")),
        };
        let limit = stage.engine.config().call_timeout;
        for (id, _) in inventory.iter() {
            let answer = tokio::time::timeout(limit, stage.target.health(id))
                .await
                .ok();
            if let Some(problem) = health_problem(id, answer, limit) {
                return Some(problem);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Trigger;
    use crate::gate::{GateResult, GateStage};
    use crate::plan::Summary;
    use crate::status::ConditionKind;
    use std::time::SystemTime;

    fn rev(id: &str) -> Revision {
        Revision::new("main", id)
    }

    fn ready(applied: &str, attempted: Option<&str>) -> Status {
        let mut status = Status::default();
        status.set(
            ConditionKind::Ready,
            true,
            crate::status::Reason::ReconciliationSucceeded,
            "ok",
        );
        status.last_applied = Some(rev(applied));
        status.last_attempted = attempted.map(rev);
        status
    }

    #[test]
    fn the_status_must_be_ready_at_the_candidate_and_nothing_newer() {
        let candidate = rev("a");
        assert_eq!(status_problem(&ready("a", Some("a")), &candidate), None);
        assert_eq!(status_problem(&ready("a", None), &candidate), None);
        assert!(still_at(&ready("a", None), &candidate));

        let other = status_problem(&ready("b", Some("b")), &candidate).expect("at b");
        assert!(other.starts_with("not Ready at main@"), "{other}");
        let mut not_ready = ready("a", Some("a"));
        not_ready.set(
            ConditionKind::Ready,
            false,
            crate::status::Reason::Progressing,
            "applying",
        );
        let problem = status_problem(&not_ready, &candidate).expect("not Ready");
        assert!(problem.starts_with("not Ready at main@"), "{problem}");
        assert!(!still_at(&not_ready, &candidate));

        let newer = status_problem(&ready("a", Some("b")), &candidate).expect("syncing b");
        assert!(
            newer.starts_with("the stage started syncing main@"),
            "{newer}"
        );
        assert!(!still_at(&ready("a", Some("b")), &candidate));
    }

    fn entry(id: &str, result: SyncResult, gates: &[(&str, bool)]) -> HistoryEntry {
        let now = SystemTime::now();
        HistoryEntry {
            revision: rev(id),
            trigger: Trigger::Poll,
            result,
            error: None,
            summary: Summary::default(),
            outcomes: Vec::new(),
            gates: gates
                .iter()
                .map(|(name, passed)| GateResult {
                    name: (*name).to_owned(),
                    stage: GateStage::PostSync,
                    passed: *passed,
                    output: String::new(),
                    duration: Duration::ZERO,
                    error: None,
                })
                .collect(),
            not_converging: Vec::new(),
            started_at: now,
            finished_at: now,
        }
    }

    #[test]
    fn the_last_gated_sync_of_the_candidate_decides() {
        let candidate = rev("a");
        assert_eq!(gate_problem(&[], &candidate), None, "no history");
        let ungated = [entry("a", SyncResult::Failed, &[])];
        assert_eq!(gate_problem(&ungated, &candidate), None, "no gates ran");
        let passed = [
            entry("a", SyncResult::Converged, &[("smoke", true)]),
            entry("a", SyncResult::Converged, &[("smoke", false)]),
        ];
        assert_eq!(gate_problem(&passed, &candidate), None, "newest first");
        let failed = [
            entry("b", SyncResult::Converged, &[("smoke", true)]),
            entry(
                "a",
                SyncResult::Converged,
                &[("smoke", true), ("load", false)],
            ),
        ];
        assert_eq!(
            gate_problem(&failed, &candidate).as_deref(),
            Some("gate load failed")
        );
        let interrupted = [entry("a", SyncResult::Interrupted, &[("smoke", true)])];
        let problem = gate_problem(&interrupted, &candidate).expect("not converged");
        assert!(problem.starts_with("last gated sync ended "), "{problem}");
    }

    #[test]
    fn every_resource_must_answer_healthy_in_time() {
        let id: ResourceId = "App/web".parse().expect("id");
        let limit = Duration::from_secs(5);
        assert_eq!(health_problem(&id, Some(Ok(Health::Healthy)), limit), None);
        let degraded = Health::Degraded {
            reason: "crash loop".into(),
        };
        assert_eq!(
            health_problem(&id, Some(Ok(degraded.clone())), limit),
            Some(format!("App/web: {degraded}"))
        );
        let error = TargetError::transient(&id, "connection refused");
        let text = error.to_string();
        assert_eq!(health_problem(&id, Some(Err(error)), limit), Some(text));
        assert_eq!(
            health_problem(&id, None, limit).as_deref(),
            Some("App/web: health check timed out after 5s")
        );
    }

    #[test]
    fn a_soak_waits_at_most_a_check_interval_and_never_past_its_deadline() {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let ten_seconds = Duration::from_secs(10);
        assert_eq!(next_step(now, now, ten_seconds), Step::Passed);
        assert_eq!(next_step(now + minute, now, ten_seconds), Step::Passed);
        assert_eq!(
            next_step(now, now + minute, ten_seconds),
            Step::Wait(ten_seconds)
        );
        assert_eq!(
            next_step(now, now + Duration::from_secs(3), ten_seconds),
            Step::Wait(Duration::from_secs(3))
        );
    }

    #[test]
    fn the_same_candidate_keeps_its_restarts_a_new_one_starts_afresh() {
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        let mut state = None;
        SoakState::begin(&mut state, &rev("a"), now);
        let soaking = state.as_mut().expect("soaking");
        soaking.failed("App/web: degraded".into());
        SoakState::begin(&mut state, &rev("a"), later);
        let report = state.as_ref().expect("soaking").report(now);
        assert_eq!(report.restarts, 1);
        assert_eq!(report.last_failure.as_deref(), Some("App/web: degraded"));
        assert_eq!(report.remaining, Duration::from_secs(600));

        SoakState::begin(&mut state, &rev("b"), now);
        let report = state.as_ref().expect("soaking").report(later);
        assert_eq!(report.revision.id, "b");
        assert_eq!((report.restarts, report.last_failure), (0, None));
        assert_eq!(report.remaining, Duration::ZERO, "saturates");
    }
}
