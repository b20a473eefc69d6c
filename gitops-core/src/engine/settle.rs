//! `settle`: what a finished sync means for the engine — converged, retry,
//! stall, fail (and roll back) — decided in one pure function from the sync's
//! result and the facts it needs. [`super::verdict`] applies the verdict.

use super::{EngineConfig, EngineError, SyncReport};
use crate::gate::GateError;
use crate::model::Revision;
use crate::record::{Outcome, SyncResult};
use crate::status::Reason;

/// What `settle` needs to know beyond the sync's own result.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Facts {
    /// Retries already scheduled for this revision.
    pub attempts: usize,
    /// Where an automatic rollback would go: the last healthy revision,
    /// unless it is the revision that failed or one marked bad.
    pub last_healthy: Option<Revision>,
}

/// What happens after a sync.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// A window or a dependency held the sync back: no history, no hold,
    /// no retry; look again later.
    Blocked,
    /// The sync did not run (suspended, aborted): nothing to record.
    Nothing,
    /// The target matches the revision and is healthy.
    Converged,
    /// The sync ended early for a reason that is not a failure.
    Paused(Reason),
    /// Wait for a new revision or an explicit reconcile.
    Stall {
        /// The condition reason.
        reason: Reason,
        /// What went wrong.
        message: String,
    },
    /// Try again after the next backoff delay.
    Retry {
        /// The condition reason.
        reason: Reason,
        /// What went wrong.
        message: String,
    },
    /// The revision failed for good: mark it bad and, given a revision,
    /// roll back to it.
    Fail {
        /// What went wrong.
        message: String,
        /// The rollback target (only with automatic rollback on).
        rollback_to: Option<Revision>,
    },
}

/// Decides what a sync's `result` means. Pure: the same inputs always give
/// the same verdict.
pub(super) fn settle(
    result: &Result<SyncReport, EngineError>,
    facts: &Facts,
    config: &EngineConfig,
) -> Verdict {
    let verdict = match result {
        Ok(report) => settle_report(report, config),
        Err(e) if e.is_transient() => Verdict::Retry {
            reason: Reason::SourceOrTargetUnavailable,
            message: e.to_string(),
        },
        Err(e) => Verdict::Stall {
            reason: error_reason(e),
            message: e.to_string(),
        },
    };
    match verdict {
        Verdict::Retry { message, .. } if facts.attempts >= config.retry.max_attempts => {
            let message = format!("gave up after {} retries: {message}", facts.attempts);
            fail(message, facts, config)
        }
        Verdict::Fail { message, .. } => fail(message, facts, config),
        other => other,
    }
}

fn fail(message: String, facts: &Facts, config: &EngineConfig) -> Verdict {
    let rollback_to = facts.last_healthy.clone().filter(|_| config.auto_rollback);
    Verdict::Fail {
        message,
        rollback_to,
    }
}

fn settle_report(report: &SyncReport, config: &EngineConfig) -> Verdict {
    match report.result {
        SyncResult::Converged => return Verdict::Converged,
        SyncResult::Superseded => return Verdict::Paused(Reason::Superseded),
        SyncResult::Interrupted => return Verdict::Paused(Reason::Interrupted),
        SyncResult::WindowClosed => return Verdict::Paused(Reason::SyncWindowClosed),
        SyncResult::Blocked => return Verdict::Blocked,
        SyncResult::Suspended | SyncResult::Aborted | SyncResult::Planned => {
            return Verdict::Nothing;
        }
        SyncResult::GateFailed | SyncResult::Failed => {}
    }
    if let Some(gate) = report.gates.iter().find(|g| !g.passed) {
        let message = format!("gate {} failed: {}", gate.name, gate.output.trim());
        return match gate.error {
            Some(GateError::Transient) => Verdict::Retry {
                reason: Reason::GateUnavailable,
                message,
            },
            Some(GateError::Permanent) => Verdict::Stall {
                reason: Reason::GateUnavailable,
                message,
            },
            None if report.result == SyncResult::GateFailed => Verdict::Stall {
                reason: Reason::GateFailed,
                message,
            },
            None if config.auto_rollback => Verdict::Fail {
                message,
                rollback_to: None,
            },
            None => Verdict::Stall {
                reason: Reason::PostSyncGateFailed,
                message,
            },
        };
    }
    let unhealthy = report.outcomes.iter().find_map(|o| match &o.outcome {
        Outcome::Unhealthy { reason } => Some(reason),
        _ => None,
    });
    if let (true, Some(reason)) = (config.auto_rollback, unhealthy) {
        return Verdict::Fail {
            message: format!("not healthy: {reason}"),
            rollback_to: None,
        };
    }
    let permanent = report.outcomes.iter().find_map(|o| match &o.outcome {
        Outcome::Failed {
            error,
            transient: false,
        } => Some(error),
        _ => None,
    });
    match permanent {
        Some(error) => Verdict::Stall {
            reason: Reason::ResourceFailed,
            message: error.clone(),
        },
        None => Verdict::Retry {
            reason: Reason::ResourceFailed,
            message: report.to_string(),
        },
    }
}

