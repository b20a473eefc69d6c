//! Outgoing notifications: CloudEvents 1.0 (structured JSON) POSTed to
//! `--notify` URLs, signed with Standard Webhooks, delivered in the
//! background with retry and backoff from a bounded queue.
//!
//! What is sent ([`EventType`]): a sync that converged or failed, a stall,
//! drift detected and reverted, an automatic rollback starting and a
//! rollback's result. The body is a CloudEvent in structured mode
//! (`content-type: application/cloudevents+json`) whose `data` holds the
//! application, revision, commit, result, trigger, duration and plan counts,
//! or the resource id and drift policy: never file contents, drift values or
//! error texts (read those at `/status`). With `--notify-secret-file` every
//! request carries `webhook-id` (the event's id, the same on every retry),
//! `webhook-timestamp` and `webhook-signature` (Standard Webhooks).
//!
//! The engine is never held up: its events are translated and queued (at
//! most [`NotifyOptions::queue`]; beyond that they are dropped and counted
//! as `gitops_notifications_total{result="dropped"}`), and a worker sends
//! them, a few at a time, retrying connection errors, timeouts, 5xx and 429
//! with exponential backoff and jitter. [`Notifier::deliveries`] keeps the
//! last outcomes for `GET /notifications`; [`Notifier::flush`] waits for the
//! queue at shutdown.
//!
//! ```no_run
//! # async fn example(engine: gitops_core::Engine) {
//! use std::time::Duration;
//! use gitops_agent::metrics::Metrics;
//! use gitops_agent::notify::{Notifier, NotifyOptions};
//!
//! let options = NotifyOptions::new(vec!["https://hooks.example/gitops".to_owned()]);
//! let notifier = Notifier::start(options, "web", &engine, Metrics::new());
//! engine.run().await.ok();
//! notifier.flush(Duration::from_secs(5)).await;
//! # }
//! ```

mod deliver;
mod event;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::Engine;
use gitops_core::engine::Event;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};

pub use deliver::{Delivery, sink_name};
pub use event::{CLOUDEVENTS_CONTENT_TYPE, CloudEvent, EventType};

use crate::args::NotifyArgs;
use crate::metrics::{Metrics, NotificationResult, lock};
use crate::signing::{StandardWebhooks, WebhookSecret};
use deliver::{Prepared, Sender, Sink};
use event::Translator;

/// Why the notification settings are unusable. Names the flag; a URL is
/// shown as `scheme://host[:port]` only (its path may hold a token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `--notify-secret-file` cannot be read.
    #[error("--notify-secret-file {0}")]
    Secret(#[from] crate::signing::SecretFileError),
    /// A `--notify` URL is not an `http://` or `https://` URL with a host.
    #[error("--notify {sink}: {reason}")]
    Url {
        /// The URL's safe name, or `(unparseable)`.
        sink: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// What to notify and how.
#[derive(Clone)]
#[non_exhaustive]
pub struct NotifyOptions {
    /// Where to POST.
    pub urls: Vec<String>,
    /// Signs every request (Standard Webhooks) when set.
    pub secret: Option<WebhookSecret>,
    /// How many notifications may wait (per sink, counted together); more are dropped. 1,000.
    pub queue: usize,
    /// How many requests are in flight at once. 4.
    pub concurrency: usize,
    /// The timeout of one request (connect included). 10 s.
    pub timeout: Duration,
    /// The first retry's delay (then doubled, with jitter). 1 s.
    pub min_delay: Duration,
    /// The longest delay between retries. 60 s.
    pub max_delay: Duration,
    /// Retries after the first attempt. 5.
    pub max_retries: usize,
    /// How many deliveries [`Notifier::deliveries`] keeps. 100.
    pub history: usize,
}

impl fmt::Debug for NotifyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sinks: Vec<String> = self.urls.iter().filter_map(|u| sink_name(u)).collect();
        f.debug_struct("NotifyOptions")
            .field("sinks", &sinks)
            .field("signed", &self.secret.is_some())
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NotifyOptions {
    /// Notifications to `urls`, unsigned, with the defaults above.
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            secret: None,
            queue: 1000,
            concurrency: 4,
            timeout: Duration::from_secs(10),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retries: 5,
            history: 100,
        }
    }

    /// From the command line; `None` without `--notify`. Checks the URLs
    /// and reads `--notify-secret-file`.
    pub fn from_args(args: &NotifyArgs) -> Result<Option<Self>, NotifyError> {
        if args.urls.is_empty() {
            return Ok(None);
        }
        for url in &args.urls {
            check_url(url)?;
        }
        let mut options = Self::new(args.urls.clone());
        if let Some(path) = &args.notify_secret_file {
            options.secret = Some(WebhookSecret::read(path)?);
        }
        Ok(Some(options))
    }

    /// Signs every request with `secret`.
    pub fn secret(mut self, secret: WebhookSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Sets the queue's capacity.
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity;
        self
    }

    /// Sets how many requests are in flight at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets the per-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry backoff: first delay, longest delay, retries.
    pub fn retry(mut self, min_delay: Duration, max_delay: Duration, max_retries: usize) -> Self {
        self.min_delay = min_delay;
        self.max_delay = max_delay;
        self.max_retries = max_retries;
        self
    }
}

