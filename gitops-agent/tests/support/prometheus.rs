//! A real Prometheus server for metrics tests, started on loopback with its
//! own storage in a temporary directory and a 1 s scrape interval, and a
//! tiny endpoint serving `Metrics::encode()` for it to scrape.
//!
//! The `prometheus` binary comes from the Debian package `prometheus`,
//! which `scripts/test` installs; without it the test fails (never skips).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use gitops_agent::metrics::{CONTENT_TYPE as OPENMETRICS, Metrics};
use serde_json::Value;

/// Serves `GET /metrics` with `metrics.encode()` on a free loopback port.
pub struct Endpoint {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Endpoint {
    /// Starts serving.
    pub async fn start(metrics: Metrics) -> Self {
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(CONTENT_TYPE, OPENMETRICS)], metrics.encode()) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the metrics endpoint");
        let addr = listener.local_addr().expect("the endpoint's address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A Prometheus server; killed (by its own process handle) when dropped.
pub struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use super::free_port;

impl Prometheus {
    /// Starts a server scraping `target` every second; waits until it is ready.
    pub async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: agent\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `prometheus` ({e}): this test needs a real Prometheus \
                     server; scripts/test installs it (Debian: apt-get install prometheus)"
                )
            });
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            client: reqwest::Client::new(),
        };
        server.wait_ready(Duration::from_secs(30)).await;
        server
    }

    async fn wait_ready(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let url = format!("{}/-/ready", self.base);
        loop {
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus was not ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The result vector of an instant query (`/api/v1/query`).
    pub async fn query(&self, query: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base),
            [("query", query)],
        )
        .expect("a query URL");
        let Ok(response) = self.client.get(url).send().await else {
            return Vec::new();
        };
        let body = response.bytes().await.unwrap_or_default();
        let json: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_ne!(json["status"], "error", "query {query}: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `query` returns exactly `series` series; returns them.
    /// Panics after `timeout` with the last answer.
    pub async fn wait_for(&self, query: &str, series: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let result = self.query(query).await;
            if result.len() == series {
                return result;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{query}` gave {} series within {timeout:?}, expected {series}: {result:?}",
                result.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A sample's value (`[time, "value"]`) as a number.
pub fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
