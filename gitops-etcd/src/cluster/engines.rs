//! One engine per claimed application: what its factory gets
//! ([`AppContext`]), starting it, stopping it at once, handing it over.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use gitops_core::source::BoxError;
use gitops_core::{Engine, EngineHandle, StateStore};
use tokio::sync::watch;
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

/// One claimed application.
pub(super) struct Owned {
    pub(super) revision: i64,
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
        let task = tokio::spawn(async move {
            tokio::select! {
                result = engine.run() => result.err().map(|e| e.to_string()),
                _ = lost.wait_for(Option::is_some) => None,
                _ = abort_rx.wait_for(|a| *a) => None,
            }
        });
        Ok(Owned {
            revision,
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
    /// the handover timeout), then the locks are deleted.
    pub(super) async fn release(&self, owned: &mut HashMap<String, Owned>, apps: Vec<String>) {
        let leaving: Vec<(String, Owned)> = apps
            .into_iter()
            .filter_map(|app| owned.remove(&app).map(|o| (app, o)))
            .collect();
        for (_, o) in &leaving {
            o.handle.shutdown();
        }
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
