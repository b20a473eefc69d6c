//! The webhook endpoints: authenticate (GitHub, GitLab, Standard
//! Webhooks), drop replays, decide, then act and count.
//!
//! Each endpoint first decides a [`Verdict`] from the headers and body
//! without side effects other than remembering an authenticated message id;
//! [`Hooks::finish`] then counts the request, triggers the engine and
//! answers. Nothing is triggered unless the signature is valid.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

use super::HttpOptions;
use super::apps::{AppEntry, AppSet};
use super::push;
use super::refs::RefFilter;
use super::replay::{REPLAY_CAPACITY, ReplayCache};
use super::routes::Shared;
use crate::metrics::{WebhookProvider, WebhookResult};
use crate::signing::{
    SignatureError, StandardWebhooks, WebhookSecret, check_timestamp, verify_github, verify_gitlab,
};

/// What the webhook endpoints know: the secret, the tracked ref, and the
/// ids already acted on.
#[derive(Debug)]
pub(crate) struct Hooks {
    secret: Option<WebhookSecret>,
    standard: Option<StandardWebhooks>,
    refs: RefFilter,
    body_limit: usize,
    /// `X-GitHub-Delivery` ids (per endpoint).
    github_deliveries: ReplayCache,
    /// Standard Webhooks `webhook-id`s (per endpoint).
    standard_ids: ReplayCache,
}

/// Which applications a request acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// Every application served (the one of a single-application agent).
    All,
    /// These, by name.
    Apps(Vec<String>),
}

/// What to do with one webhook request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Poll the source now (202).
    Reconcile(Scope),
    /// Retry the current revision now (202).
    Retry(Scope),
    /// Confirm this revision past the deletion and change limits (202).
    Confirm(String, Scope),
    /// Authenticated, nothing to do (200).
    Ignored(String),
    /// Missing or wrong credentials (401).
    Unauthorized(String),
    /// Authenticated but unusable, or a body that cannot be read (4xx).
    Bad(StatusCode, String),
}

impl From<SignatureError> for Verdict {
    fn from(e: SignatureError) -> Self {
        Verdict::Unauthorized(e.to_string())
    }
}

impl Hooks {
    pub(crate) fn new(options: &HttpOptions) -> Self {
        Self {
            standard: options.secret.as_ref().map(StandardWebhooks::new),
            secret: options.secret.clone(),
            refs: options.refs.clone(),
            body_limit: options.body_limit,
            github_deliveries: ReplayCache::new(REPLAY_CAPACITY),
            standard_ids: ReplayCache::new(REPLAY_CAPACITY),
        }
    }

    fn secret(&self) -> Result<&WebhookSecret, Verdict> {
        self.secret.as_ref().ok_or_else(no_secret)
    }

