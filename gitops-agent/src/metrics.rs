//! Prometheus metrics (`prometheus-client`, OpenMetrics text on `GET /metrics`).
//!
//! STUB: the metrics helper fills this module in. The API below is what the
//! rest of the crate calls; keep it (extend it as needed).

use std::sync::Arc;

use gitops_core::{Engine, Source};

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
}

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

/// The agent's metrics. Cheap to clone; clones share one registry.
#[derive(Clone, Default)]
pub struct Metrics {
    _inner: Arc<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        "# EOF\n".to_owned()
    }

    /// Counts one webhook request.
    pub fn webhook(&self, _provider: WebhookProvider, _result: WebhookResult) {}

    /// Wraps `source` so that polls and fetches are timed and counted for `app`.
    pub fn source(&self, _app: &str, source: Arc<dyn Source>) -> Arc<dyn Source> {
        source
    }

    /// Follows `engine`'s events and status in the background (call before `engine.run()`).
    pub fn watch(&self, _engine: &Engine) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {})
    }
}
