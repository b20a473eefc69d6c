//! Runnable examples for the gitops library (see the `[[example]]` entries
//! in Cargo.toml), and the small helper they share to make a demo Git
//! repository with the `git` command.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod kv;

/// A Git repository in a directory, driven with the `git` command under a
/// fixed identity and without the user's configuration.
#[derive(Debug, Clone)]
pub struct DemoRepo {
    dir: PathBuf,
}

impl DemoRepo {
    /// Creates (`git init -b main`) a repository in `dir`.
    pub fn init(dir: impl Into<PathBuf>) -> Result<Self, String> {
        let repo = Self { dir: dir.into() };
        std::fs::create_dir_all(&repo.dir).map_err(|e| format!("{}: {e}", repo.dir.display()))?;
        repo.git(&["init", "-q", "-b", "main"])?;
        Ok(repo)
    }

    /// The repository's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `file://` URL for it.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Writes one file (creating directories).
    pub fn write(&self, path: &str, content: &str) -> Result<(), String> {
        let full = self.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&full, content).map_err(|e| format!("{}: {e}", full.display()))
    }

    /// Deletes one file.
    pub fn remove(&self, path: &str) -> Result<(), String> {
        let full = self.dir.join(path);
        std::fs::remove_file(&full).map_err(|e| format!("{}: {e}", full.display()))
    }

    /// Commits everything and returns the new commit id.
    pub fn commit(&self, message: &str) -> Result<String, String> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "-m", message])?;
        self.git(&["rev-parse", "HEAD"])
    }

    /// Runs `git` in the repository; returns its trimmed standard output.
    pub fn git(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("git")
            .current_dir(&self.dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Ada Operator")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada Operator")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .output()
            .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// The README's Rust code blocks, compiled as doc tests so they stay true
/// (here, where every crate of the workspace is a dependency).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Doc tests for `docs/engine.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/engine.md")]
pub struct EngineGuideDoctests;

/// Doc tests for `docs/manifests-and-plans.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/manifests-and-plans.md")]
pub struct ManifestsGuideDoctests;

/// Doc tests for `docs/git-source.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/git-source.md")]
pub struct GitSourceGuideDoctests;

/// Doc tests for `docs/targets.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/targets.md")]
pub struct TargetsGuideDoctests;

/// `docs/writing-a-target.md`: its Rust blocks are the pieces of
/// `examples/sqlite_target.rs` (built and run as an example; tests/docs.rs
/// checks that they are that file), so only its other blocks run here.
#[cfg(doctest)]
#[doc = include_str!("../docs/writing-a-target.md")]
pub struct WritingATargetGuideDoctests;

/// Doc tests for `docs/agent.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/agent.md")]
pub struct AgentGuideDoctests;

/// Doc tests for `docs/events.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/events.md")]
pub struct EventsGuideDoctests;

/// Doc tests for `docs/ci.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/ci.md")]
pub struct CiGuideDoctests;

/// Doc tests for `docs/stages-and-promotion.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/stages-and-promotion.md")]
pub struct StagesGuideDoctests;

/// Doc tests for `docs/secrets.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/secrets.md")]
pub struct SecretsGuideDoctests;

/// Doc tests for `docs/history-and-rollback.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/history-and-rollback.md")]
pub struct HistoryGuideDoctests;

/// Doc tests for `docs/stored-data.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/stored-data.md")]
pub struct StoredDataGuideDoctests;

/// Doc tests for `docs/performance.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/performance.md")]
pub struct PerformanceGuideDoctests;

/// Doc tests for `docs/comparison.md`.
#[cfg(doctest)]
#[doc = include_str!("../docs/comparison.md")]
pub struct ComparisonGuideDoctests;

/// Doc tests for `docs/README.md` (the guides' index).
#[cfg(doctest)]
#[doc = include_str!("../docs/README.md")]
pub struct GuidesIndexDoctests;
