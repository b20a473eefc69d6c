//! The planner: changes, deletes from the inventory only, display and JSON.

use gitops_core::model::{Inventory, InventoryEntry};
use gitops_core::plan::{Change, Planner};
use gitops_core::{
    DesiredState, Diff, Observed, PlanError, Resource, ResourceId, Revision, Target, TargetError,
    async_trait,
};
use serde_json::json;

fn id(s: &str) -> ResourceId {
    s.parse().expect("valid id")
}

fn rev() -> Revision {
    Revision::new("main", "a".repeat(40))
}

fn desired() -> DesiredState {
    DesiredState::new(
        rev(),
        vec![
            Resource::new(id("Secret/tls"), json!({"cert": "abc"})),
            Resource::new(id("Config/web"), json!({"port": 80, "replicas": 1}))
                .depends_on(id("Secret/tls")),
            Resource::new(id("Config/new"), json!({})).depends_on(id("Config/web")),
        ],
    )
    .expect("valid")
}

fn inventory_of(entries: &[(&str, &[&str], bool)]) -> Inventory {
    let mut inv = Inventory::new();
    for (i, deps, prune) in entries {
        inv.insert(
            id(i),
            InventoryEntry {
                digest: String::new(),
                depends_on: deps.iter().map(|d| id(d)).collect(),
                prune: *prune,
            },
        );
    }
    inv
}

#[test]
fn create_update_unchanged_and_ordered_deletes() {
    let d = desired();
    // Order of observations follows DesiredState::resources (sorted by id).
    let names: Vec<String> = d.resources().iter().map(|r| r.id.to_string()).collect();
    assert_eq!(names, ["Config/new", "Config/web", "Secret/tls"]);
    let observed = vec![
        None,
        Some(Observed::new(json!({"port": 80, "replicas": 3}))),
        Some(Observed::new(json!({"cert": "abc"}))),
    ];
    // Old/db depends on Old/net; Old/app depends on Old/db: delete app, then db, then net.
    let inventory = inventory_of(&[
        ("Secret/tls", &[], true),
        ("Old/net", &[], true),
        ("Old/db", &["Old/net"], true),
        ("Old/app", &["Old/db", "Secret/tls"], true),
        ("Old/keep", &[], false),
    ]);
    let plan = Planner::new()
        .plan(&d, &observed, &inventory)
        .expect("plans");
    let waves: Vec<Vec<(String, &str)>> = plan
        .waves
        .iter()
        .map(|w| {
            w.changes
                .iter()
                .map(|c| {
                    let kind = match c.change {
                        Change::Create { .. } => "create",
                        Change::Update { .. } => "update",
                        Change::Delete => "delete",
                        Change::Unchanged => "unchanged",
                    };
                    (c.id.to_string(), kind)
                })
                .collect()
        })
        .collect();
    assert_eq!(
        waves,
        [
            vec![("Secret/tls".to_string(), "unchanged")],
            vec![("Config/web".to_string(), "update")],
            vec![("Config/new".to_string(), "create")],
        ]
    );
    let prune: Vec<Vec<String>> = plan
        .prune
        .iter()
        .map(|w| w.changes.iter().map(|c| c.id.to_string()).collect())
        .collect();
    assert_eq!(prune, [vec!["Old/app"], vec!["Old/db"], vec!["Old/net"]]);
    assert_eq!(plan.retained, vec![id("Old/keep")]);
    let s = plan.summary;
    assert_eq!(
        (s.create, s.update, s.delete, s.unchanged, s.retained),
        (1, 1, 3, 1, 1)
    );
    assert!(plan.has_changes());

    let text = plan.to_string();
    let expected = format!(
        "Plan for main@sha1:{}:
  wave 2/3:
    ~ update Config/web
        ~ spec.replicas: 3 -> 1
  wave 3/3:
    + create Config/new
        + spec = {{}}
  prune:
    - delete Old/app
    - delete Old/db
    - delete Old/net
    ! keep Old/keep (gone from Git, prune disabled)
Plan: 1 to create, 1 to update, 3 to delete, 1 unchanged.",
        "a".repeat(40)
    );
    assert_eq!(text, expected);

    let value = serde_json::to_value(&plan).expect("serializes");
    assert_eq!(value["summary"]["create"], 1);
    assert_eq!(value["revision"]["reference"], "main");
    assert_eq!(
        value["waves"][1]["changes"][0],
        json!({
            "id": "Config/web",
            "action": "update",
            "diff": [{"path": "spec.replicas", "old": 3, "new": 1}],
            "cause": "git"
        })
    );
    assert_eq!(
        value["prune"][0]["changes"][0],
        json!({"id": "Old/app", "action": "delete"})
    );
}

