//! Reference targets for `gitops`: [`FsTarget`] keeps a directory equal to
//! the files in Git, [`CommandTarget`] drives any command-line tool.
//!
//! ```
//! use gitops_core::{FilesRender, Render, Revision, Snapshot, Target};
//! use gitops_targets::FsTarget;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let target = FsTarget::open(dir.path())?;
//! let snapshot = Snapshot::from_files(
//!     Revision::new("main", "0".repeat(40)),
//!     [("etc/app.conf", &b"port = 80\n"[..])],
//! )?;
//! for file in FilesRender::new().render(&snapshot)?.resources() {
//!     target.apply(file).await?;
//! }
//! assert_eq!(std::fs::read_to_string(dir.path().join("etc/app.conf"))?, "port = 80\n");
//! # Ok(())
//! # }
//! ```
pub mod command;
pub mod fs;

pub use command::{CommandConfigError, CommandTarget, CommandTargetBuilder};
pub use fs::{Durability, FsOpenError, FsOptions, FsTarget};
