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

use crate::id::ResourceId;
use crate::model::{Health, Observed, Resource};
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
}
