//! One engine per claimed application: what its factory gets
//! ([`AppContext`]), starting it, stopping it at once, handing it over.
//!
//! Engines start in turn: at most [`ReplicaConfig::start_concurrency`]
//! (super::ReplicaConfig::start_concurrency) run their first sync at once,
//! so a replica that claims thousands of applications (at start, after a
//! failover) does not send every first sync to etcd at the same moment.
//! An engine still waiting for its turn is handed over at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use gitops_core::engine::Event;
use gitops_core::source::BoxError;
use gitops_core::{Engine, EngineHandle, StateStore};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::client::EtcdClient;
use crate::fence::Fence;
use crate::store::EtcdStore;

use super::{ClusterEvent, Shared};

/// What a factory gets to build the engine of one owned application.
#[derive(Debug, Clone)]
pub struct AppContext {
    app: String,
    fence: Fence,
    store: EtcdStore,
    client: EtcdClient,
    replica: String,
}

impl AppContext {
    /// The application; the engine must be named after it
    /// (`Engine::builder().name(ctx.app())`), or the replica refuses it.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// This replica's ownership of the application, for fenced writes
    /// ([`EtcdTarget::fenced`](crate::EtcdTarget::fenced)).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The fenced state store to give the engine.
    pub fn store(&self) -> Arc<dyn StateStore> {
        Arc::new(self.store.clone())
    }

    /// The connection to etcd.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// The replica running the engine.
    pub fn replica(&self) -> &str {
        &self.replica
    }
}

/// Builds the engine of one application; called each time the replica
/// claims it.
pub type EngineFactory = Arc<dyn Fn(&AppContext) -> Result<Engine, BoxError> + Send + Sync>;

/// How long an engine holds its start turn at most: a first sync that
/// waits for health (or a source that does not answer) lets the next
/// engine start after this.
const FIRST_SYNC_HOLD: Duration = Duration::from_secs(10);

/// Whether `event` ends an engine's start turn: its first sync finished,
/// or it is held back, stalled or waiting to retry (or events were lost).
fn first_sync_over(event: &Result<Event, RecvError>) -> bool {
    matches!(
        event,
        Ok(Event::SyncFinished { .. }
            | Event::Blocked { .. }
            | Event::Stalled { .. }
            | Event::RetryScheduled { .. })
            | Err(_)
    )
}

/// Runs `engine` once a start turn is free, holding the turn through its
/// first sync (at most [`FIRST_SYNC_HOLD`]).
async fn run_in_turn(
    engine: Engine,
    starts: Arc<Semaphore>,
    started: Arc<AtomicBool>,
) -> Option<String> {
    // The semaphore is never closed.
    let mut turn = starts.acquire_owned().await.ok();
    started.store(true, Ordering::SeqCst);
    let mut events = Some(engine.subscribe());
    let run = engine.run();
    tokio::pin!(run);
    let hold = tokio::time::sleep(FIRST_SYNC_HOLD);
    tokio::pin!(hold);
    loop {
        let event = async {
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut run => return result.err().map(|e| e.to_string()),
            event = event => if first_sync_over(&event) {
                turn = None;
                events = None;
            },
            _ = &mut hold, if turn.is_some() => {
                turn = None;
                events = None;
            }
        }
    }
}

/// One claimed application.
pub(super) struct Owned {
    pub(super) revision: i64,
    /// Whether the engine got its start turn (a waiting one has done nothing).
    started: Arc<AtomicBool>,
    handle: EngineHandle,
    /// Dropping or setting it aborts the engine.
    abort: watch::Sender<bool>,
    pub(super) task: JoinHandle<Option<String>>,
}

impl Shared {
    pub(super) fn start_engine(
        &self,
        app: &str,
        revision: i64,
        lost: watch::Receiver<Option<String>>,
    ) -> Result<Owned, String> {
        let fence = Fence::new(app, self.config.lock_key(app), revision);
        let ctx = AppContext {
            app: app.to_owned(),
            store: self.store.fenced(fence.clone()),
            fence,
            client: self.client.clone(),
            replica: self.config.id.clone(),
        };
        let engine = (self.factory)(&ctx).map_err(|e| e.to_string())?;
        if engine.name() != app {
            return Err(format!(
                "the factory built an engine named {:?}; it must be named after the application",
                engine.name()
            ));
        }
        let handle = engine.handle();
        // A new owner reconciles at once, whatever the record says was last
        // applied: the previous owner may have died in the middle of a sync,
        // or the target drifted while nobody watched.
        handle.reconcile_now();
        let (abort, mut abort_rx) = watch::channel(false);
        let mut lost = lost;
        let started = Arc::new(AtomicBool::new(false));
        let turn = (self.starts.clone(), started.clone());
        let task = tokio::spawn(async move {
            tokio::select! {
                result = run_in_turn(engine, turn.0, turn.1) => result,
                _ = lost.wait_for(Option::is_some) => None,
                _ = abort_rx.wait_for(|a| *a) => None,
            }
        });
        Ok(Owned {
            revision,
            started,
            handle,
            abort,
            task,
        })
    }

    /// Stops an engine at once (its lock is no longer ours).
    pub(super) async fn abort(&self, app: &str, o: Owned, reason: &str) {
        o.abort.send_replace(true);
        o.handle.shutdown();
        o.handle.shutdown();
        let _ = o.task.await;
        self.emit(ClusterEvent::Lost {
            app: app.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Graceful handover of `apps`: engines finish what is in flight (up to
    /// the handover timeout), then the locks are deleted. Engines still
    /// waiting for their start turn stop at once, and their locks go in
    /// batches.
    pub(super) async fn release(&self, owned: &mut HashMap<String, Owned>, apps: Vec<String>) {
        let (waiting, leaving): (Vec<_>, Vec<_>) = apps
            .into_iter()
            .filter_map(|app| owned.remove(&app).map(|o| (app, o)))
            .partition(|(_, o)| !o.started.load(Ordering::SeqCst));
        for (_, o) in &leaving {
            o.handle.shutdown();
        }
        let mut idle = Vec::with_capacity(waiting.len());
        for (app, o) in waiting {
            o.abort.send_replace(true);
            let _ = o.task.await;
            self.emit(ClusterEvent::Released { app: app.clone() });
            idle.push((app, o.revision));
        }
        self.delete_locks(&idle).await;
        let timeout = self.config.handover_timeout;
        futures::stream::iter(leaving)
            .map(|(app, o)| async move {
                let Owned {
                    revision,
                    abort,
                    mut task,
                    ..
                } = o;
                if tokio::time::timeout(timeout, &mut task).await.is_err() {
                    abort.send_replace(true);
                    let _ = task.await;
                }
                self.emit(ClusterEvent::Released { app: app.clone() });
                self.delete_lock(&app, revision).await;
            })
            .buffer_unordered(self.config.claim_concurrency)
            .collect::<Vec<_>>()
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitops_core::Revision;
    use gitops_core::engine::SyncResult;

    #[test]
    fn the_start_turn_ends_with_the_first_sync_or_a_hold_up() {
        let revision = Revision::new("main", "1");
        let finished = Event::SyncFinished {
            revision: revision.clone(),
            result: SyncResult::Converged,
            duration: Duration::ZERO,
            summary: Default::default(),
        };
        assert!(first_sync_over(&Ok(finished)));
        assert!(first_sync_over(&Err(RecvError::Lagged(3))));
        let started = Event::SyncStarted {
            revision,
            trigger: gitops_core::engine::Trigger::Manual,
        };
        assert!(!first_sync_over(&Ok(started)));
    }
}
