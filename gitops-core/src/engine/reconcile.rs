//! One reconcile, phase by phase: read the revision, admit it (windows,
//! dependencies), prepare (fetch and render), observe and plan, pre-sync
//! gates, execute, record what already matches, write back, post-sync gates.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;
use tracing::Instrument as _;

use super::executor::{AuditContext, Execute};
use super::gates::GateRun;
use super::prepare::{failed_post_sync_gate, unhealthy_before};
use super::state::{Inner, LoopState, Prepared};
use super::writeback::WritebackRun;
use super::{EngineError, Event, SyncReport, Timings};
use crate::gate::{GateResult, GateStage};
use crate::id::ResourceId;
use crate::model::{Inventory, InventoryEntry, Revision};
use crate::plan::{Change, Plan};
use crate::record::{AuditAction, AuditRecord, HistoryEntry, SyncResult, Trigger};
use crate::status::{ConditionKind, Reason};

/// What one reconcile knows as it goes.
struct Sync<'a> {
    revision: &'a Revision,
    trigger: Trigger,
    started: Instant,
    started_at: SystemTime,
    timings: Timings,
}

impl Sync<'_> {
    /// The report of this sync, its total time taken now.
    fn report(mut self, result: SyncResult, plan: Arc<Plan>, gates: Vec<GateResult>) -> SyncReport {
        self.timings.total = self.started.elapsed();
        SyncReport {
            revision: self.revision.clone(),
            trigger: self.trigger,
            started_at: self.started_at,
            result,
            plan: Arc::unwrap_or_clone(plan),
            outcomes: Vec::new(),
            gates,
            timings: self.timings,
            written_back: None,
            blocked: None,
            not_converging: Vec::new(),
        }
    }
}

impl Inner {
    /// A reconcile that a second shutdown request aborts (reported as
    /// [`SyncResult::Aborted`]).
    pub(super) async fn guarded_reconcile(
        &self,
        state: &mut LoopState,
        trigger: Trigger,
        pinned: Option<Revision>,
    ) -> Result<SyncReport, EngineError> {
        let mut read = None;
        state.in_sync = None;
        let finished = tokio::select! {
            // A source call or a render cut short by a (graceful) shutdown
            // changed nothing: aborted, not failed.
            result = self.reconcile(state, trigger, pinned.clone(), &mut read) => match result {
                Err(e) if self.shutting_down() && Self::cut_by_shutdown(&e) => None,
                result => Some(result),
            },
            _ = self.abort() => None,
        };
        // Every SyncStarted gets its SyncFinished: a sync that started and
        // then failed (render, observe, store) or was aborted says so too.
        let started = state.in_sync.take();
        if let (Some(at), Some(revision)) = (started, &read) {
            let result = match &finished {
                Some(Ok(_)) => None, // `finished()` sent it
                Some(Err(_)) => Some(SyncResult::Failed),
                None => Some(SyncResult::Aborted),
            };
            if let Some(result) = result {
                self.emit(Event::SyncFinished {
                    revision: revision.clone(),
                    result,
                    duration: at.elapsed(),
                    summary: Default::default(),
                });
            }
        }
        finished.unwrap_or_else(|| {
            let revision = read
                .or(pinned)
                .or_else(|| self.status.borrow().last_attempted.clone())
                // Aborted before any revision was read: named by nothing.
                .unwrap_or_else(|| Revision::new("", ""));
            Ok(SyncReport::untouched(
                revision,
                trigger,
                SyncResult::Aborted,
            ))
        })
    }

    /// Whether `e`, met while shutting down, is a source call or a render
    /// that the shutdown cut short (the guarded source and `prepare` end
    /// their waits on it): nothing was applied.
    fn cut_by_shutdown(e: &EngineError) -> bool {
        matches!(
            e,
            EngineError::ShuttingDown | EngineError::Source(_) | EngineError::Rollback { .. }
        )
    }

