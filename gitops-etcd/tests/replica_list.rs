//! Changing a running replica's list (`ReplicaHandle::set_apps`), handing
//! an owned application over to itself (`restart`) and reading the owners
//! (`owners`), against a real etcd.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gitops_etcd::{ClusterEvent, EngineFactory, Replica, ReplicaConfig};
use support::{client, prefix, wait_until};

const LIMIT: Duration = Duration::from_secs(20);

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The test factory, counting the engines it builds.
fn counting(prefix: &str, replica: &str, built: Arc<AtomicUsize>) -> EngineFactory {
    let inner = support::cluster::factory(prefix.to_owned(), replica.to_owned());
    Arc::new(move |ctx| {
        built.fetch_add(1, Ordering::SeqCst);
        inner(ctx)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_list_is_shared_and_an_owned_application_restarts_under_a_new_fence() {
    let client = client().await;
    let prefix = prefix("set-apps");
    let built = Arc::new(AtomicUsize::new(0));
    let config = ReplicaConfig::new("r1", &prefix).ttl(Duration::from_secs(2));
    let replica = Replica::start(
        client.clone(),
        config,
        names(&["a"]),
        counting(&prefix, "r1", built.clone()),
    )
    .await
    .expect("replica");
    wait_until("a owned", LIMIT, || {
        let owned = replica.owned();
        async move { (owned == ["a"]).then_some(()).ok_or(format!("{owned:?}")) }
    })
    .await;

    // A list with b and without a: b is claimed, a handed over (not kept).
    replica.set_apps(names(&["b", "b"]));
    assert_eq!(replica.apps(), ["b"]);
    wait_until("b owned, a released", LIMIT, || {
        let owned = replica.owned();
        async move { (owned == ["b"]).then_some(()).ok_or(format!("{owned:?}")) }
    })
    .await;
    let owners = replica.owners().await.expect("owners");
    assert_eq!(owners, BTreeMap::from([("b".to_owned(), "r1".to_owned())]));

    // Restarting b: released, claimed again under a new lock, built anew;
    // an application not owned is ignored.
    let before = built.load(Ordering::SeqCst);
    let (first, _) = support::lock_revision(&client, &format!("{prefix}/locks/b")).await;
    let mut events = replica.subscribe();
    replica.restart(["b", "not-owned"]);
    let mut released = false;
    let second = loop {
        match tokio::time::timeout(LIMIT, events.recv()).await {
            Ok(Ok(ClusterEvent::Released { app })) if app == "b" => released = true,
            Ok(Ok(ClusterEvent::Claimed { app, revision })) if app == "b" => break revision,
            Ok(Ok(_)) => {}
            other => panic!("no new claim of b: {other:?}"),
        }
    };
    assert!(released, "b was claimed again without being handed over");
    assert!(
        second > first,
        "the new fence {second} is not after {first}"
    );
    wait_until("b rebuilt", LIMIT, || {
        let n = built.load(Ordering::SeqCst);
        async move { (n > before).then_some(()).ok_or(format!("{n} built")) }
    })
    .await;
    wait_until("b owned again", LIMIT, || {
        let owned = replica.owned();
        async move { (owned == ["b"]).then_some(()).ok_or(format!("{owned:?}")) }
    })
    .await;
    replica.stop().await;
    assert!(replica_owners_gone(&client, &prefix).await);
}

/// Whether every lock is gone after the replica stopped.
async fn replica_owners_gone(client: &gitops_etcd::EtcdClient, prefix: &str) -> bool {
    gitops_etcd::testing::list(client, &format!("{prefix}/locks/"))
        .await
        .expect("list")
        .is_empty()
}
