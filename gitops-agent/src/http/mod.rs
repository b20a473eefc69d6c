//! The agent's HTTP service on axum/hyper: health, readiness, status,
//! history, metrics, notifications, and authenticated webhooks.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 503 until the engine's first reconcile ended (whatever its result), then 200 |
//! | `GET /status` | the engine's status as JSON; drift lists resource ids and field paths, values only with `--expose-values`; with many applications `{"apps": [...], "config": {...}}` |
//! | `GET /history?limit=N` | the newest N (default 20, at most 100) syncs as JSON |
//! | `GET /apps/{name}/status`, `/apps/{name}/history`, `/apps/{name}/audit?since=T&limit=N` | one application (`/status/{name}` and `/history/{name}` too); the audit trail newest first, the newest N (default 100, at most 1000) |
//! | `GET /audit?since=T&limit=N` | the one application's audit trail, newest first (404 with many applications) |
//! | `GET /` | the status page: server-rendered HTML, one row per application (no values, no JavaScript) |
//! | `GET /apps/{name}` | one application's page: status, the plan of its last sync (in memory), history, audit trail |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /notifications` | the last notification deliveries as JSON (`[]` without `--notify`) |
//! | `POST /hooks/github` | GitHub (`X-Hub-Signature-256`): a push to the tracked ref polls now |
//! | `POST /hooks/gitlab` | GitLab (`X-Gitlab-Token`): a push to the tracked ref polls now |
//! | `POST /hooks/generic` | Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`): polls now |
//! | `POST /retry` | any of the three schemes: retries the current revision, lifting a stall |
//! | `POST /confirm?revision=<id>` | signed like `/retry`, body `{"revision": "<id>"}`: confirms a revision held past the deletion or change limits |
//!
//! Every request must name the service in its `Host` header (the listen
//! address, `localhost:<port>` on a loopback listen, any IP with the port on
//! an unspecified listen, or the host of `--public-url`): a browser page on another site cannot reach it through
//! DNS rebinding (421 otherwise). Webhooks need the secret of
//! `--webhook-secret-file`; without one they are all refused (401). A
//! webhook only ever asks the engine to look at the source now
//! ([`EngineHandle::reconcile_now`](gitops_core::EngineHandle::reconcile_now)):
//! it never lifts a stall; `POST /retry` does.
//!
//! ```no_run
//! # async fn demo(engine: gitops_core::Engine) -> Result<(), gitops_agent::http::HttpError> {
//! use gitops_agent::http::{AppContext, HttpOptions, RefFilter, Server};
//! use gitops_agent::metrics::Metrics;
//! use gitops_agent::signing::WebhookSecret;
//!
//! let options = HttpOptions::new("127.0.0.1:8080".parse().expect("an address"))
//!     .secret(WebhookSecret::new(b"s3cret".to_vec()))
//!     .refs(RefFilter::Branch("main".into()));
//! let server = Server::bind(options, AppContext::new(engine, Metrics::new(), None)).await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.run(async {
//!     let _ = stopped.await;
//! }));
//! // ... later:
//! let _ = stop.send(());
//! let _ = serving.await;
//! # Ok(())
//! # }
//! ```

mod apps;
mod hooks;
mod host;
mod last_sync;
mod owners;
mod page;
mod push;
mod refs;
mod replay;
mod routes;
mod server;
mod view;

use std::net::SocketAddr;
use std::time::Duration;

use gitops_core::Engine;

use crate::args::AgentArgs;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::signing::{SecretFileError, WebhookSecret};

pub(crate) use apps::Restarts;
pub use apps::{AppEntry, AppSet, ConfigState};
pub use owners::{Owner, Replicas};
pub use push::repo_key;
pub use refs::RefFilter;
pub use server::Server;

