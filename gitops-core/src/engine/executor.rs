//! Executes a plan: waves in order, bounded concurrency inside a wave, health
//! gating after each wave, failures blocking only their dependents, then prune.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::time::{Instant, timeout};

use tracing::Instrument as _;

use std::time::SystemTime;

use super::converge::{self, Noticed};
use super::events::{ApplyAction, Event};
use super::prepare::Kept;
use super::state::{Inner, LoopState, Prepared};
use crate::id::ResourceId;
use crate::model::{DriftPolicy, Inventory, InventoryEntry, Resource, Revision};
use crate::plan::{Change, Plan, Wave};
use crate::record::{AuditAction, AuditRecord, Outcome, ResourceOutcome, SyncResult, Trigger};
use crate::render::DesiredState;
use crate::status::DriftEntry;
use crate::target::TargetError;
use crate::writeback::Drifted;

/// A boxed future; boxing with an explicit `Send` bound at each call site
/// keeps the engine's futures `Send` (closures returning borrowing async
/// blocks otherwise trip a higher-ranked lifetime limitation of rustc).
pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `futures` with at most `limit` in flight; results in completion order.
pub(super) async fn bounded<R>(futures: Vec<BoxFuture<'_, R>>, limit: usize) -> Vec<R> {
    futures::stream::iter(futures)
        .buffer_unordered(limit.max(1))
        .collect()
        .await
}

/// Calls `op` under the engine's per-call timeout.
pub(super) async fn timed<T>(
    id: &ResourceId,
    limit: Duration,
    op: impl Future<Output = Result<T, TargetError>>,
) -> Result<T, TargetError> {
    match timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(TargetError::Timeout {
            id: id.clone(),
            after: limit,
        }),
    }
}

/// What the executor hands back to the reconcile.
pub(super) struct Execution {
    pub result: SyncResult,
    pub outcomes: Vec<ResourceOutcome>,
    pub drift: Vec<DriftEntry>,
    pub writeback: Vec<Drifted>,
    /// What was noticed about convergence (see [`converge::note`]).
    pub noticed: Vec<Noticed>,
    pub apply_time: Duration,
    pub prune_time: Duration,
}

/// Per-resource state while executing.
pub(super) struct Run<'a> {
    pub inner: &'a Inner,
    pub desired: &'a DesiredState,
    /// Whether each desired position ended successfully (dependents may proceed).
    pub ok: Vec<bool>,
    pub outcomes: Vec<ResourceOutcome>,
    drift: Vec<DriftEntry>,
    writeback: Vec<Drifted>,
    /// Positions being created (not updated) in this sync.
    pub creating: Vec<bool>,
    /// Unchanged positions whose health is checked again (they were
    /// unhealthy when this revision was last synced).
    pub rechecking: Vec<bool>,
    noticed: Vec<Noticed>,
}

impl Run<'_> {
    pub(super) fn outcome(&mut self, id: &ResourceId, outcome: Outcome) {
        match &outcome {
            Outcome::Unhealthy { reason } => {
                tracing::warn!(%id, %reason, "resource unhealthy");
                self.inner.emit(Event::ResourceFailed {
                    id: id.clone(),
                    error: reason.clone(),
                    transient: true,
                });
            }
            Outcome::Failed { error, transient } => {
                tracing::warn!(%id, %error, "resource failed");
                self.inner.emit(Event::ResourceFailed {
                    id: id.clone(),
                    error: error.clone(),
                    transient: *transient,
                });
            }
            Outcome::Skipped { blocked_by } => self.inner.emit(Event::ResourceSkipped {
                id: id.clone(),
                blocked_by: blocked_by.clone(),
            }),
            Outcome::Created | Outcome::Updated => self.inner.emit(Event::ResourceApplied {
                id: id.clone(),
                action: if outcome == Outcome::Created {
                    ApplyAction::Create
                } else {
                    ApplyAction::Update
                },
            }),
            Outcome::Pruned => self.inner.emit(Event::ResourcePruned { id: id.clone() }),
            _ => {}
        }
        self.outcomes.push(ResourceOutcome {
            id: id.clone(),
            outcome,
        });
    }

    pub(super) fn unhealthy(&mut self, pos: usize, reason: String) {
        self.ok[pos] = false;
        let id = self.desired.resources()[pos].id.clone();
        self.outcome(&id, Outcome::Unhealthy { reason });
    }

    pub(super) fn fail(&mut self, pos: usize, error: &TargetError) {
        self.ok[pos] = false;
        let id = &self.desired.resources()[pos].id;
        self.outcome(
            id,
            Outcome::Failed {
                error: error.to_string(),
                transient: error.is_transient(),
            },
        );
    }
}

