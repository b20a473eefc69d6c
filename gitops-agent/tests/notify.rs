//! Notifications against a real HTTP receiver: CloudEvents in structured
//! mode, Standard Webhooks signatures, retry on 503, no retry on 400, a full
//! queue that drops and counts, and nothing secret in what is sent.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use gitops_agent::args::NotifyArgs;
use gitops_agent::metrics::{Metrics, NotificationResult};
use gitops_agent::notify::{CloudEvent, Delivery, Notifier, NotifyOptions};
use gitops_agent::signing::{StandardWebhooks, WebhookSecret, check_timestamp};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{Engine, ManifestRender};
use serde_json::json;
use support::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(15);
const SECRET: &str = "topsecret-notify-key";
const FILE_MARKER: &str = "file-content-marker-42";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    notify: NotifyArgs,
}

fn options(args: &[&str]) -> NotifyOptions {
    let cli = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"));
    match NotifyOptions::from_args(&cli.notify) {
        Ok(Some(options)) => options,
        Ok(None) => panic!("no notification options from {args:?}"),
        Err(e) => panic!("{e}"),
    }
}

/// Fast retries for tests.
fn quick(options: NotifyOptions) -> NotifyOptions {
    options
        .retry(Duration::from_millis(10), Duration::from_millis(50), 5)
        .timeout(Duration::from_secs(5))
}

fn engine() -> (Engine, Arc<MemoryTarget>) {
    let source = Arc::new(MemorySource::new("main"));
    source.commit([(
        "app.yaml",
        format!("kind: Config\nmetadata: {{ name: web }}\nspec: {{ password: {FILE_MARKER} }}\n"),
    )]);
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .name("web")
        .source(source)
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    (engine, target)
}

/// Waits until `notifier` has recorded `n` deliveries; panics after [`WAIT`].
async fn deliveries(notifier: &Notifier, n: usize) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let deliveries = notifier.deliveries();
        if deliveries.len() >= n {
            return deliveries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} deliveries after {WAIT:?}, expected {n}: {deliveries:?}",
            deliveries.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn test_event(n: usize) -> CloudEvent {
    CloudEvent::new("web", "dev.gitops.test", json!({ "n": n }))
}

#[tokio::test]
async fn a_sync_is_notified_as_a_signed_cloudevent() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret_file = dir.path().join("notify-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap_or_else(|e| panic!("{e}"));
    let url = receiver.url("/hooks/T0K3N-in-path?key=T0K3N-in-query");
    let secret_arg = secret_file.display().to_string();
    let options = options(&["--notify", &url, "--notify-secret-file", &secret_arg]);
    let metrics = Metrics::new();
    let (engine, _) = engine();
    let notifier = Notifier::start(options, "web", &engine, metrics.clone());
    let report = engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.converged(), "{report}");

    let received = receiver.wait_for(1, WAIT).await;
    let request = &received[0];
    assert_eq!(request.uri, "/hooks/T0K3N-in-path?key=T0K3N-in-query");
    assert_eq!(
        request.header("content-type"),
        Some("application/cloudevents+json")
    );
    let event = request.json();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "dev.gitops.sync.succeeded");
    assert_eq!(event["subject"], "web");
    assert_eq!(event["source"], "/gitops-agent/web");
    assert_eq!(event["data"]["result"], "converged");
    assert_eq!(event["data"]["summary"]["created"], 1);
    assert_eq!(event["data"]["revision"], report.revision.to_string());
    let time = event["time"].as_str().unwrap_or_default();
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "time {time:?}");

    // The signature verifies with the secret, over the exact body.
    let id = request.header("webhook-id").unwrap_or_default();
    assert_eq!(Some(id), event["id"].as_str());
    let now = jiff::Timestamp::now().as_second();
    let timestamp = check_timestamp(request.header("webhook-timestamp").unwrap_or(""), now)
        .unwrap_or_else(|e| panic!("{e}"));
    let signature = request.header("webhook-signature").unwrap_or_default();
    let verifier = StandardWebhooks::new(&WebhookSecret::new(SECRET.as_bytes().to_vec()));
    assert!(
        verifier
            .verify(id, timestamp, &request.body, signature)
            .is_ok()
    );
    assert!(
        verifier
            .verify(id, timestamp, b"{\"tampered\":1}", signature)
            .is_err()
    );

    // Neither the secret nor the file's content is sent.
    let text = request.text();
    assert!(
        !text.contains(SECRET) && !text.contains(FILE_MARKER),
        "{text}"
    );

    // The delivery and the metric name the sink without its token.
    let sink = format!("http://{}", receiver.addr());
    let delivery = &deliveries(&notifier, 1).await[0];
    assert_eq!(delivery.outcome, NotificationResult::Delivered);
    assert_eq!((delivery.attempts, delivery.status), (1, Some(200)));
    assert_eq!(delivery.sink, sink);
    assert_eq!(delivery.event_type, "dev.gitops.sync.succeeded");
    assert_eq!(delivery.subject, "web");
    let shown = serde_json::to_string(&notifier.deliveries()).unwrap_or_default();
    let exposition = metrics.encode();
    assert!(
        exposition.contains(&format!(
            "gitops_notifications_total{{sink=\"{sink}\",result=\"delivered\"}} 1"
        )),
        "{exposition}"
    );
    for text in [&shown, &exposition] {
        assert!(!text.contains("T0K3N") && !text.contains(SECRET), "{text}");
    }
}

