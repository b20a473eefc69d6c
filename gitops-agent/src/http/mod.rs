//! The agent's HTTP service on axum/hyper: health, readiness, status,
//! history, metrics, notifications, and authenticated webhooks.
//!
//! STUB: the HTTP helper fills this module in. The API below is what the
//! rest of the crate calls; keep it (extend it as needed).

use std::future::Future;
use std::net::SocketAddr;

use gitops_core::Engine;

use crate::args::HttpArgs;
use crate::metrics::Metrics;
use crate::notify::Notifier;

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
}

/// How the service listens and whom it trusts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// The address to listen on.
    pub listen: SocketAddr,
}

impl HttpOptions {
    /// From the command line; `None` without `--listen`. Refuses a
    /// non-loopback address without a webhook secret.
    pub fn from_args(args: &HttpArgs) -> Result<Option<Self>, HttpError> {
        Ok(args.listen.map(|listen| Self { listen }))
    }
}

/// What the handlers read and trigger.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppContext {
    /// The engine (status, history, triggers).
    pub engine: Engine,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The notification worker, if any.
    pub notifier: Option<Notifier>,
}

impl AppContext {
    /// A context for `engine`.
    pub fn new(engine: Engine, metrics: Metrics, notifier: Option<Notifier>) -> Self {
        Self {
            engine,
            metrics,
            notifier,
        }
    }
}

/// A bound, not yet serving, HTTP service.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
}

impl Server {
    /// Binds the listen address (port 0 picks a free one).
    pub async fn bind(options: HttpOptions, _context: AppContext) -> Result<Self, HttpError> {
        Ok(Self {
            addr: options.listen,
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        shutdown.await;
        Ok(())
    }
}
