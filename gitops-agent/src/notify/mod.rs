//! Outgoing notifications: CloudEvents 1.0 (structured JSON) POSTed to
//! `--notify` URLs, signed with Standard Webhooks, delivered in the
//! background with retry and backoff from a bounded queue.
//!
//! STUB: the notifications helper fills this module in. The API below is
//! what the rest of the crate calls; keep it (extend it as needed).

use std::time::Duration;

use gitops_core::Engine;
use serde::Serialize;

use crate::args::NotifyArgs;
use crate::metrics::Metrics;

/// Why the notification settings are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `--notify-secret-file` cannot be read.
    #[error("--notify-secret-file {0}")]
    Secret(#[from] crate::signing::SecretFileError),
}

/// What to notify and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NotifyOptions {
    /// Where to POST.
    pub urls: Vec<String>,
}

impl NotifyOptions {
    /// From the command line; `None` without `--notify`.
    pub fn from_args(args: &NotifyArgs) -> Result<Option<Self>, NotifyError> {
        Ok((!args.urls.is_empty()).then(|| Self {
            urls: args.urls.clone(),
        }))
    }
}

/// One delivery as `GET /notifications` shows it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Delivery {}

/// The delivery worker. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {}

impl Notifier {
    /// Starts delivering `engine`'s events for application `app` (call before `engine.run()`).
    pub fn start(_options: NotifyOptions, _app: &str, _engine: &Engine, _metrics: Metrics) -> Self {
        Self {}
    }

    /// The last deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        Vec::new()
    }

    /// Waits up to `timeout` for queued notifications to go out (at shutdown).
    pub async fn flush(&self, _timeout: Duration) {}
}
