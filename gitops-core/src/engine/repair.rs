//! Drift repair while a revision is held (stalled, failed) or awaits a
//! retry: drift checks keep running, and every resource that is not itself
//! failing is put back to what was last applied to it successfully.
//!
//! "Last applied" is what the inventory's digest says: a resource the held
//! revision applied is repaired to the held revision's spec; one it did not
//! reach (a render error applied nothing; a failure skips dependents) to the
//! last applied revision's spec. So a drift check runs up to two passes,
//! chosen by the pure [`passes`]: the held revision (when it rendered; its
//! rendering is cached) and the last applied revision (rendered aside, so
//! the held revision's rendering stays cached). A pass only reverts drift
//! (a resource whose spec has the digest the inventory recorded): nothing
//! new from Git is applied, nothing is pruned, write-back drift is only
//! reported, and the resources whose apply failed are left alone (no hot
//! loop: they wait for a newer commit, a due retry or
//! [`EngineHandle::retry`](super::EngineHandle::retry)). Sync windows and
//! dependencies hold a repair back like any drift check. A repair keeps the
//! hold, the retry and the conditions as they are and records no history
//! entry; its applies are audited (trigger `drift`) and send the usual
//! resource and drift events.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::Instrument as _;

use super::executor::{AuditContext, Execute};
use super::state::{Inner, LoopState, Prepared};
use super::{EngineError, SyncReport};
use crate::model::Revision;
use crate::record::{SyncResult, Trigger};
use crate::status::DriftEntry;

/// One rendering a drift repair compares the target with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pass {
    /// The held (or retried) revision, as cached when it rendered.
    Held,
    /// The last applied revision, rendered aside.
    Applied(Revision),
}

/// What a drift check does: `None`, a full reconcile (nothing is held or
/// awaiting a retry); otherwise a repair in these passes, in order.
pub(super) fn passes(state: &LoopState) -> Option<Vec<Pass>> {
    let waiting = match (&state.hold, &state.retry) {
        (Some(hold), _) => hold.revision.as_deref(),
        (None, Some(retry)) => retry.revision.as_deref(),
        (None, None) => return None,
    };
    let cached = state.cache.as_ref().map(|(id, _)| id.as_str());
    let held = waiting.is_some() && cached == waiting;
    let mut passes = Vec::new();
    if held {
        passes.push(Pass::Held);
    }
    let applied = state
        .record
        .as_ref()
        .and_then(|r| r.value.last_applied.as_ref());
    if let Some(applied) = applied
        && !(held && Some(applied.id.as_str()) == waiting)
    {
        passes.push(Pass::Applied(applied.clone()));
    }
    Some(passes)
}

