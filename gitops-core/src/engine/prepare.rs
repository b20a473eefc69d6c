//! The read-only phases of a reconcile: render the revision (cached while it
//! stays the same), observe the target and plan; and what earlier syncs of
//! the revision found.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::EngineError;
use super::Event;
use super::state::{Inner, LoopState, Prepared};
use crate::cancel::Cancel;
use crate::gate::GateStage;
use crate::id::ResourceId;
use crate::model::{DriftPolicy, Inventory, Observed, Revision};
use crate::plan::{Plan, PlanError, Planner};
use crate::record::{HistoryEntry, Outcome, SyncResult};
use crate::render::DesiredState;
use crate::target::{DEFAULT_OBSERVE_CONCURRENCY, TargetError};

/// The most a batch limit grows: [`batch_timeout`] never exceeds this many
/// times `call_timeout`.
pub(super) const BATCH_TIMEOUT_CAP: u32 = 10;

/// The limit for one `observe_many` of `len` resources: `call_timeout` per
/// round of [`DEFAULT_OBSERVE_CONCURRENCY`] observes (what the default
/// `observe_many` runs at once), at least one round and at most
/// [`BATCH_TIMEOUT_CAP`] rounds.
///
/// One `call_timeout` for a whole chunk of 1,000 cut off a healthy target
/// whose observes take a second each (63 rounds of 16); a limit that grew
/// without bound would let a hung target hold the reconcile for an hour.
/// With the defaults (60 s, chunks of 1,000) a hung batch is caught after
/// 10 min; a smaller `observe_chunk` gives a smaller limit (16 or fewer:
/// one `call_timeout`).
pub(super) fn batch_timeout(call_timeout: Duration, len: usize) -> Duration {
    let rounds = len.div_ceil(DEFAULT_OBSERVE_CONCURRENCY).max(1);
    let rounds = u32::try_from(rounds)
        .unwrap_or(u32::MAX)
        .min(BATCH_TIMEOUT_CAP);
    call_timeout.saturating_mul(rounds)
}

/// Observations kept for write-back candidates, by desired position.
pub(super) type Kept = HashMap<usize, Option<Observed>>;

impl Inner {
    /// The rendered revision, from the cache when the revision is unchanged;
    /// with the time spent fetching and rendering (zero when cached).
    ///
    /// The snapshot is bounded by `source_timeout` (in the guarded source);
    /// render, target check and digests run on a blocking thread, off the
    /// async workers (etcd keep-alives, HTTP), bounded by `render_timeout`.
    /// A shutdown ends either wait at once.
    pub(super) async fn prepare(
        &self,
        state: &mut LoopState,
        revision: &Revision,
    ) -> Result<(Arc<Prepared>, Duration, Duration), EngineError> {
        if let Some((_, prepared)) = state.cache.as_ref().filter(|(id, _)| *id == revision.id) {
            return Ok((prepared.clone(), Duration::ZERO, Duration::ZERO));
        }
        let fetch_started = Instant::now();
        let snapshot = self.parts.source.snapshot(revision, &Cancel::new()).await?;
        let fetch = fetch_started.elapsed();
        let render_started = Instant::now();
        let (render, target) = (self.parts.render.clone(), self.parts.target.clone());
        let key = self.parts.digest_key.clone();
        let task = tokio::task::spawn_blocking(move || {
            let desired = render
                .render(&snapshot)
                .and_then(|desired| target.check(&desired).map(|()| desired))?;
            let digests = desired.resources().iter().map(|r| key.digest(r)).collect();
            Ok(Prepared { desired, digests })
        });
        let limit = self.config.render_timeout;
        let joined = tokio::select! {
            joined = tokio::time::timeout(limit, task) => joined,
            () = self.graceful_shutdown() => return Err(EngineError::ShuttingDown),
        };
        let rendered = match joined {
            Err(_) => {
                return Err(EngineError::RenderTimeout {
                    revision: Box::new(revision.clone()),
                    after: limit,
                });
            }
            // A panic in a renderer is its bug: re-raised, as if it ran here.
            Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
            Ok(Ok(rendered)) => rendered,
        };
        let prepared = rendered.map_err(|source| EngineError::Render {
            revision: Box::new(revision.clone()),
            source,
        })?;
        let render = render_started.elapsed();
        if !prepared.desired.warnings().is_empty() {
            self.emit(Event::Warnings {
                revision: revision.clone(),
                warnings: prepared.desired.warnings().to_vec(),
            });
        }
        let prepared = Arc::new(prepared);
        state.cache = Some((revision.id.clone(), prepared.clone()));
        Ok((prepared, fetch, render))
    }

