//! A replica's settings ([`ReplicaConfig`]) and why it could not start
//! ([`ClusterError`]).

use std::time::Duration;

use gitops_core::store::AuditRetention;

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
    /// (default: the TTL). Zero is refused at start; anything above
    /// [`MAX_REBALANCE_INTERVAL`] (a year, `Duration::MAX` included) counts
    /// as that: in practice, on watch events only.
    pub rebalance_interval: Option<Duration>,
    /// Claim transactions sent at once (default 32); each claims up to 64
    /// applications.
    pub claim_concurrency: usize,
    /// How many newly started engines run their first sync at once
    /// (default 64); the others wait their turn, so that claiming
    /// thousands of applications at once (a start, a failover) does not
    /// send thousands of syncs to etcd at the same moment. An engine waits
    /// at most 10 s for the one before it.
    pub start_concurrency: usize,
    /// How long the audit records of the applications are kept (default:
    /// 90 days, 100,000 records per application).
    pub audit_retention: AuditRetention,
}

/// The longest timer between two rebalances: one year. Longer intervals
/// (`Duration::MAX` included) are cut to it.
pub const MAX_REBALANCE_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The longest lease etcd grants: 9,000,000,000 s (etcd's `MaxLeaseTTL`).
pub const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

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
            start_concurrency: 64,
            audit_retention: AuditRetention::default(),
        }
    }

    /// Sets how often the assignment is re-checked when the watch is quiet.
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = Some(interval);
        self
    }

    /// Sets how many engines run their first sync at once.
    pub fn start_concurrency(mut self, n: usize) -> Self {
        self.start_concurrency = n;
        self
    }

    /// Sets how long audit records are kept.
    pub fn audit_retention(mut self, retention: AuditRetention) -> Self {
        self.audit_retention = retention;
        self
    }

    /// The timer between rebalances: the interval (default the TTL), at
    /// most [`MAX_REBALANCE_INTERVAL`].
    pub(super) fn rebalance_every(&self) -> Duration {
        self.rebalance_interval
            .unwrap_or(self.ttl)
            .min(MAX_REBALANCE_INTERVAL)
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
        if self.ttl > MAX_TTL {
            return bad(format!(
                "ttl {:?}: etcd grants leases of at most {} s",
                self.ttl,
                MAX_TTL.as_secs()
            ));
        }
        if self.rebalance_interval == Some(Duration::ZERO) {
            return bad("rebalance_interval must be more than zero".into());
        }
        if self.claim_concurrency == 0 {
            return bad("claim_concurrency must be at least 1".into());
        }
        if self.start_concurrency == 0 {
            return bad("start_concurrency must be at least 1".into());
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
        assert!(
            ok.clone()
                .ttl(Duration::from_millis(2500))
                .validate()
                .is_err()
        );
        assert!(ok.clone().ttl(Duration::MAX).validate().is_err());
        assert!(
            ok.clone()
                .rebalance_interval(Duration::ZERO)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_huge_rebalance_interval_is_cut_to_a_year() {
        let config = ReplicaConfig::new("r1", "/g").rebalance_interval(Duration::MAX);
        assert!(config.validate().is_ok());
        assert_eq!(config.rebalance_every(), MAX_REBALANCE_INTERVAL);
        // What the session loop adds to the clock: no overflow.
        let _ = tokio::time::Instant::now() + config.rebalance_every();
        let ttl = ReplicaConfig::new("r1", "/g").ttl(Duration::from_secs(7));
        assert_eq!(ttl.rebalance_every(), Duration::from_secs(7));
    }
}
