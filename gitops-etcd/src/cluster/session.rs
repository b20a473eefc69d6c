//! A replica's life: leases one after another, and in each one session:
//! register, watch, rebalance until the lease is lost or shutdown is asked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::EtcdError;
use crate::fence::escape;

use super::engines::Owned;
use super::lease::{AbortOnDrop, keep_alive};
use super::{ClusterEvent, Shared};

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    LeaseLost(String),
}

impl Shared {
    /// Runs sessions, one per lease, until shutdown.
    pub(super) async fn run(self: Arc<Self>, first_lease: i64, first_granted_at: Instant) {
        let mut next = Some((first_lease, first_granted_at));
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if self.shutting_down() {
                break;
            }
            let (lease, granted_at) = match next.take() {
                Some(l) => l,
                None => {
                    let at = Instant::now();
                    match self.grant().await {
                        Ok(lease) => (lease, at),
                        Err(e) => {
                            tracing::warn!(replica = %self.config.id, error = %e, "lease grant failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = shutdown.changed() => {}
                            }
                            continue;
                        }
                    }
                }
            };
            self.lease.store(lease, Ordering::SeqCst);
            let end = self.session(lease, granted_at).await;
            self.lease.store(0, Ordering::SeqCst);
            self.owned().clear();
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::LeaseLost(reason) => {
                    tracing::warn!(replica = %self.config.id, %reason, "lease lost: engines stopped; joining again");
                    self.emit(ClusterEvent::LeaseLost { reason });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.emit(ClusterEvent::Stopped);
    }

    /// One lease's life: register, keep alive, rebalance until the lease is
    /// lost or shutdown is asked.
    async fn session(&self, lease: i64, granted_at: Instant) -> SessionEnd {
        let (lost_tx, mut lost) = watch::channel(None::<String>);
        let keeper = tokio::spawn(keep_alive(
            self.client.clone(),
            lease,
            self.config.ttl,
            granted_at,
            lost_tx,
        ));
        let _keeper = AbortOnDrop(keeper);
        let mut owned: HashMap<String, Owned> = HashMap::new();
        let mut shutdown = self.shutdown.subscribe();
        let end = tokio::select! {
            end = self.session_loop(lease, &mut owned, lost.clone()) => end,
            _ = lost.wait_for(Option::is_some) => SessionEnd::LeaseLost(String::new()),
            _ = shutdown.wait_for(|s| *s) => SessionEnd::Shutdown,
        };
        match end {
            SessionEnd::LeaseLost(_) => {
                let reason = lost
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| "keep-alive stopped".into());
                // The engines watch the same signal and are already stopping.
                let apps: Vec<String> = owned.keys().cloned().collect();
                for app in apps {
                    if let Some(o) = owned.remove(&app) {
                        self.abort(&app, o, &reason).await;
                    }
                }
                SessionEnd::LeaseLost(reason)
            }
            SessionEnd::Shutdown => {
                let apps: Vec<String> = owned.keys().cloned().collect();
                self.release(&mut owned, apps).await;
                if let Err(e) = self.client.revoke_lease(lease).await {
                    tracing::warn!(replica = %self.config.id, error = %e, "lease revoke failed; it expires by itself");
                }
                SessionEnd::Shutdown
            }
        }
    }

    /// Registers, then rebalances on every watch event and every interval.
    async fn session_loop(
        &self,
        lease: i64,
        owned: &mut HashMap<String, Owned>,
        lost: watch::Receiver<Option<String>>,
    ) -> SessionEnd {
        let registered_at = self.register(lease).await;
        self.emit(ClusterEvent::Joined { lease });
        let interval = self.config.rebalance_every();
        let mut watch = None;
        let mut due = Instant::now();
        loop {
            if watch.is_none() {
                watch = self.watch(registered_at + 1).await;
            }
            if Instant::now() >= due {
                due = Instant::now() + interval;
                self.rebalance(lease, owned, &lost).await;
            }
            let message = async {
                match watch.as_mut() {
                    Some(w) => w.message().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                () = self.wake.notified() => due = Instant::now(),
                msg = message => match msg {
                    Ok(Some(resp)) if !resp.canceled() => {
                        if !resp.events().is_empty() {
                            // Let a burst of deletes arrive, then look once.
                            due = due.min(Instant::now() + Duration::from_millis(20));
                        }
                    }
                    _ => {
                        watch = None;
                        due = due.min(Instant::now() + Duration::from_millis(200));
                    }
                },
            }
        }
    }

    /// Registers `<prefix>/members/<id>` under `lease`, waiting until a
    /// previous incarnation under the same id has expired; returns the
    /// revision of the registration.
    async fn register(&self, lease: i64) -> i64 {
        let member_key = format!("{}/members/{}", self.config.prefix, escape(&self.config.id));
        // Register; a previous incarnation under the same id must expire first.
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    member_key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    member_key.as_str(),
                    self.config.id.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            match self.client.kv().txn(txn).await {
                Ok(resp) if resp.succeeded() => return resp.header().map_or(0, |h| h.revision()),
                Ok(_) => {
                    tracing::info!(replica = %self.config.id, "member key still held (a previous incarnation?); waiting for it to expire")
                }
                Err(e) => {
                    tracing::warn!(replica = %self.config.id, error = %EtcdError::request("txn", member_key.as_str(), e), "registration failed; retrying")
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Watches membership changes and lock deletions.
    async fn watch(&self, from: i64) -> Option<etcd_client::WatchStream> {
        let members = format!("{}/members/", self.config.prefix);
        let locks = format!("{}/locks/", self.config.prefix);
        let mut client = self.client.watch();
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = client
            .watch(members.as_str(), Some(options.clone()))
            .await
            .map_err(|e| tracing::warn!(error = %EtcdError::request("watch", members.as_str(), e), "watch failed"))
            .ok()?;
        stream
            .watch(
                locks.as_str(),
                Some(options.with_filters([WatchFilterType::NoPut])),
            )
            .await
            .map_err(|e| tracing::warn!(error = %EtcdError::request("watch", locks.as_str(), e), "watch failed"))
            .ok()?;
        Some(stream)
    }
}
