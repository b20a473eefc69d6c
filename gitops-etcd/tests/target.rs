//! EtcdTarget against a real etcd, driven by an engine: apply in each
//! format, drift revert, prune by inventory, fenced writes.

mod support;

use std::sync::Arc;

use gitops_core::testing::MemorySource;
use gitops_core::{Engine, ManifestRender, MemoryStore, Resource, Target, TargetError};
use gitops_etcd::{EtcdTarget, Fence, testing};

const MANIFESTS: &str = r#"
kind: Key
metadata: { name: limits }
spec: { value: { max_conn: 100, hosts: [a, b] } }
---
kind: Key
metadata: { name: feature, namespace: web }
spec: { format: yaml, value: { enabled: true } }
---
kind: Key
metadata: { name: motd }
spec: { format: text, value: "hello\n" }
"#;

/// The engine `kv`: manifests from `source` onto `target`, state in memory.
fn kv_engine(source: &Arc<MemorySource>, target: &Arc<EtcdTarget>) -> Engine {
    Engine::builder()
        .name("kv")
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .store(Arc::new(MemoryStore::new()))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_drift_revert_and_prune() {
    let client = support::client().await;
    let prefix = support::prefix("target");
    let target = Arc::new(EtcdTarget::new(client.clone(), &prefix));
    let source = Arc::new(MemorySource::new("main"));
    source.commit([("keys.yaml", MANIFESTS)]);
    let engine = kv_engine(&source, &target);
    // A key the engine did not create: never pruned.
    testing::put(&client, &format!("{prefix}/foreign"), "keep me")
        .await
        .unwrap();

    let report = engine.sync_once().await.unwrap();
    assert!(report.converged(), "{report}");
    assert_eq!(report.plan.summary.create, 3, "{report}");
    let get = |k: &str| {
        let client = client.clone();
        let key = format!("{prefix}/{k}");
        async move {
            testing::list(&client, &key)
                .await
                .unwrap()
                .into_iter()
                .find(|(key2, _, _)| *key2 == key)
                .map(|(_, v, _)| v)
        }
    };
    assert_eq!(
        get("limits").await.as_deref(),
        Some(r#"{"hosts":["a","b"],"max_conn":100}"#)
    );
    assert_eq!(get("web/feature").await.as_deref(), Some("enabled: true\n"));
    assert_eq!(get("motd").await.as_deref(), Some("hello\n"));

    // Nothing to do on a second sync.
    let again = engine.sync_once().await.unwrap();
    assert_eq!(again.plan.summary.unchanged, 3, "{again}");

    // Drift: someone edits a key by hand; the next sync reverts it.
    testing::put(&client, &format!("{prefix}/motd"), "hacked")
        .await
        .unwrap();
    let plan = engine.plan().await.unwrap();
    assert_eq!(plan.summary.update, 1, "{plan}");
    let reverted = engine.sync_once().await.unwrap();
    assert!(reverted.converged(), "{reverted}");
    assert_eq!(get("motd").await.as_deref(), Some("hello\n"));

    // A key deleted by hand comes back.
    target.delete(&"Key/limits".parse().unwrap()).await.unwrap();
    engine.sync_once().await.unwrap();
    assert!(get("limits").await.is_some());

    // Prune: a resource leaves Git, its key goes; the foreign key stays.
    let without_motd = MANIFESTS
        .split("---")
        .take(2)
        .collect::<Vec<_>>()
        .join("---");
    source.commit([("keys.yaml", without_motd.as_str())]);
    let pruned = engine.sync_once().await.unwrap();
    assert_eq!(pruned.plan.summary.delete, 1, "{pruned}");
    assert_eq!(get("motd").await, None);
    assert_eq!(get("foreign").await.as_deref(), Some("keep me"));
    let keys: Vec<String> = target
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        [
            format!("{prefix}/foreign"),
            format!("{prefix}/limits"),
            format!("{prefix}/web/feature")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_is_refused_naming_the_resource() {
    let client = support::client().await;
    let target = EtcdTarget::new(client, support::prefix("bad"));
    let r = Resource::new(
        "Key/x".parse().unwrap(),
        serde_json::json!({"format": "toml", "value": 1}),
    );
    let err = target.apply(&r).await.unwrap_err();
    assert!(matches!(err, TargetError::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("Key/x"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_target_writes_only_while_the_lock_holds() {
    let client = support::client().await;
    let prefix = support::prefix("fenced-target");
    let lock_key = format!("{prefix}/locks/kv");
    let lease = support::lease_with_lock(&client, &lock_key).await;
    let (revision, _) = support::lock_revision(&client, &lock_key).await;
    let target = EtcdTarget::new(client.clone(), format!("{prefix}/kv"))
        .fenced(Fence::new("kv", &lock_key, revision));
    let r = Resource::new("Key/a".parse().unwrap(), serde_json::json!({"value": 1}));
    target.apply(&r).await.unwrap();
    client.revoke_lease(lease).await.unwrap();
    let r2 = Resource::new("Key/a".parse().unwrap(), serde_json::json!({"value": 2}));
    let err = target.apply(&r2).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("no longer owns kv"), "{err}");
    assert!(target.delete(&r.id).await.is_err());
    let left = target.list().await.unwrap();
    assert_eq!(left, [(format!("{prefix}/kv/a"), "1".to_owned())]);
}

/// A lock deleted and re-created by another replica (a new create-revision)
/// does not let the old fence through: put and delete are refused and the
/// key keeps the new owner's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_does_not_pass_a_lock_re_created_by_another_replica() {
    let client = support::client().await;
    let prefix = support::prefix("recreated-lock");
    let lock_key = format!("{prefix}/locks/kv");
    let lease = support::lease_with_lock(&client, &lock_key).await;
    let (old, _) = support::lock_revision(&client, &lock_key).await;
    let plain = EtcdTarget::new(client.clone(), format!("{prefix}/kv"));
    let stale = plain.fenced(Fence::new("kv", &lock_key, old));
    client.revoke_lease(lease).await.unwrap();
    let _lease2 = support::lease_with_lock(&client, &lock_key).await;
    let (new, _) = support::lock_revision(&client, &lock_key).await;
    assert!(new > old);
    let current = plain.fenced(Fence::new("kv", &lock_key, new));
    let r = Resource::new("Key/a".parse().unwrap(), serde_json::json!({"value": 2}));
    current.apply(&r).await.unwrap();
    let r1 = Resource::new("Key/a".parse().unwrap(), serde_json::json!({"value": 1}));
    assert!(stale.apply(&r1).await.is_err());
    assert!(stale.delete(&r.id).await.is_err());
    assert_eq!(
        plain.list().await.unwrap(),
        [(format!("{prefix}/kv/a"), "2".to_owned())]
    );
}

/// Two resources that would be one key: the commit is refused as a whole,
/// naming both files, and nothing is written; the next good commit deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resources_that_would_share_a_key_are_refused_before_any_write() {
    let client = support::client().await;
    let prefix = support::prefix("collide");
    let target = Arc::new(EtcdTarget::new(client.clone(), &prefix));
    let source = Arc::new(MemorySource::new("main"));
    let engine = kv_engine(&source, &target);
    let other = "kind: Key\nmetadata: { name: other }\nspec: { value: 1 }\n";
    for (a, b) in [
        (
            "kind: Key\nmetadata: { name: x }\nspec: { value: 1 }\n",
            "kind: Config\nmetadata: { name: x }\nspec: { value: 2 }\n",
        ),
        (
            "kind: Key\nmetadata: { name: web/x }\nspec: { value: 1 }\n",
            "kind: Key\nmetadata: { name: x, namespace: web }\nspec: { value: 2 }\n",
        ),
    ] {
        source.commit([("a.yaml", a), ("b.yaml", b), ("c.yaml", other)]);
        let err = engine.sync_once().await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("would be the same etcd key"), "{text}");
        assert!(text.contains("a.yaml") && text.contains("b.yaml"), "{text}");
        assert_eq!(target.list().await.unwrap(), [], "nothing written");
    }
    source.commit([("c.yaml", other)]);
    assert!(engine.sync_once().await.unwrap().converged());
    assert_eq!(target.list().await.unwrap().len(), 1);
}

/// Puts and deletes issued together go out as one fenced transaction (one
/// revision in etcd's log), a lost fence refuses all of them, and the same
/// key twice never shares a transaction (etcd would refuse it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_issued_together_share_one_fenced_transaction() {
    let client = support::client().await;
    let prefix = support::prefix("batched-target");
    let lock_key = format!("{prefix}/locks/kv");
    let lease = support::lease_with_lock(&client, &lock_key).await;
    let (revision, _) = support::lock_revision(&client, &lock_key).await;
    let target = EtcdTarget::new(client.clone(), format!("{prefix}/kv"))
        .fenced(Fence::new("kv", &lock_key, revision));
    let key = |name: String, value: i64| {
        Resource::new(
            format!("Key/{name}").parse().unwrap(),
            serde_json::json!({ "value": value }),
        )
    };
    let mut recorder = testing::Recorder::start(&client, &format!("{prefix}/kv/"))
        .await
        .unwrap();
    let first: Vec<Resource> = (0..20).map(|i| key(format!("k{i:02}"), i)).collect();
    let results = futures::future::join_all(first.iter().map(|r| target.apply(r))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let changes = recorder.changes().await.unwrap();
    assert_eq!(changes.len(), 20);
    assert!(
        changes.iter().all(|c| c.revision == changes[0].revision),
        "20 puts issued together, more than one transaction: {changes:?}"
    );

    // The same key twice at once: both land, in two transactions, the
    // second value last.
    let twice = [key("k00".into(), 100), key("k00".into(), 101)];
    let results = futures::future::join_all(twice.iter().map(|r| target.apply(r))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let changes = recorder.changes().await.unwrap();
    let last: Vec<_> = changes[20..]
        .iter()
        .map(|c| (c.revision, c.value.clone()))
        .collect();
    assert_eq!(last.len(), 2);
    assert!(last[0].0 < last[1].0, "{last:?}");
    assert_eq!(last[1].1, "101");

    // Observed together, in the order asked, a missing key as None.
    let mut ids: Vec<_> = first.iter().rev().map(|r| r.id.clone()).collect();
    ids.push("Key/missing".parse().unwrap());
    let observed = target.observe_many(&ids).await;
    assert_eq!(observed.len(), 21);
    for (i, (id, o)) in ids.iter().zip(&observed).enumerate() {
        let o = o.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        let stored = o.as_ref().map(|o| o.spec.to_value()["stored"].clone());
        let want = match i {
            20 => None,
            19 => Some(serde_json::json!("101")),
            _ => Some(serde_json::json!((19 - i).to_string())),
        };
        assert_eq!(stored, want, "{id}");
    }

    // The fence lost: every write issued together is refused, none lands.
    client.revoke_lease(lease).await.unwrap();
    let late: Vec<Resource> = (0..5).map(|i| key(format!("late{i}"), i)).collect();
    let mut calls: Vec<_> = late.iter().map(|r| target.apply(r)).collect();
    calls.push(target.delete(&first[1].id));
    let results = futures::future::join_all(calls).await;
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert!(err.to_string().contains("no longer owns kv"), "{err}");
    }
    let keys = target.list().await.unwrap();
    let ours = keys.iter().filter(|(k, _)| !k.contains("/~sentinel/"));
    assert_eq!(ours.count(), 20, "{keys:?}");
}
