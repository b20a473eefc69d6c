//! Unit tests of the metrics series logic.
use super::*;
use gitops_core::testing::MemorySource;

fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn app_info_keeps_one_series_per_app() {
    let metrics = Metrics::new();
    metrics.set_info("web", String::new(), false);
    metrics.set_info("web", "main@sha1:aaa".to_owned(), true);
    metrics.set_info("db", "main@sha1:ccc".to_owned(), false);
    metrics.set_info("web", "main@sha1:bbb".to_owned(), true);
    let text = metrics.encode();
    let mut info = lines(&text, "gitops_app_info{");
    info.sort_unstable();
    assert_eq!(
        info,
        vec![
            r#"gitops_app_info{app="db",revision="main@sha1:ccc",ready="false"} 1"#,
            r#"gitops_app_info{app="web",revision="main@sha1:bbb",ready="true"} 1"#,
        ],
        "{text}"
    );
    assert_eq!(
        lines(&text, "gitops_app_info{app=\"web\"").len(),
        1,
        "{text}"
    );
    assert_eq!(
        lines(&text, "gitops_app_info{app=\"db\"").len(),
        1,
        "{text}"
    );
    assert!(!text.contains("main@sha1:aaa"), "{text}");
}

#[test]
fn label_values_are_snake_case() {
    let metrics = Metrics::new();
    metrics.webhook(WebhookProvider::Gitlab, WebhookResult::BadRequest);
    metrics.notification("https://hooks.example:8443", NotificationResult::Dropped);
    let mut failed = 0;
    let finished = Event::SyncFinished {
        revision: Revision::new("main", "abc"),
        result: SyncResult::GateFailed,
        duration: std::time::Duration::from_millis(20),
        summary: Default::default(),
    };
    metrics.record_event("web", &finished, &mut failed);
    let text = metrics.encode();
    for sample in [
        r#"gitops_webhook_requests_total{provider="gitlab",result="bad_request"} 1"#,
        r#"gitops_notifications_total{sink="https://hooks.example:8443",result="dropped"} 1"#,
        r#"gitops_sync_total{app="web",result="gate_failed"} 1"#,
        r#"gitops_reconcile_duration_seconds_count{app="web",result="gate_failed"} 1"#,
    ] {
        assert!(text.contains(sample), "{sample} missing in\n{text}");
    }
}

#[test]
fn syncs_that_did_not_run_are_not_counted() {
    let metrics = Metrics::new();
    let mut failed = 0;
    for result in [
        SyncResult::Blocked,
        SyncResult::Planned,
        SyncResult::Aborted,
    ] {
        let event = Event::SyncFinished {
            revision: Revision::new("main", "abc"),
            result,
            duration: std::time::Duration::ZERO,
            summary: Default::default(),
        };
        metrics.record_event("web", &event, &mut failed);
    }
    assert!(!metrics.encode().contains("gitops_sync_total{"));
}

#[test]
fn failed_resources_are_those_of_the_last_sync() {
    let metrics = Metrics::new();
    let mut failed = 0;
    let id: gitops_core::ResourceId = match "Config/web".parse() {
        Ok(id) => id,
        Err(e) => panic!("{e}"),
    };
    let fail = Event::ResourceFailed {
        id,
        error: "boom".to_owned(),
        transient: false,
    };
    let started = Event::SyncStarted {
        revision: Revision::new("main", "abc"),
        trigger: gitops_core::engine::Trigger::Poll,
    };
    let finished = Event::SyncFinished {
        revision: Revision::new("main", "abc"),
        result: SyncResult::Failed,
        duration: std::time::Duration::ZERO,
        summary: gitops_core::plan::Summary {
            create: 2,
            update: 1,
            unchanged: 4,
            ..Default::default()
        },
    };
    for event in [
        &started, &fail, &fail, &finished, &started, &fail, &finished,
    ] {
        metrics.record_event("web", event, &mut failed);
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"gitops_resources{app="web",state="failed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gitops_resources{app="web",state="managed"} 7"#),
        "{text}"
    );
}

#[tokio::test]
async fn polls_are_timed_and_counted() {
    let metrics = Metrics::new();
    let memory = Arc::new(MemorySource::new("main"));
    memory.commit([("a.txt", "a")]);
    let source = metrics.source("web", memory.clone());
    assert!(source.poll().await.is_ok());
    memory.fail_next_polls(1, true);
    assert!(source.poll().await.is_err());
    let text = metrics.encode();
    for sample in [
        r#"gitops_git_poll_duration_seconds_count{app="web"} 2"#,
        r#"gitops_git_fetch_total{app="web",result="success"} 1"#,
        r#"gitops_git_fetch_total{app="web",result="failure"} 1"#,
    ] {
        assert!(text.contains(sample), "{sample} missing in\n{text}");
    }
}
