//! Non-convergence: every resource a wave applied is observed again once
//! the wave is healthy; one that still differs from its spec (a target
//! that stores `true` as `1` while
//! [`Target::differs`](crate::Target::differs) compares JSON exactly) does
//! not converge. It is reported (status reason `NotConverging`, an event,
//! the sync report and history) and, while the target shows that same
//! difference, re-applied with backoff, not on every drift check. Decided
//! by the pure [`decide`] and [`note`]; the executor and the reconcile act.
//!
//! The backoff after the `n`th apply that left the same difference is
//! `drift_interval × 2^n`, at most [`MAX_BACKOFF`] (or one drift interval,
//! when that is longer). A change in Git (another digest), another
//! difference in the target, a match (the target converged) or
//! [`EngineHandle::retry`](super::EngineHandle::retry) starts afresh.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Event;
use super::state::{Inner, LoopState, Prepared};
use crate::diff::Diff;
use crate::id::ResourceId;
use crate::record::NotConverging;
use crate::status::{ConditionKind, Reason};

/// The longest pause between two applies of a resource that does not
/// converge (unless the drift interval is longer).
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(3_600);

/// A resource that still differed right after it was applied.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Attempt {
    /// The digest of the spec applied.
    pub digest: String,
    /// What still differed (`None`: absent right after the apply).
    pub diff: Option<Diff>,
    /// Applies of this spec that left this same difference.
    pub applies: usize,
    /// When it may be applied again while the difference stays the same.
    pub next: Instant,
}

impl Attempt {
    fn is_same(&self, digest: &str, diff: Option<&Diff>) -> bool {
        self.digest == digest && self.diff.as_ref() == diff
    }
}

/// What the executor noticed about one resource, for [`note`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Noticed {
    /// Observed as desired: converged.
    Matched(ResourceId),
    /// Applied with `digest`, and observed right after still differing.
    Stuck {
        /// The resource.
        id: ResourceId,
        /// The digest of the spec applied.
        digest: String,
        /// What still differs (`None`: absent).
        diff: Option<Diff>,
    },
}

/// Whether a resource that differs (`diff`; `None`: absent) from its spec
/// with `digest` is applied now: not when an apply of that spec left this
/// same difference and its backoff has not run out.
pub(super) fn decide(
    last: Option<&Attempt>,
    digest: &str,
    diff: Option<&Diff>,
    now: Instant,
) -> bool {
    last.is_none_or(|a| !a.is_same(digest, diff) || now >= a.next)
}

/// The pause after the `applies`th apply against the same difference.
pub(super) fn backoff(applies: usize, drift_interval: Duration) -> Duration {
    let factor = 1u32 << applies.min(16);
    drift_interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(drift_interval))
}

/// Records what the executor noticed; returns the resources found not
/// converging for the first time, or with another difference (an event is
/// due for them).
pub(super) fn note(
    attempts: &mut HashMap<ResourceId, Attempt>,
    noticed: Vec<Noticed>,
    now: Instant,
    drift_interval: Duration,
) -> Vec<ResourceId> {
    let mut newly = Vec::new();
    for n in noticed {
        match n {
            Noticed::Matched(id) => {
                attempts.remove(&id);
            }
            Noticed::Stuck { id, digest, diff } => {
                let applies = match attempts.get(&id) {
                    Some(a) if a.is_same(&digest, diff.as_ref()) => a.applies + 1,
                    _ => {
                        newly.push(id.clone());
                        1
                    }
                };
                let next = super::after(now, backoff(applies, drift_interval));
                let attempt = Attempt {
                    digest,
                    diff,
                    applies,
                    next,
                };
                attempts.insert(id, attempt);
            }
        }
    }
    newly
}

