//! EtcdStore against a real etcd: compare-and-swap, audit with the
//! inventory, history retention, fencing, and an engine's full state.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gitops_core::model::Inventory;
use gitops_core::store::{AuditAction, EngineRecord};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    AuditQuery, AuditRecord, Dependency, Engine, ManifestRender, Resource, StateStore, StoreError,
};
use gitops_etcd::{EtcdClient, EtcdConfig, EtcdError, EtcdStore, Fence};

fn audit(id: &str, at: SystemTime) -> AuditRecord {
    AuditRecord {
        at,
        id: id.parse().unwrap(),
        action: AuditAction::Create,
        digest_before: None,
        digest_after: Some("d".into()),
        revision: "r1".into(),
        reference: "main".into(),
        author: "ci".into(),
        message: "m".into(),
        trigger: gitops_core::engine::Trigger::Manual,
        detail: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_and_audit_in_one_write() {
    let client = support::client().await;
    let store = EtcdStore::new(client, support::prefix("cas"));
    let first = store.load_inventory("team/web").await.unwrap();
    assert_eq!(first.version, 0);
    let mut inv = Inventory::new();
    inv.record(&Resource::new(
        "Key/a".parse().unwrap(),
        serde_json::json!({"value": 1}),
    ));
    let t0 = SystemTime::now();
    let v1 = store
        .save_inventory("team/web", &inv, 0, &[audit("Key/a", t0)])
        .await
        .unwrap();
    assert!(v1 > 0);
    let stale = store
        .save_inventory("team/web", &Inventory::new(), 0, &[audit("Key/b", t0)])
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict { expected: 0, found, .. } if found == v1),
        "{stale}"
    );
    let back = store.load_inventory("team/web").await.unwrap();
    assert_eq!(back.version, v1);
    assert_eq!(back.value, inv);
    // The refused write appended no audit record.
    let records = store
        .audit("team/web", &AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id.to_string(), "Key/a");
    let v2 = store
        .save_inventory(
            "team/web",
            &Inventory::new(),
            v1,
            &[audit("Key/b", t0), audit("Key/c", t0)],
        )
        .await
        .unwrap();
    assert!(v2 > v1);
    let ids = support::audit_ids(&store, "team/web").await;
    assert_eq!(ids, ["Key/a", "Key/b", "Key/c"], "oldest first");
    let only_b = AuditQuery {
        id: Some("Key/b".parse().unwrap()),
        ..AuditQuery::default()
    };
    assert_eq!(store.audit("team/web", &only_b).await.unwrap().len(), 1);

    let rec = store.load_record("team/web").await.unwrap();
    assert_eq!(rec.version, 0);
    let r1 = store
        .save_record("team/web", &EngineRecord::default(), 0)
        .await
        .unwrap();
    assert!(
        store
            .save_record("team/web", &EngineRecord::default(), 0)
            .await
            .is_err()
    );
    assert_eq!(store.load_record("team/web").await.unwrap().version, r1);
    assert_eq!(store.apps().await.unwrap(), ["team/web"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_keeps_its_history_and_audit_in_etcd() {
    let client = support::client().await;
    let store = Arc::new(EtcdStore::new(client, support::prefix("engine")));
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let build = || {
        Engine::builder()
            .name("web")
            .source(source.clone())
            .render(Arc::new(ManifestRender::new()))
            .target(target.clone())
            .store(store.clone())
            .name("web")
            .config(gitops_core::EngineConfig::default().history_limit(3))
            .build()
            .unwrap()
    };
    for port in 1..=5 {
        source.commit([(
            "app.yaml",
            format!("kind: Config\nmetadata: {{ name: web }}\nspec: {{ port: {port} }}\n"),
        )]);
        // A new engine each time: everything it knows comes from etcd.
        let report = build().sync_once().await.unwrap();
        assert!(report.converged(), "{report}");
    }
    let engine = build();
    let history = engine.history(10).await.unwrap();
    assert_eq!(history.len(), 3, "history_limit keeps the newest 3");
    let newest = source.head().unwrap();
    assert_eq!(history[0].revision.id, newest.id, "newest first");
    let audit = engine.audit(&AuditQuery::default()).await.unwrap();
    let actions: Vec<AuditAction> = audit.iter().map(|r| r.action).collect();
    assert_eq!(actions[0], AuditAction::Create);
    assert_eq!(actions.len(), 5, "one create and four updates: {actions:?}");
    let inv = store.load_inventory("web").await.unwrap();
    assert!(inv.value.contains(&"Config/web".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_store_writes_only_while_the_lock_holds() {
    let client = support::client().await;
    let prefix = support::prefix("fence");
    let lock_key = format!("{prefix}/locks/web");
    let lease = support::lease_with_lock(&client, &lock_key).await;
    let (revision, _) = support::lock_revision(&client, &lock_key).await;
    let store = EtcdStore::new(client.clone(), &prefix);
    let fenced = store.fenced(Fence::new("web", &lock_key, revision));
    let v1 = fenced
        .save_inventory("web", &Inventory::new(), 0, &[])
        .await
        .unwrap();
    // Another application is not covered by this fence.
    let other = fenced
        .save_inventory("api", &Inventory::new(), 0, &[])
        .await;
    assert!(
        matches!(other, Err(StoreError::Conflict { .. })),
        "{other:?}"
    );

    // The lease goes (as when a replica is partitioned away or revoked).
    client.revoke_lease(lease).await.unwrap();
    let refused = fenced
        .save_inventory(
            "web",
            &Inventory::new(),
            v1,
            &[audit("Key/x", SystemTime::now())],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Conflict { found: 0, .. }),
        "{refused}"
    );
    assert!(!refused.is_transient());
    let entry = sample_history();
    assert!(fenced.append_history("web", &entry, 10).await.is_err());
    assert!(
        fenced
            .save_record("web", &EngineRecord::default(), 0)
            .await
            .is_err()
    );
    // Nothing landed.
    assert_eq!(store.load_inventory("web").await.unwrap().version, v1);
    assert!(
        store
            .audit("web", &AuditQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.history("web", 10).await.unwrap().is_empty());

    // Someone else claims it: the old fence still does not pass.
    let _lease2 = support::lease_with_lock(&client, &lock_key).await;
    assert!(
        fenced
            .save_inventory("web", &Inventory::new(), v1, &[])
            .await
            .is_err()
    );
    let (revision2, _) = support::lock_revision(&client, &lock_key).await;
    assert!(revision2 > revision);
    let fenced2 = store.fenced(Fence::new("web", &lock_key, revision2));
    fenced2
        .save_inventory("web", &Inventory::new(), v1, &[])
        .await
        .unwrap();
    fenced2.append_history("web", &entry, 10).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_a_transient_error_naming_the_endpoint() {
    let mut config = EtcdConfig::new(["http://127.0.0.1:9"]);
    config.connect_timeout = Duration::from_secs(2);
    let err = EtcdClient::connect(&config).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    assert!(matches!(
        EtcdClient::connect(&EtcdConfig::default()).await,
        Err(EtcdError::NoEndpoints)
    ));
    let with_password = EtcdConfig::new(["https://etcd:2379"]).with_user("ops", "hunter2");
    let shown = format!("{with_password:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("ops"),
        "{shown}"
    );
}

fn sample_history() -> gitops_core::HistoryEntry {
    gitops_core::HistoryEntry {
        revision: gitops_core::Revision::new("main", "abc"),
        trigger: gitops_core::engine::Trigger::Manual,
        result: gitops_core::engine::SyncResult::Converged,
        error: None,
        summary: Default::default(),
        outcomes: Vec::new(),
        gates: Vec::new(),
        not_converging: Vec::new(),
        started_at: SystemTime::now(),
        finished_at: SystemTime::now(),
    }
}

/// Two replicas (two clients, two stores on one prefix) each run one app;
/// `web` depends on `db` by name and learns about it only through etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_on_an_app_of_another_replica_reads_etcd() {
    let prefix = support::prefix("depends");
    let source = Arc::new(MemorySource::new("main"));
    let replica = |name: &'static str, store: EtcdStore, dependency: Option<Dependency>| {
        let mut builder = Engine::builder()
            .name(name)
            .source(source.clone())
            .render(Arc::new(ManifestRender::new()))
            .target(Arc::new(MemoryTarget::new()))
            .store(Arc::new(store));
        if let Some(dependency) = dependency {
            builder = builder.depends_on(dependency);
        }
        builder.build().unwrap()
    };
    let db = replica(
        "db",
        EtcdStore::new(support::client().await, prefix.clone()),
        None,
    );
    let web = replica(
        "web",
        EtcdStore::new(support::client().await, prefix),
        Some(Dependency::on_app("db")),
    );
    let rev1 = source.commit([(
        "app.yaml",
        "kind: App\nmetadata: { name: x }\nspec: { v: 1 }\n",
    )]);
    let blocked = web.sync_once().await.unwrap();
    assert_eq!(
        blocked.result,
        gitops_core::engine::SyncResult::Blocked,
        "{blocked}"
    );
    assert_eq!(
        blocked.blocked.as_ref().map(|b| b.message.as_str()),
        Some("waiting for app `db`: not yet applied and healthy"),
        "{blocked}"
    );
    assert!(db.sync_once().await.unwrap().converged());
    let report = web.sync_once().await.unwrap();
    assert!(report.converged(), "{report}");
    assert_eq!(report.revision, rev1);
    assert_eq!(web.status().blocked, None);
}

/// A wave of more resources than etcd's default `--max-txn-ops` (128) gives
/// one inventory save as many audit records: the save must still land,
/// inventory and every record together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_save_with_hundreds_of_audit_records_lands() {
    let client = support::client().await;
    let store = EtcdStore::new(client, support::prefix("many-audit"));
    let t0 = SystemTime::now();
    let records: Vec<AuditRecord> = (0..300)
        .map(|i| audit(&format!("Key/k{i:03}"), t0))
        .collect();
    let v1 = store
        .save_inventory("web", &Inventory::new(), 0, &records)
        .await
        .unwrap();
    let v2 = store
        .save_inventory("web", &Inventory::new(), v1, &[audit("Key/last", t0)])
        .await
        .unwrap();
    assert!(v2 > v1);
    let ids = support::audit_ids(&store, "web").await;
    let mut expected: Vec<String> = (0..300).map(|i| format!("Key/k{i:03}")).collect();
    expected.push("Key/last".into());
    assert_eq!(ids, expected, "every record, oldest first");
    let limited = AuditQuery {
        limit: Some(2),
        ..AuditQuery::default()
    };
    assert_eq!(store.audit("web", &limited).await.unwrap().len(), 2);
}

/// Audit records written one key each (`<version>-<i>`, by earlier
/// versions) are still read, next to batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_of_the_one_key_each_layout_are_still_read() {
    let client = support::client().await;
    let prefix = support::prefix("legacy-audit");
    let store = EtcdStore::new(client.clone(), &prefix);
    let t0 = SystemTime::now();
    for (i, id) in ["Key/old-a", "Key/old-b"].iter().enumerate() {
        let value = serde_json::json!({
            "format": gitops_core::store::FORMAT_VERSION,
            "data": audit(id, t0),
        });
        let key = format!("{prefix}/state/web-1/audit/{:020}-{i:06}", 0);
        gitops_etcd::testing::put(&client, &key, &value.to_string())
            .await
            .unwrap();
    }
    let v = store
        .save_inventory("web-1", &Inventory::new(), 0, &[])
        .await
        .unwrap();
    store
        .save_inventory("web-1", &Inventory::new(), v, &[audit("Key/new", t0)])
        .await
        .unwrap();
    let ids = support::audit_ids(&store, "web-1").await;
    assert_eq!(ids, ["Key/old-a", "Key/old-b", "Key/new"]);
}

/// Lowering the retention below what is stored by more than etcd's
/// `--max-txn-ops` (128) trims the excess instead of failing every append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_history_retention_trims_a_large_excess() {
    let client = support::client().await;
    let store = EtcdStore::new(client, support::prefix("trim"));
    for _ in 0..140 {
        store
            .append_history("web", &sample_history(), 1000)
            .await
            .unwrap();
    }
    assert_eq!(store.history("web", 1000).await.unwrap().len(), 140);
    store
        .append_history("web", &sample_history(), 5)
        .await
        .unwrap();
    assert_eq!(store.history("web", 1000).await.unwrap().len(), 5);
}

/// A limit of zero asks for nothing (etcd reads a range limit of 0 as "no
/// limit").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_limits_return_nothing() {
    let client = support::client().await;
    let store = EtcdStore::new(client, support::prefix("zero"));
    let t0 = SystemTime::now();
    store
        .save_inventory("web", &Inventory::new(), 0, &[audit("Key/a", t0)])
        .await
        .unwrap();
    store
        .append_history("web", &sample_history(), 10)
        .await
        .unwrap();
    assert!(store.history("web", 0).await.unwrap().is_empty());
    let none = AuditQuery {
        limit: Some(0),
        ..AuditQuery::default()
    };
    assert!(store.audit("web", &none).await.unwrap().is_empty());
}

/// Applications whose names share a prefix (`web`, `web-1`, `web/x`, `web%`)
/// never see each other's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_with_overlapping_names_are_kept_apart() {
    let client = support::client().await;
    let store = EtcdStore::new(client, support::prefix("overlap"));
    let names = [
        "web", "web-1", "web/x", "web%2Fx", "web%", "..", "wéb/ü", "",
    ];
    let t0 = SystemTime::now();
    for name in names {
        store
            .save_inventory(
                name,
                &Inventory::new(),
                0,
                &[audit(&format!("Key/{}", name.len() + 1), t0)],
            )
            .await
            .unwrap();
        store
            .append_history(name, &sample_history(), 10)
            .await
            .unwrap();
    }
    for name in names {
        assert_eq!(
            store
                .audit(name, &AuditQuery::default())
                .await
                .unwrap()
                .len(),
            1,
            "{name:?}"
        );
        assert_eq!(store.history(name, 10).await.unwrap().len(), 1, "{name:?}");
    }
    let mut sorted: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    sorted.sort();
    assert_eq!(store.apps().await.unwrap(), sorted);
}

/// An inventory and its audit records each under the value limit but over
/// etcd's request limit together are refused before sending, as a
/// permanent error naming the key, not retried forever as "unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_save_over_the_request_limit_is_refused_before_sending() {
    let client = support::client().await;
    let store = EtcdStore::new(client, support::prefix("request-size"));
    let mut inv = Inventory::new();
    for i in 0..4000 {
        inv.record(&Resource::new(
            format!("Key/a-resource-with-a-rather-long-name-{i:06}")
                .parse()
                .unwrap(),
            serde_json::json!({"value": i}),
        ));
    }
    let t0 = SystemTime::now();
    let records: Vec<AuditRecord> = (0..300)
        .map(|i| AuditRecord {
            message: "m".repeat(4_000),
            ..audit(&format!("Key/k{i}"), t0)
        })
        .collect();
    let err = store
        .save_inventory("web", &inv, 0, &records)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("/state/web/inventory"), "{err}");
    assert_eq!(store.load_inventory("web").await.unwrap().version, 0);
    assert!(
        store
            .audit("web", &AuditQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}
