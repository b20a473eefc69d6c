//! Prometheus metrics (`prometheus-client`, OpenMetrics text on `GET /metrics`).
//!
//! One [`Metrics`] registry serves every application of an agent; each
//! series carries the application's name in its `app` label. The names follow
//! what Flux and Argo CD users already graph: counters end in `_total`,
//! durations are `_seconds` histograms.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `gitops_reconcile_duration_seconds` | histogram | `app`, `result` |
//! | `gitops_sync_total` | counter | `app`, `result` |
//! | `gitops_resources` | gauge | `app`, `state` (`managed`, `drifted`, `failed`) |
//! | `gitops_drift_detected_total` | counter | `app` |
//! | `gitops_drift_reverted_total` | counter | `app` |
//! | `gitops_git_poll_duration_seconds` | histogram | `app` |
//! | `gitops_git_fetch_total` | counter | `app`, `result` (`success`, `failure`) |
//! | `gitops_app_info` | gauge (always 1) | `app`, `revision`, `ready` (`true`, `false`) |
//! | `gitops_last_sync_timestamp_seconds` | gauge | `app` |
//! | `gitops_webhook_requests_total` | counter | `provider`, `result` |
//! | `gitops_notifications_total` | counter | `sink` (`scheme://host[:port]`), `result` |
//! | `gitops_app_restarts_total` | counter | `app`: its engine ended by itself and was restarted (`--config`) |
//!
//! A sync's `result` is the history's [`SyncResult`] in snake case
//! (`converged`, `failed`, `superseded`, `interrupted`, `gate_failed`,
//! `window_closed`); syncs that did not run (blocked, suspended, aborted) and
//! plans are not counted. `gitops_resources`: `managed` is what the last sync
//! declared from Git (created, updated or unchanged), `failed` how many of
//! those failed in the last sync, `drifted` how many the last reconcile found
//! drifted and did not resolve. `gitops_app_info` has one series per
//! application: when the deployed revision (`main@sha1:<id>`, empty before
//! the first) or readiness changes, the old series is removed. Label values
//! are names, ids and enums: never a secret, a URL path or file content.
//!
//! ```
//! use gitops_agent::metrics::{Metrics, WebhookProvider, WebhookResult};
//!
//! let metrics = Metrics::new();
//! metrics.webhook(WebhookProvider::Github, WebhookResult::Accepted);
//! let text = metrics.encode();
//! assert!(text.contains(r#"gitops_webhook_requests_total{provider="github",result="accepted"} 1"#));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use gitops_core::engine::{Event, SyncResult};
use gitops_core::status::{ConditionKind, Status};
use gitops_core::{Cancel, Engine, Revision, Snapshot, Source, SourceError};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{broadcast, watch};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Locks a mutex, taking over the data of a holder that panicked (every
/// critical section here leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Implements `as_str` and [`EncodeLabelValue`] for a label enum.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),*
                }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Which webhook endpoint a request came to (the `provider` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookProvider {
    /// `POST /hooks/github`.
    Github,
    /// `POST /hooks/gitlab`.
    Gitlab,
    /// `POST /hooks/generic` (Standard Webhooks).
    Generic,
    /// `POST /retry`.
    Retry,
    /// `POST /confirm`.
    Confirm,
}

label_values!(WebhookProvider {
    Github => "github",
    Gitlab => "gitlab",
    Generic => "generic",
    Retry => "retry",
    Confirm => "confirm",
});

/// What became of a webhook request (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookResult {
    /// Authenticated and acted on.
    Accepted,
    /// Authenticated but nothing to do (ping, other ref, replayed delivery).
    Ignored,
    /// Missing or wrong signature: 401.
    Unauthorized,
    /// Authenticated but unreadable: 400.
    BadRequest,
}

label_values!(WebhookResult {
    Accepted => "accepted",
    Ignored => "ignored",
    Unauthorized => "unauthorized",
    BadRequest => "bad_request",
});

/// What became of one notification to one sink (the `result` label of
/// `gitops_notifications_total`, and a delivery's outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotificationResult {
    /// The sink answered 2xx.
    Delivered,
    /// Every attempt failed (connection error, timeout, 5xx, 429).
    Failed,
    /// The sink answered a status that retrying will not change (4xx, 3xx).
    Rejected,
    /// The queue was full: never sent.
    Dropped,
}

