//! `--prune-removed`: deleting what an application removed from the config
//! had deployed — only what its stored inventory says it applied (and
//! may prune), dependents first, with an audit record each.

use std::time::SystemTime;

use gitops_core::plan::Planner;
use gitops_core::record::{AuditAction, Trigger};
use gitops_core::{AuditRecord, DesiredState, Revision, StateStore, Target};

/// The audit message of a delete.
const MESSAGE: &str = "application removed from the config (--prune-removed)";

/// Why pruning a removed application stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    /// The store cannot be read or written.
    #[error("app {app:?}: state store: {message}")]
    Store {
        /// The application.
        app: String,
        /// Why.
        message: String,
    },
    /// The target refused a delete; what was deleted before is recorded.
    #[error("app {app:?}: deleting {id}: {message}")]
    Target {
        /// The application.
        app: String,
        /// The resource.
        id: String,
        /// Why.
        message: String,
    },
}

/// Deletes from `target` everything application `app` applied (per its
/// inventory in `store`), dependents first; resources whose prune is off
/// stay. The inventory keeps what was not deleted. Returns how many were
/// deleted.
pub async fn prune_removed(
    store: &dyn StateStore,
    target: &dyn Target,
    app: &str,
) -> Result<usize, PruneError> {
    let store_error = |e: &dyn std::fmt::Display| PruneError::Store {
        app: app.to_owned(),
        message: e.to_string(),
    };
    let stored = store
        .load_inventory(app)
        .await
        .map_err(|e| store_error(&e))?;
    let nothing = Revision::new("removed", "");
    let desired = DesiredState::new(nothing, Vec::new()).map_err(|e| store_error(&e))?;
    let plan = Planner::new()
        .plan(&desired, &[], &stored.value)
        .map_err(|e| store_error(&e))?;
    let mut inventory = stored.value.clone();
    let mut audit = Vec::new();
    let mut failure = None;
    'waves: for wave in &plan.prune {
        for change in &wave.changes {
            if let Err(e) = target.delete(&change.id).await {
                failure = Some(PruneError::Target {
                    app: app.to_owned(),
                    id: change.id.to_string(),
                    message: e.to_string(),
                });
                break 'waves;
            }
            let entry = inventory.remove(&change.id);
            audit.push(record(&change.id, entry.map(|e| e.digest)));
        }
    }
    let deleted = audit.len();
    if deleted > 0 {
        store
            .save_inventory(app, &inventory, stored.version, &audit)
            .await
            .map_err(|e| store_error(&e))?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
}

fn record(id: &gitops_core::ResourceId, digest: Option<String>) -> AuditRecord {
    AuditRecord {
        at: SystemTime::now(),
        id: id.clone(),
        action: AuditAction::Delete,
        digest_before: digest,
        digest_after: None,
        revision: String::new(),
        reference: String::new(),
        author: "gitops-agent".to_owned(),
        message: MESSAGE.to_owned(),
        trigger: Trigger::Manual,
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use gitops_core::testing::MemoryTarget;
    use gitops_core::{MemoryStore, Resource, ResourceId};

    use super::*;

    fn resource(name: &str) -> Resource {
        let id: ResourceId = format!("File//{name}").parse().expect("id");
        Resource::new(id, gitops_core::serde_json::json!({"content": name}))
    }

    #[tokio::test]
    async fn only_the_inventory_is_deleted_and_recorded() {
        let store = MemoryStore::new();
        let target = MemoryTarget::new();
        let mut inventory = gitops_core::model::Inventory::new();
        for name in ["a", "b"] {
            let r = resource(name);
            target.apply(&r).await.expect("apply");
            inventory.record(&r);
        }
        target.apply(&resource("not-ours")).await.expect("apply");
        store
            .save_inventory("gone", &inventory, 0, &[])
            .await
            .expect("save");
        let deleted = prune_removed(&store, &target, "gone").await.expect("prune");
        assert_eq!(deleted, 2);
        let left = target
            .observe(&resource("not-ours").id)
            .await
            .expect("observe");
        assert!(left.is_some(), "what it never applied stays");
        assert!(
            target
                .observe(&resource("a").id)
                .await
                .expect("observe")
                .is_none()
        );
        let stored = store.load_inventory("gone").await.expect("load");
        assert!(stored.value.iter().next().is_none());
        let audit = store
            .audit("gone", &gitops_core::AuditQuery::default())
            .await
            .expect("audit");
        assert_eq!(audit.len(), 2);
        assert!(audit.iter().all(|r| r.action == AuditAction::Delete));
        assert_eq!(
            prune_removed(&store, &target, "gone").await.expect("again"),
            0
        );
    }
}
