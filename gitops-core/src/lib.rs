//! The core of `gitops`: the data model, the three traits a tool implements
//! ([`Source`], [`Render`], [`Target`]), the manifest renderers, the
//! dependency graph and the planner.
//!
//! Render a snapshot of manifests and print what a sync would do:
//!
//! ```
//! use gitops_core::{Inventory, ManifestRender, Planner, Render, Revision, Snapshot};
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

mod cancel;
mod canonical;
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
pub mod source;
pub mod status;
pub mod store;
pub mod sync;
pub mod target;
#[cfg(feature = "testing")]
pub mod testing;
pub mod window;
pub mod writeback;

pub use cancel::{Cancel, CancelOnDrop};
pub use diff::{Diff, FieldChange};
pub use engine::{
    Dependency, Engine, EngineBuilder, EngineConfig, EngineError, EngineHandle, Needs, SyncReport,
};
pub use files::FilesRender;
pub use gate::{Gate, GateInput, GateResult, GateStage, gate_fn};
pub use graph::{CycleError, DependencyGraph};
pub use id::{IdError, ResourceId};
pub use manifest::ManifestRender;
pub use model::{
    DriftPolicy, Health, Inventory, InventoryEntry, MAX_FILE_BYTES, Observed, Origin, Policy,
    Resource, Revision, Snapshot, SnapshotFile, SnapshotPathError,
};
pub use pipeline::{Pipeline, PipelineBuilder, PipelineError, Soaking, Stage};
pub use plan::{Change, Plan, PlanError, PlannedChange, Planner, Summary, Wave};
pub use promote::{PromoteError, Promoter};
#[cfg(feature = "redb")]
pub use redb_store::RedbStore;
pub use render::{DesiredState, FileEdit, Render, RenderError};
pub use source::{BoxError, Source, SourceError};
pub use status::{BlockReason, Blocked, Condition, ConditionKind, Status};
pub use store::{
    AuditAction, AuditQuery, AuditRecord, AuditRetention, EngineRecord, HistoryEntry, MemoryStore,
    StateStore, StoreError,
};
pub use target::{Target, TargetError};
pub use window::{Clock, InProgress, ManualClock, SyncWindow, SyncWindows, SystemClock};
pub use writeback::{Drifted, Writeback, WritebackError, WritebackRequest, WrittenBack};

/// `async_trait`, re-exported so implementors need no extra dependency.
pub use async_trait::async_trait;