    /// `X-Hub-Signature-256`, then a repeated `X-GitHub-Delivery` (per endpoint).
    fn github_auth(&self, endpoint: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Verdict> {
        verify_github(self.secret()?, body, text(headers, "x-hub-signature-256"))?;
        match text(headers, "x-github-delivery") {
            Some(id)
                if !self
                    .github_deliveries
                    .first_time(&format!("{endpoint} {id}")) =>
            {
                Err(Verdict::Ignored(format!(
                    "delivery {id} was already handled"
                )))
            }
            _ => Ok(()),
        }
    }

    fn gitlab_auth(&self, headers: &HeaderMap) -> Result<(), Verdict> {
        Ok(verify_gitlab(
            self.secret()?,
            text(headers, "x-gitlab-token"),
        )?)
    }

    /// The Standard Webhooks headers, the timestamp's age, the signature,
    /// then a repeated `webhook-id` (per endpoint).
    fn standard_auth(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Verdict> {
        let scheme = self.standard.as_ref().ok_or_else(no_secret)?;
        let header = |name: &'static str| text(headers, name).ok_or(SignatureError::Missing(name));
        let id = header("webhook-id")?;
        let timestamp = check_timestamp(header("webhook-timestamp")?, now())?;
        scheme.verify(id, timestamp, body, header("webhook-signature")?)?;
        if !self.standard_ids.first_time(&format!("{endpoint} {id}")) {
            return Err(Verdict::Ignored(format!(
                "message {id} was already handled"
            )));
        }
        Ok(())
    }

    /// A push against the tracked ref (one application) or against each
    /// application's repository and ref (many).
    fn push(&self, body: &[u8], apps: &AppSet) -> Verdict {
        let push = match push::parse(body) {
            Ok(push) => push,
            Err(message) => return Verdict::Bad(StatusCode::BAD_REQUEST, message),
        };
        if !apps.is_many() {
            return if self.refs.matches(&push.reference) {
                Verdict::Reconcile(Scope::All)
            } else {
                Verdict::Ignored(format!("{} is not the tracked ref", push.reference))
            };
        }
        let entries = apps.entries();
        let names = push::matching(
            &push,
            entries
                .iter()
                .map(|e| (e.engine.name(), &e.refs, e.repo.as_deref())),
        );
        if names.is_empty() {
            let repos = if push.repos.is_empty() {
                "any repository".to_owned()
            } else {
                push.repos.join(", ")
            };
            Verdict::Ignored(format!(
                "no application follows {} of {repos}",
                push.reference
            ))
        } else {
            Verdict::Reconcile(Scope::Apps(names))
        }
    }
}

/// The applications an operator's request names: `{"app": "<name>"}` in
/// the (signed) body; every application when it names none and `required`
/// is false. A single-application agent needs no name.
fn scope(body: &[u8], apps: &AppSet, required: bool) -> Result<Scope, Verdict> {
    if !apps.is_many() {
        return Ok(Scope::All);
    }
    let named = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("app").and_then(|a| a.as_str()).map(str::to_owned));
    match named {
        Some(name) if apps.get(&name).is_some() => Ok(Scope::Apps(vec![name])),
        Some(name) => Err(Verdict::Bad(
            StatusCode::NOT_FOUND,
            format!("no application is named {name:?}"),
        )),
        None if required => Err(Verdict::Bad(
            StatusCode::BAD_REQUEST,
            "name the application in the body: {\"app\": \"<name>\", ...}".into(),
        )),
        None => Ok(Scope::All),
    }
}

fn no_secret() -> Verdict {
    Verdict::Unauthorized("no webhook secret is configured (--webhook-secret-file)".into())
}

/// A header's value, if present and visible ASCII.
fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Unix seconds.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The headers and the body, or the verdict on why the body cannot be
/// read: 413 past the limit, at once when `Content-Length` announces it.
async fn read(request: Request, limit: usize) -> (HeaderMap, Result<Bytes, Verdict>) {
    let headers = request.headers().clone();
    let announced = text(&headers, "content-length").and_then(|n| n.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        let reason = format!("the body is larger than {limit} bytes");
        return (
            headers,
            Err(Verdict::Bad(StatusCode::PAYLOAD_TOO_LARGE, reason)),
        );
    }
    // `Bytes` honours the `DefaultBodyLimit` of the router (the same limit).
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| Verdict::Bad(rejection.status(), rejection.body_text()));
    (headers, body)
}

/// The applications of `scope`; a push's shared repositories expire first.
fn targets(shared: &Shared, scope: &Scope) -> Vec<AppEntry> {
    match scope {
        Scope::All => shared.entries(None),
        Scope::Apps(names) => names
            .iter()
            .flat_map(|name| shared.entries(Some(name)))
            .collect(),
    }
}

/// Acts on an accepted verdict; the answer's body.
fn act(shared: &Shared, provider: WebhookProvider, verdict: &Verdict) -> serde_json::Value {
    match verdict {
        Verdict::Reconcile(scope) => {
            let entries = targets(shared, scope);
            for entry in &entries {
                if let Some(repository) = &entry.shared {
                    repository.expire();
                }
            }
            let names: Vec<&str> = entries.iter().map(|e| e.engine.name()).collect();
            for entry in &entries {
                entry.engine.handle().reconcile_now();
            }
            tracing::info!(?provider, apps = ?names, "webhook: reconciling now");
            json!({"result": "accepted", "apps": names})
        }
        Verdict::Retry(scope) => {
            let entries = targets(shared, scope);
            let names: Vec<&str> = entries.iter().map(|e| e.engine.name()).collect();
            for entry in &entries {
                entry.engine.handle().retry();
            }
            tracing::info!(?provider, apps = ?names, "webhook: retrying the current revision");
            json!({"result": "accepted", "apps": names})
        }
        Verdict::Confirm(revision, scope) => {
            let entries = targets(shared, scope);
            let names: Vec<&str> = entries.iter().map(|e| e.engine.name()).collect();
            tracing::info!(?provider, %revision, apps = ?names, "webhook: revision confirmed");
            for entry in &entries {
                entry.engine.handle().confirm(revision.clone());
            }
            json!({"result": "accepted", "confirmed": revision, "apps": names})
        }
        _ => json!({}),
    }
}

