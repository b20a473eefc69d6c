//! Replica mode (feature `etcd`): the applications of `--config` or
//! `--config-repo` shared by several agent processes on etcd, each
//! application run by exactly one of them ([`gitops_etcd::Replica`]).
//!
//! - [`ReplicaArgs`]: `--etcd URL[,URL...] --replica-id ID`, the lease,
//!   the key prefix, TLS and user (the password from a file or
//!   `GITOPS_ETCD_PASSWORD`, never a flag, never logged).
//! - [`EtcdTargetSpec`]: `[app.target] kind = "etcd"` with `prefix`, an
//!   [`EtcdTarget`](gitops_etcd::EtcdTarget) fenced by the owning replica.
//!
//! In replica mode the state store is the shared, fenced
//! [`EtcdStore`](gitops_etcd::EtcdStore) (no redb), a dependency on an
//! application is read from its record in that store (it may run on
//! another replica), and `GET /status` says which replica owns each
//! application. The operator's guide is `docs/agent.md`, "Three replicas
//! on etcd".

mod args;
mod target;

use std::path::PathBuf;

pub use args::{PASSWORD_ENV, ReplicaArgs};
pub use target::{EtcdTargetSpec, KIND, first_overlap, nested};

/// Why replica mode cannot start. Never holds a password or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// `--etcd` without `--config` or `--config-repo`.
    #[error(
        "--etcd needs --config or --config-repo: replicas share the applications of a list \
         (one application with --target-dir runs in one process)"
    )]
    NeedsManyApps,
    /// `--etcd` with `--prune-removed`.
    #[error(
        "--prune-removed is not supported with --etcd: a removed application is handed over \
         and its resources stay"
    )]
    PruneRemoved,
    /// `--etcd` without `--replica-id`.
    #[error("--etcd needs --replica-id")]
    NoReplicaId,
    /// `--etcd-user` without a password.
    #[error(
        "--etcd-user needs a password: --etcd-password-file or the environment variable {PASSWORD_ENV}"
    )]
    NoPassword,
    /// A file a flag names cannot be read (TLS, password).
    #[error("{flag} {}: {message}", path.display())]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (never the content).
        message: String,
    },
    /// etcd cannot be reached, or refused the credentials, or the
    /// replica's settings are unusable.
    #[error("--etcd: {0}")]
    Cluster(#[from] gitops_etcd::ClusterError),
    /// Connecting to etcd failed.
    #[error("--etcd: {0}")]
    Etcd(#[from] gitops_etcd::EtcdError),
}

impl ReplicaError {
    /// Whether trying again later may succeed (etcd unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicaError::Cluster(e) => e.is_transient(),
            ReplicaError::Etcd(e) => e.is_transient(),
            _ => false,
        }
    }
}
