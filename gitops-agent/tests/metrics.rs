//! The agent's metrics through a real Prometheus server: an engine syncs
//! (its source wrapped by `Metrics::source`, its events followed by
//! `Metrics::watch`), Prometheus scrapes the OpenMetrics text every second,
//! and the series are read back with PromQL.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gitops_agent::metrics::Metrics;
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{Engine, ManifestRender};
use support::prometheus::{Endpoint, Prometheus, value};

/// A scrape every second; the first one comes a few seconds after start.
const WAIT: Duration = Duration::from_secs(60);

fn manifest(port: u16) -> String {
    format!("kind: Config\nmetadata: {{ name: web }}\nspec: {{ port: {port} }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_sync_series() {
    let metrics = Metrics::new();
    let endpoint = Endpoint::start(metrics.clone()).await;
    let prometheus = Prometheus::start(endpoint.addr()).await;

    let source = Arc::new(MemorySource::new("main"));
    let first = source.commit([("app.yaml", manifest(80))]);
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .name("web")
        .source(metrics.source("web", source.clone()))
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _watch = metrics.watch(&engine);

    let report = engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.converged(), "{report}");
    let id = "Config/web".parse().unwrap_or_else(|e| panic!("{e}"));
    target.edit(&id, serde_json::json!({ "port": 81 }));
    let report = engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.converged(), "{report}");

    for query in [
        r#"gitops_sync_total{app="web",result="converged"} >= 2"#,
        r#"gitops_reconcile_duration_seconds_count{app="web",result="converged"} >= 2"#,
        r#"gitops_git_poll_duration_seconds_count{app="web"} >= 2"#,
        r#"gitops_git_fetch_total{app="web",result="success"} >= 2"#,
        r#"gitops_drift_detected_total{app="web"} >= 1"#,
        r#"gitops_drift_reverted_total{app="web"} >= 1"#,
        r#"gitops_resources{app="web",state="managed"} == 1"#,
        r#"gitops_resources{app="web",state="failed"} == 0"#,
        r#"gitops_last_sync_timestamp_seconds{app="web"} > 1.7e9"#,
    ] {
        prometheus.wait_for(query, 1, WAIT).await;
    }
    let info = format!(r#"gitops_app_info{{app="web",revision="{first}",ready="true"}}"#);
    let series = prometheus.wait_for(&info, 1, WAIT).await;
    assert_eq!(value(&series[0]), 1.0);

    // A new revision replaces the info series: the old one is gone from
    // the very scrape that brings the new one (a stale marker), not kept.
    let second = source.commit([("app.yaml", manifest(82))]);
    let report = engine.sync_once().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.converged(), "{report}");
    let info = format!(r#"gitops_app_info{{app="web",revision="{second}",ready="true"}}"#);
    prometheus.wait_for(&info, 1, WAIT).await;
    let old = format!(r#"gitops_app_info{{app="web",revision="{first}"}}"#);
    assert_eq!(
        prometheus.query(&old).await,
        Vec::<serde_json::Value>::new()
    );
    let all = prometheus.query(r#"gitops_app_info{app="web"}"#).await;
    assert_eq!(all.len(), 1, "{all:?}");
}