#[test]
fn no_changes_plan() {
    let d = desired();
    let observed: Vec<_> = d
        .resources()
        .iter()
        .map(|r| Some(Observed::new(r.spec.clone())))
        .collect();
    let plan = Planner::new()
        .plan(&d, &observed, &Inventory::new())
        .expect("plans");
    assert!(!plan.has_changes());
    assert_eq!(
        plan.to_string(),
        format!(
            "No changes. The target matches main@sha1:{} (3 resources).\nPlan: 0 to create, 0 to update, 0 to delete, 3 unchanged.",
            "a".repeat(40)
        )
    );
}

#[test]
fn observation_count_must_match() {
    let err = Planner::new()
        .plan(&desired(), &[], &Inventory::new())
        .unwrap_err();
    assert_eq!(
        err,
        PlanError::ObservationCount {
            desired: 3,
            observed: 0
        }
    );
}

/// A target whose system adds a `status` field; its `differs` ignores it.
struct StatusTarget;

#[async_trait]
impl Target for StatusTarget {
    async fn observe(&self, _: &ResourceId) -> Result<Option<Observed>, TargetError> {
        Ok(None)
    }
    async fn apply(&self, _: &Resource) -> Result<(), TargetError> {
        Ok(())
    }
    async fn delete(&self, _: &ResourceId) -> Result<(), TargetError> {
        Ok(())
    }
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        let mut seen = observed.spec.to_value();
        if let Some(map) = seen.as_object_mut() {
            map.remove("status");
        }
        Diff::between(&seen, &desired.spec.to_value())
    }
}

#[test]
fn target_differs_hook_is_used() {
    let d =
        DesiredState::new(rev(), vec![Resource::new(id("A/a"), json!({"x": 1}))]).expect("valid");
    let observed = vec![Some(Observed::new(json!({"x": 1, "status": "running"})))];
    let default = Planner::new()
        .plan(&d, &observed, &Inventory::new())
        .expect("plans");
    assert_eq!(default.summary.update, 1);
    let custom = Planner::with_target(&StatusTarget)
        .plan(&d, &observed, &Inventory::new())
        .expect("plans");
    assert_eq!(custom.summary.unchanged, 1);
}

#[test]
fn builder_streams_observations() {
    let d = desired();
    let planner = Planner::new();
    let mut builder = planner.builder(&d);
    builder.observe(2, Some(&Observed::new(json!({"cert": "abc"}))));
    builder.observe(0, None);
    builder.observe(99, None); // out of range: ignored
    let err = builder.finish(&Inventory::new()).unwrap_err();
    assert_eq!(
        err,
        PlanError::NotObserved {
            id: id("Config/web")
        }
    );

    let mut builder = planner.builder(&d);
    builder.observe(2, Some(&Observed::new(json!({"cert": "abc"}))));
    builder.observe(1, Some(&Observed::new(json!({"port": 80, "replicas": 1}))));
    builder.observe(0, None);
    let plan = builder.finish(&Inventory::new()).expect("all observed");
    let s = plan.summary;
    assert_eq!((s.create, s.update, s.unchanged), (1, 0, 2));
}