/// Refuses a URL that is not `http(s)://host...`; the error names it safely.
fn check_url(url: &str) -> Result<Sink, NotifyError> {
    let bad = |reason| NotifyError::Url {
        sink: sink_name(url).unwrap_or_else(|| "(unparseable)".to_owned()),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// URLs are supported"));
    }
    let name = sink_name(url).ok_or_else(|| bad("the URL has no host"))?;
    Ok(Sink { url: parsed, name })
}

/// One queued notification to one sink.
struct Job {
    event: Arc<Prepared>,
    sink: usize,
}

/// What the worker and the notifier share.
struct State {
    sinks: Vec<Sink>,
    deliveries: Mutex<VecDeque<Delivery>>,
    history: usize,
    /// Notifications queued or in flight.
    pending: watch::Sender<usize>,
    metrics: Metrics,
}

impl State {
    fn record(&self, delivery: Delivery) {
        self.metrics.notification(&delivery.sink, delivery.outcome);
        if delivery.outcome != NotificationResult::Delivered {
            tracing::warn!(
                sink = delivery.sink,
                r#type = delivery.event_type,
                outcome = %delivery.outcome,
                attempts = delivery.attempts,
                status = delivery.status,
                error = delivery.error,
                "notification not delivered"
            );
        }
        let mut deliveries = lock(&self.deliveries);
        deliveries.push_front(delivery);
        deliveries.truncate(self.history);
    }

    fn done(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The delivery worker. Cheap to clone; the worker stops when every clone
/// (and the engine it follows) is gone.
#[derive(Clone)]
pub struct Notifier {
    state: Arc<State>,
    queue: Option<mpsc::Sender<Job>>,
    /// Asks the engine-event forwarder to queue what the engine already sent.
    catch_up: Option<mpsc::UnboundedSender<oneshot::Sender<()>>>,
}

impl Default for Notifier {
    /// A notifier without sinks: sends nothing, shows no deliveries.
    fn default() -> Self {
        Self {
            state: Arc::new(State {
                sinks: Vec::new(),
                deliveries: Mutex::new(VecDeque::new()),
                history: 0,
                pending: watch::Sender::new(0),
                metrics: Metrics::new(),
            }),
            queue: None,
            catch_up: None,
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sinks: Vec<&str> = self.state.sinks.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Notifier")
            .field("sinks", &sinks)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the delivery worker (needs a Tokio runtime). URLs that are
    /// not usable are skipped with a warning ([`NotifyOptions::from_args`]
    /// refuses them up front).
    pub fn new(options: NotifyOptions, metrics: Metrics) -> Self {
        let sinks = options
            .urls
            .iter()
            .filter_map(|url| match check_url(url) {
                Ok(sink) => Some(sink),
                Err(e) => {
                    tracing::warn!(error = %e, "notification URL skipped");
                    None
                }
            })
            .collect();
        let state = Arc::new(State {
            sinks,
            deliveries: Mutex::new(VecDeque::new()),
            history: options.history,
            pending: watch::Sender::new(0),
            metrics,
        });
        let client = deliver::client(options.timeout)
            .inspect_err(|e| tracing::error!(error = %e, "no HTTP client for notifications"))
            .ok();
        let sender = Sender {
            client,
            signer: options.secret.as_ref().map(StandardWebhooks::new),
            backoff: backon::ExponentialBuilder::new()
                .with_min_delay(options.min_delay)
                .with_max_delay(options.max_delay)
                .with_max_times(options.max_retries)
                .with_jitter(),
        };
        let (queue, jobs) = mpsc::channel(options.queue.max(1));
        let concurrency = options.concurrency.max(1);
        tokio::spawn(work(state.clone(), sender, jobs, concurrency));
        Self {
            state,
            queue: Some(queue),
            catch_up: None,
        }
    }

    /// Starts delivering `engine`'s events for application `app` (call before `engine.run()`).
    pub fn start(options: NotifyOptions, app: &str, engine: &Engine, metrics: Metrics) -> Self {
        let mut notifier = Self::new(options, metrics);
        let events = engine.subscribe();
        let (catch_up, requests) = mpsc::unbounded_channel();
        tokio::spawn(forward(notifier.clone(), app.to_owned(), events, requests));
        notifier.catch_up = Some(catch_up);
        notifier
    }

    /// Also delivers the events of `engine`, application `app` (one
    /// notifier for many applications); the task ends with the engine.
    pub fn follow(&self, app: &str, engine: &Engine) -> tokio::task::JoinHandle<()> {
        let (_, requests) = mpsc::unbounded_channel();
        tokio::spawn(forward(
            self.clone(),
            app.to_owned(),
            engine.subscribe(),
            requests,
        ))
    }

    /// Queues `event` for every sink without waiting; when the queue is
    /// full it is dropped for that sink (and counted).
    pub fn send(&self, event: CloudEvent) {
        let Some(queue) = &self.queue else { return };
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "a notification cannot be serialized");
                return;
            }
        };
        let prepared = Arc::new(Prepared {
            id: event.id,
            event_type: event.event_type,
            subject: event.subject,
            time: event.time,
            body,
        });
        for (sink, target) in self.state.sinks.iter().enumerate() {
            self.state.pending.send_modify(|n| *n += 1);
            let job = Job {
                event: prepared.clone(),
                sink,
            };
            if queue.try_send(job).is_err() {
                self.state.done();
                let dropped = prepared.delivery(&target.name, NotificationResult::Dropped);
                self.state.record(dropped);
            }
        }
    }

    /// The last deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).iter().cloned().collect()
    }

