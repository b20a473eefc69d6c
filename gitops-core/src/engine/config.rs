//! Engine policies and their defaults: [`EngineConfig`] (built with
//! `#[must_use]` setters, one per knob), [`RetryPolicy`], [`WritebackConflict`].

use std::time::Duration;

use super::ChangeLimit;
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

/// How an engine behaves: every policy with its documented default, set
/// with one `#[must_use]` setter each and handed to
/// [`EngineBuilder::config`](super::EngineBuilder::config).
///
/// ```
/// use std::time::Duration;
/// use gitops_core::engine::EngineConfig;
///
/// let config = EngineConfig::default()
///     .interval(Duration::from_secs(10))
///     .drift_interval(Duration::from_secs(120))
///     .auto_rollback(true);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub(crate) interval: Duration,
    pub(crate) interval_jitter: f64,
    pub(crate) drift_interval: Duration,
    pub(crate) concurrency: usize,
    pub(crate) call_timeout: Duration,
    pub(crate) source_timeout: Duration,
    pub(crate) render_timeout: Duration,
    pub(crate) health_timeout: Duration,
    pub(crate) health_poll: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) prune: bool,
    pub(crate) observe_chunk: usize,
    pub(crate) history_limit: usize,
    pub(crate) allow_empty: bool,
    pub(crate) auto_rollback: bool,
    pub(crate) gate_timeout: Duration,
    pub(crate) unpin_on_new_commit: bool,
    pub(crate) writeback_conflict: WritebackConflict,
    pub(crate) windows: SyncWindows,
    pub(crate) delete_limit: Option<ChangeLimit>,
    pub(crate) change_limit: Option<ChangeLimit>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            interval_jitter: 0.1,
            drift_interval: Duration::from_secs(60),
            concurrency: 8,
            call_timeout: Duration::from_secs(60),
            source_timeout: Duration::from_secs(120),
            render_timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(300),
            health_poll: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            prune: true,
            observe_chunk: 1_000,
            history_limit: 100,
            allow_empty: false,
            auto_rollback: false,
            gate_timeout: Duration::from_secs(600),
            unpin_on_new_commit: false,
            writeback_conflict: WritebackConflict::Keep,
            windows: SyncWindows::new(),
            delete_limit: Some(ChangeLimit::DEFAULT_DELETES),
            change_limit: None,
        }
    }
}

impl EngineConfig {
    /// How often pull mode polls the source (default 30 s). `Duration::MAX`: only when triggered; zero is refused at build.
    #[must_use]
    pub fn interval(mut self, value: Duration) -> Self {
        self.interval = value;
        self
    }

    /// Random extra fraction of the poll interval added to each wait, so many agents do not poll in step (default 0.1 = up to 10%).
    #[must_use]
    pub fn interval_jitter(mut self, value: f64) -> Self {
        self.interval_jitter = value;
        self
    }

    /// How often pull mode observes every managed resource for drift, even when Git is quiet (default 60 s). `Duration::MAX`: only when triggered; zero is refused at build.
    #[must_use]
    pub fn drift_interval(mut self, value: Duration) -> Self {
        self.drift_interval = value;
        self
    }

    /// Resources applied at once inside a wave (default 8; at least 1).
    #[must_use]
    pub fn concurrency(mut self, value: usize) -> Self {
        self.concurrency = value;
        self
    }

    /// Limit for each observe, apply, delete or health call (default 60 s); a batch of observes gets one per 16 resources, at most 10.
    #[must_use]
    pub fn call_timeout(mut self, value: Duration) -> Self {
        self.call_timeout = value;
        self
    }

    /// Limit for each call to the source: a poll (with its fetch), a
    /// snapshot, an ancestry check (default 2 min; keep it above the
    /// source's own fetch timeout, 60 s for `GitSource`). A call that takes
    /// longer fails transiently and is retried with backoff; a snapshot
    /// still running is cancelled. `Duration::MAX`: no limit; zero is
    /// refused at build.
    #[must_use]
    pub fn source_timeout(mut self, value: Duration) -> Self {
        self.source_timeout = value;
        self
    }

    /// Limit for rendering a revision and computing its digests, which run
    /// on a blocking thread, off the async workers (default 60 s). A render
    /// that takes longer fails transiently and is retried with backoff.
    /// `Duration::MAX`: no limit; zero is refused at build.
    #[must_use]
    pub fn render_timeout(mut self, value: Duration) -> Self {
        self.render_timeout = value;
        self
    }

    /// How long a wave may stay `Progressing` before it fails (default 5 min).
    #[must_use]
    pub fn health_timeout(mut self, value: Duration) -> Self {
        self.health_timeout = value;
        self
    }

    /// Pause between health checks of a wave (default 2 s; zero is refused at build).
    #[must_use]
    pub fn health_poll(mut self, value: Duration) -> Self {
        self.health_poll = value;
        self
    }

    /// Backoff for transient failures (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Delete resources that left Git (default on; only inventory ids, and only after every apply of the sync succeeded).
    #[must_use]
    pub fn prune(mut self, on: bool) -> Self {
        self.prune = on;
        self
    }

    /// Resources observed per batch (default 1,000; at least 1); bounds the memory held for observations.
    #[must_use]
    pub fn observe_chunk(mut self, value: usize) -> Self {
        self.observe_chunk = value;
        self
    }

    /// History entries kept per application (default 100).
    #[must_use]
    pub fn history_limit(mut self, value: usize) -> Self {
        self.history_limit = value;
        self
    }

    /// Hold a revision that would delete more than this (a count **and** a
    /// percent of the managed resources) until it is confirmed
    /// ([`EngineHandle::confirm`](super::EngineHandle::confirm),
    /// [`Engine::confirm`](super::Engine::confirm)); default: more than 10
    /// resources and more than 50 %. `None`: no limit.
    #[must_use]
    pub fn delete_limit(mut self, limit: Option<ChangeLimit>) -> Self {
        self.delete_limit = limit;
        self
    }

    /// Hold a revision that would create, update or delete more than this
    /// until it is confirmed (default: no limit).
    #[must_use]
    pub fn change_limit(mut self, limit: Option<ChangeLimit>) -> Self {
        self.change_limit = limit;
        self
    }

    /// Accept a revision that would delete every managed resource (default off: a directory deleted in Git must not wipe production by accident).
    #[must_use]
    pub fn allow_empty(mut self, on: bool) -> Self {
        self.allow_empty = on;
        self
    }

    /// When a revision fails (retries exhausted, or not healthy in time), redeploy the last healthy revision and mark the failed one bad until a newer commit arrives (default off).
    #[must_use]
    pub fn auto_rollback(mut self, on: bool) -> Self {
        self.auto_rollback = on;
        self
    }

    /// Limit for each quality gate (default 10 min); a gate that takes longer reached no verdict and is retried with backoff.
    #[must_use]
    pub fn gate_timeout(mut self, value: Duration) -> Self {
        self.gate_timeout = value;
        self
    }

    /// After a manual rollback, advance again by itself once a commit newer than the one rolled back from appears (default off: stay pinned until `resume()`).
    #[must_use]
    pub fn unpin_on_new_commit(mut self, on: bool) -> Self {
        self.unpin_on_new_commit = on;
        self
    }

    /// What a write-back conflict falls back to (default [`WritebackConflict::Keep`]).
    #[must_use]
    pub fn writeback_conflict(mut self, policy: WritebackConflict) -> Self {
        self.writeback_conflict = policy;
        self
    }

    /// When syncs may change the target (default: no windows, always).
    #[must_use]
    pub fn windows(mut self, windows: SyncWindows) -> Self {
        self.windows = windows;
        self
    }
}
