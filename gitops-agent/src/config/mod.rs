//! The multi-application config (`--config apps.toml`): many applications
//! for one agent process, each with its repository, release, path, render,
//! target and policies.
//!
//! ```toml
//! [defaults]               # optional; any per-app key may appear here
//! interval = "30s"
//! drift_interval = "60s"
//!
//! [[app]]
//! name = "db"                          # unique; [A-Za-z0-9._-]
//! repo = "https://git.example/ops.git"
//! branch = "main"                      # or tag, semver, commit
//! path = "apps/db"
//! render = "files"                     # files | manifests
//! target_dir = "/srv/db"               # or an [app.target] table
//! drift = "revert"                     # revert | ignore | writeback
//! prune = true
//!
//! [[app]]
//! name = "web"
//! repo = "https://git.example/ops.git"
//! path = "apps/web"
//! depends_on = ["db"]
//! [app.target]
//! kind = "dir"
//! path = "/srv/web"
//! ```
//!
//! Reading is pure and split in steps: [`mod@file`] parses the TOML (every
//! value with its position; an unknown key is an error), [`merge`] applies
//! `[defaults]` and the command line's flags and checks every value into an
//! [`AppSpec`] (the keys all three share are one [`Policy`]), [`overlap`] refuses two applications whose target
//! directories overlap, and [`mod@diff`] compares a running set with a new one
//! (what to start, stop and restart on a reload). Every error names the
//! file, the line, the application and the key:
//! `apps.toml:12: app "db": unknown key "targt_dir" (did you mean "target_dir"?)`.

pub mod diff;
pub mod file;
pub mod merge;
pub mod overlap;
pub mod policy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use gitops_git::ReferencePolicy;

pub use diff::{Changes, diff, start_order};
pub use overlap::{normalize, overlaps};
pub use policy::{Defaults, Policy};

/// Which part of the file an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Section {
    /// The top level (or a syntax error).
    Top,
    /// `[defaults]`.
    Defaults,
    /// An `[[app]]`: its name, or `#N` (1-based) when it has none yet.
    App(String),
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Top => Ok(()),
            Section::Defaults => f.write_str("[defaults]: "),
            Section::App(name) if name.starts_with('#') => write!(f, "app {name}: "),
            Section::App(name) => write!(f, "app {name:?}: "),
        }
    }
}

/// Why a config cannot be used. Names the file, line, application and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A value, a key or the syntax is wrong.
    #[error("{origin}:{line}: {section}{}{message}", key_prefix(.key))]
    Invalid {
        /// The file (as given, or `repo:path` for a config from Git).
        origin: String,
        /// The 1-based line.
        line: usize,
        /// The section.
        section: Section,
        /// The key, when the error is about one.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

/// Where an application's target is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AppTarget {
    /// A directory kept equal to the repository (`target_dir`, or an
    /// `[app.target]` table with `kind = "dir"` and `path`): absolute and
    /// normalised.
    Dir(PathBuf),
    /// Another kind of target, for the agent's target factory to build
    /// (the reference agent knows only directories).
    Other {
        /// `kind`.
        kind: String,
        /// The table's other keys.
        settings: toml::Table,
    },
}

/// One application, with `[defaults]` and the command line applied: what a
/// running application is compared by on a reload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AppSpec {
    /// Unique; `[A-Za-z0-9._-]`.
    pub name: String,
    /// The repository URL or path (a relative path is resolved against the
    /// config file's directory).
    pub repo: String,
    /// Branch, tag, semver range or commit (`branch = "main"` by default).
    pub release: ReferencePolicy,
    /// Only this directory of the repository.
    pub path: Option<String>,
    /// Where it is deployed.
    pub target: AppTarget,
    /// Applications that must be Ready first.
    pub depends_on: Vec<String>,
    /// How it is synced: the keys it shares with `[defaults]` and the
    /// command line.
    pub policy: Policy,
}

/// Where an application was declared, for errors found after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppLines {
    /// The `[[app]]` header.
    pub app: usize,
    /// `target_dir` or the `[app.target]` table.
    pub target: usize,
}

/// A checked config: the applications in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct AppsConfig {
    /// Where it came from (for messages).
    pub origin: String,
    /// The applications, in file order.
    pub apps: Vec<AppSpec>,
    /// Where each application was declared, by name.
    pub lines: BTreeMap<String, AppLines>,
}

impl AppsConfig {
    /// The application called `name`.
    pub fn get(&self, name: &str) -> Option<&AppSpec> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// An error about application `name`'s `key`, at its line.
    pub fn error(&self, name: &str, key: &str, message: impl Into<String>) -> ConfigError {
        let lines = self.lines.get(name).copied().unwrap_or_default();
        ConfigError::Invalid {
            origin: self.origin.clone(),
            line: if key == "target" || key == "target_dir" {
                lines.target
            } else {
                lines.app
            },
            section: Section::App(name.to_owned()),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// Parses and checks a config's text. `origin` names it in errors; relative
/// paths are resolved against `base` (the file's directory, absolute).
pub fn parse(
    text: &str,
    origin: &str,
    base: &Path,
    defaults: &Defaults,
) -> Result<AppsConfig, ConfigError> {
    let raw = file::parse(text, origin)?;
    merge::merge(&raw, &file::Source { text, origin }, base, defaults)
}

/// Reads and checks the config file at `path` (relative paths in it are
/// resolved against its directory).
pub fn load(path: &Path, defaults: &Defaults) -> Result<AppsConfig, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read)?;
    let absolute = std::path::absolute(path).map_err(read)?;
    let base = absolute.parent().unwrap_or(Path::new("/"));
    parse(&text, &path.display().to_string(), base, defaults)
}
