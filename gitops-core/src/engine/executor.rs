//! Executes a plan: waves in order, bounded concurrency inside a wave, health
//! gating after each wave, failures blocking only their dependents, then prune.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::time::{Instant, timeout};
use tracing::Instrument as _;

use crate::id::ResourceId;
use std::time::SystemTime;

use crate::model::{DriftPolicy, Health, Inventory, InventoryEntry, Observed, Resource, Revision};
use crate::plan::{Change, Plan};
use crate::render::DesiredState;
use crate::status::DriftEntry;
use crate::store::{AuditAction, AuditRecord};
use crate::target::TargetError;
use crate::writeback::Drifted;

use super::events::Event;
use crate::record::Trigger;
use crate::record::{Outcome, ResourceOutcome, SyncResult};
use super::{Inner, Prepared};

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
    pub apply_time: Duration,
    pub prune_time: Duration,
}

/// Per-resource state while executing.
struct Run<'a> {
    inner: &'a Inner,
    desired: &'a DesiredState,
    /// Whether each desired position ended successfully (dependents may proceed).
    ok: Vec<bool>,
    outcomes: Vec<ResourceOutcome>,
    drift: Vec<DriftEntry>,
    writeback: Vec<Drifted>,
    /// Positions being created (not updated) in this sync.
    creating: Vec<bool>,
    /// Unchanged positions whose health is checked again (they were
    /// unhealthy when this revision was last synced).
    rechecking: Vec<bool>,
}