/// Whether the target's difference from `resource` is drift (the target
/// changed after we applied this exact spec) rather than a change in Git.
fn is_drift(inventory: &Inventory, resource: &Resource, digest: &str) -> bool {
    inventory
        .get(&resource.id)
        .is_some_and(|entry| entry.digest == digest)
}

/// Who and why, for the audit records of one sync.
pub(super) struct AuditContext<'a> {
    pub revision: &'a Revision,
    pub trigger: Trigger,
}

impl AuditContext<'_> {
    pub(super) fn record(
        &self,
        id: &ResourceId,
        action: AuditAction,
        digest_before: Option<String>,
        digest_after: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            at: SystemTime::now(),
            id: id.clone(),
            action,
            digest_before,
            digest_after,
            revision: self.revision.id.clone(),
            reference: self.revision.reference.clone(),
            author: self.revision.author.clone(),
            message: self.revision.summary().to_owned(),
            trigger: self.trigger,
            detail: None,
        }
    }
}

/// The digest recorded for `id`, unless it is a pending create.
fn recorded_digest(inventory: &Inventory, id: &ResourceId) -> Option<String> {
    inventory
        .get(id)
        .map(|e| e.digest.clone())
        .filter(|d| !d.is_empty())
}

/// What the executor works on; the inventory is updated (and saved) as
/// resources are applied and pruned.
pub(super) struct Execute<'a> {
    pub prepared: &'a Prepared,
    pub audit: &'a AuditContext<'a>,
    pub plan: &'a Plan,
    pub inventory: &'a mut Inventory,
    pub version: &'a mut u64,
    /// Observations kept for write-back candidates.
    pub observed: Kept,
    /// Unchanged resources waited for like applied ones: they were
    /// unhealthy when this revision was last synced, and nothing to apply
    /// must not make them count as healthy.
    pub recheck: &'a HashSet<ResourceId>,
    /// The loop state (which resources a write-back conflict sends back to
    /// revert, which do not converge).
    pub state: &'a LoopState,
    /// A drift repair while a revision is held: only drift is reverted,
    /// never these resources (they failed), nothing is pruned.
    pub repair: Option<&'a HashSet<ResourceId>>,
}

/// One wave, sorted: what to apply (position, whether it reverts drift)
/// and which unchanged resources to wait for again.
#[derive(Default)]
struct Sorted {
    apply: Vec<(usize, bool)>,
    rechecks: Vec<usize>,
}

