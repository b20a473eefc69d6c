//! What one engine holds: its parts, its channels, and its state under two
//! documented locks.
//!
//! - [`LoopState`], behind the tokio mutex `Inner::state`, is everything the
//!   loop remembers between reconciles (holds, retries, the durable record,
//!   the rendered-revision cache, write-back memory). It is held for the
//!   whole of a reconcile, so at most one reconcile runs per engine.
//! - [`Requests`], behind the std mutex `Inner::requests`, is what a handle
//!   asks of a running engine (suspend, resume, rollback). Its critical
//!   sections are single assignments, so a handle never waits for a
//!   reconcile.
//!
//! The rest are channels (events, status, the shutdown level, the trigger),
//! not state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use super::converge::Attempt;
use super::retry::Retry;
use super::{Dependency, EngineConfig, EngineError, Event};
use crate::gate::Gate;
use crate::id::ResourceId;
use crate::model::Revision;
use crate::record::{EngineRecord, Trigger};
use crate::render::{DesiredState, Render};
use crate::source::Source;
use crate::status::Status;
use crate::store::{StateStore, Versioned};
use crate::sync::LockExt as _;
use crate::target::Target;
use crate::window::Clock;
use crate::writeback::Writeback;

/// Shutdown levels sent on `Inner::shutdown`.
pub(super) const RUNNING: u8 = 0;
/// Finish the resources in flight, start nothing new.
pub(super) const GRACEFUL: u8 = 1;
/// Stop at once.
pub(super) const ABORT: u8 = 2;

/// A revision the engine will not retry by itself (stalled, or retries
/// exhausted) until the source moves or someone calls `retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hold {
    /// The held revision id; `None` when no revision could be read.
    pub revision: Option<String>,
}

/// A rendered revision with the digest of every resource, cached while the
/// revision stays the same (drift checks and retries skip fetch and render).
pub(super) struct Prepared {
    pub desired: DesiredState,
    pub digests: Vec<String>,
}

/// Identifies one write-back: the revision and what the target held.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct WritebackKey {
    pub revision: String,
    pub observed: Vec<(ResourceId, Option<String>)>,
}

/// What the loop remembers between reconciles; behind `Inner::state`.
#[derive(Default)]
pub(super) struct LoopState {
    pub hold: Option<Hold>,
    pub retry: Option<Retry>,
    pub last_applied: Option<String>,
    /// The durable record (pins, bad revisions, last healthy), loaded once.
    pub record: Option<Versioned<EngineRecord>>,
    /// An automatic rollback is waiting to run.
    pub rollback_due: bool,
    /// A sync window held back this trigger and opens at this instant: wake
    /// then rather than at the next poll or drift check, which may be hours.
    pub window_opens: Option<(Instant, Trigger)>,
    /// The last rendered revision (by id).
    pub cache: Option<(String, Arc<Prepared>)>,
    /// The last drift handed to write-back: not handed again.
    pub writeback_memo: Option<WritebackKey>,
    /// When the running sync sent `SyncStarted` (so that a failed or aborted
    /// one still sends its `SyncFinished`).
    pub in_sync: Option<Instant>,
    /// Resources a write-back conflict sent back to revert, at one revision.
    pub force_revert: Option<(String, HashSet<ResourceId>)>,
    /// Resources whose apply or delete failed in the last sync that ran: a
    /// drift repair while that revision is held leaves them alone.
    pub failing: HashSet<ResourceId>,
    /// The last applied revision, rendered for drift repair while a newer
    /// revision is held (`cache` keeps the held one).
    pub repair_cache: Option<(String, Arc<Prepared>)>,
    /// Per resource, the last apply meant to fix a difference and whether
    /// the same difference came back (see [`super::converge`]).
    pub converging: HashMap<ResourceId, Attempt>,
}

impl LoopState {
    /// The pinned revision, if a rollback pinned one.
    pub fn pinned(&self) -> Option<Revision> {
        self.record.as_ref().and_then(|r| r.value.pinned.clone())
    }

