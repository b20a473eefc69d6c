//! The router: which path and method go to which handler, and the read-only
//! endpoints (health, readiness, status, history, metrics, notifications).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use gitops_core::status::Reason;
use gitops_core::{ConditionKind, EngineHandle, Status};
use serde::Deserialize;
use tokio::sync::watch;

use super::hooks::{self, Hooks};
use super::host::{self, AllowedHosts};
use super::view::{HistoryView, StatusView};
use super::{AppContext, HttpOptions};

/// The content type of `GET /metrics`.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /history` without `?limit`.
const DEFAULT_HISTORY: usize = 20;
/// The most `GET /history` returns.
const MAX_HISTORY: usize = 100;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) context: AppContext,
    pub(crate) handle: EngineHandle,
    pub(crate) hooks: Hooks,
    expose_values: bool,
    /// Latched once the first reconcile ended.
    ready: AtomicBool,
}

impl Shared {
    pub(crate) fn new(context: AppContext, options: &HttpOptions) -> Self {
        Self {
            handle: context.engine.handle(),
            hooks: Hooks::new(options),
            context,
            expose_values: options.expose_values,
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the engine's first reconcile has ended; latches.
    pub(crate) fn ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let ended = first_reconcile_ended(&self.handle.status());
        if ended {
            self.ready.store(true, Ordering::Relaxed);
        }
        ended
    }

    /// Follows the engine's status and latches readiness as soon as the
    /// first reconcile ends, so that a later window or dependency hold
    /// (which also moves `Ready` off `Initializing`) is not needed to see it.
    pub(crate) async fn watch_readiness(self: Arc<Self>) {
        let mut status: watch::Receiver<Status> = self.handle.watch_status();
        loop {
            if self.ready() {
                return;
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Whether a reconcile has ended, whatever its result: every verdict
/// (converged, retry, stall, failure) moves `Ready` off `Initializing`.
/// A sync window or a dependency holding the first sync back also does,
/// but nothing ran then. (`last_attempted` is set when a sync starts, and
/// `last_applied` may come from the store of an earlier run: neither says it.)
pub(crate) fn first_reconcile_ended(status: &Status) -> bool {
    !matches!(
        status.condition(ConditionKind::Ready).reason,
        Reason::Initializing | Reason::SyncWindowClosed | Reason::DependencyNotReady
    )
}

/// Every route, the body limit, the request deadline and the `Host` check.
pub(crate) fn router(shared: Arc<Shared>, hosts: AllowedHosts, options: &HttpOptions) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/history", get(history))
        .route("/metrics", get(metrics))
        .route("/notifications", get(notifications))
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .route("/hooks/generic", post(hooks::generic))
        .route("/retry", post(hooks::retry))
        .route("/confirm", post(hooks::confirm))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(from_fn_with_state(options.request_timeout, deadline))
        .layer(from_fn_with_state(Arc::new(hosts), host::check))
        .with_state(shared)
}

/// 408 for a request not answered within `limit` (a body sent slowly
/// holds a connection slot no longer than that).
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "the request took too long\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first reconcile\n",
        )
            .into_response()
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<StatusView> {
    let engine = &shared.context.engine;
    Json(StatusView::new(
        engine.name(),
        engine.status(),
        shared.expose_values,
    ))
}

/// `?limit=N`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(State(shared): State<Arc<Shared>>, Query(query): Query<HistoryQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    match shared.context.engine.history(limit).await {
        Ok(entries) => {
            let views: Vec<HistoryView> = entries
                .into_iter()
                .map(|e| HistoryView::new(e, shared.expose_values))
                .collect();
            Json(views).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "GET /history: the store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the history cannot be read now\n",
            )
                .into_response()
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.context.metrics.encode(),
    )
        .into_response()
}

async fn notifications(State(shared): State<Arc<Shared>>) -> Response {
    let deliveries = shared
        .context
        .notifier
        .as_ref()
        .map(|n| n.deliveries())
        .unwrap_or_default();
    Json(deliveries).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_a_verdict() {
        let mut status = Status::default();
        assert!(!first_reconcile_ended(&status));
        // A sync starting sets last_attempted and Reconciling: not ended yet.
        status.last_attempted = Some(gitops_core::Revision::new("main", "ab"));
        status.set(
            ConditionKind::Reconciling,
            true,
            Reason::Progressing,
            "reconciling",
        );
        assert!(!first_reconcile_ended(&status));
        status.set(
            ConditionKind::Ready,
            false,
            Reason::SyncWindowClosed,
            "held",
        );
        assert!(!first_reconcile_ended(&status));
        status.set(ConditionKind::Ready, false, Reason::ResourceFailed, "x");
        assert!(first_reconcile_ended(&status));
        status.set(
            ConditionKind::Ready,
            true,
            Reason::ReconciliationSucceeded,
            "",
        );
        assert!(first_reconcile_ended(&status));
    }
}
