//! What a replica did: [`ClusterEvent`].

/// What a replica did, in order; subscribe with [`ReplicaHandle::subscribe`](super::ReplicaHandle::subscribe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Registered as a member under a new lease.
    Joined {
        /// The lease id.
        lease: i64,
    },
    /// Claimed an application; its engine is starting.
    Claimed {
        /// The application.
        app: String,
        /// The lock's create-revision (the fence).
        revision: i64,
    },
    /// Handed an application over: its engine stopped, the lock is being
    /// deleted.
    Released {
        /// The application.
        app: String,
    },
    /// Lost an application without handing it over (lock gone or taken);
    /// its engine was aborted.
    Lost {
        /// The application.
        app: String,
        /// Why.
        reason: String,
    },
    /// An engine could not be built or stopped by itself; the lock was
    /// released, and the replica claims the application again after one TTL
    /// (so an engine that fails at once does not spin).
    EngineFailed {
        /// The application.
        app: String,
        /// The error.
        error: String,
    },
    /// The lease could not be proven alive; every engine was stopped. The
    /// replica joins again under a new lease.
    LeaseLost {
        /// Why.
        reason: String,
    },
    /// Shut down: every application handed over, the lease revoked.
    Stopped,
}