/// The condition reason of an error that stalls.
fn error_reason(e: &EngineError) -> Reason {
    match e {
        EngineError::Render { .. } | EngineError::RenderTimeout { .. } => Reason::RenderFailed,
        EngineError::EmptyRevision { .. } => Reason::EmptyRevisionRefused,
        EngineError::ConfirmationRequired { .. } => Reason::ConfirmationRequired,
        EngineError::Rollback { .. } => Reason::RollbackFailed,
        EngineError::Source(_) => Reason::SourceFailed,
        _ => Reason::ReconciliationFailed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gate::{GateResult, GateStage, GateVerdict};
    use crate::id::ResourceId;
    use crate::record::{ResourceOutcome, Trigger};
    use crate::render::RenderError;
    use crate::source::SourceError;

    fn rev(id: &str) -> Revision {
        Revision::new("main", id)
    }

    fn report(result: SyncResult) -> SyncReport {
        SyncReport::untouched(rev("a"), Trigger::Poll, result)
    }

    fn with_outcome(result: SyncResult, outcome: Outcome) -> SyncReport {
        let mut r = report(result);
        r.outcomes.push(ResourceOutcome {
            id: ResourceId::new("App", "web").expect("id"),
            outcome,
        });
        r
    }

    fn with_gate(result: SyncResult, stage: GateStage, verdict: GateVerdict) -> SyncReport {
        let mut r = report(result);
        r.gates
            .push(GateResult::new("tests", stage, verdict, Duration::ZERO));
        r
    }

    fn on(r: SyncReport) -> Verdict {
        settle(&Ok(r), &Facts::default(), &EngineConfig::default())
    }

    fn rolling(r: SyncReport, facts: &Facts) -> Verdict {
        settle(&Ok(r), facts, &EngineConfig::default().auto_rollback(true))
    }

    fn healthy() -> Facts {
        Facts {
            attempts: 0,
            last_healthy: Some(rev("good")),
        }
    }

    #[test]
    fn a_converged_sync_converges() {
        assert_eq!(on(report(SyncResult::Converged)), Verdict::Converged);
    }

    #[test]
    fn early_ends_pause_with_their_reason() {
        for (result, reason) in [
            (SyncResult::Superseded, Reason::Superseded),
            (SyncResult::Interrupted, Reason::Interrupted),
            (SyncResult::WindowClosed, Reason::SyncWindowClosed),
        ] {
            assert_eq!(on(report(result)), Verdict::Paused(reason));
        }
    }

    #[test]
    fn syncs_that_did_not_run_leave_nothing() {
        assert_eq!(on(report(SyncResult::Blocked)), Verdict::Blocked);
        assert_eq!(on(report(SyncResult::Suspended)), Verdict::Nothing);
        assert_eq!(on(report(SyncResult::Aborted)), Verdict::Nothing);
        assert_eq!(on(report(SyncResult::Planned)), Verdict::Nothing);
    }

    #[test]
    fn a_failed_pre_sync_gate_stalls() {
        let r = with_gate(
            SyncResult::GateFailed,
            GateStage::PreSync,
            GateVerdict::Failed("red".into()),
        );
        assert_eq!(
            on(r),
            Verdict::Stall {
                reason: Reason::GateFailed,
                message: "gate tests failed: red".into()
            }
        );
    }

    #[test]
    fn a_gate_that_could_not_run_retries_or_stalls_by_its_error() {
        let error = |transient| GateVerdict::Error {
            message: "timed out".into(),
            transient,
        };
        let message = "gate tests failed: could not run: timed out".to_owned();
        for stage in [GateStage::PreSync, GateStage::PostSync] {
            let result = match stage {
                GateStage::PreSync => SyncResult::GateFailed,
                GateStage::PostSync => SyncResult::Failed,
            };
            assert_eq!(
                on(with_gate(result, stage, error(true))),
                Verdict::Retry {
                    reason: Reason::GateUnavailable,
                    message: message.clone()
                }
            );
            assert_eq!(
                on(with_gate(result, stage, error(false))),
                Verdict::Stall {
                    reason: Reason::GateUnavailable,
                    message: message.clone()
                }
            );
        }
    }

    #[test]
    fn a_failed_post_sync_gate_stalls_or_fails_with_rollback() {
        let r = || {
            with_gate(
                SyncResult::Failed,
                GateStage::PostSync,
                GateVerdict::Failed("smoke".into()),
            )
        };
        let message = "gate tests failed: smoke".to_owned();
        assert_eq!(
            on(r()),
            Verdict::Stall {
                reason: Reason::PostSyncGateFailed,
                message: message.clone()
            }
        );
        assert_eq!(
            rolling(r(), &healthy()),
            Verdict::Fail {
                message,
                rollback_to: Some(rev("good"))
            }
        );
    }

    #[test]
    fn unhealthy_resources_fail_with_rollback_and_retry_without() {
        let unhealthy = || {
            with_outcome(
                SyncResult::Failed,
                Outcome::Unhealthy {
                    reason: "crash loop".into(),
                },
            )
        };
        assert_eq!(
            rolling(unhealthy(), &healthy()),
            Verdict::Fail {
                message: "not healthy: crash loop".into(),
                rollback_to: Some(rev("good"))
            }
        );
        // Nothing healthy to return to: failed, held.
        assert_eq!(
            rolling(unhealthy(), &Facts::default()),
            Verdict::Fail {
                message: "not healthy: crash loop".into(),
                rollback_to: None
            }
        );
        assert!(matches!(
            on(unhealthy()),
            Verdict::Retry {
                reason: Reason::ResourceFailed,
                ..
            }
        ));
    }

    #[test]
    fn resource_failures_stall_when_permanent_and_retry_when_transient() {
        let failed = |transient| {
            with_outcome(
                SyncResult::Failed,
                Outcome::Failed {
                    error: "App/web: denied".into(),
                    transient,
                },
            )
        };
        assert_eq!(
            on(failed(false)),
            Verdict::Stall {
                reason: Reason::ResourceFailed,
                message: "App/web: denied".into()
            }
        );
        assert!(matches!(
            on(failed(true)),
            Verdict::Retry {
                reason: Reason::ResourceFailed,
                ..
            }
        ));
    }

    #[test]
    fn errors_retry_when_transient_and_stall_with_their_reason() {
        let config = EngineConfig::default();
        let unavailable: Result<SyncReport, _> =
            Err(EngineError::Source(SourceError::Unavailable {
                location: "origin".into(),
                message: "down".into(),
                source: None,
            }));
        assert!(matches!(
            settle(&unavailable, &Facts::default(), &config),
            Verdict::Retry {
                reason: Reason::SourceOrTargetUnavailable,
                ..
            }
        ));
        let render: Result<SyncReport, _> = Err(EngineError::Render {
            revision: Box::new(rev("a")),
            source: RenderError::NotUtf8 {
                path: "app.yaml".into(),
                offset: 3,
            },
        });
        assert!(matches!(
            settle(&render, &Facts::default(), &config),
            Verdict::Stall {
                reason: Reason::RenderFailed,
                ..
            }
        ));
        let empty: Result<SyncReport, _> = Err(EngineError::EmptyRevision {
            revision: Box::new(rev("a")),
            managed: 3,
        });
        assert!(matches!(
            settle(&empty, &Facts::default(), &config),
            Verdict::Stall {
                reason: Reason::EmptyRevisionRefused,
                ..
            }
        ));
    }

    #[test]
    fn a_spent_retry_budget_fails_the_revision() {
        let transient = || {
            with_outcome(
                SyncResult::Failed,
                Outcome::Failed {
                    error: "busy".into(),
                    transient: true,
                },
            )
        };
        let config = EngineConfig::default();
        let spent = Facts {
            attempts: config.retry.max_attempts,
            last_healthy: Some(rev("good")),
        };
        // Without automatic rollback: failed and held, no rollback.
        match settle(&Ok(transient()), &spent, &config) {
            Verdict::Fail {
                message,
                rollback_to: None,
            } => assert!(message.starts_with("gave up after 10 retries"), "{message}"),
            other => panic!("{other:?}"),
        }
        // With it: back to the last healthy revision.
        assert!(matches!(
            settle(
                &Ok(transient()),
                &spent,
                &config.clone().auto_rollback(true)
            ),
            Verdict::Fail {
                rollback_to: Some(_),
                ..
            }
        ));
        // One attempt left: retried.
        let left = Facts {
            attempts: config.retry.max_attempts - 1,
            ..spent
        };
        assert!(matches!(
            settle(&Ok(transient()), &left, &config),
            Verdict::Retry { .. }
        ));
    }
}