/// Counts, acts and answers.
fn finish(shared: &Shared, provider: WebhookProvider, verdict: Verdict) -> Response {
    let result = match &verdict {
        Verdict::Reconcile(_) | Verdict::Retry(_) | Verdict::Confirm(..) => WebhookResult::Accepted,
        Verdict::Ignored(_) => WebhookResult::Ignored,
        Verdict::Unauthorized(_) => WebhookResult::Unauthorized,
        Verdict::Bad(..) => WebhookResult::BadRequest,
    };
    shared.context.metrics.webhook(provider, result);
    let (status, body) = match verdict {
        Verdict::Reconcile(_) | Verdict::Retry(_) | Verdict::Confirm(..) => {
            (StatusCode::ACCEPTED, act(shared, provider, &verdict))
        }
        Verdict::Ignored(reason) => {
            tracing::debug!(?provider, %reason, "webhook ignored");
            (
                StatusCode::OK,
                json!({"result": "ignored", "reason": reason}),
            )
        }
        Verdict::Unauthorized(reason) => {
            tracing::info!(?provider, %reason, "webhook refused");
            (
                StatusCode::UNAUTHORIZED,
                json!({"result": "unauthorized", "reason": reason}),
            )
        }
        Verdict::Bad(status, reason) => {
            tracing::info!(?provider, %status, %reason, "webhook unusable");
            (status, json!({"result": "bad request", "reason": reason}))
        }
    };
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is not read: end the connection instead.
        return (status, [(header::CONNECTION, "close")], Json(body)).into_response();
    }
    (status, Json(body)).into_response()
}

/// Reads the request, runs `decide` on its headers and readable body, and finishes.
async fn handle(
    shared: &Shared,
    provider: WebhookProvider,
    request: Request,
    decide: impl FnOnce(&HeaderMap, &Bytes) -> Result<Verdict, Verdict>,
) -> Response {
    let (headers, body) = read(request, shared.hooks.body_limit).await;
    let verdict = body.and_then(|body| decide(&headers, &body));
    finish(shared, provider, verdict.unwrap_or_else(|v| v))
}

/// `POST /hooks/github`: `ping` and events other than `push` are
/// acknowledged; a push to the tracked ref polls now.
pub(crate) async fn github(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(
        &shared,
        WebhookProvider::Github,
        request,
        |headers, body| {
            let hooks = &shared.hooks;
            hooks.github_auth("github", headers, body)?;
            Ok(match text(headers, "x-github-event") {
                Some("push") => hooks.push(body, &shared.context.apps),
                Some(event) => Verdict::Ignored(format!("event {event}")),
                None => Verdict::Bad(StatusCode::BAD_REQUEST, "no X-GitHub-Event".into()),
            })
        },
    )
    .await
}

/// `POST /hooks/gitlab`: push and tag push events to the tracked ref poll now.
pub(crate) async fn gitlab(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(
        &shared,
        WebhookProvider::Gitlab,
        request,
        |headers, body| {
            let hooks = &shared.hooks;
            hooks.gitlab_auth(headers)?;
            Ok(match text(headers, "x-gitlab-event") {
                Some("Push Hook" | "Tag Push Hook") => hooks.push(body, &shared.context.apps),
                Some(event) => Verdict::Ignored(format!("event {event}")),
                None => Verdict::Bad(StatusCode::BAD_REQUEST, "no X-Gitlab-Event".into()),
            })
        },
    )
    .await
}

/// `POST /hooks/generic`: any authenticated Standard Webhooks message polls now.
pub(crate) async fn generic(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(
        &shared,
        WebhookProvider::Generic,
        request,
        |headers, body| {
            shared.hooks.standard_auth("generic", headers, body)?;
            Ok(Verdict::Reconcile(Scope::All))
        },
    )
    .await
}

/// Authenticates an operator's request (`/retry`, `/confirm`) with any of
/// the three schemes, chosen by which signature header is present.
fn operator_auth(
    hooks: &Hooks,
    endpoint: &'static str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), Verdict> {
    if headers.contains_key("webhook-signature") {
        hooks.standard_auth(endpoint, headers, body)
    } else if headers.contains_key("x-hub-signature-256") {
        hooks.github_auth(endpoint, headers, body)
    } else if headers.contains_key("x-gitlab-token") {
        hooks.gitlab_auth(headers)
    } else {
        Err(Verdict::Unauthorized(
            "sign it: webhook-signature, X-Hub-Signature-256 or X-Gitlab-Token".into(),
        ))
    }
}

