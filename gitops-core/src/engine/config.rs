//! Engine policies and their defaults.

use std::time::Duration;

use crate::window::SyncWindows;

/// Exponential backoff for transient failures, per revision; reset on success.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First delay (default 1 s).
    pub initial: Duration,
    /// Growth per attempt (default 2).
    pub factor: f32,
    /// Largest delay (default 5 min).
    pub max_delay: Duration,
    /// Retries before the revision is marked failed (default 10).
    pub max_attempts: usize,
    /// Add a random 0–100% of each delay, so replicas do not retry in step (default on).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
            jitter: true,
        }
    }
}

/// What an engine does when a write-back finds that the same file changed
/// upstream since the deployed revision (nothing is ever overwritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WritebackConflict {
    /// Leave the target as it is and keep reporting the drift (default): a
    /// person decides; the next revision is tried again.
    #[default]
    Keep,
    /// Revert those resources to Git, as the Retry strategy would.
    Revert,
}

/// How an engine behaves. Every field has a documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The application name: the key of this engine's records in the state
    /// store (default `default`).
    pub name: String,
    /// How often pull mode polls the source (default 30 s).
    pub interval: Duration,
    /// Random extra fraction of `interval` added to each wait, so many agents
    /// do not poll in step (default 0.1 = up to 10%).
    pub interval_jitter: f64,
    /// How often pull mode observes every managed resource for drift, even
    /// when Git is quiet (default 60 s).
    pub drift_interval: Duration,
    /// Resources applied at once inside a wave (default 8).
    pub concurrency: usize,
    /// Limit for each observe, apply, delete or health call (default 60 s).
    pub call_timeout: Duration,
    /// How long a wave may stay `Progressing` before it fails (default 5 min).
    pub health_timeout: Duration,
    /// Pause between health checks of a wave (default 2 s).
    pub health_poll: Duration,
    /// Backoff for transient failures.
    pub retry: RetryPolicy,
    /// Delete resources that left Git (default on; only inventory ids, and
    /// only after every apply of the sync succeeded).
    pub prune: bool,
    /// Resources observed per batch (default 1,000); bounds the memory held
    /// for observations.
    pub observe_chunk: usize,
    /// History entries kept per application (default 100).
    pub history_limit: usize,
    /// Accept a revision that would delete every managed resource (default
    /// off: a directory deleted in Git must not wipe production by accident).
    pub allow_empty: bool,
    /// When a revision fails (retries exhausted, or not healthy in time),
    /// redeploy the last healthy revision and mark the failed one bad until
    /// a newer commit arrives (default off).
    pub auto_rollback: bool,
    /// Limit for each quality gate (default 10 min); a gate that takes
    /// longer fails.
    pub gate_timeout: Duration,
    /// After a manual rollback, advance again by itself once a commit newer
    /// than the one rolled back from appears (default off: stay pinned until
    /// `resume()`).
    pub unpin_on_new_commit: bool,
    /// What a write-back conflict falls back to (default
    /// [`WritebackConflict::Keep`]).
    pub writeback_conflict: WritebackConflict,
    /// When syncs may change the target (default: no windows, always).
    pub windows: SyncWindows,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            interval: Duration::from_secs(30),
            interval_jitter: 0.1,
            drift_interval: Duration::from_secs(60),
            concurrency: 8,
            call_timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(300),
            health_poll: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            prune: true,
            observe_chunk: 1_000,
            history_limit: 100,
            allow_empty: false,
            auto_rollback: false,
            unpin_on_new_commit: false,
            gate_timeout: Duration::from_secs(600),
            writeback_conflict: WritebackConflict::Keep,
            windows: SyncWindows::new(),
        }
    }
}