impl Run<'_> {
    fn outcome(&mut self, id: &ResourceId, outcome: Outcome) {
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
                    "create"
                } else {
                    "update"
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

    fn unhealthy(&mut self, pos: usize, reason: String) {
        self.ok[pos] = false;
        let id = self.desired.resources()[pos].id.clone();
        self.outcome(&id, Outcome::Unhealthy { reason });
    }

    fn fail(&mut self, pos: usize, error: &TargetError) {
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

impl Inner {
    /// Executes `plan`; `inventory` is updated (and saved) as resources are
    /// applied and pruned. `observed` holds the observations kept for
    /// write-back candidates. Unchanged resources in `recheck` are waited
    /// for like applied ones (they were unhealthy when this revision was
    /// last synced: nothing to apply must not make them count as healthy).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn execute(
        &self,
        prepared: &Prepared,
        audit: &AuditContext<'_>,
        plan: &Plan,
        inventory: &mut Inventory,
        inventory_version: &mut u64,
        mut observed: HashMap<usize, Option<Observed>>,
        recheck: &HashSet<ResourceId>,
    ) -> Result<Execution, super::EngineError> {
        let desired = &prepared.desired;
        let digests = &prepared.digests;
        let resources = desired.resources();
        let mut run = Run {
            inner: self,
            desired,
            ok: vec![true; resources.len()],
            outcomes: Vec::with_capacity(resources.len()),
            drift: Vec::new(),
            writeback: Vec::new(),
            creating: vec![false; resources.len()],
            rechecking: vec![false; resources.len()],
        };
        let apply_started = Instant::now();
        let mut result = SyncResult::Converged;

        'waves: for (index, wave) in plan.waves.iter().enumerate() {
            if index > 0 && self.window_stops(audit.trigger) {
                result = SyncResult::WindowClosed;
                break 'waves;
            }
            let mut to_apply: Vec<(usize, bool)> = Vec::new(); // (position, is drift revert)
            let mut rechecks: Vec<usize> = Vec::new();
            for change in &wave.changes {
                let Some(pos) = desired.position(&change.id) else {
                    continue;
                };
                let resource = &resources[pos];
                let diff = match &change.change {
                    Change::Unchanged => {
                        if recheck.contains(&resource.id) {
                            run.rechecking[pos] = true;
                            rechecks.push(pos);
                        } else {
                            run.outcome(&resource.id, Outcome::Unchanged);
                        }
                        continue;
                    }
                    Change::Create => {
                        run.creating[pos] = true;
                        None
                    }
                    Change::Update { diff } => Some(diff.clone()),
                    Change::Delete => continue,
                };
                if let Some(blocker) = desired.graph().dependencies(pos).find(|&d| !run.ok[d]) {
                    run.ok[pos] = false;
                    let blocked_by = resources[blocker].id.clone();
                    run.outcome(&resource.id, Outcome::Skipped { blocked_by });
                    continue;
                }
                let drift = is_drift(inventory, resource, &digests[pos]);
                if drift {
                    let policy = resource.policy.drift;
                    self.emit(Event::DriftDetected {
                        id: resource.id.clone(),
                        policy,
                        diff: diff.clone(),
                    });
                    // A write-back conflict may have sent this one back to revert.
                    let policy = if policy == DriftPolicy::Writeback
                        && self.forced_revert(&audit.revision.id, &resource.id)
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
                        DriftPolicy::Revert => {}
                        DriftPolicy::Ignore => {
                            run.outcome(&resource.id, Outcome::DriftKept);
                            continue;
                        }
                        DriftPolicy::Writeback => {
                            run.writeback.push(Drifted {
                                resource: resource.clone(),
                                observed: observed.remove(&pos).flatten(),
                            });
                            run.outcome(&resource.id, Outcome::DriftKept);
                            continue;
                        }
                    }
                }
                to_apply.push((pos, drift));
            }
            if !rechecks.is_empty()
                && let Some(cut) = self.wait_healthy(desired, &rechecks, &mut run).await.cut()
            {
                result = cut;
                break 'waves;
            }
            if to_apply.is_empty() {
                continue;
            }

            // Remember new ids before creating them, so a crash mid-wave never
            // leaves a resource we created outside the inventory (prune safety).
            let mut intent = false;
            for &(pos, _) in &to_apply {
                let r = &resources[pos];
                if !inventory.contains(&r.id) {
                    // An empty digest: "being created", never mistaken for drift.
                    inventory.insert(
                        r.id.clone(),
                        InventoryEntry {
                            digest: String::new(),
                            depends_on: r.depends_on.clone(),
                            prune: r.policy.prune,
                        },
                    );
                    intent = true;
                }
            }
            if intent {
                *inventory_version = self
                    .store
                    .save_inventory(&self.config.name, inventory, *inventory_version, &[])
                    .await
                    .map_err(super::EngineError::Store)?;
            }

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
                            let res =
                                timed(&r.id, self.config.call_timeout, self.target.apply(r)).await;
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
                        let before = recorded_digest(inventory, &r.id);
                        let action = if run.creating[pos] {
                            AuditAction::Create
                        } else {
                            AuditAction::Update
                        };
                        records.push(audit.record(
                            &r.id,
                            action,
                            before,
                            Some(digests[pos].clone()),
                        ));
                        inventory.insert(
                            r.id.clone(),
                            InventoryEntry {
                                digest: digests[pos].clone(),
                                depends_on: r.depends_on.clone(),
                                prune: r.policy.prune,
                            },
                        );
                        if drift {
                            self.emit(Event::DriftReverted { id: r.id.clone() });
                        }
                        applied.push(pos);
                    }
                }
            }
            // Outcomes of applied resources wait for their health.
            if let Some(cut) = self.wait_healthy(desired, &applied, &mut run).await.cut() {
                result = cut;
                break 'waves;
            }
            // The changes of this wave and their audit records, in one write.
            *inventory_version = self
                .store
                .save_inventory(&self.config.name, inventory, *inventory_version, &records)
                .await
                .map_err(super::EngineError::Store)?;
            if cancelled || self.shutting_down() {
                result = SyncResult::Interrupted;
                break 'waves;
            }
        }
        let apply_time = apply_started.elapsed();

        let prune_started = Instant::now();
        if result == SyncResult::Converged
            && !plan.prune.is_empty()
            && self.window_stops(audit.trigger)
        {
            result = SyncResult::WindowClosed;
        }
        if result == SyncResult::Converged {
            let failed = run.ok.iter().any(|ok| !ok);
            self.prune(plan, audit, inventory, inventory_version, &mut run, failed)
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
            apply_time,
            prune_time,
        })
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
                        let res = timed(id, self.config.call_timeout, self.target.delete(id)).await;
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
                .store
                .save_inventory(&self.config.name, inventory, *inventory_version, &records)
                .await
                .map_err(super::EngineError::Store)?;
        }
        Ok(())
    }

    /// Waits until every resource in `applied` is healthy: `Progressing` and
    /// `Missing` keep waiting up to the health timeout, `Degraded` fails at
    /// once. A newer revision or a shutdown ends the wait early.
    async fn wait_healthy(
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
                        let h = timed(id, self.config.call_timeout, self.target.health(id)).await;
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

enum HealthResult {
    Done,
    Superseded,
    Interrupted,
}

impl HealthResult {
    /// How the sync ends when the wait was cut short.
    fn cut(self) -> Option<SyncResult> {
        match self {
            HealthResult::Done => None,
            HealthResult::Superseded => Some(SyncResult::Superseded),
            HealthResult::Interrupted => Some(SyncResult::Interrupted),
        }
    }
}
