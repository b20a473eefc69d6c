//! [`Server`]: the listener and the accept loop.
//!
//! The loop is written by hand around hyper-util's HTTP/1 connection
//! builder rather than `axum::serve`, which offers none of what an agent
//! exposed to a network needs: a cap on connections served at once (a
//! semaphore), a header read timeout (a connection that sends nothing is
//! closed), back-off when `accept` fails (out of file descriptors: sleep,
//! never spin), and a bounded graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::host::AllowedHosts;
use super::routes::{self, Shared};
use super::{AppContext, HttpError, HttpOptions};

/// The first pause after a failed `accept`.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause between failed `accept`s.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A bound, not yet serving, HTTP service.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    options: HttpOptions,
}

impl Server {
    /// Binds the listen address (port 0 picks a free one).
    pub async fn bind(options: HttpOptions, context: AppContext) -> Result<Self, HttpError> {
        let bind_error = |source| HttpError::Bind {
            addr: options.listen,
            source,
        };
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared::new(context, &options));
        let hosts = AllowedHosts::new(addr, &options.public_hosts);
        let router = routes::router(shared.clone(), hosts, &options);
        Ok(Self {
            listener,
            addr,
            router,
            shared,
            options,
        })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes; then stops accepting and lets the
    /// requests in flight finish (for at most the drain timeout).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        // Applications are followed from when they are added to the set
        // (inside a runtime); one added outside of one is followed from now.
        let runtime = tokio::runtime::Handle::current();
        for entry in self.shared.context.apps.entries() {
            entry.follow(&runtime);
        }
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.options.max_connections));
        let mut backoff = Backoff::default();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // never closed
                },
            };
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        let pause = backoff.next();
                        tracing::warn!(error = %e, ?pause, "accept failed; pausing");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                },
            };
            backoff = Backoff::default();
            let connection = self.connection(stream);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(self.listener);
        if tokio::time::timeout(self.options.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.options.drain_timeout,
                "requests still in flight at shutdown were cut off"
            );
        }
        Ok(())
    }

    /// One HTTP/1 connection with the header read timeout.
    fn connection(
        &self,
        stream: TcpStream,
    ) -> http1::Connection<TokioIo<TcpStream>, TowerToHyperService<Router>> {
        let _ = stream.set_nodelay(true);
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(self.router.clone()),
            )
    }
}

/// The pause after each consecutive failed `accept`: doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
#[derive(Debug, Clone, Copy)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(FIRST_BACKOFF)
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_to_a_second_and_never_to_zero() {
        let mut backoff = Backoff::default();
        let pauses: Vec<Duration> = (0..12).map(|_| backoff.next()).collect();
        assert_eq!(pauses[0], FIRST_BACKOFF);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[11], MAX_BACKOFF);
        assert!(pauses.iter().all(|p| !p.is_zero()));
    }
}
