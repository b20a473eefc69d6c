//! Shared by the integration tests: the etcd they run against.
#![allow(dead_code)]

pub mod cluster;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
