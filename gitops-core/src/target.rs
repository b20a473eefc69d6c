//! The [`Target`] trait: the system being kept equal to Git.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;

use crate::diff::Diff;
use crate::id::ResourceId;
use crate::model::{Health, Observed, Resource};
use crate::render::{DesiredState, RenderError};
use crate::source::BoxError;

/// How many observes the default [`Target::observe_many`] runs at once.
pub const DEFAULT_OBSERVE_CONCURRENCY: usize = 16;

/// Why a target call failed; always names the resource.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying: a timeout, a busy system, a lost connection.
    #[error("{id}: {message} (transient)")]
    Transient {
        /// The resource.
        id: ResourceId,
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Retrying will not help until the desired state or the target changes.
    #[error("{id}: {message}")]
    Permanent {
        /// The resource.
        id: ResourceId,
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The spec does not make sense for this target.
    #[error("{id}: invalid spec: {message}")]
    InvalidSpec {
        /// The resource.
        id: ResourceId,
        /// What is wrong with it.
        message: String,
    },
    /// The call took longer than allowed.
    #[error("{id}: timed out after {after:?}")]
    Timeout {
        /// The resource.
        id: ResourceId,
        /// The limit that expired.
        after: Duration,
    },
}

impl TargetError {
    /// A transient error about `id`.
    pub fn transient(id: &ResourceId, message: impl Into<String>) -> Self {
        TargetError::Transient {
            id: id.clone(),
            message: message.into(),
            source: None,
        }
    }

    /// A permanent error about `id`.
    pub fn permanent(id: &ResourceId, message: impl Into<String>) -> Self {
        TargetError::Permanent {
            id: id.clone(),
            message: message.into(),
            source: None,
        }
    }

    /// The spec of `id` does not make sense for this target (permanent).
    pub fn invalid(id: &ResourceId, message: impl Into<String>) -> Self {
        TargetError::InvalidSpec {
            id: id.clone(),
            message: message.into(),
        }
    }

    /// Keeps `source` as the typed cause of a transient or permanent error
    /// (`std::error::Error::source` returns it; the message stays as given).
    /// Other variants have no cause and are returned unchanged.
    ///
    /// ```
    /// use gitops_core::{ResourceId, TargetError};
    ///
    /// let id: ResourceId = "Row/users".parse()?;
    /// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "database busy");
    /// let e = TargetError::transient(&id, "insert failed").with_source(io);
    /// let cause = std::error::Error::source(&e).expect("kept");
    /// assert_eq!(cause.to_string(), "database busy");
    /// assert!(cause.downcast_ref::<std::io::Error>().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_source(self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        match self {
            TargetError::Transient { id, message, .. } => TargetError::Transient {
                id,
                message,
                source: Some(Box::new(source)),
            },
            TargetError::Permanent { id, message, .. } => TargetError::Permanent {
                id,
                message,
                source: Some(Box::new(source)),
            },
            other => other,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TargetError::Transient { .. } | TargetError::Timeout { .. }
        )
    }

    /// The resource this error is about.
    pub fn id(&self) -> &ResourceId {
        match self {
            TargetError::Transient { id, .. }
            | TargetError::Permanent { id, .. }
            | TargetError::InvalidSpec { id, .. }
            | TargetError::Timeout { id, .. } => id,
        }
    }
}

