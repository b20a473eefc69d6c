//! Errors of this crate and their mapping onto [`SourceError`].

use gitops_core::SourceError;

/// A detailed error from the Git layer. It is what [`SourceError`] carries as
/// its `source`; its messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The builder was given something unusable. Permanent.
    #[error("invalid configuration: {what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The bare cache repository could not be created or opened. Permanent.
    #[error("cache repository {path}: {message}")]
    Cache {
        /// The cache directory.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Talking to the remote failed.
    #[error("fetch from {location} failed: {message}")]
    Remote {
        /// The remote, without credentials.
        location: String,
        /// The error chain, with credentials scrubbed.
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
    /// Reading objects from the cache failed.
    #[error("object database: {message}")]
    Objects {
        /// What went wrong.
        message: String,
    },
}

impl GitError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitError::Remote {
                transient: true,
                ..
            }
        )
    }
}

/// The error chain of a gix error on one line, each cause once.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Maps an object-database error onto a permanent [`SourceError`].
pub(crate) fn objects(context: String, err: impl std::fmt::Display) -> SourceError {
    let message = format!("{context}: {err}");
    SourceError::Other {
        message: message.clone(),
        transient: false,
        source: Some(Box::new(GitError::Objects { message })),
    }
}

/// Maps a task that could not run (panicked or was cancelled) onto a transient error.
pub(crate) fn join(err: tokio::task::JoinError) -> SourceError {
    SourceError::Other {
        message: format!("git worker task failed: {err}"),
        transient: true,
        source: None,
    }
}
