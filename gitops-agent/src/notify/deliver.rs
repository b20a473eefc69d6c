//! Sending one notification to one sink: signed POSTs with a per-request
//! timeout, retried with exponential backoff and jitter (`backon`) on
//! connection errors, timeouts, 5xx and 429; never on another status.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use serde::Serialize;

use super::event::CLOUDEVENTS_CONTENT_TYPE;
use crate::metrics::NotificationResult;
use crate::signing::StandardWebhooks;

/// One delivery as `GET /notifications` shows it. Names the sink by
/// `scheme://host[:port]` only, never the full URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Delivery {
    /// The CloudEvent's id (also the `webhook-id`).
    pub id: String,
    /// The CloudEvent's type, e.g. `dev.gitops.sync.failed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The application.
    pub subject: String,
    /// The CloudEvent's time (RFC 3339).
    pub time: String,
    /// Where it went: `scheme://host[:port]`.
    pub sink: String,
    /// How many requests were made (0 when dropped).
    pub attempts: u32,
    /// What became of it.
    pub outcome: NotificationResult,
    /// The last HTTP status the sink answered, if it answered.
    pub status: Option<u16>,
    /// Why the last attempt failed without a status (`timed out`, `connection failed`, ...).
    pub error: Option<String>,
}

/// The safe name of a notification URL: `scheme://host[:port]` (the port
/// only when given). Path, query, fragment and user info may carry a token
/// and are left out. `None` for a URL that does not parse or has no host.
///
/// ```
/// use gitops_agent::notify::sink_name;
///
/// let name = sink_name("https://bot:pw@hooks.example:8443/T0K3N/x?key=abc");
/// assert_eq!(name.as_deref(), Some("https://hooks.example:8443"));
/// ```
pub fn sink_name(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// Where notifications go: the URL and its safe name.
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) url: reqwest::Url,
    pub(crate) name: String,
}

/// A serialized event, ready to send to every sink.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) subject: String,
    pub(crate) time: String,
    pub(crate) body: Vec<u8>,
}

impl Prepared {
    /// A delivery record for this event to `sink`.
    pub(crate) fn delivery(&self, sink: &str, outcome: NotificationResult) -> Delivery {
        Delivery {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            subject: self.subject.clone(),
            time: self.time.clone(),
            sink: sink.to_owned(),
            attempts: 0,
            outcome,
            status: None,
            error: None,
        }
    }
}

/// How requests are made and retried.
#[derive(Clone)]
pub(crate) struct Sender {
    pub(crate) client: Option<reqwest::Client>,
    pub(crate) signer: Option<StandardWebhooks>,
    pub(crate) backoff: backon::ExponentialBuilder,
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The sink answered with this status.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// No connection.
    Connect,
    /// Another transport error.
    Other,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Done: delivered.
    Delivered,
    /// Try again after a backoff, if any is left.
    Retry,
    /// Done: retrying will not help.
    GiveUp,
}

/// The pure retry rule: 2xx is delivered; 429, 5xx and transport errors
/// are retried; any other status (3xx, 4xx) is final.
pub(crate) fn next(attempt: Attempt) -> Next {
    match attempt {
        Attempt::Status(s) if (200..300).contains(&s) => Next::Delivered,
        Attempt::Status(s) if s == 429 || (500..600).contains(&s) => Next::Retry,
        Attempt::Status(_) => Next::GiveUp,
        Attempt::Timeout | Attempt::Connect | Attempt::Other => Next::Retry,
    }
}

impl Sender {
    /// Sends `event` to `sink` until it is delivered, refused, or the
    /// retries run out.
    pub(crate) async fn deliver(&self, event: Arc<Prepared>, sink: &Sink) -> Delivery {
        let mut delivery = event.delivery(&sink.name, NotificationResult::Failed);
        let Some(client) = &self.client else {
            delivery.error = Some("no HTTP client".to_owned());
            return delivery;
        };
        let mut backoff = self.backoff.build();
        loop {
            delivery.attempts += 1;
            let attempt = self.attempt(client, &event, sink).await;
            (delivery.status, delivery.error) = match attempt {
                Attempt::Status(s) => (Some(s), None),
                Attempt::Timeout => (None, Some("timed out".to_owned())),
                Attempt::Connect => (None, Some("connection failed".to_owned())),
                Attempt::Other => (None, Some("request failed".to_owned())),
            };
            match next(attempt) {
                Next::Delivered => {
                    delivery.outcome = NotificationResult::Delivered;
                    return delivery;
                }
                Next::GiveUp => {
                    delivery.outcome = NotificationResult::Rejected;
                    return delivery;
                }
                Next::Retry => match backoff.next() {
                    Some(delay) => {
                        tracing::debug!(
                            sink = sink.name,
                            attempt = delivery.attempts,
                            ?attempt,
                            ?delay,
                            "notification not delivered; retrying"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    None => return delivery,
                },
            }
        }
    }

    /// One signed POST (a fresh `webhook-timestamp` per attempt, the same `webhook-id`).
    async fn attempt(&self, client: &reqwest::Client, event: &Prepared, sink: &Sink) -> Attempt {
        let mut request = client
            .post(sink.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_CONTENT_TYPE)
            .header("webhook-id", &event.id)
            .body(event.body.clone());
        if let Some(signer) = &self.signer {
            let timestamp = jiff::Timestamp::now().as_second();
            request = request
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signer.sign(&event.id, timestamp, &event.body),
                );
        }
        match request.send().await {
            Ok(response) => Attempt::Status(response.status().as_u16()),
            Err(e) if e.is_timeout() => Attempt::Timeout,
            Err(e) if e.is_connect() => Attempt::Connect,
            Err(_) => Attempt::Other,
        }
    }
}

/// The HTTP client for notifications: a per-request timeout, no redirects
/// (a redirect would carry the signed body to another host).
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gitops-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_names_keep_only_scheme_host_and_port() {
        for (url, name) in [
            ("https://hooks.example/T0K3N", Some("https://hooks.example")),
            (
                "http://127.0.0.1:9000/a/b?token=T0K3N#x",
                Some("http://127.0.0.1:9000"),
            ),
            (
                "https://user:T0K3N@hooks.example:443/x",
                Some("https://hooks.example"),
            ),
            ("http://[::1]:8080/T0K3N", Some("http://[::1]:8080")),
            ("not a url T0K3N", None),
            ("unix:/run/T0K3N", None),
        ] {
            assert_eq!(sink_name(url).as_deref(), name, "{url}");
        }
    }

    #[test]
    fn only_transient_answers_are_retried() {
        assert_eq!(next(Attempt::Status(200)), Next::Delivered);
        assert_eq!(next(Attempt::Status(204)), Next::Delivered);
        assert_eq!(next(Attempt::Status(503)), Next::Retry);
        assert_eq!(next(Attempt::Status(500)), Next::Retry);
        assert_eq!(next(Attempt::Status(429)), Next::Retry);
        assert_eq!(next(Attempt::Connect), Next::Retry);
        assert_eq!(next(Attempt::Timeout), Next::Retry);
        assert_eq!(next(Attempt::Status(400)), Next::GiveUp);
        assert_eq!(next(Attempt::Status(401)), Next::GiveUp);
        assert_eq!(next(Attempt::Status(404)), Next::GiveUp);
        assert_eq!(next(Attempt::Status(301)), Next::GiveUp);
    }
}
