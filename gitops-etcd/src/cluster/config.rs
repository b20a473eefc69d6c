//! A replica's settings ([`ReplicaConfig`]) and why it could not start
//! ([`ClusterError`]).

use std::time::Duration;

use crate::client::EtcdError;
use crate::fence::escape;

/// Why a replica could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd failed.
    #[error("replica {replica}: {source}")]
    Etcd {
        /// The replica.
        replica: String,
        /// The etcd error.
        #[source]
        source: EtcdError,
    },
    /// The configuration is unusable.
    #[error("replica {replica}: invalid configuration: {message}")]
    Config {
        /// The replica.
        replica: String,
        /// What is wrong.
        message: String,
    },
}

impl ClusterError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Etcd { source, .. } => source.is_transient(),
            ClusterError::Config { .. } => false,
        }
    }
}

/// How a replica behaves. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's name, unique among live replicas (no `/`). A replica
    /// restarted under the same name waits until its previous incarnation's
    /// lease has expired.
    pub id: String,
    /// The key prefix the cluster shares (e.g. `/gitops`).
    pub prefix: String,
    /// Lease time-to-live (default 5 s, at least 2 s, whole seconds): a
    /// killed replica's applications are taken over about this long after
    /// its death; a replica stops its engines when it has not renewed the
    /// lease for TTL/2.
    pub ttl: Duration,
    /// How long a graceful handover waits for an engine to finish the
    /// resources in flight before aborting it (default 10 s).
    pub handover_timeout: Duration,
    /// How often the assignment is re-checked even when the watch is quiet
    /// (default: the TTL).
    pub rebalance_interval: Option<Duration>,
    /// Claims sent at once (default 32).
    pub claim_concurrency: usize,
}

impl ReplicaConfig {
    /// The defaults for replica `id` in cluster `prefix`.
    pub fn new(id: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            prefix: prefix.into().trim_end_matches('/').to_owned(),
            ttl: Duration::from_secs(5),
            handover_timeout: Duration::from_secs(10),
            rebalance_interval: None,
            claim_concurrency: 32,
        }
    }

    /// Sets the lease TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The keep-alive silence after which the replica stops its engines: TTL/2.
    pub fn safety_margin(&self) -> Duration {
        self.ttl / 2
    }

    pub(super) fn validate(&self) -> Result<(), ClusterError> {
        let bad = |message: String| {
            Err(ClusterError::Config {
                replica: self.id.clone(),
                message,
            })
        };
        if self.id.is_empty() || self.id.contains('/') {
            return bad("the id must be non-empty and contain no '/'".into());
        }
        if self.ttl < Duration::from_secs(2) || self.ttl.subsec_nanos() != 0 {
            return bad(format!(
                "ttl {:?}: etcd leases are whole seconds, at least 2 s",
                self.ttl
            ));
        }
        if self.claim_concurrency == 0 {
            return bad("claim_concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The key of the lock of `app`.
    pub(super) fn lock_key(&self, app: &str) -> String {
        format!("{}/locks/{}", self.prefix, escape(app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let ok = ReplicaConfig::new("r1", "/g");
        assert!(ok.validate().is_ok());
        assert!(ReplicaConfig::new("a/b", "/g").validate().is_err());
        assert!(ok.clone().ttl(Duration::from_secs(1)).validate().is_err());
        assert!(ok.ttl(Duration::from_millis(2500)).validate().is_err());
    }
}
