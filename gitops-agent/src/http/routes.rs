//! The router: which path and method go to which handler, and the read-only
//! endpoints (health, readiness, status, history, metrics, notifications).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use gitops_core::status::Reason;
use gitops_core::store::AuditQuery;
use gitops_core::{ConditionKind, Status};
use serde::Deserialize;
use serde_json::json;

use super::apps::AppEntry;
use super::hooks::{self, Hooks};
use super::host::{self, AllowedHosts};
use super::owners;
use super::page::{self, AppPage, Row};
use super::view::{AuditView, HistoryView, StatusView};
use super::{AppContext, HttpOptions};

/// The content type of `GET /metrics`.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /history` without `?limit`.
const DEFAULT_HISTORY: usize = 20;
/// The most `GET /history` returns.
const MAX_HISTORY: usize = 100;
/// `GET /apps/{name}/audit` (and `/audit`) without `?limit`.
const DEFAULT_AUDIT: usize = 100;
/// The most `GET /apps/{name}/audit` returns.
const MAX_AUDIT: usize = 1000;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) context: AppContext,
    pub(crate) hooks: Hooks,
    expose_values: bool,
}

impl Shared {
    pub(crate) fn new(context: AppContext, options: &HttpOptions) -> Self {
        Self {
            hooks: Hooks::new(options),
            context,
            expose_values: options.expose_values,
        }
    }

    /// Whether every application's first reconcile has ended; latches.
    pub(crate) fn ready(&self) -> bool {
        self.context.apps.ready()
    }