    /// One reconcile inside a `reconcile` span carrying the app, the trigger
    /// and (once read) the revision; resource spans nest inside it. The
    /// revision read is left in `read`.
    async fn reconcile(
        &self,
        state: &mut LoopState,
        trigger: Trigger,
        pinned: Option<Revision>,
        read: &mut Option<Revision>,
    ) -> Result<SyncReport, EngineError> {
        let span = tracing::info_span!(
            "reconcile",
            app = %self.name,
            %trigger,
            revision = tracing::field::Empty
        );
        async {
            // Level-triggered: the current revision, unless a rollback pins one.
            let revision = match pinned {
                Some(rev) => rev,
                None => self.parts.source.poll().await?,
            };
            span.record("revision", tracing::field::display(&revision));
            let trigger = attributed(trigger, state.last_applied.as_deref(), &revision);
            let revision = read.insert(revision);
            self.reconcile_at(state, trigger, revision).await
        }
        .instrument(span.clone())
        .await
    }

    async fn reconcile_at(
        &self,
        state: &mut LoopState,
        trigger: Trigger,
        revision: &Revision,
    ) -> Result<SyncReport, EngineError> {
        let mut sync = Sync {
            revision,
            trigger,
            started: Instant::now(),
            started_at: SystemTime::now(),
            timings: Timings::default(),
        };
        if let Err(blocked) = self.admit(trigger, revision).await {
            let mut report = SyncReport::untouched(revision.clone(), trigger, SyncResult::Blocked);
            report.blocked = Some(blocked);
            return Ok(report);
        }
        self.started(revision, trigger);
        state.in_sync = Some(Instant::now());
        if let Some(report) = self.try_unchanged(state, revision, trigger).await? {
            return Ok(report);
        }
        let prepared = self.prepare_timed(state, &mut sync).await?;
        let plan_started = Instant::now();
        let (mut inventory, mut version) = self.load_inventory(revision, &prepared).await?;
        let (plan, observed) = self.observe_and_plan(&prepared.desired, &inventory).await?;
        sync.timings.plan = plan_started.elapsed();
        self.check_limits(state, revision, &plan, inventory.len())?;
        tracing::debug!(summary = ?plan.summary, "planned");
        let audit = AuditContext { revision, trigger };
        let plan = Arc::new(plan);
        // Gates judge changes; a no-op reconcile (a drift check that finds
        // nothing) does not run a test suite again.
        let mut gates = Vec::new();
        if plan.has_changes() && !self.parts.pre_gates.is_empty() {
            let run = GateRun {
                plan: &plan,
                audit: &audit,
                inventory: &inventory,
                version: &mut version,
            };
            gates = self.run_gates(GateStage::PreSync, run).await?;
            if gates.iter().any(|g| !g.passed) {
                return Ok(self.finished(sync, SyncResult::GateFailed, plan, gates));
            }
        }
        let earlier = self.earlier_syncs(revision).await?;
        let execution = self
            .execute(Execute {
                prepared: &prepared,
                audit: &audit,
                plan: &plan,
                inventory: &mut inventory,
                version: &mut version,
                observed,
                recheck: &unhealthy_before(&earlier),
                state,
                repair: None,
            })
            .await?;
        let not_converging = self.note_convergence(state, execution.noticed);
        sync.timings.apply = execution.apply_time;
        sync.timings.prune = execution.prune_time;
        self.refresh(&prepared, &plan, &audit, &mut inventory, &mut version)
            .await?;
        let run = WritebackRun {
            drifted: &execution.writeback,
            audit: &audit,
            inventory: &inventory,
            version: &mut version,
        };
        let written_back = self.write_back(state, run).await?;

        let mut result = execution.result;
        if result == SyncResult::Converged && self.needs_post_sync_gates(&plan, &earlier) {
            let run = GateRun {
                plan: &plan,
                audit: &audit,
                inventory: &inventory,
                version: &mut version,
            };
            let post = self.run_gates(GateStage::PostSync, run).await?;
            if post.iter().any(|g| !g.passed) {
                result = SyncResult::Failed;
            }
            gates.extend(post);
        }
        self.status
            .send_modify(|s| s.drift = execution.drift.clone());
        let mut report = self.finished(sync, result, plan, gates);
        report.outcomes = execution.outcomes;
        report.written_back = written_back;
        report.not_converging = not_converging;
        self.seal_after(state, &report, &prepared, (&inventory, version))
            .await?;
        Ok(report)
    }

