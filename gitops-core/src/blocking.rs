//! [`Blocking`]: a [`Target`] for a system whose client blocks (a SQLite
//! connection, a synchronous HTTP library, a serial device). Implement the
//! synchronous [`SyncTarget`] and wrap it; every call runs on tokio's
//! blocking pool (`spawn_blocking`), so the engine's async workers never
//! stall.
//!
//! What a timeout means here: the engine stops waiting after `call_timeout`
//! and reports the call as transient, but a blocking call cannot be
//! interrupted: it runs to its end on its thread, and its result is
//! dropped. An `apply` that finishes after its timeout has still changed the
//! target; the next drift check observes that and plans from it. Keep
//! per-call timeouts in the client itself where it has them.
//!
//! [`SyncTarget::differs`] and [`SyncTarget::check`] are forwarded as they
//! are: they decide from their arguments alone, so they run on the engine's
//! thread and must not call the blocking client.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//! use gitops_core::{Blocking, Observed, Resource, ResourceId, SyncTarget, Target, TargetError};
//!
//! /// Stands in for a synchronous client.
//! #[derive(Default)]
//! struct Table(Mutex<BTreeMap<String, gitops_core::Spec>>);
//!
//! impl SyncTarget for Table {
//!     fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
//!         let rows = self.0.lock().map_err(|_| TargetError::transient(id, "poisoned"))?;
//!         Ok(rows.get(id.name()).cloned().map(Observed::new))
//!     }
//!     fn apply(&self, r: &Resource) -> Result<(), TargetError> {
//!         let mut rows = self.0.lock().map_err(|_| TargetError::transient(&r.id, "poisoned"))?;
//!         rows.insert(r.id.name().to_owned(), r.spec.clone());
//!         Ok(())
//!     }
//!     fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
//!         let mut rows = self.0.lock().map_err(|_| TargetError::transient(id, "poisoned"))?;
//!         rows.remove(id.name());
//!         Ok(())
//!     }
//! }
//!
//! let target: Box<dyn Target> = Box::new(Blocking::new(Table::default()));
//! # let _ = target;
//! ```

use std::sync::Arc;

use async_trait::async_trait;

use crate::diff::Diff;
use crate::id::ResourceId;
use crate::model::{Health, Observed, Resource};
use crate::render::{DesiredState, RenderError};
use crate::target::{Target, TargetError};

/// A target whose calls may block the thread they run on. Same contract as
/// [`Target`] otherwise: `apply` idempotent, `delete` of a missing resource
/// succeeds.
pub trait SyncTarget: Send + Sync + 'static {
    /// The current state of one resource, `None` when it does not exist.
    fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError>;
    /// Creates or updates the resource to match `resource.spec`.
    fn apply(&self, resource: &Resource) -> Result<(), TargetError>;
    /// Deletes the resource.
    fn delete(&self, id: &ResourceId) -> Result<(), TargetError>;
    /// How the resource is doing; `Healthy` unless overridden.
    fn health(&self, _id: &ResourceId) -> Result<Health, TargetError> {
        Ok(Health::Healthy)
    }
    /// How the observed state differs from the desired one, as
    /// [`Target::differs`]: override it to compare what a type-coercing
    /// store returns, or to ignore fields it sets itself. Runs on the
    /// engine's thread: decide from the arguments, do not call the client.
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        Diff::specs(&observed.spec, &desired.spec)
    }
    /// Refuses a whole desired state before any of it is applied, as
    /// [`Target::check`]. Runs on the engine's thread, like `differs`.
    fn check(&self, _desired: &DesiredState) -> Result<(), RenderError> {
        Ok(())
    }
}

/// Runs a [`SyncTarget`]'s calls on tokio's blocking pool (see the module docs).
pub struct Blocking<T>(Arc<T>);

impl<T> Blocking<T> {
    /// Wraps `target`.
    pub fn new(target: T) -> Self {
        Self(Arc::new(target))
    }

    /// The wrapped target.
    pub fn inner(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Blocking<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocking").finish_non_exhaustive()
    }
}

/// Runs `call` on the blocking pool; a call that panicked is a permanent
/// error about `id` (the engine keeps running).
async fn off_thread<T: SyncTarget, R: Send + 'static>(
    target: &Arc<T>,
    id: &ResourceId,
    call: impl FnOnce(&T) -> Result<R, TargetError> + Send + 'static,
) -> Result<R, TargetError> {
    let target = target.clone();
    tokio::task::spawn_blocking(move || call(&target))
        .await
        .unwrap_or_else(|e| {
            Err(TargetError::permanent(
                id,
                format!("the target's call failed: {e}"),
            ))
        })
}

#[async_trait]
impl<T: SyncTarget> Target for Blocking<T> {
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
        let owned = id.clone();
        off_thread(&self.0, id, move |t| t.observe(&owned)).await
    }

    async fn apply(&self, resource: &Resource) -> Result<(), TargetError> {
        let owned = resource.clone();
        off_thread(&self.0, &resource.id, move |t| t.apply(&owned)).await
    }

    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
        let owned = id.clone();
        off_thread(&self.0, id, move |t| t.delete(&owned)).await
    }

    async fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        let owned = id.clone();
        off_thread(&self.0, id, move |t| t.health(&owned)).await
    }

    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        self.0.differs(desired, observed)
    }

    fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
        self.0.check(desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, Revision};

    /// Ignores `stamp` (set by the store itself) and refuses kind `Bad`.
    struct Stamped;

    impl SyncTarget for Stamped {
        fn observe(&self, _: &ResourceId) -> Result<Option<Observed>, TargetError> {
            Ok(None)
        }
        fn apply(&self, _: &Resource) -> Result<(), TargetError> {
            Ok(())
        }
        fn delete(&self, _: &ResourceId) -> Result<(), TargetError> {
            Ok(())
        }
        fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
            let mut seen = observed.spec.to_value();
            if let Some(map) = seen.as_object_mut() {
                map.remove("stamp");
            }
            Diff::between(&seen, &desired.spec.to_value())
        }
        fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
            match desired.resources().iter().find(|r| r.id.kind() == "Bad") {
                Some(r) => Err(RenderError::Invalid {
                    origin: r.origin.clone(),
                    message: "no".into(),
                }),
                None => Ok(()),
            }
        }
    }

    #[test]
    fn differs_and_check_are_the_sync_targets_own() {
        let target: Box<dyn Target> = Box::new(Blocking::new(Stamped));
        let id: ResourceId = "Row/a".parse().expect("id");
        let desired = Resource::new(id.clone(), serde_json::json!({"port": 80}));
        let same = Observed::new(serde_json::json!({"port": 80, "stamp": "12:00"}));
        assert_eq!(target.differs(&desired, &same), None);
        let other = Observed::new(serde_json::json!({"port": 81, "stamp": "12:00"}));
        assert!(target.differs(&desired, &other).is_some());

        let revision = Revision::new("main", "1");
        let mut bad = Resource::new("Bad/b".parse().expect("id"), serde_json::json!({}));
        bad.origin = Origin {
            path: "b.yaml".into(),
            document: 0,
        };
        let ok = DesiredState::new(revision.clone(), vec![desired]).expect("valid");
        assert!(target.check(&ok).is_ok());
        let refused = DesiredState::new(revision, vec![bad]).expect("valid");
        assert!(target.check(&refused).is_err());
    }
}