    /// Observes the desired resources in chunks and plans. Keeps the
    /// observations of resources that may be written back.
    pub(super) async fn observe_and_plan(
        &self,
        desired: &DesiredState,
        inventory: &Inventory,
    ) -> Result<(Plan, Kept), EngineError> {
        let target = &*self.parts.target;
        let planner = Planner::with_target(target).with_digest_key(&self.parts.digest_key);
        let mut builder = planner.builder(desired);
        let mut kept = HashMap::new();
        let resources = desired.resources();
        let chunk_size = self.config.observe_chunk;
        for (chunk_index, chunk) in resources.chunks(chunk_size).enumerate() {
            let ids: Vec<_> = chunk.iter().map(|r| r.id.clone()).collect();
            // One batch is many observes: its limit grows with its size, up
            // to a cap, so a hung target still cannot stall the reconcile.
            let limit = batch_timeout(self.config.call_timeout, ids.len());
            let Ok(results) = tokio::time::timeout(limit, target.observe_many(&ids)).await else {
                return Err(EngineError::Observe(TargetError::Timeout {
                    id: ids[0].clone(),
                    after: limit,
                }));
            };
            if results.len() != ids.len() {
                return Err(EngineError::Plan(PlanError::ObservationCount {
                    desired: ids.len(),
                    observed: results.len(),
                }));
            }
            for (offset, result) in results.into_iter().enumerate() {
                let position = chunk_index * chunk_size + offset;
                let observed = result.map_err(EngineError::Observe)?;
                builder.observe(position, observed.as_ref());
                if resources[position].policy.drift == DriftPolicy::Writeback {
                    kept.insert(position, observed);
                }
            }
        }
        Ok((builder.finish(inventory)?, kept))
    }

    /// The latest syncs of `revision` (the newest entries of the history
    /// while they are about it), newest first; none when the newest
    /// converged at it, the common case of a drift check: one entry read.
    /// Read in growing pages, so a new revision after a long history of
    /// large syncs costs one small read, not the whole history.
    pub(super) async fn earlier_syncs(
        &self,
        revision: &Revision,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        let mut limit = 1;
        loop {
            let mut history = self
                .parts
                .store
                .history(&self.name, limit)
                .await
                .map_err(EngineError::Store)?;
            if history
                .first()
                .is_some_and(|h| h.revision.id == revision.id && h.result == SyncResult::Converged)
            {
                return Ok(Vec::new());
            }
            let run = history
                .iter()
                .take_while(|h| h.revision.id == revision.id)
                .count();
            if run < history.len() || history.len() < limit || limit >= self.config.history_limit {
                history.truncate(run);
                return Ok(history);
            }
            limit = (limit * 8).min(self.config.history_limit);
        }
    }
}

/// The resources found unhealthy by the last sync of this revision, if it
/// did not converge: a retry with nothing to apply checks them again.
pub(super) fn unhealthy_before(earlier: &[HistoryEntry]) -> HashSet<ResourceId> {
    earlier
        .first()
        .filter(|h| h.result != SyncResult::Converged)
        .map(|h| {
            h.outcomes
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Unhealthy { .. }))
                .map(|o| o.id.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the last post-sync gate run on this revision failed, with no
/// converged sync of it since.
pub(super) fn failed_post_sync_gate(earlier: &[HistoryEntry]) -> bool {
    earlier
        .iter()
        .find(|h| {
            h.result == SyncResult::Converged
                || h.gates.iter().any(|g| g.stage == GateStage::PostSync)
        })
        .is_some_and(|h| h.gates.iter().any(|g| !g.passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_timeout_grows_per_round_of_observes_up_to_the_cap() {
        let call = Duration::from_secs(60);
        assert_eq!(batch_timeout(call, 0), call);
        assert_eq!(batch_timeout(call, 1), call);
        assert_eq!(batch_timeout(call, 16), call);
        assert_eq!(batch_timeout(call, 17), call * 2);
        assert_eq!(batch_timeout(call, 160), call * 10);
        assert_eq!(batch_timeout(call, 1_000), call * 10);
        assert_eq!(batch_timeout(Duration::MAX, 1_000), Duration::MAX);
    }
}
