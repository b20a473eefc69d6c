//! A real engine (in-memory source and target, 1 h poll interval) behind the
//! real HTTP service on 127.0.0.1:0, real clients, signing helpers, and
//! ways to prove that a request triggered nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_agent::http::{AppContext, HttpOptions, RefFilter, Server};
use gitops_agent::metrics::Metrics;
use gitops_agent::signing::{StandardWebhooks, WebhookSecret, sign_github};
use gitops_core::testing::{MemorySource, MemoryTarget};
use gitops_core::{
    ConditionKind, Engine, EngineConfig, EngineError, FilesRender, ResourceId, Revision,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The webhook secret every world trusts.
pub const SECRET: &[u8] = b"test-webhook-secret";

/// How long a positive condition may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a request that must trigger nothing is given to (wrongly)
/// trigger something: a trigger polls the source within microseconds.
pub const QUIET: Duration = Duration::from_millis(400);

/// The one file the tests deploy.
pub const FILE: &str = "app.conf";

/// The trusted secret.
pub fn secret() -> WebhookSecret {
    WebhookSecret::new(SECRET.to_vec())
}

/// Listen on a free loopback port, trust [`SECRET`], act on pushes to `main`.
pub fn options() -> HttpOptions {
    HttpOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        .secret(secret())
        .refs(RefFilter::Branch("main".into()))
}

/// The resource id of [`FILE`].
pub fn file_id() -> ResourceId {
    format!("File//{FILE}").parse().expect("a valid id")
}

/// Waits until `cond` holds, at most `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine on a [`MemorySource`] tracking `main` and a [`MemoryTarget`],
/// with the HTTP service serving it.
pub struct World {
    /// The source; commit to it to make a new revision.
    pub source: Arc<MemorySource>,
    /// The target.
    pub target: Arc<MemoryTarget>,
    /// The engine.
    pub engine: Engine,
    /// Where the service listens.
    pub addr: SocketAddr,
    /// A client (no proxy).
    pub client: reqwest::Client,
    /// The first commit.
    pub first: Revision,
    stop_http: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    engine_task: Option<JoinHandle<Result<(), EngineError>>>,
}

impl World {
    /// One commit in the source, the service serving; the engine not yet running.
    pub async fn bound(options: HttpOptions) -> Self {
        let source = Arc::new(MemorySource::new("main"));
        let first = source.commit([(FILE, "v1\n")]);
        let target = Arc::new(MemoryTarget::new());
        let config = EngineConfig::default()
            .interval(Duration::from_secs(3600))
            .interval_jitter(0.0)
            .drift_interval(Duration::from_secs(3600));
        let engine = Engine::builder()
            .source(source.clone())
            .render(Arc::new(FilesRender::new()))
            .target(target.clone())
            .config(config)
            .name("app")
            .build()
            .expect("a complete builder");
        let context = AppContext::new(engine.clone(), Metrics::new(), None);
        let server = Server::bind(options, context).await.expect("bind");
        let addr = server.local_addr();
        let (stop_http, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server.run(shutdown).await.expect("the server runs");
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .expect("a client");
        Self {
            source,
            target,
            engine,
            addr,
            client,
            first,
            stop_http: Some(stop_http),
            server: Some(server),
            engine_task: None,
        }
    }

    /// [`bound`](Self::bound), the engine running and the first commit deployed.
    pub async fn started(options: HttpOptions) -> Self {
        let mut world = Self::bound(options).await;
        world.run_engine();
        let first = world.first.clone();
        assert!(world.deployed(&first).await, "the first commit deploys");
        world
    }

    /// Starts the engine's loop.
    pub fn run_engine(&mut self) {
        let engine = self.engine.clone();
        self.engine_task = Some(tokio::spawn(async move { engine.run().await }));
    }

    /// Waits until `revision` is the last applied one.
    pub async fn deployed(&self, revision: &Revision) -> bool {
        eventually(PATIENCE, || {
            self.engine
                .status()
                .last_applied
                .is_some_and(|r| r.id == revision.id)
        })
        .await
    }

    /// Whether the engine reports `kind`.
    pub fn is(&self, kind: ConditionKind) -> bool {
        self.engine.status().is(kind)
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET answered")
    }

    /// `GET path` as JSON, asserting 200.
    pub async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json_value().await
    }

    /// `POST path` with `headers` and `body`.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&'static str, String)],
        body: impl Into<Vec<u8>>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).body(body.into());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("POST answered")
    }

    /// Commits a second revision that only a trigger would deploy (the
    /// poll interval is an hour); returns it and the poll count so far.
    pub fn pending_commit(&self, content: &str) -> (Revision, usize) {
        let revision = self.source.commit([(FILE, content)]);
        (revision, self.source.polls())
    }

    /// Asserts that nothing polled the source since `polls` and that
    /// `pending` is not deployed, after giving a trigger [`QUIET`] to act.
    pub async fn assert_quiet(&self, polls: usize, pending: &Revision, what: &str) {
        tokio::time::sleep(QUIET).await;
        assert_eq!(self.source.polls(), polls, "{what}: the source was polled");
        let applied = self.engine.status().last_applied;
        assert_ne!(
            applied.map(|r| r.id),
            Some(pending.id.clone()),
            "{what}: the pending commit was deployed"
        );
    }

    /// Stops the service and the engine.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the server task ends");
        }
        self.engine.handle().shutdown();
        if let Some(task) = self.engine_task.take() {
            let _ = task.await;
        }
    }

    /// Stops only the service; returns when `Server::run` has returned.
    pub async fn stop_http(&mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the server task ends");
        }
    }
}

/// A response body as JSON.
pub trait JsonBody {
    /// Parses the body.
    fn json_value(self) -> impl std::future::Future<Output = Value>;
}

impl JsonBody for reqwest::Response {
    async fn json_value(self) -> Value {
        let text = self.text().await.expect("a body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

/// A push event's body.
pub fn push(reference: &str) -> String {
    format!(r#"{{"ref":"{reference}","after":"0000000000000000000000000000000000000001"}}"#)
}

/// GitHub's headers for `body`, signed with `secret`.
pub fn github(
    secret: &WebhookSecret,
    event: &str,
    delivery: &str,
    body: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("x-hub-signature-256", sign_github(secret, body.as_bytes())),
        ("x-github-event", event.into()),
        ("x-github-delivery", delivery.into()),
        ("content-type", "application/json".into()),
    ]
}

/// GitLab's headers.
pub fn gitlab(token: &str, event: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-gitlab-token", token.into()),
        ("x-gitlab-event", event.into()),
        ("content-type", "application/json".into()),
    ]
}

/// Unix seconds now.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Standard Webhooks headers for `body`, signed with `secret` at `timestamp`.
pub fn standard(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    let signature = StandardWebhooks::new(secret).sign(id, timestamp, body.as_bytes());
    vec![
        ("webhook-id", id.into()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

/// A secret the service does not trust.
pub fn wrong_secret() -> WebhookSecret {
    WebhookSecret::new(b"not-the-secret".to_vec())
}

/// Sends `request` as raw bytes and returns what came back until the
/// server closed the connection (or [`PATIENCE`] passed).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP/1 answer (0 if none).
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