    /// How many notifications are queued or being sent.
    pub fn pending(&self) -> usize {
        *self.state.pending.borrow()
    }

    /// Waits up to `timeout` for queued notifications to go out (at
    /// shutdown), including those of engine events sent before the call.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(catch_up) = &self.catch_up {
            let (done, caught_up) = oneshot::channel();
            if catch_up.send(done).is_ok() {
                let _ = tokio::time::timeout_at(deadline, caught_up).await;
            }
        }
        let mut pending = self.state.pending.subscribe();
        let drained = tokio::time::timeout_at(deadline, pending.wait_for(|n| *n == 0)).await;
        if drained.is_err() {
            tracing::warn!(
                left = self.pending(),
                ?timeout,
                "notifications still queued at shutdown"
            );
        }
    }
}

/// Takes jobs off the queue, at most `concurrency` in flight.
async fn work(
    state: Arc<State>,
    sender: Sender,
    mut jobs: mpsc::Receiver<Job>,
    concurrency: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(job) = jobs.recv().await else { return };
        let state = state.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            if let Some(sink) = state.sinks.get(job.sink) {
                let delivery = sender.deliver(job.event, sink).await;
                state.record(delivery);
            }
            state.done();
            drop(permit);
        });
    }
}

/// Translates the engine's events into notifications and queues them; on
/// request, first queues every event already received, then answers.
async fn forward(
    notifier: Notifier,
    app: String,
    mut events: broadcast::Receiver<Event>,
    mut catch_up: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut translator = Translator::default();
    let mut queue = |event: Event| {
        if let Some(note) = translator.translate(&app, &event) {
            notifier.send(note);
        }
    };
    let lagged = |n| {
        tracing::warn!(
            missed = n,
            "notifications lagged behind the engine's events"
        )
    };
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => queue(event),
                Err(RecvError::Lagged(n)) => lagged(n),
                Err(RecvError::Closed) => return,
            },
            Some(done) = catch_up.recv() => {
                loop {
                    match events.try_recv() {
                        Ok(event) => queue(event),
                        Err(TryRecvError::Lagged(n)) => lagged(n),
                        Err(_) => break,
                    }
                }
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_named_safely() {
        assert!(check_url("https://hooks.example/T0K3N").is_ok());
        for url in ["ftp://hooks.example/T0K3N", "T0K3N", "file:///T0K3N"] {
            let Err(e) = check_url(url) else {
                panic!("{url} accepted")
            };
            let text = e.to_string();
            assert!(
                text.starts_with("--notify ") && !text.contains("T0K3N"),
                "{text}"
            );
        }
    }

    #[test]
    fn options_debug_shows_no_url_path_and_no_secret() {
        let options = NotifyOptions::new(vec!["https://hooks.example/T0K3N".to_owned()])
            .secret(WebhookSecret::new(b"s3cret".to_vec()));
        let text = format!("{options:?}");
        assert!(text.contains("https://hooks.example"), "{text}");
        assert!(
            !text.contains("T0K3N") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
