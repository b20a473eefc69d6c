//! Which replica runs each application when several agent processes share
//! a list on etcd (`--etcd`): the [`Replicas`] an agent hands its
//! [`AppSet`](super::AppSet), and the [`Owner`] each `GET /status` row and
//! each row of the status page shows.
//!
//! Deciding an application's owner from the lock holders is pure
//! ([`Owner::of`]); reading the locks is the [`Replicas`] implementation's.

use std::collections::BTreeMap;

use async_trait::async_trait;
use gitops_core::HistoryEntry;
use serde::Serialize;

use super::apps::AppSet;
use super::view::{HistoryView, StatusView};

/// Who runs the applications when replicas share them.
#[async_trait]
pub trait Replicas: Send + Sync + std::fmt::Debug {
    /// This replica's id.
    fn replica(&self) -> &str;
    /// The applications of the list in force, in order.
    fn apps(&self) -> Vec<String>;
    /// The replica holding each application's lock now (applications
    /// nobody holds are missing). The error says why it cannot be read.
    async fn owners(&self) -> Result<BTreeMap<String, String>, String>;
    /// The newest sync of an application, from the shared store (for an
    /// application another replica runs).
    async fn last_sync(&self, app: &str) -> Option<HistoryEntry>;
}

/// Which replica runs an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Owner {
    /// This replica runs it.
    This {
        /// This replica's id.
        replica: String,
    },
    /// Another replica runs it.
    Other {
        /// Its id (from the application's lock key).
        replica: String,
    },
    /// Nobody holds it now (being handed over or taken over).
    Unowned,
}

impl Owner {
    /// The owner of `app` seen from replica `me`, given the lock holders.
    pub fn of(app: &str, me: &str, owners: &BTreeMap<String, String>) -> Self {
        match owners.get(app) {
            Some(id) if id == me => Owner::This {
                replica: id.clone(),
            },
            Some(id) => Owner::Other {
                replica: id.clone(),
            },
            None => Owner::Unowned,
        }
    }

    /// Whether this replica runs it.
    pub fn is_this(&self) -> bool {
        matches!(self, Owner::This { .. })
    }

    /// In words, for the status page: `r1 (this replica)`, `r2`, `none`.
    pub fn describe(&self) -> String {
        match self {
            Owner::This { replica } => format!("{replica} (this replica)"),
            Owner::Other { replica } => replica.clone(),
            Owner::Unowned => "none".to_owned(),
        }
    }
}

/// One view per application of the shared list, in its order: the
/// applications this replica runs from their engine, the others with
/// their owner and newest sync from the shared store (never values).
pub(crate) async fn views(
    apps: &AppSet,
    replicas: &dyn Replicas,
    expose_values: bool,
) -> Result<Vec<StatusView>, String> {
    let owners = replicas.owners().await?;
    let me = replicas.replica();
    let mut views = Vec::new();
    for name in replicas.apps() {
        let owner = Owner::of(&name, me, &owners);
        let local = apps.get(&name).filter(|_| owner.is_this());
        let view = match local {
            Some(entry) => {
                StatusView::new(&name, entry.engine.status(), expose_values).with_owner(owner)
            }
            None => {
                let last = replicas.last_sync(&name).await;
                let last = last.map(|e| HistoryView::new(e, expose_values));
                StatusView::elsewhere(&name, owner, last)
            }
        };
        views.push(view);
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_comes_from_the_lock_holder() {
        let owners = BTreeMap::from([
            ("web".to_owned(), "r1".to_owned()),
            ("db".to_owned(), "r2".to_owned()),
        ]);
        let this = Owner::of("web", "r1", &owners);
        assert!(this.is_this());
        assert_eq!(this.describe(), "r1 (this replica)");
        assert_eq!(
            Owner::of("db", "r1", &owners),
            Owner::Other {
                replica: "r2".into()
            }
        );
        assert_eq!(Owner::of("api", "r1", &owners), Owner::Unowned);
        assert_eq!(
            serde_json::to_value(Owner::of("db", "r1", &owners)).expect("json"),
            serde_json::json!({"state": "other", "replica": "r2"})
        );
        assert_eq!(
            serde_json::to_value(Owner::Unowned).expect("json"),
            serde_json::json!({"state": "unowned"})
        );
    }
}