#[tokio::test]
async fn drift_is_notified_without_its_values() {
    let receiver = Receiver::start().await;
    let options = quick(NotifyOptions::new(vec![receiver.url("/")]));
    let (engine, target) = engine();
    let notifier = Notifier::start(options, "web", &engine, Metrics::new());
    engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    let id = "Config/web".parse().unwrap_or_else(|e| panic!("{e}"));
    target.edit(&id, json!({ "password": "drifted-value-marker" }));
    engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));

    // sync.succeeded, drift.detected, drift.reverted, sync.succeeded.
    let received = receiver.wait_for(4, WAIT).await;
    let events: Vec<serde_json::Value> = received.iter().map(|r| r.json()).collect();
    let of_type = |t: &str| events.iter().find(|e| e["type"] == t).cloned();
    let detected = of_type("dev.gitops.drift.detected")
        .unwrap_or_else(|| panic!("no drift.detected in {events:?}"));
    assert_eq!(detected["data"]["resource"], "Config/web");
    assert_eq!(detected["data"]["policy"], "revert");
    assert!(of_type("dev.gitops.drift.reverted").is_some(), "{events:?}");
    for request in &received {
        let text = request.text();
        assert!(
            !text.contains("drifted-value-marker") && !text.contains(FILE_MARKER),
            "{text}"
        );
    }
    notifier.flush(WAIT).await;
}