    /// Whether a converged sync runs the post-sync gates: when it changed
    /// something, or when the last post-sync gate run on this revision
    /// failed (the revision is already on the target: synced again,
    /// explicitly or after a restart, it plans no changes, which must not
    /// make it Ready without its gates).
    fn needs_post_sync_gates(&self, plan: &Plan, earlier: &[HistoryEntry]) -> bool {
        !self.parts.post_gates.is_empty() && (plan.has_changes() || failed_post_sync_gate(earlier))
    }

    /// The rendered revision, its fetch and render times noted; a rollback
    /// to a revision the source cannot provide says so.
    async fn prepare_timed(
        &self,
        state: &mut LoopState,
        sync: &mut Sync<'_>,
    ) -> Result<Arc<Prepared>, EngineError> {
        match self.prepare(state, sync.revision).await {
            Ok((prepared, fetch, render)) => {
                sync.timings.fetch = fetch;
                sync.timings.render = render;
                Ok(prepared)
            }
            Err(EngineError::Source(source)) if sync.trigger == Trigger::Rollback => {
                Err(EngineError::Rollback {
                    revision: Box::new(sync.revision.clone()),
                    source,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The sync starts: status and event.
    fn started(&self, revision: &Revision, trigger: Trigger) {
        self.status.send_modify(|s| {
            s.last_attempted = Some(revision.clone());
            s.set(
                ConditionKind::Reconciling,
                true,
                Reason::Progressing,
                format!("reconciling {revision}"),
            );
        });
        self.emit(Event::SyncStarted {
            revision: revision.clone(),
            trigger,
        });
    }

    /// The sync ends: its event and its report.
    fn finished(
        &self,
        sync: Sync<'_>,
        result: SyncResult,
        plan: Arc<Plan>,
        gates: Vec<GateResult>,
    ) -> SyncReport {
        let report = sync.report(result, plan, gates);
        self.emit(Event::SyncFinished {
            revision: report.revision.clone(),
            result,
            duration: report.timings.total,
            summary: report.plan.summary,
        });
        report
    }

    /// Refuses a revision that would delete or change more than the limits
    /// allow, unless it was confirmed.
    pub(super) fn check_limits(
        &self,
        state: &LoopState,
        revision: &Revision,
        plan: &Plan,
        managed: usize,
    ) -> Result<(), EngineError> {
        match self.held(plan, managed) {
            Some(why) if !state.confirmed(&revision.id) => Err(EngineError::ConfirmationRequired {
                revision: Box::new(revision.clone()),
                why,
            }),
            _ => Ok(()),
        }
    }

    /// Why a revision with `plan` would be held for confirmation, if it would.
    pub(super) fn held(&self, plan: &Plan, managed: usize) -> Option<String> {
        super::blast::held(
            &plan.summary,
            managed,
            self.config.delete_limit,
            self.config.change_limit,
        )
        .map(|held| held.to_string())
    }

    /// The stored inventory; refuses a revision that would delete every
    /// managed resource unless `allow_empty`.
    async fn load_inventory(
        &self,
        revision: &Revision,
        prepared: &Prepared,
    ) -> Result<(Inventory, u64), EngineError> {
        let loaded = self
            .parts
            .store
            .load_inventory(&self.name)
            .await
            .map_err(EngineError::Store)?;
        let inventory = loaded.value;
        if prepared.desired.is_empty() && !inventory.is_empty() && !self.config.allow_empty {
            return Err(EngineError::EmptyRevision {
                managed: inventory.len(),
                revision: Box::new(revision.clone()),
            });
        }
        Ok((inventory, loaded.version))
    }

    /// Records what already matches Git but is not recorded, or recorded
    /// with another digest (a lost state, a first sync onto an identical
    /// target, an apply whose record a crash lost). A change the inventory
    /// expected (a pending create, another digest) is audited here, so a
    /// crash between an apply and its record never loses the record.
    async fn refresh(
        &self,
        prepared: &Prepared,
        plan: &Plan,
        audit: &AuditContext<'_>,
        inventory: &mut Inventory,
        version: &mut u64,
    ) -> Result<(), EngineError> {
        let desired = &prepared.desired;
        let mut refreshed = false;
        let mut records = Vec::new();
        for change in plan.waves.iter().flat_map(|w| &w.changes) {
            if change.change != Change::Unchanged {
                continue;
            }
            let Some(pos) = desired.position(&change.id) else {
                continue;
            };
            let digest = &prepared.digests[pos];
            let entry = inventory.get(&change.id);
            if entry.is_some_and(|e| e.digest == *digest) {
                continue;
            }
            // Only what differs is copied (a no-op reconcile allocates nothing here).
            let known = entry.map(|e| e.digest.clone());
            if let Some(record) = unrecorded_change(audit, &change.id, known, digest) {
                records.push(record);
            }
            let r = &desired.resources()[pos];
            inventory.insert(
                r.id.clone(),
                InventoryEntry {
                    digest: digest.clone(),
                    depends_on: r.depends_on.clone(),
                    prune: r.policy.prune,
                },
            );
            refreshed = true;
        }
        if refreshed {
            *version = self
                .parts
                .store
                .save_inventory(&self.name, inventory, *version, &records)
                .await
                .map_err(EngineError::Store)?;
        }
        Ok(())
    }
}

/// The audit record of a change the target already holds but the
/// inventory does not: a pending create (recorded as `""` before the apply)
/// is a create; another digest an update. Nothing for an id the inventory
/// never knew (adopted, not changed by us).
fn unrecorded_change(
    audit: &AuditContext<'_>,
    id: &ResourceId,
    known: Option<String>,
    digest: &str,
) -> Option<AuditRecord> {
    let (action, before) = match known {
        None => return None,
        Some(d) if d.is_empty() => (AuditAction::Create, None),
        Some(d) => (AuditAction::Update, Some(d)),
    };
    let mut record = audit.record(id, action, before, Some(digest.to_owned()));
    record.detail = Some(
        "recorded at the next sync: the target already held this revision's version \
         (an apply whose record a crash or a cut-short wave lost, or the same change made by hand)"
            .to_owned(),
    );
    Some(record)
}

/// The trigger a sync is recorded with: a drift check that finds a new
/// commit deploys it as what it is, a Git change (`poll`), never as `drift`.
fn attributed(trigger: Trigger, last_applied: Option<&str>, revision: &Revision) -> Trigger {
    match trigger {
        Trigger::Drift if last_applied.is_some_and(|id| id != revision.id) => Trigger::Poll,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_commit_found_by_a_drift_check_is_recorded_as_a_poll() {
        let rev = Revision::new("main", "b");
        assert_eq!(attributed(Trigger::Drift, Some("a"), &rev), Trigger::Poll);
        assert_eq!(attributed(Trigger::Drift, Some("b"), &rev), Trigger::Drift);
        assert_eq!(
            attributed(Trigger::Drift, None, &rev),
            Trigger::Drift,
            "first sync"
        );
        assert_eq!(
            attributed(Trigger::Webhook, Some("a"), &rev),
            Trigger::Webhook
        );
    }
}
