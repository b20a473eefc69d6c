//! The public faces of an engine: [`Engine`] (push mode, pull mode, history)
//! and [`EngineHandle`] (control from elsewhere while it runs).

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::state::{ABORT, Inner};
use super::{EngineBuilder, EngineConfig, EngineError, Event, SyncReport};
use crate::model::Revision;
use crate::plan::Plan;
use crate::record::{AuditRecord, HistoryEntry, SyncResult, Trigger};
use crate::status::Status;
use crate::store::{AuditQuery, StoreError};
use crate::sync::LockExt as _;

/// The engine. Cheap to clone; clones share one state and one reconcile lock.
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

/// Controls a running engine from elsewhere (a webhook receiver, a signal
/// handler, an admin endpoint).
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Asks the engine to look at the source now, as a poll would (what a
    /// webhook receiver calls); calls made while one is pending coalesce
    /// into one. A new commit is deployed at once, and the current one is
    /// checked for drift. It never lifts a stall, a failed revision or a
    /// pending retry's backoff of the commit the source still points at:
    /// that takes a newer commit or [`retry`](Self::retry).
    pub fn reconcile_now(&self) {
        self.inner.trigger.notify_one();
    }

    /// Confirms revision `id` (a full commit id) past the deletion and
    /// change limits ([`EngineConfig::delete_limit`](super::EngineConfig::delete_limit)),
    /// and tries it at once. Remembered in the state store until that
    /// revision has synced.
    pub fn confirm(&self, id: impl Into<String>) {
        {
            let mut requests = self.inner.requests.locked();
            requests.confirm = Some(id.into());
            requests.retry = true;
        }
        self.inner.trigger.notify_one();
    }

    /// Asks the engine to try the current revision again now, lifting a
    /// stall, a failed revision's hold and a pending retry's backoff (an
    /// operator's explicit retry). Recorded with trigger `retry`.
    pub fn retry(&self) {
        self.inner.requests.locked().retry = true;
        self.inner.trigger.notify_one();
    }

    /// Stops automatic reconciles (polls, drift checks, retries) until [`resume`](Self::resume).
    pub fn suspend(&self) {
        self.inner.requests.locked().suspended = true;
        self.inner.status.send_modify(|s| s.suspended = true);
    }

    /// Resumes automatic reconciles, ends a rollback pin, and reconciles at once.
    pub fn resume(&self) {
        {
            let mut requests = self.inner.requests.locked();
            requests.suspended = false;
            requests.resume = true;
        }
        self.inner.status.send_modify(|s| s.suspended = false);
        self.reconcile_now();
    }

    /// Asks the running engine to deploy `revision` (e.g. from
    /// [`Engine::history`]) and pin it: automatic advance stops until
    /// [`resume`](Self::resume) (or, with `unpin_on_new_commit`, a newer
    /// commit). Recorded in history with trigger `rollback`.
    pub fn rollback(&self, revision: Revision) {
        self.inner.requests.locked().rollback = Some(revision);
        self.reconcile_now();
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// First call: finish the resources in flight, start nothing new, stop.
    /// Second call: abort at once.
    pub fn shutdown(&self) {
        self.inner
            .shutdown
            .send_modify(|level| *level = (*level + 1).min(ABORT));
    }
}

impl Engine {
    /// A builder with the defaults of [`EngineConfig`].
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A handle for controlling the engine while [`run`](Self::run) is going.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            inner: self.inner.clone(),
        }
    }

    /// The application name (the state-store key).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The policies in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The newest `limit` history entries, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, EngineError> {
        let inner = &self.inner;
        inner
            .parts
            .store
            .history(&inner.name, limit)
            .await
            .map_err(EngineError::Store)
    }

    /// Audit records matching `query`, oldest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, EngineError> {
        let inner = &self.inner;
        inner
            .parts
            .store
            .audit(&inner.name, query)
            .await
            .map_err(EngineError::Store)
    }

    /// The newest audit records matching `query` (at most `query.limit`),
    /// newest first; the store reads only those it returns.
    pub async fn audit_newest(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, EngineError> {
        let inner = &self.inner;
        inner
            .parts
            .store
            .audit_newest(&inner.name, query)
            .await
            .map_err(EngineError::Store)
    }

    /// Writes the audit records matching `query` as JSON lines.
    pub async fn export_audit(
        &self,
        query: &AuditQuery,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<usize, EngineError> {
        let records = self.audit(query).await?;
        for r in &records {
            let line = serde_json::to_string(r).map_err(|e| {
                EngineError::Store(StoreError::Corrupt {
                    location: self.inner.name.clone(),
                    message: format!("cannot encode audit record: {e}"),
                })
            })?;
            writeln!(out, "{line}").map_err(|e| {
                EngineError::Store(StoreError::Unavailable {
                    location: "audit export".into(),
                    message: e.to_string(),
                    source: Some(Box::new(e)),
                })
            })?;
        }
        Ok(records.len())
    }

    /// Push-mode rollback: deploys `revision` now and pins it (see
    /// [`EngineHandle::rollback`]).
    pub async fn rollback(&self, revision: &Revision) -> Result<SyncReport, EngineError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        inner.load_record(&mut state).await?;
        inner.pin_requested(&mut state, revision.clone()).await?;
        state.hold = None;
        let result = inner
            .guarded_reconcile(&mut state, Trigger::Rollback, Some(revision.clone()))
            .await;
        inner
            .after_sync(&mut state, Trigger::Rollback, &result)
            .await;
        result
    }

    /// Dry run: fetch, render, observe and plan; changes nothing.
    pub async fn plan(&self) -> Result<Plan, EngineError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        inner.load_record(&mut state).await?;
        let revision = match state.pinned() {
            Some(rev) => rev,
            None => inner.parts.source.poll().await?,
        };
        let (prepared, _, _) = inner.prepare(&mut state, &revision).await?;
        let inventory = inner
            .parts
            .store
            .load_inventory(&inner.name)
            .await
            .map_err(EngineError::Store)?;
        let (mut plan, _) = inner
            .observe_and_plan(&prepared.desired, &inventory.value)
            .await?;
        // Say up front what a sync would refuse or hold.
        let managed = inventory.value.len();
        plan.held = if prepared.desired.is_empty() && managed > 0 && !inner.config.allow_empty {
            Some(format!(
                "refused: the revision has no resources and would delete all {managed} managed ones (allow_empty permits it)"
            ))
        } else {
            inner
                .held(&plan, managed)
                .filter(|_| !state.confirmed(&revision.id))
                .map(|why| {
                    format!(
                        "held for confirmation: {why}; confirm with `--confirm {}`",
                        revision.id
                    )
                })
        };
        Ok(plan)
    }

    /// Confirms revision `id` past the deletion and change limits before a
    /// [`sync_once`](Self::sync_once) (push mode); remembered in the state
    /// store until that revision has synced. See [`EngineHandle::confirm`].
    pub async fn confirm(&self, id: &str) -> Result<(), EngineError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let id = id.to_owned();
        inner
            .update_record(&mut state, |r| r.confirmed = Some(id))
            .await
    }

    /// One full reconcile (push mode). Per-resource failures are in the
    /// report, and so are syncs that did not run: blocked by a window or a
    /// dependency ([`SyncResult::Blocked`], with
    /// [`SyncReport::blocked`] saying why), suspended
    /// ([`SyncResult::Suspended`]) or aborted by shutdown. An `Err` means
    /// the reconcile failed (source, render, observe or store).
    pub async fn sync_once(&self) -> Result<SyncReport, EngineError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        inner.load_record(&mut state).await?;
        let pinned = state.pinned();
        if inner.suspended() {
            let revision = match pinned {
                Some(rev) => rev,
                None => inner.parts.source.poll().await?,
            };
            let result = SyncResult::Suspended;
            return Ok(SyncReport::untouched(revision, Trigger::Manual, result));
        }
        state.hold = None;
        let result = inner
            .guarded_reconcile(&mut state, Trigger::Manual, pinned)
            .await;
        inner.after_sync(&mut state, Trigger::Manual, &result).await;
        result
    }

    /// Pull mode: polls, checks drift, retries and answers
    /// [`EngineHandle::reconcile_now`] until [`EngineHandle::shutdown`].
    pub async fn run(&self) -> Result<(), EngineError> {
        self.inner.run().await
    }
}