    /// The applications a request is about: `name`, or every one.
    pub(crate) fn entries(&self, name: Option<&str>) -> Vec<AppEntry> {
        match name {
            Some(name) => self.context.apps.get(name).into_iter().collect(),
            None => self.context.apps.entries(),
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
        .route("/", get(index_page))
        .route("/apps/{name}", get(app_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/history", get(history))
        .route("/status/{name}", get(app_status))
        .route("/history/{name}", get(app_history))
        .route("/apps/{name}/status", get(app_status))
        .route("/apps/{name}/history", get(app_history))
        .route("/apps/{name}/audit", get(app_audit))
        .route("/audit", get(audit))
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

/// `GET /status`: one application's status, or `{"apps": [...], "config": ...}`.
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let view = |entry: &AppEntry| {
        let engine = &entry.engine;
        StatusView::new(engine.name(), engine.status(), shared.expose_values)
    };
    let apps = &shared.context.apps;
    if !apps.is_many() {
        return match apps.first() {
            Some(entry) => Json(view(&entry)).into_response(),
            None => not_found("no application"),
        };
    }
    if let Some(replicas) = apps.replicas() {
        return match owners::views(apps, replicas.as_ref(), shared.expose_values).await {
            Ok(views) => Json(json!({
                "replica": replicas.replica(),
                "apps": views,
                "config": apps.config(),
            }))
            .into_response(),
            Err(e) => store_failed("owners", &e),
        };
    }
    let views: Vec<StatusView> = apps
        .entries()
        .iter()
        .map(|entry| view(entry).restarts(entry.restarts()))
        .collect();
    Json(json!({"apps": views, "config": apps.config()})).into_response()
}

/// `GET /apps/{name}/status` (and `/status/{name}`).
async fn app_status(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let apps = &shared.context.apps;
    match apps.get(&name) {
        Some(entry) => {
            let engine = &entry.engine;
            let mut view = StatusView::new(engine.name(), engine.status(), shared.expose_values);
            if apps.is_many() {
                view = view.restarts(entry.restarts());
            }
            Json(view).into_response()
        }
        None => no_app(&name),
    }
}

fn not_found(message: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": message}))).into_response()
}

fn no_app(name: &str) -> Response {
    not_found(&format!("no application is named {name:?}"))
}

fn store_failed(what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "GET {what}: the store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the {what} cannot be read now\n"),
    )
        .into_response()
}

/// `?limit=N`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// One application's history views, newest first.
async fn history_of(
    shared: &Shared,
    entry: &AppEntry,
    limit: usize,
) -> Result<Vec<HistoryView>, Response> {
    match entry.engine.history(limit).await {
        Ok(entries) => Ok(entries
            .into_iter()
            .map(|e| HistoryView::new(e, shared.expose_values))
            .collect()),
        Err(e) => Err(store_failed("history", &e)),
    }
}

/// `GET /history`: one application's syncs, or every application's.
async fn history(State(shared): State<Arc<Shared>>, Query(query): Query<HistoryQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    let apps = &shared.context.apps;
    if !apps.is_many() {
        let Some(entry) = apps.first() else {
            return not_found("no application");
        };
        return match history_of(&shared, &entry, limit).await {
            Ok(views) => Json(views).into_response(),
            Err(response) => response,
        };
    }
    let mut all = Vec::new();
    for entry in shared.entries(None) {
        match history_of(&shared, &entry, limit).await {
            Ok(views) => all.push(json!({"app": entry.engine.name(), "history": views})),
            Err(response) => return response,
        }
    }
    Json(json!({"apps": all})).into_response()
}

/// `GET /apps/{name}/history` (and `/history/{name}`).
async fn app_history(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    let Some(entry) = shared.context.apps.get(&name) else {
        return no_app(&name);
    };
    match history_of(&shared, &entry, limit).await {
        Ok(views) => Json(views).into_response(),
        Err(response) => response,
    }
}

/// `?since=<RFC 3339>&limit=N`.
#[derive(Debug, Deserialize)]
struct AuditParams {
    since: Option<String>,
    limit: Option<usize>,
}

/// `GET /apps/{name}/audit`: the newest audit records, newest first.
async fn app_audit(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(params): Query<AuditParams>,
) -> Response {
    match shared.context.apps.get(&name) {
        Some(entry) => audit_of(&shared, &entry, &params).await,
        None => no_app(&name),
    }
}

/// `GET /audit`: the one application's newest audit records, newest first
/// (with many applications, `/apps/{name}/audit`).
async fn audit(State(shared): State<Arc<Shared>>, Query(params): Query<AuditParams>) -> Response {
    let apps = &shared.context.apps;
    if apps.is_many() {
        return not_found("many applications: use /apps/{name}/audit");
    }
    match apps.first() {
        Some(entry) => audit_of(&shared, &entry, &params).await,
        None => not_found("no application"),
    }
}

/// One application's newest audit records as `params` ask, newest first.
async fn audit_of(shared: &Shared, entry: &AppEntry, params: &AuditParams) -> Response {
    let since = match params.since.as_deref().map(str::parse::<jiff::Timestamp>) {
        None => None,
        Some(Ok(at)) => Some(SystemTime::from(at)),
        Some(Err(e)) => {
            let message = format!("since: not an RFC 3339 time: {e}");
            return (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response();
        }
    };
    let query = AuditQuery {
        since,
        limit: Some(params.limit.unwrap_or(DEFAULT_AUDIT).min(MAX_AUDIT)),
        ..AuditQuery::default()
    };
    match entry.engine.audit_newest(&query).await {
        Ok(records) => {
            let views: Vec<AuditView> = records
                .into_iter()
                .map(|r| AuditView::new(r, shared.expose_values))
                .collect();
            Json(views).into_response()
        }
        Err(e) => store_failed("audit trail", &e),
    }
}

/// The pages carry no script; the policy forbids any, and framing.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the status page, one row per application. Built from the
/// `/status` and `/history` views, always without values.
async fn index_page(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(replicas) = shared.context.apps.replicas() {
        return shared_index_page(&shared, replicas.as_ref()).await;
    }
    let mut rows = Vec::new();
    for entry in shared.entries(None) {
        let engine = &entry.engine;
        let status = StatusView::new(engine.name(), engine.status(), false);
        let last = match engine.history(1).await {
            Ok(entries) => entries
                .into_iter()
                .next()
                .map(|e| HistoryView::new(e, false)),
            Err(e) => return store_failed("history", &e),
        };
        rows.push(Row { status, last });
    }
    html(page::index(&rows))
}

/// `GET /` when replicas share the list: every application with its owner.
async fn shared_index_page(shared: &Shared, replicas: &dyn owners::Replicas) -> Response {
    let views = match owners::views(&shared.context.apps, replicas, false).await {
        Ok(views) => views,
        Err(e) => return store_failed("owners", &e),
    };
    let mut rows = Vec::new();
    for mut status in views {
        let last = match (
            status.last_sync.take(),
            shared.context.apps.get(&status.app),
        ) {
            (Some(last), _) => Some(last),
            (None, Some(entry)) => match entry.engine.history(1).await {
                Ok(entries) => entries
                    .into_iter()
                    .next()
                    .map(|e| HistoryView::new(e, false)),
                Err(e) => return store_failed("history", &e),
            },
            (None, None) => None,
        };
        rows.push(Row { status, last });
    }
    html(page::index(&rows))
}

/// `GET /apps/{name}`: one application's page, always without values.
async fn app_page(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(entry) = shared.context.apps.get(&name) else {
        return (StatusCode::NOT_FOUND, "no such application\n").into_response();
    };
    let engine = &entry.engine;
    let status = StatusView::new(engine.name(), engine.status(), false);
    let history: Vec<HistoryView> = match engine.history(DEFAULT_HISTORY).await {
        Ok(entries) => entries
            .into_iter()
            .map(|e| HistoryView::new(e, false))
            .collect(),
        Err(e) => return store_failed("history", &e),
    };
    let query = AuditQuery {
        limit: Some(page::AUDIT_SHOWN),
        ..AuditQuery::default()
    };
    let audit: Vec<AuditView> = match engine.audit_newest(&query).await {
        Ok(records) => records
            .into_iter()
            .map(|r| AuditView::new(r, false))
            .collect(),
        Err(e) => return store_failed("audit trail", &e),
    };
    let last = entry.syncs.last();
    html(page::app(&AppPage {
        status: &status,
        history: &history,
        audit: &audit,
        last: last.as_ref(),
        started: entry.syncs.started(),
    }))
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
