//! Scale-out for `gitops` on etcd: several replicas share many applications,
//! each application run by exactly one replica at a time, taken over when a
//! replica dies, with every write fenced by ownership.
//!
//! - [`EtcdStore`]: the engine's [`StateStore`](gitops_core::StateStore) in
//!   etcd (inventories with digests, records, history, audit); every write
//!   is a transaction that checks the writer still owns the application.
//! - [`Replica`]: membership under a lease, rendezvous assignment, claims,
//!   failover within the lease TTL, fencing, graceful handover (see
//!   [`cluster`]).
//! - [`EtcdTarget`]: a key-value [`Target`](gitops_core::Target): resources
//!   become keys under a prefix, values as JSON, YAML or text.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gitops_core::testing::MemorySource;
//! use gitops_core::{Engine, ManifestRender};
//! use gitops_etcd::{EtcdClient, EtcdConfig, EtcdTarget, Replica, ReplicaConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = EtcdClient::connect(&EtcdConfig::from_env()?).await?; // GITOPS_ETCD_ENDPOINTS
//! let source = Arc::new(MemorySource::new("main")); // gitops-git's GitSource in real life
//! source.commit([("limits.yaml", "kind: Key\nmetadata: { name: max-conn }\nspec: { value: 100 }\n")]);
//! let apps = vec!["web".to_owned(), "api".to_owned()];
//! let replica = Replica::start(
//!     client.clone(),
//!     ReplicaConfig::new("replica-1", "/gitops"),
//!     apps,
//!     Arc::new(move |ctx: &gitops_etcd::AppContext| {
//!         // One engine per owned application, on the fenced store.
//!         let target = EtcdTarget::new(ctx.client().clone(), format!("/config/{}", ctx.app()))
//!             .fenced(ctx.fence().clone());
//!         Ok(Engine::builder()
//!             .name(ctx.app())
//!             .source(source.clone())
//!             .render(Arc::new(ManifestRender::new()))
//!             .target(Arc::new(target))
//!             .store(ctx.store())
//!             .build()?)
//!     }),
//! )
//! .await?;
//! tokio::signal::ctrl_c().await?;
//! replica.stop().await; // hands every application over at once
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod cluster;
pub mod fence;
pub mod store;
pub mod target;

pub use client::{
    DECODE_LIMIT, ENDPOINTS_ENV, EtcdClient, EtcdConfig, EtcdError, KEYS_PER_PAGE, MAX_VALUE_BYTES,
    TlsConfig, VALUES_PER_PAGE,
};
pub use cluster::{
    AppContext, ClusterError, ClusterEvent, EngineFactory, Replica, ReplicaConfig, ReplicaHandle,
    assign,
};
pub use fence::Fence;
pub use store::{EtcdStore, ReadStats};
pub use target::{EtcdTarget, ValueFormat};
#[cfg(feature = "testing")]
pub mod testing;

/// Doc tests for `docs/scale-out-on-etcd.md` (here, not in the examples
/// package, which stays free of etcd-client and protoc).
#[cfg(doctest)]
#[doc = include_str!("../../docs/scale-out-on-etcd.md")]
pub struct EtcdGuideDoctests;