impl Inner {
    /// Executes the plan wave by wave, then prunes.
    pub(super) async fn execute(
        &self,
        mut ex: Execute<'_>,
    ) -> Result<Execution, super::EngineError> {
        let desired = &ex.prepared.desired;
        let count = desired.resources().len();
        let mut run = Run {
            inner: self,
            desired,
            ok: vec![true; count],
            outcomes: Vec::with_capacity(count),
            drift: Vec::new(),
            writeback: Vec::new(),
            creating: vec![false; count],
            rechecking: vec![false; count],
            noticed: Vec::new(),
        };
        let apply_started = Instant::now();
        let mut result = SyncResult::Converged;
        for (index, wave) in ex.plan.waves.iter().enumerate() {
            if index > 0 && self.window_stops(ex.audit.trigger) {
                result = SyncResult::WindowClosed;
                break;
            }
            let sorted = self.sort_wave(wave, &mut ex, &mut run);
            if !sorted.rechecks.is_empty()
                && let Some(cut) = self
                    .wait_healthy(desired, &sorted.rechecks, &mut run)
                    .await
                    .cut()
            {
                result = cut;
                break;
            }
            if sorted.apply.is_empty() {
                continue;
            }
            if let Some(cut) = self.apply_wave(&sorted.apply, &mut ex, &mut run).await? {
                result = cut;
                break;
            }
        }
        let apply_time = apply_started.elapsed();

        let prune_started = Instant::now();
        if result == SyncResult::Converged
            && !ex.plan.prune.is_empty()
            && self.window_stops(ex.audit.trigger)
        {
            result = SyncResult::WindowClosed;
        }
        if result == SyncResult::Converged && ex.repair.is_none() {
            let failed = run.ok.iter().any(|ok| !ok);
            self.prune(
                ex.plan,
                ex.audit,
                ex.inventory,
                ex.version,
                &mut run,
                failed,
            )
            .await?;
        }
        let prune_time = prune_started.elapsed();

        if result == SyncResult::Converged && run.outcomes.iter().any(|o| !o.outcome.is_success()) {
            result = SyncResult::Failed;
        }
        Ok(Execution {
            result,
            outcomes: run.outcomes,
            drift: run.drift,
            writeback: run.writeback,
            noticed: run.noticed,
            apply_time,
            prune_time,
        })
    }

    /// Sorts one wave: unchanged (or rechecked), skipped behind a failed
    /// dependency, drift kept by policy or handed to write-back, or applied.
    fn sort_wave(&self, wave: &Wave, ex: &mut Execute<'_>, run: &mut Run<'_>) -> Sorted {
        let desired = &ex.prepared.desired;
        let resources = desired.resources();
        let mut sorted = Sorted::default();
        for change in &wave.changes {
            let Some(pos) = desired.position(&change.id) else {
                continue;
            };
            let resource = &resources[pos];
            let diff = match &change.change {
                Change::Unchanged => {
                    run.noticed.push(Noticed::Matched(resource.id.clone()));
                    if ex.recheck.contains(&resource.id) {
                        run.rechecking[pos] = true;
                        sorted.rechecks.push(pos);
                    } else {
                        run.outcome(&resource.id, Outcome::Unchanged);
                    }
                    continue;
                }
                Change::Create { .. } => {
                    run.creating[pos] = true;
                    None
                }
                Change::Update { diff, .. } => Some(diff.clone()),
                Change::Delete => continue,
            };
            if let Some(blocker) = desired.graph().dependencies(pos).find(|&d| !run.ok[d]) {
                run.ok[pos] = false;
                let blocked_by = resources[blocker].id.clone();
                run.outcome(&resource.id, Outcome::Skipped { blocked_by });
                continue;
            }
            let digest = &ex.prepared.digests[pos];
            let drift = is_drift(ex.inventory, resource, digest);
            if ex
                .repair
                .is_some_and(|failing| !drift || failing.contains(&resource.id))
            {
                // Repair only reverts drift, and leaves what failed alone.
                continue;
            }
            let last = ex.state.converging.get(&resource.id);
            if !converge::decide(last, digest, diff.as_ref(), Instant::now()) {
                // The last apply left this same difference: backing off.
                run.drift.push(DriftEntry {
                    id: resource.id.clone(),
                    policy: resource.policy.drift,
                    diff,
                    resolved: false,
                });
                run.outcome(&resource.id, Outcome::DriftKept);
                continue;
            }
            if drift && !self.revert_drift(pos, resource, diff, ex, run) {
                continue;
            }
            sorted.apply.push((pos, drift));
        }
        sorted
    }