label_values!(NotificationResult {
    Delivered => "delivered",
    Failed => "failed",
    Rejected => "rejected",
    Dropped => "dropped",
});

/// The state of an application's resources (the `state` label of `gitops_resources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceState {
    /// Declared in Git by the last sync's revision.
    Managed,
    /// Found drifted by the last reconcile and not resolved.
    Drifted,
    /// Failed to apply or become healthy in the last sync.
    Failed,
}

label_values!(ResourceState {
    Managed => "managed",
    Drifted => "drifted",
    Failed => "failed",
});

/// How a Git poll ended (the `result` label of `gitops_git_fetch_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FetchResult {
    /// The remote answered.
    Success,
    /// The poll failed (unreachable, authentication, verification, ...).
    Failure,
}

label_values!(FetchResult {
    Success => "success",
    Failure => "failure",
});

/// A sync's result as a label value (the history's [`SyncResult`] in snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SyncLabel(&'static str);

impl From<SyncResult> for SyncLabel {
    fn from(result: SyncResult) -> Self {
        Self(match result {
            SyncResult::Converged => "converged",
            SyncResult::Failed => "failed",
            SyncResult::Superseded => "superseded",
            SyncResult::Interrupted => "interrupted",
            SyncResult::Planned => "planned",
            SyncResult::GateFailed => "gate_failed",
            SyncResult::WindowClosed => "window_closed",
            SyncResult::Blocked => "blocked",
            SyncResult::Suspended => "suspended",
            SyncResult::Aborted => "aborted",
        })
    }
}

impl EncodeLabelValue for SyncLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(self.0)
    }
}

/// Readiness as a label value (`true` or `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReadyLabel(bool);

impl EncodeLabelValue for ReadyLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(if self.0 { "true" } else { "false" })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncLabels {
    app: String,
    result: SyncLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    app: String,
    state: ResourceState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FetchLabels {
    app: String,
    result: FetchResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InfoLabels {
    app: String,
    revision: String,
    ready: ReadyLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    provider: WebhookProvider,
    result: WebhookResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    sink: String,
    result: NotificationResult,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 10 ms to ~82 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

fn poll_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

struct Inner {
    registry: Mutex<Registry>,
    reconcile_duration: HistogramFamily<SyncLabels>,
    syncs: Family<SyncLabels, Counter>,
    resources: Family<StateLabels, Gauge>,
    drift_detected: Family<AppLabels, Counter>,
    drift_reverted: Family<AppLabels, Counter>,
    poll_duration: HistogramFamily<AppLabels>,
    fetches: Family<FetchLabels, Counter>,
    app_info: Family<InfoLabels, Gauge>,
    /// The one `gitops_app_info` label set of each application.
    info_current: Mutex<HashMap<String, InfoLabels>>,
    last_sync: Family<AppLabels, Gauge<f64, AtomicU64>>,
    webhooks: Family<WebhookLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    restarts: Family<AppLabels, Counter>,
}

impl Inner {
    fn new() -> Self {
        let inner = Self {
            registry: Mutex::new(Registry::default()),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            syncs: Family::default(),
            resources: Family::default(),
            drift_detected: Family::default(),
            drift_reverted: Family::default(),
            poll_duration: Family::new_with_constructor(poll_histogram),
            fetches: Family::default(),
            app_info: Family::default(),
            info_current: Mutex::new(HashMap::new()),
            last_sync: Family::default(),
            webhooks: Family::default(),
            notifications: Family::default(),
            restarts: Family::default(),
        };
        inner.register();
        inner
    }

    fn register(&self) {
        let mut r = lock(&self.registry);
        r.register_with_unit(
            "gitops_reconcile_duration",
            "How long a sync took, by result",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "gitops_sync",
            "Syncs that ran, by result",
            self.syncs.clone(),
        );
        r.register(
            "gitops_resources",
            "Resources by state: managed (declared in Git), drifted (unresolved), failed (last sync)",
            self.resources.clone(),
        );
        r.register(
            "gitops_drift_detected",
            "Resources found drifted",
            self.drift_detected.clone(),
        );
        r.register(
            "gitops_drift_reverted",
            "Drifted resources re-applied from Git",
            self.drift_reverted.clone(),
        );
        r.register_with_unit(
            "gitops_git_poll_duration",
            "How long a poll of the Git source took",
            Unit::Seconds,
            self.poll_duration.clone(),
        );
        r.register(
            "gitops_git_fetch",
            "Polls of the Git source, by result",
            self.fetches.clone(),
        );
        r.register(
            "gitops_app_info",
            "The deployed revision and readiness of an application (always 1)",
            self.app_info.clone(),
        );
        r.register_with_unit(
            "gitops_last_sync_timestamp",
            "When the last sync that ran finished (Unix time)",
            Unit::Seconds,
            self.last_sync.clone(),
        );
        r.register(
            "gitops_webhook_requests",
            "Incoming webhook requests, by endpoint and result",
            self.webhooks.clone(),
        );
        r.register(
            "gitops_notifications",
            "Outgoing notifications, by sink (scheme://host[:port]) and result",
            self.notifications.clone(),
        );
        r.register(
            "gitops_app_restarts",
            "Restarts of an application whose engine ended by itself (a panic or an error)",
            self.restarts.clone(),
        );
    }
}

/// The agent's metrics. Cheap to clone; clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A new registry with the agent's series (no samples yet).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner::new()),
        }
    }