/// `POST /retry`: signed with any of the three schemes (chosen by which
/// signature header is present), retries the current revision.
pub(crate) async fn retry(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(&shared, WebhookProvider::Retry, request, |headers, body| {
        operator_auth(&shared.hooks, "retry", headers, body)?;
        Ok(Verdict::Retry(scope(body, &shared.context.apps, false)?))
    })
    .await
}

/// `POST /confirm?revision=<id>` with the body `{"revision": "<id>"}`,
/// signed like `/retry`: confirms a revision held past the deletion or
/// change limits. The revision must be in the body, because the signatures
/// cover the body only (a query alone could be swapped on a captured
/// request); a query, when given, must name the same revision.
pub(crate) async fn confirm(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let query = request.uri().query().map(str::to_owned);
    handle(
        &shared,
        WebhookProvider::Confirm,
        request,
        |headers, body| {
            operator_auth(&shared.hooks, "confirm", headers, body)?;
            let revision = confirmed_revision(query.as_deref(), body)?;
            Ok(Verdict::Confirm(
                revision,
                scope(body, &shared.context.apps, true)?,
            ))
        },
    )
    .await
}

/// The revision a `/confirm` request names (see [`confirm`]).
fn confirmed_revision(query: Option<&str>, body: &[u8]) -> Result<String, Verdict> {
    let bad = |why: &str| Verdict::Bad(StatusCode::BAD_REQUEST, why.to_owned());
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| bad("the body must be {\"revision\": \"<commit id>\"}"))?;
    let revision = value
        .get("revision")
        .and_then(|r| r.as_str())
        .filter(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad("\"revision\" must be a full commit id"))?;
    let queried = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("revision="));
    if queried.is_some_and(|q| q != revision) {
        return Err(bad("?revision= and the body name different revisions"));
    }
    Ok(revision.to_owned())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::signing::sign_github;

    fn hooks() -> Hooks {
        let options = HttpOptions::new("127.0.0.1:0".parse().expect("addr"))
            .secret(WebhookSecret::new(b"s".to_vec()))
            .refs(RefFilter::Branch("main".into()));
        Hooks::new(&options)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("a value"));
        }
        map
    }

    #[test]
    fn github_deliveries_are_remembered_only_once_authenticated() {
        let h = hooks();
        let body = b"{}";
        let forged = headers(&[
            ("x-hub-signature-256", "sha256=00"),
            ("x-github-delivery", "d1"),
        ]);
        assert!(matches!(
            h.github_auth("github", &forged, body),
            Err(Verdict::Unauthorized(_))
        ));
        let signature = sign_github(&WebhookSecret::new(b"s".to_vec()), body);
        let good = headers(&[
            ("x-hub-signature-256", &signature),
            ("x-github-delivery", "d1"),
        ]);
        assert_eq!(h.github_auth("github", &good, body), Ok(()));
        assert!(matches!(
            h.github_auth("github", &good, body),
            Err(Verdict::Ignored(_))
        ));
        // The same delivery id on another endpoint is another message.
        assert_eq!(h.github_auth("retry", &good, body), Ok(()));
    }

    #[test]
    fn pushes_are_matched_against_the_tracked_ref() {
        let h = hooks();
        let one = AppSet::default();
        assert_eq!(
            h.push(br#"{"ref":"refs/heads/main"}"#, &one),
            Verdict::Reconcile(Scope::All)
        );
        assert!(matches!(
            h.push(br#"{"ref":"refs/heads/dev"}"#, &one),
            Verdict::Ignored(_)
        ));
        assert!(matches!(h.push(b"not json", &one), Verdict::Bad(..)));
        let many = AppSet::many();
        assert!(matches!(
            h.push(br#"{"ref":"refs/heads/main"}"#, &many),
            Verdict::Ignored(_)
        ));
        assert_eq!(scope(b"", &one, true), Ok(Scope::All));
        assert!(matches!(scope(b"", &many, true), Err(Verdict::Bad(..))));
        assert_eq!(scope(b"", &many, false), Ok(Scope::All));
        assert!(matches!(
            scope(br#"{"app":"x"}"#, &many, false),
            Err(Verdict::Bad(StatusCode::NOT_FOUND, _))
        ));
    }

    #[test]
    fn without_a_secret_everything_is_unauthorized() {
        let h = Hooks::new(&HttpOptions::new("127.0.0.1:0".parse().expect("addr")));
        assert!(matches!(
            h.gitlab_auth(&headers(&[("x-gitlab-token", "")])),
            Err(Verdict::Unauthorized(_))
        ));
        assert!(matches!(
            h.standard_auth("generic", &HeaderMap::new(), b""),
            Err(Verdict::Unauthorized(_))
        ));
    }
}
