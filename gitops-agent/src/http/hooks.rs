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
use serde::Deserialize;
use serde_json::json;

use super::HttpOptions;
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

/// What to do with one webhook request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Poll the source now (202).
    Reconcile,
    /// Retry the current revision now (202).
    Retry,
    /// Confirm this revision past the deletion and change limits (202).
    Confirm(String),
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

    /// A push's `ref` against the tracked one.
    fn push(&self, body: &[u8]) -> Verdict {
        #[derive(Deserialize)]
        struct Push {
            #[serde(rename = "ref")]
            reference: String,
        }
        match serde_json::from_slice::<Push>(body) {
            Ok(push) if self.refs.matches(&push.reference) => Verdict::Reconcile,
            Ok(push) => Verdict::Ignored(format!("{} is not the tracked ref", push.reference)),
            Err(e) => Verdict::Bad(
                StatusCode::BAD_REQUEST,
                format!("a push event needs a JSON body with a \"ref\": {e}"),
            ),
        }
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

/// Counts, acts and answers.
fn finish(shared: &Shared, provider: WebhookProvider, verdict: Verdict) -> Response {
    let result = match &verdict {
        Verdict::Reconcile | Verdict::Retry | Verdict::Confirm(_) => WebhookResult::Accepted,
        Verdict::Ignored(_) => WebhookResult::Ignored,
        Verdict::Unauthorized(_) => WebhookResult::Unauthorized,
        Verdict::Bad(..) => WebhookResult::BadRequest,
    };
    shared.context.metrics.webhook(provider, result);
    let (status, body) = match verdict {
        Verdict::Reconcile => {
            shared.handle.reconcile_now();
            tracing::info!(?provider, "webhook: reconciling now");
            (StatusCode::ACCEPTED, json!({"result": "accepted"}))
        }
        Verdict::Retry => {
            shared.handle.retry();
            tracing::info!(?provider, "webhook: retrying the current revision");
            (StatusCode::ACCEPTED, json!({"result": "accepted"}))
        }
        Verdict::Confirm(revision) => {
            tracing::info!(?provider, %revision, "webhook: revision confirmed");
            shared.handle.confirm(revision.clone());
            (
                StatusCode::ACCEPTED,
                json!({"result": "accepted", "confirmed": revision}),
            )
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
                Some("push") => hooks.push(body),
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
                Some("Push Hook" | "Tag Push Hook") => hooks.push(body),
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
            Ok(Verdict::Reconcile)
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
        Ok(Verdict::Retry)
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
            confirmed_revision(query.as_deref(), body).map(Verdict::Confirm)
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
        assert_eq!(h.push(br#"{"ref":"refs/heads/main"}"#), Verdict::Reconcile);
        assert!(matches!(
            h.push(br#"{"ref":"refs/heads/dev"}"#),
            Verdict::Ignored(_)
        ));
        assert!(matches!(h.push(b"not json"), Verdict::Bad(..)));
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