impl Inner {
    /// Runs the repair passes of one drift check (see the module docs).
    pub(super) async fn repair(&self, state: &mut LoopState, passes: Vec<Pass>) {
        let mut drift = Vec::new();
        for pass in passes {
            let prepared = match pass {
                Pass::Held => match &state.cache {
                    Some((_, prepared)) => prepared.clone(),
                    None => continue,
                },
                Pass::Applied(revision) => match self.prepare_aside(state, &revision).await {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        tracing::warn!(error = %e, "drift repair: cannot render the last applied revision");
                        continue;
                    }
                },
            };
            let span = tracing::info_span!(
                "repair",
                app = %self.name,
                revision = %prepared.desired.revision()
            );
            match self.repair_pass(state, &prepared).instrument(span).await {
                Ok(Some(found)) => drift.extend(found),
                // Held back by a window or a dependency: the status says so.
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "drift repair failed"),
            }
        }
        self.status.send_modify(|s| s.drift = drift);
    }

    /// Renders `revision` through the repair cache, leaving the main
    /// cache (the held revision) as it is.
    async fn prepare_aside(
        &self,
        state: &mut LoopState,
        revision: &Revision,
    ) -> Result<Arc<Prepared>, EngineError> {
        let held = state.cache.take();
        state.cache = state.repair_cache.take();
        let prepared = self.prepare(state, revision).await;
        state.repair_cache = std::mem::replace(&mut state.cache, held);
        prepared.map(|(prepared, _, _)| prepared)
    }

    /// One pass: reverts drift against `prepared`; the drift found, or
    /// `None` when a window or a dependency held it back.
    async fn repair_pass(
        &self,
        state: &mut LoopState,
        prepared: &Prepared,
    ) -> Result<Option<Vec<DriftEntry>>, EngineError> {
        let revision = prepared.desired.revision().clone();
        if let Err(blocked) = self.admit(Trigger::Drift, &revision).await {
            let mut report = SyncReport::untouched(revision, Trigger::Drift, SyncResult::Blocked);
            report.blocked = Some(blocked);
            self.after_sync(state, Trigger::Drift, &Ok(report)).await;
            return Ok(None);
        }
        let loaded = self
            .parts
            .store
            .load_inventory(&self.name)
            .await
            .map_err(EngineError::Store)?;
        let (mut inventory, mut version) = (loaded.value, loaded.version);
        let (plan, observed) = self.observe_and_plan(&prepared.desired, &inventory).await?;
        let audit = AuditContext {
            revision: &revision,
            trigger: Trigger::Drift,
        };
        let failing = state.failing.clone();
        let execution = self
            .execute(Execute {
                prepared,
                audit: &audit,
                plan: &plan,
                inventory: &mut inventory,
                version: &mut version,
                observed,
                recheck: &HashSet::new(),
                state,
                repair: Some(&failing),
            })
            .await?;
        self.note_convergence(state, execution.noticed);
        Ok(Some(execution.drift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RetryPolicy;
    use crate::engine::retry::Retry;
    use crate::engine::state::Hold;
    use crate::record::EngineRecord;
    use crate::render::DesiredState;
    use crate::store::Versioned;

    fn rev(id: &str) -> Revision {
        Revision::new("main", id)
    }

    fn cached(id: &str) -> Option<(String, Arc<Prepared>)> {
        let desired = DesiredState::new(rev(id), Vec::new()).expect("empty state");
        let prepared = Prepared {
            desired,
            digests: Vec::new(),
        };
        Some((id.to_owned(), Arc::new(prepared)))
    }

    fn applied(id: &str) -> Option<Versioned<EngineRecord>> {
        Some(Versioned {
            version: 1,
            value: EngineRecord {
                last_applied: Some(rev(id)),
                ..EngineRecord::default()
            },
        })
    }

    fn held(id: Option<&str>) -> Option<Hold> {
        Some(Hold {
            revision: id.map(str::to_owned),
        })
    }

    #[test]
    fn nothing_held_is_a_full_reconcile() {
        let state = LoopState {
            record: applied("old"),
            cache: cached("old"),
            ..LoopState::default()
        };
        assert_eq!(passes(&state), None);
    }

    #[test]
    fn a_partly_applied_revision_repairs_toward_itself_then_the_last_applied() {
        let state = LoopState {
            hold: held(Some("new")),
            record: applied("old"),
            cache: cached("new"),
            ..LoopState::default()
        };
        assert_eq!(
            passes(&state),
            Some(vec![Pass::Held, Pass::Applied(rev("old"))])
        );
        // Awaiting a retry is the same.
        let state = LoopState {
            hold: None,
            retry: Some(Retry::new(Some("new".into()), &RetryPolicy::default())),
            ..state
        };
        assert_eq!(
            passes(&state),
            Some(vec![Pass::Held, Pass::Applied(rev("old"))])
        );
    }

    #[test]
    fn a_revision_that_did_not_render_repairs_toward_the_last_applied() {
        let state = LoopState {
            hold: held(Some("broken")),
            record: applied("old"),
            cache: cached("old"),
            ..LoopState::default()
        };
        assert_eq!(passes(&state), Some(vec![Pass::Applied(rev("old"))]));
        // No revision could be read (the source fails): the same.
        let state = LoopState {
            hold: held(None),
            ..state
        };
        assert_eq!(passes(&state), Some(vec![Pass::Applied(rev("old"))]));
    }

    #[test]
    fn the_held_revision_once_applied_is_one_pass_and_nothing_applied_is_none() {
        let state = LoopState {
            hold: held(Some("same")),
            record: applied("same"),
            cache: cached("same"),
            ..LoopState::default()
        };
        assert_eq!(passes(&state), Some(vec![Pass::Held]));
        let state = LoopState {
            hold: held(Some("first")),
            ..LoopState::default()
        };
        assert_eq!(passes(&state), Some(Vec::new()));
    }
}