/// The resources currently not converging, by id.
pub(super) fn report(attempts: &HashMap<ResourceId, Attempt>) -> Vec<NotConverging> {
    let mut list: Vec<NotConverging> = attempts
        .iter()
        .map(|(id, a)| NotConverging {
            id: id.clone(),
            fields: a
                .diff
                .as_ref()
                .map(|d| d.changes.iter().map(|c| c.path.clone()).collect())
                .unwrap_or_default(),
            applies: a.applies,
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list
}

/// The status message for resources that do not converge, with the hint.
pub(super) fn message(list: &[NotConverging]) -> String {
    let each: Vec<String> = list
        .iter()
        .map(|n| {
            let what = if n.fields.is_empty() {
                "stays absent".to_owned()
            } else {
                format!("{} still differs", n.fields.join(", "))
            };
            format!(
                "{} does not converge: {what} after {} applies",
                n.id, n.applies
            )
        })
        .collect();
    format!(
        "{}; re-applied with backoff. The target stores other values than Git's: \
         normalise them in the target or override Target::differs",
        each.join("; ")
    )
}

impl Inner {
    /// Records what an execution noticed and sends an event for each
    /// resource found not converging for the first time; the resources not
    /// converging now.
    pub(super) fn note_convergence(
        &self,
        state: &mut LoopState,
        noticed: Vec<Noticed>,
    ) -> Vec<NotConverging> {
        let attempts = &mut state.converging;
        let newly = note(
            attempts,
            noticed,
            Instant::now(),
            self.config.drift_interval,
        );
        let list = report(attempts);
        for n in list.iter().filter(|n| newly.contains(&n.id)) {
            let message = message(std::slice::from_ref(n));
            tracing::warn!(id = %n.id, fields = ?n.fields, applies = n.applies, "not converging");
            self.emit(Event::NotConverging {
                id: n.id.clone(),
                fields: n.fields.clone(),
                applies: n.applies,
                message,
            });
        }
        list
    }

    /// A sync that would leave the engine Ready says NotConverging instead
    /// while resources do not converge.
    pub(super) fn flag_not_converging(&self, list: &[NotConverging]) {
        if list.is_empty() {
            return;
        }
        self.status.send_modify(|s| {
            if s.is(ConditionKind::Ready) {
                s.set(
                    ConditionKind::Ready,
                    false,
                    Reason::NotConverging,
                    message(list),
                );
            }
        });
    }
}

impl Inner {
    /// Observes what a wave just applied: whether each resource now
    /// matches its spec. One batch call; a failed observation says nothing.
    pub(super) async fn verify_applied(
        &self,
        prepared: &Prepared,
        applied: &[usize],
    ) -> Vec<Noticed> {
        if applied.is_empty() {
            return Vec::new();
        }
        let resources = prepared.desired.resources();
        let ids: Vec<ResourceId> = applied.iter().map(|&p| resources[p].id.clone()).collect();
        let target = &*self.parts.target;
        let limit = super::prepare::batch_timeout(self.config.call_timeout, ids.len());
        let Ok(results) = tokio::time::timeout(limit, target.observe_many(&ids)).await else {
            tracing::debug!("observing applied resources timed out");
            return Vec::new();
        };
        let mut noticed = Vec::new();
        for (&pos, result) in applied.iter().zip(results) {
            let r = &resources[pos];
            let id = r.id.clone();
            let digest = prepared.digests[pos].clone();
            match result {
                Ok(Some(observed)) => {
                    noticed.push(match crate::plan::differs(target, r, &observed) {
                        None => Noticed::Matched(id),
                        Some(diff) => Noticed::Stuck {
                            id,
                            digest,
                            diff: Some(diff),
                        },
                    })
                }
                Ok(None) => noticed.push(Noticed::Stuck {
                    id,
                    digest,
                    diff: None,
                }),
                Err(e) => tracing::debug!(%id, error = %e, "observing an applied resource failed"),
            }
        }
        noticed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> ResourceId {
        "App/web".parse().expect("id")
    }

    fn diff(old: serde_json::Value) -> Option<Diff> {
        Diff::between(&json!({ "enabled": old }), &json!({ "enabled": true }))
    }

    fn stuck(digest: &str, d: Option<Diff>) -> Vec<Noticed> {
        vec![Noticed::Stuck {
            id: id(),
            digest: digest.into(),
            diff: d,
        }]
    }

    const TICK: Duration = Duration::from_secs(60);

    #[test]
    fn an_apply_that_leaves_a_difference_backs_off_while_it_stays() {
        let mut attempts = HashMap::new();
        let t0 = Instant::now();
        let d = diff(json!(1));
        assert!(decide(None, "d1", d.as_ref(), t0));
        assert_eq!(
            note(&mut attempts, stuck("d1", d.clone()), t0, TICK),
            [id()]
        );
        let list = report(&attempts);
        assert_eq!(list[0].fields, ["spec.enabled"]);
        assert_eq!(list[0].applies, 1);
        // The next drift check sees the same difference: held.
        assert!(!decide(attempts.get(&id()), "d1", d.as_ref(), t0 + TICK));
        // Two intervals after the apply it is tried again, then four later.
        let t2 = t0 + 2 * TICK;
        assert!(decide(attempts.get(&id()), "d1", d.as_ref(), t2));
        assert!(
            note(&mut attempts, stuck("d1", d.clone()), t2, TICK).is_empty(),
            "reported once"
        );
        assert_eq!(report(&attempts)[0].applies, 2);
        assert!(!decide(
            attempts.get(&id()),
            "d1",
            d.as_ref(),
            t2 + 3 * TICK
        ));
        assert!(decide(attempts.get(&id()), "d1", d.as_ref(), t2 + 4 * TICK));
        assert!(
            message(&report(&attempts))
                .contains("App/web does not converge: spec.enabled still differs after 2 applies")
        );
    }

    #[test]
    fn another_difference_a_change_in_git_or_a_match_starts_afresh() {
        let mut attempts = HashMap::new();
        let t0 = Instant::now();
        note(&mut attempts, stuck("d1", diff(json!(1))), t0, TICK);
        assert!(decide(
            attempts.get(&id()),
            "d1",
            diff(json!(2)).as_ref(),
            t0
        ));
        assert!(decide(
            attempts.get(&id()),
            "d2",
            diff(json!(1)).as_ref(),
            t0
        ));
        assert_eq!(
            note(&mut attempts, stuck("d1", diff(json!(2))), t0, TICK),
            [id()],
            "another difference is reported again"
        );
        assert_eq!(report(&attempts)[0].applies, 1);
        note(&mut attempts, vec![Noticed::Matched(id())], t0, TICK);
        assert!(attempts.is_empty());
        assert!(report(&attempts).is_empty());
    }

    #[test]
    fn the_backoff_doubles_up_to_an_hour_and_never_overflows() {
        assert_eq!(backoff(1, TICK), 2 * TICK);
        assert_eq!(backoff(3, TICK), 8 * TICK);
        assert_eq!(backoff(100, TICK), MAX_BACKOFF);
        assert_eq!(backoff(5, Duration::MAX), Duration::MAX);
        assert_eq!(
            backoff(5, Duration::from_secs(7_200)),
            Duration::from_secs(7_200)
        );
    }
}