#[tokio::test]
async fn a_failed_sync_and_a_rollback_are_notified() {
    let receiver = Receiver::start().await;
    let options = quick(NotifyOptions::new(vec![receiver.url("/")]));
    let source = Arc::new(MemorySource::new("main"));
    let first = source.commit([(
        "app.yaml",
        "kind: Config\nmetadata: { name: web }\nspec: { port: 80 }\n",
    )]);
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .name("web")
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let notifier = Notifier::start(options, "web", &engine, Metrics::new());
    engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    let second = source.commit([(
        "app.yaml",
        "kind: Config\nmetadata: { name: web }\nspec: { port: 81 }\n",
    )]);
    let id = "Config/web".parse().unwrap_or_else(|e| panic!("{e}"));
    target.fail_next(&id, 1, false);
    let report = engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.converged(), "{report}");
    let report = engine
        .rollback(&first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.converged(), "{report}");
    notifier.flush(WAIT).await;

    let events: Vec<serde_json::Value> = receiver.received().iter().map(|r| r.json()).collect();
    let of_type = |t: &str| {
        events
            .iter()
            .find(|e| e["type"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} in {events:#?}"))
    };
    let failed = of_type("dev.gitops.sync.failed");
    assert_eq!(failed["data"]["revision"], second.to_string());
    assert_eq!(failed["data"]["result"], "failed");
    let rollback = of_type("dev.gitops.rollback.succeeded");
    assert_eq!(rollback["data"]["revision"], first.to_string());
    assert_eq!(rollback["data"]["trigger"], "rollback");
}

#[tokio::test]
async fn a_503_is_retried_until_delivered() {
    let receiver = Receiver::start().await;
    receiver.answer(503, 2);
    let metrics = Metrics::new();
    let notifier = Notifier::new(
        quick(NotifyOptions::new(vec![receiver.url("/")])),
        metrics.clone(),
    );
    notifier.send(test_event(1));
    let delivery = &deliveries(&notifier, 1).await[0];
    assert_eq!(delivery.outcome, NotificationResult::Delivered);
    assert_eq!((delivery.attempts, delivery.status), (3, Some(200)));
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    // Every attempt is the same message (receivers deduplicate on webhook-id).
    let ids: Vec<_> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids[0].is_some() && ids.iter().all(|i| *i == ids[0]),
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let receiver = Receiver::start().await;
    receiver.answer(400, 5);
    let metrics = Metrics::new();
    let notifier = Notifier::new(
        quick(NotifyOptions::new(vec![receiver.url("/")])),
        metrics.clone(),
    );
    notifier.send(test_event(1));
    let delivery = &deliveries(&notifier, 1).await[0];
    assert_eq!(delivery.outcome, NotificationResult::Rejected);
    assert_eq!((delivery.attempts, delivery.status), (1, Some(400)));
    // The outcome is recorded after the last attempt: no second request came.
    assert_eq!(receiver.received().len(), 1);
    assert!(metrics.encode().contains("result=\"rejected\"} 1"));
}

#[tokio::test]
async fn connection_errors_are_retried_then_given_up() {
    // A port nobody listens on: bind one, then let it go.
    let port = support::free_port();
    let options = NotifyOptions::new(vec![format!("http://127.0.0.1:{port}/x")]).retry(
        Duration::from_millis(10),
        Duration::from_millis(20),
        2,
    );
    let notifier = Notifier::new(options, Metrics::new());
    notifier.send(test_event(1));
    let delivery = &deliveries(&notifier, 1).await[0];
    assert_eq!(delivery.outcome, NotificationResult::Failed);
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.status, None);
    assert_eq!(delivery.error.as_deref(), Some("connection failed"));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_flush_waits_for_the_rest() {
    let receiver = Receiver::start().await;
    receiver.hold();
    let metrics = Metrics::new();
    let options = quick(NotifyOptions::new(vec![receiver.url("/")]))
        .queue(2)
        .concurrency(1);
    let notifier = Notifier::new(options, metrics.clone());
    for n in 0..10 {
        notifier.send(test_event(n));
    }
    // Two wait in the queue, at most one is in flight: the rest is dropped.
    let dropped = notifier
        .deliveries()
        .iter()
        .filter(|d| d.outcome == NotificationResult::Dropped && d.attempts == 0)
        .count();
    assert!((7..=8).contains(&dropped), "{:?}", notifier.deliveries());
    let sink = format!("http://{}", receiver.addr());
    let counted =
        format!("gitops_notifications_total{{sink=\"{sink}\",result=\"dropped\"}} {dropped}");
    assert!(metrics.encode().contains(&counted), "{}", metrics.encode());
    assert!(notifier.pending() > 0);

    receiver.release();
    notifier.flush(WAIT).await;
    assert_eq!(notifier.pending(), 0);
    let delivered = notifier
        .deliveries()
        .iter()
        .filter(|d| d.outcome == NotificationResult::Delivered)
        .count();
    assert_eq!(delivered, 10 - dropped);
    assert_eq!(receiver.received().len(), 10 - dropped);
}

#[test]
fn bad_flags_are_named_without_the_url_path_or_the_secret() {
    let cli = Cli::try_parse_from(["agent", "--notify", "ftp://hooks.example/T0K3N"])
        .unwrap_or_else(|e| panic!("{e}"));
    let Err(e) = NotifyOptions::from_args(&cli.notify) else {
        panic!("an ftp:// URL was accepted")
    };
    let text = e.to_string();
    assert!(
        text.starts_with("--notify ftp://hooks.example") && !text.contains("T0K3N"),
        "{text}"
    );
    let cli = Cli::try_parse_from([
        "agent",
        "--notify",
        "https://hooks.example/",
        "--notify-secret-file",
        "/nonexistent/notify-secret",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let Err(e) = NotifyOptions::from_args(&cli.notify) else {
        panic!("a missing secret file was accepted")
    };
    assert!(
        e.to_string()
            .starts_with("--notify-secret-file /nonexistent/notify-secret"),
        "{e}"
    );
}
