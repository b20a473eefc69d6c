//! Shared by the integration tests: the etcd they run against.
#![allow(dead_code)]

pub mod cluster;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gitops_core::{AuditQuery, StateStore};
use gitops_etcd::{ENDPOINTS_ENV, EtcdClient, EtcdConfig};

/// Connects to the test etcd, or fails with what to do about it. Never skips.
pub async fn client() -> EtcdClient {
    let config = match EtcdConfig::from_env() {
        Ok(c) => c,
        Err(_) => panic!(
            "{ENDPOINTS_ENV} is not set: these tests need a real etcd. Run scripts/test \
             (it installs and starts a throw-away etcd), or start one \
             (`etcd --data-dir $(mktemp -d) --listen-client-urls http://127.0.0.1:2379 \
             --advertise-client-urls http://127.0.0.1:2379`) and set \
             {ENDPOINTS_ENV}=http://127.0.0.1:2379"
        ),
    };
    match EtcdClient::connect(&config).await {
        Ok(c) => c,
        Err(e) => panic!(
            "{ENDPOINTS_ENV}={}: etcd is not reachable ({e}). Start it, or run scripts/test, \
             which starts a throw-away etcd",
            config.endpoints.join(",")
        ),
    }
}

/// A key prefix no other test (or earlier run) uses.
pub fn prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("/gitops-test/{name}-{}-{nanos}", std::process::id())
}

/// Polls `check` every 50 ms until it passes; returns how long it took.
/// Panics with `what` and the last reason when `limit` passes first.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let result = check().await;
        match result {
            Ok(()) => return start.elapsed(),
            Err(why) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Grants a lease of 10 s and creates the lock `key` under it (fails if
/// the key exists); returns the lease.
pub async fn lease_with_lock(client: &EtcdClient, key: &str) -> i64 {
    gitops_etcd::testing::lock(client, key, 10).await.unwrap()
}

/// The lock `key`'s (create revision, lease); it must exist.
pub async fn lock_revision(client: &EtcdClient, key: &str) -> (i64, i64) {
    gitops_etcd::testing::lock_info(client, key)
        .await
        .unwrap()
        .unwrap()
}

/// The ids of every audit record of `app`, oldest first.
pub async fn audit_ids(store: &impl StateStore, app: &str) -> Vec<String> {
    store
        .audit(app, &AuditQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect()
}