    /// Reports drift of the resource at `pos`; whether to revert it (its
    /// policy, or a write-back conflict that falls back to revert).
    fn revert_drift(
        &self,
        pos: usize,
        resource: &Resource,
        diff: Option<crate::diff::Diff>,
        ex: &mut Execute<'_>,
        run: &mut Run<'_>,
    ) -> bool {
        let policy = resource.policy.drift;
        self.emit(Event::DriftDetected {
            id: resource.id.clone(),
            policy,
            diff: diff.clone(),
        });
        let policy = if policy == DriftPolicy::Writeback
            && ex.state.forced_revert(&ex.audit.revision.id, &resource.id)
        {
            DriftPolicy::Revert
        } else {
            policy
        };
        run.drift.push(DriftEntry {
            id: resource.id.clone(),
            policy,
            diff,
            resolved: policy == DriftPolicy::Revert,
        });
        match policy {
            DriftPolicy::Revert => return true,
            DriftPolicy::Ignore => {}
            DriftPolicy::Writeback => run.writeback.push(Drifted {
                resource: resource.clone(),
                observed: ex.observed.remove(&pos).flatten(),
            }),
        }
        run.outcome(&resource.id, Outcome::DriftKept);
        false
    }

    /// Applies one wave: records new ids first (a crash mid-wave never
    /// leaves a resource we created outside the inventory), applies with
    /// bounded concurrency, saves the wave and its audit records in one
    /// write, then waits for health. How the sync ends, when the wave cut it
    /// short. A crash between an apply and that write is audited by the next
    /// sync's refresh.
    async fn apply_wave(
        &self,
        to_apply: &[(usize, bool)],
        ex: &mut Execute<'_>,
        run: &mut Run<'_>,
    ) -> Result<Option<SyncResult>, super::EngineError> {
        let resources = ex.prepared.desired.resources();
        let digests = &ex.prepared.digests;
        self.record_intent(to_apply, ex).await?;
        let calls: Vec<BoxFuture<'_, _>> = to_apply
            .iter()
            .map(|&(pos, drift)| -> BoxFuture<'_, _> {
                let r = &resources[pos];
                let span = tracing::info_span!("apply", id = %r.id);
                Box::pin(
                    async move {
                        if self.shutting_down() {
                            return (pos, drift, None);
                        }
                        let limit = self.config.call_timeout;
                        let res = timed(&r.id, limit, self.parts.target.apply(r)).await;
                        (pos, drift, Some(res))
                    }
                    .instrument(span),
                )
            })
            .collect();
        let results = bounded(calls, self.config.concurrency).await;

