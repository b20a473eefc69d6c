//! The core of `gitops`: the data model, the three traits a tool implements
//! ([`Source`], [`Render`], [`Target`]), the manifest renderers, the
//! dependency graph and the planner.
//!
//! Render a snapshot of manifests and print what a sync would do:
//!
//! ```
//! use gitops_core::{ManifestRender, Render, Revision, Snapshot};
//! use gitops_core::model::Inventory;
//! use gitops_core::plan::Planner;
//!
//! let manifests = r#"
//! kind: Secret
//! metadata: { name: tls }
//! spec: { cert: "..." }
//! ---
//! kind: ConfigFile
//! metadata: { name: web, dependsOn: [Secret/tls] }
//! spec: { port: 8080 }
//! "#;
//! let snapshot = Snapshot::from_files(
//!     Revision::new("main", "4b825dc642cb6eb9a060e54bf8d69288fbee4904"),
//!     [("app.yaml", manifests.as_bytes())],
//! )?;
//! let desired = ManifestRender::new().render(&snapshot)?;
//!
//! // Nothing observed in the target yet, nothing applied before.
//! let observed = vec![None; desired.len()];
//! let plan = Planner::new().plan(&desired, &observed, &Inventory::new())?;
//! println!("{plan}");
//! assert_eq!(plan.summary.create, 2);
//! assert_eq!(plan.waves[0].changes[0].id.to_string(), "Secret/tls");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `gitops-core` knows nothing of Git, files or etcd: those live in their own
//! crates behind the traits defined here.
//!
//! The crate root re-exports what a tool author needs: the traits, the
//! engine with its builder, config and errors, the model, the renderers,
//! the stores. The rest lives in its module: the planner's parts in
//! [`plan`], conditions and reasons in [`status`], stored records in
//! [`store`] (and [`record`]), clocks in [`window`], write-back requests in
//! [`writeback`], the graph in [`graph`].

pub mod blocking;
mod cancel;
mod canonical;
pub mod decrypt;
pub mod diff;
mod edit;
pub mod engine;
pub mod files;
pub mod gate;
pub mod graph;
pub mod id;
pub mod manifest;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod promote;
pub mod record;
#[cfg(feature = "redb")]
pub mod redb_store;
pub mod render;
pub mod render_cache;
mod rfc3339;
pub mod secret;
pub mod source;
pub mod spec;
pub mod status;
pub mod store;
pub mod sync;
pub mod target;
#[cfg(feature = "testing")]
pub mod testing;
pub mod window;
pub mod writeback;
mod yaml_lint;

pub use blocking::{Blocking, SyncTarget};
pub use cancel::Cancel;
pub use decrypt::{Decrypt, Identities, Recipients};
pub use diff::Diff;
pub use engine::{
    Dependency, Engine, EngineBuilder, EngineConfig, EngineError, EngineHandle, Needs, SyncReport,
};
pub use files::FilesRender;
pub use gate::{Gate, GateInput, GateResult, GateStage, gate_fn};
pub use id::{IdError, ResourceId};
pub use manifest::ManifestRender;
pub use model::{
    DriftPolicy, Health, MAX_FILE_BYTES, Observed, Policy, Resource, Revision, Snapshot,
    SnapshotFile,
};
pub use pipeline::{Pipeline, PipelineBuilder, PipelineError, Stage};
pub use plan::{Plan, PlanError};
pub use promote::{PromoteError, Promoter};
#[cfg(feature = "redb")]
pub use redb_store::RedbStore;
pub use render::{
    DesiredState, FileEdit, Render, RenderError, RenderParts, RenderWarning, WarningKind,
};
pub use render_cache::RenderCache;
pub use source::{Source, SourceError};
pub use spec::{Spec, SpecError};
pub use status::{ConditionKind, Status};
pub use store::{AuditQuery, AuditRecord, HistoryEntry, MemoryStore, StateStore, StoreError};
pub use target::{Target, TargetError};
pub use window::{SyncWindow, SyncWindows};
pub use writeback::{Writeback, WritebackError};

/// `async_trait`, re-exported so implementors need no extra dependency.
pub use async_trait::async_trait;
/// `serde_json`, re-exported on purpose: specs and observations are
/// [`serde_json::Value`]s, and a target needs no dependency of its own.
pub use serde_json;