/// Why the HTTP service cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The listen address cannot be bound.
    #[error("--listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A non-loopback listen address without a webhook secret: anyone who
    /// reaches it could trigger syncs.
    #[error(
        "--listen {listen} is not a loopback address: it needs --webhook-secret-file \
         (or listen on 127.0.0.1 behind a proxy)"
    )]
    SecretRequired {
        /// The address.
        listen: SocketAddr,
    },
    /// `--webhook-secret-file` cannot be read or is empty (the error names
    /// the file, never its content).
    #[error("--webhook-secret-file {0}")]
    Secret(#[from] SecretFileError),
    /// `--public-url` is not a URL with a host.
    #[error("--public-url {url}: {reason}")]
    PublicUrl {
        /// The value given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How the service listens, whom it trusts, and its limits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// The address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// `Host` header values accepted besides the listen address: the host
    /// of `--public-url`, with and without its port (lower case).
    pub public_hosts: Vec<String>,
    /// The shared webhook secret; `None` refuses every webhook.
    pub secret: Option<WebhookSecret>,
    /// Which pushes a webhook acts on.
    pub refs: RefFilter,
    /// Show drifted values (and gate output) in `/status` and `/history`.
    pub expose_values: bool,
    /// The largest request body; larger ones get 413. Default 1 MiB.
    pub body_limit: usize,
    /// How long a connection may take to send a request's headers
    /// (including the first byte, and between keep-alive requests). Default 10 s.
    pub header_read_timeout: Duration,
    /// How long one request may take from its headers to its answer (a
    /// body sent slowly included); 408 beyond. Default 30 s.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog. Default 256.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish. Default 10 s.
    pub drain_timeout: Duration,
}

impl HttpOptions {
    /// Listening on `listen` with the defaults: no secret (webhooks
    /// refused), every push acted on, values hidden, and the limits above.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            public_hosts: Vec::new(),
            secret: None,
            refs: RefFilter::Any,
            expose_values: false,
            body_limit: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// From the command line; `None` without `--listen`. Reads
    /// `--webhook-secret-file`, refuses a non-loopback address without it,
    /// and acts on pushes to the ref that `--branch`/`--tag`/`--semver`/
    /// `--commit` select.
    pub fn from_args(args: &AgentArgs) -> Result<Option<Self>, HttpError> {
        let http = &args.http;
        let Some(listen) = http.listen else {
            return Ok(None);
        };
        let secret = http
            .webhook_secret_file
            .as_deref()
            .map(WebhookSecret::read)
            .transpose()?;
        if secret.is_none() && !listen.ip().is_loopback() {
            return Err(HttpError::SecretRequired { listen });
        }
        let mut options = Self::new(listen)
            .refs(RefFilter::from(&args.source.policy()))
            .expose_values(http.expose_values);
        options.secret = secret;
        if let Some(url) = &http.public_url {
            options = options.public_url(url)?;
        }
        Ok(Some(options))
    }

    /// Trusts `secret` for webhooks.
    #[must_use]
    pub fn secret(mut self, secret: WebhookSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Acts only on pushes `refs` accepts.
    #[must_use]
    pub fn refs(mut self, refs: RefFilter) -> Self {
        self.refs = refs;
        self
    }

    /// Shows drifted values and gate output.
    #[must_use]
    pub fn expose_values(mut self, on: bool) -> Self {
        self.expose_values = on;
        self
    }

    /// Accepts the host (and port) of `url` in `Host` headers: the address
    /// the agent is reached at through a proxy.
    pub fn public_url(mut self, url: &str) -> Result<Self, HttpError> {
        self.public_hosts = host::public_hosts(url).map_err(|reason| HttpError::PublicUrl {
            url: url.to_owned(),
            reason,
        })?;
        Ok(self)
    }

    /// Sets the header read timeout.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the cap on connections served at once (at least 1).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
}

/// What the handlers read and trigger.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppContext {
    /// The applications served: one engine, or many (`--config`).
    pub apps: AppSet,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The notification worker, if any.
    pub notifier: Option<Notifier>,
}

impl AppContext {
    /// A context for one application's `engine` (webhooks act on pushes
    /// that [`HttpOptions::refs`] accepts).
    pub fn new(engine: Engine, metrics: Metrics, notifier: Option<Notifier>) -> Self {
        Self::many(
            AppSet::single(AppEntry::new(engine, RefFilter::Any)),
            metrics,
            notifier,
        )
    }

    /// A context for the applications of `apps` ([`AppSet::many`] for a
    /// `--config`: each application's webhooks act on its own repository
    /// and ref).
    pub fn many(apps: AppSet, metrics: Metrics, notifier: Option<Notifier>) -> Self {
        Self {
            apps,
            metrics,
            notifier,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn args(extra: &[&str]) -> AgentArgs {
        let base = ["agent", "--repo", "/srv/repo"];
        Cli::try_parse_from(base.iter().chain(extra))
            .expect("valid flags")
            .agent
    }

    #[test]
    fn no_listen_no_service() {
        assert!(HttpOptions::from_args(&args(&[])).expect("ok").is_none());
    }

    #[test]
    fn non_loopback_without_a_secret_is_refused_naming_both_flags() {
        let e = HttpOptions::from_args(&args(&["--listen", "0.0.0.0:8080"])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("--listen 0.0.0.0:8080"), "{text}");
        assert!(text.contains("--webhook-secret-file"), "{text}");
        let loopback = HttpOptions::from_args(&args(&["--listen", "127.0.0.1:0"]));
        assert!(loopback.expect("ok").is_some());
    }

    #[test]
    fn secret_files_are_named_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let missing = dir.path().join("missing");
        for file in [&empty, &missing] {
            let flags = [
                "--listen",
                "0.0.0.0:8080",
                "--webhook-secret-file",
                file.to_str().expect("utf-8"),
            ];
            let text = HttpOptions::from_args(&args(&flags))
                .unwrap_err()
                .to_string();
            assert!(text.contains("--webhook-secret-file"), "{text}");
            assert!(text.contains(file.to_str().expect("utf-8")), "{text}");
        }
        let good = dir.path().join("good");
        std::fs::write(&good, "hunter2\n").expect("write");
        let flags = [
            "--listen",
            "0.0.0.0:8080",
            "--webhook-secret-file",
            good.to_str().expect("utf-8"),
            "--branch",
            "prod",
            "--public-url",
            "https://deploy.example.com/",
        ];
        let options = HttpOptions::from_args(&args(&flags))
            .expect("ok")
            .expect("some");
        assert_eq!(
            options.secret.as_ref().map(WebhookSecret::as_bytes),
            Some(&b"hunter2"[..])
        );
        assert_eq!(options.refs, RefFilter::Branch("prod".into()));
        assert!(!format!("{options:?}").contains("hunter2"));
        assert!(options.public_hosts.contains(&"deploy.example.com".into()));
    }

    #[test]
    fn a_public_url_without_a_host_is_refused() {
        let e = HttpOptions::from_args(&args(&["--listen", "127.0.0.1:1", "--public-url", "x"]))
            .unwrap_err();
        assert!(e.to_string().contains("--public-url x"), "{e}");
    }
}
