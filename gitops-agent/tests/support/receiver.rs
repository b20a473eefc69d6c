//! A real HTTP receiver for notifications: records every request, and can
//! be told to answer a status N times or to hold requests until released.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::sync::watch;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Everything received, as text (to search for what must not be there).
    pub fn text(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        format!(
            "{}\n{}\n{}",
            self.uri,
            headers.join("\n"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

#[derive(Default)]
struct Script {
    /// Statuses to answer, in order, before answering 200.
    answers: VecDeque<u16>,
}

struct Shared {
    script: Mutex<Script>,
    received: watch::Sender<Vec<Received>>,
    /// While true, requests wait before they are answered.
    held: watch::Sender<bool>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Receiver {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            received: watch::Sender::new(Vec::new()),
            held: watch::Sender::new(false),
        });
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `status` to the next `n` requests (then 200 again).
    pub fn answer(&self, status: u16, n: usize) {
        lock(&self.shared.script)
            .answers
            .extend(std::iter::repeat_n(status, n));
    }

    /// Holds every request (they are recorded, but not answered) until [`release`](Self::release).
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.borrow().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.shared.received.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|r| r.len() >= n)).await {
            Ok(Ok(received)) => received.clone(),
            _ => panic!(
                "the receiver got {} requests within {timeout:?}, expected {n}",
                self.received().len()
            ),
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let request = Received {
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    shared.received.send_modify(|r| r.push(request));
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|h| !*h).await;
    let status = lock(&shared.script).answers.pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