    /// Whether someone confirmed revision `id` past the deletion and change limits.
    pub fn confirmed(&self, id: &str) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.value.confirmed.as_deref() == Some(id))
    }

    /// Whether a write-back conflict made `id` fall back to revert at `revision`.
    pub fn forced_revert(&self, revision: &str, id: &ResourceId) -> bool {
        self.force_revert
            .as_ref()
            .is_some_and(|(rev, ids)| rev == revision && ids.contains(id))
    }
}

/// What handles ask of a running engine; behind `Inner::requests`.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// Automatic reconciles stop until resume.
    pub suspended: bool,
    /// `resume()` was called: the loop clears any pin.
    pub resume: bool,
    /// A rollback asked for through the handle, taken by the run loop.
    pub rollback: Option<Revision>,
    /// `retry()` was called: the loop clears the hold and tries again.
    pub retry: bool,
    /// `confirm()` was called with this revision id: the loop records it.
    pub confirm: Option<String>,
}

/// The parts a tool author plugs in.
pub(super) struct Parts {
    pub source: Arc<dyn Source>,
    pub render: Arc<dyn Render>,
    pub target: Arc<dyn Target>,
    pub store: Arc<dyn StateStore>,
    pub writeback: Option<Arc<dyn Writeback>>,
    pub pre_gates: Vec<Arc<dyn Gate>>,
    pub post_gates: Vec<Arc<dyn Gate>>,
    pub clock: Arc<dyn Clock>,
    pub dependencies: Vec<Dependency>,
    /// Keys the digests of sensitive resources.
    pub digest_key: crate::secret::DigestKey,
}

/// One engine, shared by its `Engine` and `EngineHandle` clones.
pub(super) struct Inner {
    pub name: String,
    pub config: EngineConfig,
    pub parts: Parts,
    pub events: broadcast::Sender<Event>,
    pub status: watch::Sender<Status>,
    pub trigger: Notify,
    pub shutdown: watch::Sender<u8>,
    /// The loop state; held for a whole reconcile (see the module docs).
    pub state: tokio::sync::Mutex<LoopState>,
    /// Handle requests; short critical sections only (see the module docs).
    pub requests: Mutex<Requests>,
}

impl Inner {
    pub(super) fn emit(&self, event: Event) {
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    pub(super) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow() >= GRACEFUL
    }

    pub(super) fn suspended(&self) -> bool {
        self.requests.locked().suspended
    }

    pub(super) async fn graceful_shutdown(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|level| *level >= GRACEFUL).await;
    }

    pub(super) async fn abort(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|level| *level >= ABORT).await;
    }

    /// Loads the durable engine record once per engine.
    pub(super) async fn load_record(&self, state: &mut LoopState) -> Result<(), EngineError> {
        if state.record.is_some() {
            return Ok(());
        }
        let record = self
            .parts
            .store
            .load_record(&self.name)
            .await
            .map_err(EngineError::Store)?;
        state.last_applied = record.value.last_applied.as_ref().map(|r| r.id.clone());
        let last_applied = record.value.last_applied.clone();
        self.status.send_modify(|s| {
            if s.last_applied.is_none() {
                s.last_applied = last_applied;
            }
        });
        state.record = Some(record);
        Ok(())
    }

    /// Changes the engine record and writes it (compare-and-swap).
    pub(super) async fn update_record(
        &self,
        state: &mut LoopState,
        change: impl FnOnce(&mut EngineRecord),
    ) -> Result<(), EngineError> {
        self.load_record(state).await?;
        let Some(current) = state.record.as_mut() else {
            return Ok(());
        };
        let mut next = current.value.clone();
        change(&mut next);
        if next == current.value {
            return Ok(());
        }
        let version = self
            .parts
            .store
            .save_record(&self.name, &next, current.version)
            .await
            .map_err(EngineError::Store)?;
        *current = Versioned {
            version,
            value: next,
        };
        Ok(())
    }
}