/// The system kept equal to Git. Implement four methods; the engine does the rest.
///
/// `apply` must be idempotent (applying the same resource twice is fine) and
/// `delete` of a resource that does not exist must succeed.
///
/// The methods are async and **must not block** the thread they run on (a
/// blocking call stalls the engine's other work, and the engine's
/// `call_timeout` cannot interrupt it). Wrap a synchronous client (a SQLite
/// connection, a blocking HTTP library) in `tokio::task::spawn_blocking`: a
/// call that times out is then reported as transient while the blocking
/// call itself runs to its end in the background.
///
/// Specs are [`Spec`](crate::Spec)s: compact canonical JSON, read typed
/// with [`Resource::spec_as`] or as a `serde_json::Value` with
/// [`Spec::to_value`](crate::Spec::to_value); `gitops_core::serde_json`
/// re-exports the crate, so a target needs no dependency of its own.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use gitops_core::{Observed, Resource, ResourceId, Spec, Target, TargetError, async_trait};
///
/// /// A key-value store: every resource is one key.
/// #[derive(Default)]
/// struct KvTarget(Mutex<HashMap<ResourceId, Spec>>);
///
/// #[async_trait]
/// impl Target for KvTarget {
///     async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError> {
///         Ok(self.0.lock().unwrap().get(id).cloned().map(Observed::new))
///     }
///     async fn apply(&self, r: &Resource) -> Result<(), TargetError> {
///         self.0.lock().unwrap().insert(r.id.clone(), r.spec.clone());
///         Ok(())
///     }
///     async fn delete(&self, id: &ResourceId) -> Result<(), TargetError> {
///         self.0.lock().unwrap().remove(id);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Target: Send + Sync {
    /// The current state of one resource, `None` when it does not exist.
    async fn observe(&self, id: &ResourceId) -> Result<Option<Observed>, TargetError>;

    /// Observes many resources; results are in the order of `ids`.
    ///
    /// The default runs [`observe`](Target::observe) with up to
    /// [`DEFAULT_OBSERVE_CONCURRENCY`] calls in flight. A target that can list
    /// its state in one call should override this.
    async fn observe_many(&self, ids: &[ResourceId]) -> Vec<Result<Option<Observed>, TargetError>> {
        // Collecting the (lazy) futures first sidesteps a higher-ranked lifetime
        // limitation of async-trait futures inside stream combinators.
        let calls: Vec<_> = ids.iter().map(|id| self.observe(id)).collect();
        futures::stream::iter(calls)
            .buffered(DEFAULT_OBSERVE_CONCURRENCY)
            .collect()
            .await
    }

    /// Creates or updates a resource to match `resource.spec`.
    async fn apply(&self, resource: &Resource) -> Result<(), TargetError>;

    /// Deletes a resource; deleting a missing resource succeeds.
    async fn delete(&self, id: &ResourceId) -> Result<(), TargetError>;

    /// Health after apply. The default says [`Health::Healthy`].
    async fn health(&self, id: &ResourceId) -> Result<Health, TargetError> {
        let _ = id;
        Ok(Health::Healthy)
    }

    /// How the observed state differs from the desired one; `None` when equal.
    ///
    /// The default compares the specs as JSON. Override it to ignore fields the
    /// target sets itself (timestamps, defaults, status).
    fn differs(&self, desired: &Resource, observed: &Observed) -> Option<Diff> {
        Diff::specs(&observed.spec, &desired.spec)
    }

    /// Refuses a whole desired state this target cannot hold, before any of
    /// it is applied: resources it does not manage, or two resources that
    /// would be the same object in it. A refusal is handled like a render
    /// error (nothing applied, the last good state stays, the revision is
    /// reported as refused), so a bad commit never half-applies. Name the
    /// file with [`RenderError::Invalid`]. The default accepts everything.
    fn check(&self, desired: &DesiredState) -> Result<(), RenderError> {
        let _ = desired;
        Ok(())
    }

    /// A token naming what this target holds now, for a target that can
    /// later prove cheaply that nothing it manages changed since
    /// ([`unchanged_since`](Target::unchanged_since)). The engine asks for
    /// it at the end of a sync that converged with every resource equal to
    /// Git, and stores it. It must change whenever this target writes,
    /// deletes or learns of different content. `None` (the default): the
    /// target cannot vouch, and every reconcile observes every resource.
    fn seal(&self) -> Option<String> {
        None
    }

    /// Whether every resource in `ids` provably holds what it held when
    /// [`seal`](Target::seal) returned `seal` (and `seal` is still this
    /// target's current token): `true` only with proof, `false` when
    /// anything changed or cannot be shown unchanged. The engine then
    /// skips snapshot, render and plan for a revision it already
    /// converged to. The default says `false`.
    async fn unchanged_since(&self, ids: &[ResourceId], seal: &str) -> bool {
        let _ = (ids, seal);
        false
    }
}