        let mut applied = Vec::new();
        let mut records = Vec::new();
        let mut cancelled = false;
        for (pos, drift, res) in results {
            let r = &resources[pos];
            match res {
                None => {
                    cancelled = true;
                    run.ok[pos] = false;
                    run.outcome(&r.id, Outcome::Cancelled);
                }
                Some(Err(e)) => run.fail(pos, &e),
                Some(Ok(())) => {
                    let before = recorded_digest(ex.inventory, &r.id);
                    let action = if run.creating[pos] {
                        AuditAction::Create
                    } else {
                        AuditAction::Update
                    };
                    let after = Some(digests[pos].clone());
                    records.push(ex.audit.record(&r.id, action, before, after));
                    ex.inventory.insert(r.id.clone(), entry(r, &digests[pos]));
                    if drift {
                        self.emit(Event::DriftReverted { id: r.id.clone() });
                    }
                    applied.push(pos);
                }
            }
        }
        // What reached the target is recorded before any health wait: a
        // wait cut short (a newer revision, a shutdown, a crash) loses no
        // audit record.
        *ex.version = self
            .parts
            .store
            .save_inventory(&self.name, ex.inventory, *ex.version, &records)
            .await
            .map_err(super::EngineError::Store)?;
        // Outcomes of applied resources wait for their health; then what
        // was applied is observed once more (a target that never compares
        // equal is not converging).
        if let Some(cut) = self.wait_healthy(run.desired, &applied, run).await.cut() {
            return Ok(Some(cut));
        }
        let verified = self.verify_applied(ex.prepared, &applied).await;
        run.noticed.extend(verified);
        if cancelled || self.shutting_down() {
            return Ok(Some(SyncResult::Interrupted));
        }
        Ok(None)
    }

    /// Records ids about to be created with an empty digest ("being
    /// created", never mistaken for drift) before creating them.
    async fn record_intent(
        &self,
        to_apply: &[(usize, bool)],
        ex: &mut Execute<'_>,
    ) -> Result<(), super::EngineError> {
        let resources = ex.prepared.desired.resources();
        let mut intent = false;
        for &(pos, _) in to_apply {
            let r = &resources[pos];
            if !ex.inventory.contains(&r.id) {
                ex.inventory.insert(r.id.clone(), entry(r, ""));
                intent = true;
            }
        }
        if intent {
            *ex.version = self
                .parts
                .store
                .save_inventory(&self.name, ex.inventory, *ex.version, &[])
                .await
                .map_err(super::EngineError::Store)?;
        }
        Ok(())
    }

    /// Deletes what left Git, dependents first, only ids from the inventory;
    /// skipped entirely when an apply failed (the old resources may still be
    /// what keeps the service up).
    async fn prune(
        &self,
        plan: &Plan,
        audit: &AuditContext<'_>,
        inventory: &mut Inventory,
        inventory_version: &mut u64,
        run: &mut Run<'_>,
        apply_failed: bool,
    ) -> Result<(), super::EngineError> {
        let doomed = plan.prune.iter().flat_map(|w| &w.changes);
        if !self.config.prune || apply_failed {
            let blocker = run
                .outcomes
                .iter()
                .find(|o| !o.outcome.is_success())
                .map(|o| o.id.clone());
            if let Some(blocked_by) = blocker {
                for c in doomed {
                    run.outcome(
                        &c.id,
                        Outcome::Skipped {
                            blocked_by: blocked_by.clone(),
                        },
                    );
                }
            }
            return Ok(());
        }
        let mut records = Vec::new();
        for wave in &plan.prune {
            if self.shutting_down() {
                break;
            }
            let calls: Vec<BoxFuture<'_, _>> = wave
                .changes
                .iter()
                .map(|c| -> BoxFuture<'_, _> {
                    let id = &c.id;
                    Box::pin(async move {
                        let res =
                            timed(id, self.config.call_timeout, self.parts.target.delete(id)).await;
                        (id, res)
                    })
                })
                .collect();
            let results = bounded(calls, self.config.concurrency).await;
            let mut wave_failed = false;
            for (id, res) in results {
                match res {
                    Ok(()) => {
                        let before = recorded_digest(inventory, id);
                        inventory.remove(id);
                        records.push(audit.record(id, AuditAction::Delete, before, None));
                        run.outcome(id, Outcome::Pruned);
                    }
                    Err(e) => {
                        wave_failed = true;
                        run.outcome(
                            id,
                            Outcome::Failed {
                                error: e.to_string(),
                                transient: e.is_transient(),
                            },
                        );
                    }
                }
            }
            if wave_failed {
                // Their dependencies stay until the dependents are gone.
                break;
            }
        }
        if !records.is_empty() {
            *inventory_version = self
                .parts
                .store
                .save_inventory(&self.name, inventory, *inventory_version, &records)
                .await
                .map_err(super::EngineError::Store)?;
        }
        Ok(())
    }
}

/// The inventory entry of `r` applied with `digest`.
fn entry(r: &Resource, digest: &str) -> InventoryEntry {
    InventoryEntry {
        digest: digest.to_owned(),
        depends_on: r.depends_on.clone(),
        prune: r.policy.prune,
    }
}