    /// The OpenMetrics text exposition of every series ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = lock(&self.inner.registry);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            // Writing to a String cannot fail; a metric's own encoder might.
            tracing::warn!(error = %e, "encoding the metrics failed");
            return "# EOF\n".to_owned();
        }
        text
    }

    /// Gives `f` the `prometheus-client` registry, to add a tool's own series.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut lock(&self.inner.registry))
    }

    /// Counts one webhook request.
    pub fn webhook(&self, provider: WebhookProvider, result: WebhookResult) {
        self.inner
            .webhooks
            .get_or_create(&WebhookLabels { provider, result })
            .inc();
    }

    /// Counts one notification to `sink` (a redacted `scheme://host[:port]`).
    pub fn notification(&self, sink: &str, result: NotificationResult) {
        self.inner
            .notifications
            .get_or_create(&NotificationLabels {
                sink: sink.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts one restart of `app`'s engine after it ended by itself.
    pub fn restarted(&self, app: &str) {
        self.inner
            .restarts
            .get_or_create(&AppLabels {
                app: app.to_owned(),
            })
            .inc();
    }

    /// Wraps `source` so that polls and fetches are timed and counted for `app`.
    pub fn source(&self, app: &str, source: Arc<dyn Source>) -> Arc<dyn Source> {
        Arc::new(TimedSource {
            inner: source,
            app: AppLabels {
                app: app.to_owned(),
            },
            metrics: self.clone(),
        })
    }

    /// Follows `engine`'s events and status in the background (call before
    /// `engine.run()`); the task ends when the engine is dropped.
    pub fn watch(&self, engine: &Engine) -> tokio::task::JoinHandle<()> {
        let app = engine.name().to_owned();
        let events = engine.subscribe();
        let status = engine.handle().watch_status();
        self.record_status(&app, &status.borrow());
        let metrics = self.clone();
        tokio::spawn(async move { metrics.follow(app, events, status).await })
    }

    async fn follow(
        self,
        app: String,
        mut events: broadcast::Receiver<Event>,
        mut status: watch::Receiver<Status>,
    ) {
        use broadcast::error::RecvError;
        let mut failed = 0;
        let mut status_open = true;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => self.record_event(&app, &event, &mut failed),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "metrics lagged behind the engine's events");
                    }
                    Err(RecvError::Closed) => return,
                },
                changed = status.changed(), if status_open => match changed {
                    Ok(()) => {
                        let current = status.borrow_and_update().clone();
                        self.record_status(&app, &current);
                    }
                    Err(_) => status_open = false,
                },
            }
        }
    }

    /// Records one engine event; `failed` counts the current sync's failures.
    fn record_event(&self, app: &str, event: &Event, failed: &mut i64) {
        let labels = AppLabels {
            app: app.to_owned(),
        };
        let inner = &self.inner;
        match event {
            Event::SyncStarted { .. } => *failed = 0,
            Event::ResourceFailed { .. } => *failed += 1,
            Event::DriftDetected { .. } => {
                inner.drift_detected.get_or_create(&labels).inc();
            }
            Event::DriftReverted { .. } => {
                inner.drift_reverted.get_or_create(&labels).inc();
            }
            Event::SyncFinished {
                result,
                duration,
                summary,
                ..
            } if result.ran() && *result != SyncResult::Planned => {
                let sync = SyncLabels {
                    app: app.to_owned(),
                    result: SyncLabel::from(*result),
                };
                inner.syncs.get_or_create(&sync).inc();
                inner
                    .reconcile_duration
                    .get_or_create(&sync)
                    .observe(duration.as_secs_f64());
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default();
                inner.last_sync.get_or_create(&labels).set(now);
                let managed = summary.create + summary.update + summary.unchanged;
                self.set_resources(app, ResourceState::Managed, count(managed));
                self.set_resources(app, ResourceState::Failed, *failed);
            }
            _ => {}
        }
    }

    /// Records what the engine's status says: `gitops_app_info` and the drifted count.
    fn record_status(&self, app: &str, status: &Status) {
        let revision = status
            .last_applied
            .as_ref()
            .map(Revision::to_string)
            .unwrap_or_default();
        self.set_info(app, revision, status.is(ConditionKind::Ready));
        let drifted = status.drift.iter().filter(|d| !d.resolved).count();
        self.set_resources(app, ResourceState::Drifted, count(drifted));
    }

    fn set_resources(&self, app: &str, state: ResourceState, value: i64) {
        self.inner
            .resources
            .get_or_create(&StateLabels {
                app: app.to_owned(),
                state,
            })
            .set(value);
    }

    /// Removes the gauges of `app` (no longer run): `gitops_app_info`,
    /// `gitops_resources`, `gitops_last_sync_timestamp_seconds`, and its
    /// `gitops_app_restarts_total`.
    pub fn forget(&self, app: &str) {
        let (inner, app) = (&self.inner, app.to_owned());
        if let Some(labels) = lock(&inner.info_current).remove(&app) {
            inner.app_info.remove(&labels);
        }
        for state in [
            ResourceState::Managed,
            ResourceState::Drifted,
            ResourceState::Failed,
        ] {
            let app = app.clone();
            inner.resources.remove(&StateLabels { app, state });
        }
        inner.restarts.remove(&AppLabels { app: app.clone() });
        inner.last_sync.remove(&AppLabels { app });
    }

    /// Sets `app`'s one `gitops_app_info` series, removing the previous one
    /// when a label changed.
    fn set_info(&self, app: &str, revision: String, ready: bool) {
        let labels = InfoLabels {
            app: app.to_owned(),
            revision,
            ready: ReadyLabel(ready),
        };
        let mut current = lock(&self.inner.info_current);
        if current.get(app) == Some(&labels) {
            return;
        }
        if let Some(old) = current.insert(app.to_owned(), labels.clone()) {
            self.inner.app_info.remove(&old);
        }
        self.inner.app_info.get_or_create(&labels).set(1);
    }

    fn record_poll(&self, app: &AppLabels, took: f64, ok: bool) {
        self.inner.poll_duration.get_or_create(app).observe(took);
        let result = if ok {
            FetchResult::Success
        } else {
            FetchResult::Failure
        };
        self.inner
            .fetches
            .get_or_create(&FetchLabels {
                app: app.app.clone(),
                result,
            })
            .inc();
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A [`Source`] whose polls are timed and counted.
struct TimedSource {
    inner: Arc<dyn Source>,
    app: AppLabels,
    metrics: Metrics,
}

#[async_trait]
impl Source for TimedSource {
    async fn poll(&self) -> Result<Revision, SourceError> {
        let start = Instant::now();
        let result = self.inner.poll().await;
        self.metrics
            .record_poll(&self.app, start.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    async fn snapshot(
        &self,
        revision: &Revision,
        cancel: &Cancel,
    ) -> Result<Snapshot, SourceError> {
        self.inner.snapshot(revision, cancel).await
    }

    async fn is_ancestor(
        &self,
        ancestor: &Revision,
        descendant: &Revision,
    ) -> Result<Option<bool>, SourceError> {
        self.inner.is_ancestor(ancestor, descendant).await
    }

    fn fingerprint(&self) -> Option<String> {
        self.inner.fingerprint()
    }
}

#[cfg(test)]
mod tests;
