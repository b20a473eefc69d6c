//! Keeping one application's engine running: when its run ends without
//! being asked to (the engine panicked, or returned an error), it runs
//! again after a backoff — 1 s, doubling up to 60 s, back to 1 s after a
//! run that lasted [`Backoff::healthy`] — and the restart is logged,
//! counted (`gitops_app_restarts_total`) and shown (`restarts` in its
//! `/status` row). The same engine runs again: its HTTP entry, metrics,
//! notifications and the applications depending on it keep following it,
//! and no other application is touched.

use std::any::Any;
use std::time::Duration;

use gitops_core::Engine;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::http::Restarts;
use crate::metrics::Metrics;

/// How one run of an engine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It returned without an error (after a shutdown).
    Returned,
    /// It returned an error.
    Failed(String),
    /// It panicked (the panic's message, when it has one).
    Panicked(String),
}

impl Ended {
    /// Why it ended, for logs; `None` when it returned.
    pub(crate) fn reason(&self) -> Option<String> {
        match self {
            Ended::Returned => None,
            Ended::Failed(error) => Some(error.clone()),
            Ended::Panicked(message) => Some(format!("panicked: {message}")),
        }
    }
}

/// What to do once a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing: it was asked to stop, or it returned by itself (a reload
    /// restarts it then).
    Stop,
    /// Run it again after this long.
    RestartAfter(Duration),
}

/// The restart delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The first delay, and the delay after a healthy run.
    pub(crate) first: Duration,
    /// The longest delay.
    pub(crate) max: Duration,
    /// A run at least this long resets the delay to `first`.
    pub(crate) healthy: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s, reset after 10 minutes of running.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            healthy: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before the next restart: `first` after a healthy run (or
    /// the first time), else twice the `previous` delay, at most `max`.
    pub(crate) fn delay(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        match previous {
            Some(previous) if ran_for < self.healthy => previous.saturating_mul(2).min(self.max),
            _ => self.first,
        }
    }

    /// What to do after a run that `ended` after `ran_for`; `stopping`
    /// when the supervisor asked it to stop.
    pub(crate) fn next(
        &self,
        ended: &Ended,
        stopping: bool,
        previous: Option<Duration>,
        ran_for: Duration,
    ) -> Next {
        if stopping || *ended == Ended::Returned {
            return Next::Stop;
        }
        Next::RestartAfter(self.delay(previous, ran_for))
    }
}

/// Runs `engine`, and again after each unexpected end (see [`Backoff`]),
/// until `stop` turns true or the engine returns by itself; how its last
/// run ended.
pub(crate) async fn keep_running(
    engine: Engine,
    mut stop: watch::Receiver<bool>,
    restarts: Restarts,
    metrics: Metrics,
    backoff: Backoff,
) -> Ended {
    let mut previous = None;
    loop {
        let started = Instant::now();
        let ended = run_once(&engine).await;
        let stopping = *stop.borrow();
        let delay = match backoff.next(&ended, stopping, previous, started.elapsed()) {
            Next::Stop => return ended,
            Next::RestartAfter(delay) => delay,
        };
        let reason = ended.reason().unwrap_or_default();
        tracing::error!(error = %reason, restart_in = ?delay, "the application's engine ended; restarting it");
        previous = Some(delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stop| *stop) => return ended,
        }
        restarts.add();
        metrics.restarted(engine.name());
        tracing::warn!(restarts = restarts.get(), "application restarted");
    }
}

/// One run of `engine` in a task of its own, so that a panic ends the run
/// and not the supervisor.
async fn run_once(engine: &Engine) -> Ended {
    let runner = engine.clone();
    let task = tokio::spawn(async move { runner.run().await }.in_current_span());
    match task.await {
        Ok(Ok(())) => Ended::Returned,
        Ok(Err(e)) => Ended::Failed(e.to_string()),
        Err(e) if e.is_panic() => Ended::Panicked(panic_message(e.into_panic())),
        Err(e) => Ended::Failed(e.to_string()),
    }
}

/// The message of a panic (`panic!("...")`), or a placeholder.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&'static str>()
            .map_or_else(|| "(no message)".to_owned(), |m| (*m).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_to_the_cap_and_reset_after_a_healthy_run() {
        let b = Backoff::default();
        let failed = Ended::Failed("boom".into());
        let mut previous = None;
        let mut delays = Vec::new();
        for _ in 0..9 {
            let Next::RestartAfter(delay) = b.next(&failed, false, previous, S) else {
                panic!("a failed run restarts");
            };
            delays.push(delay.as_secs());
            previous = Some(delay);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            b.next(&failed, false, previous, b.healthy),
            Next::RestartAfter(S),
            "a healthy run resets the delay"
        );
        let panicked = Ended::Panicked("x".into());
        assert_eq!(
            b.next(&panicked, false, Some(4 * S), S),
            Next::RestartAfter(8 * S)
        );
    }

    #[test]
    fn a_stop_or_a_clean_return_is_not_restarted() {
        let b = Backoff::default();
        assert_eq!(
            b.next(&Ended::Failed("x".into()), true, None, S),
            Next::Stop
        );
        assert_eq!(b.next(&Ended::Returned, false, None, S), Next::Stop);
        assert_eq!(Ended::Returned.reason(), None);
        assert_eq!(
            Ended::Panicked("boom".into()).reason().as_deref(),
            Some("panicked: boom")
        );
    }

    #[test]
    fn panic_messages_are_read() {
        let text = std::panic::catch_unwind(|| panic!("on {}", "purpose")).unwrap_err();
        assert_eq!(panic_message(text), "on purpose");
        let literal = std::panic::catch_unwind(|| panic!("literal")).unwrap_err();
        assert_eq!(panic_message(literal), "literal");
        assert_eq!(panic_message(Box::new(7_u8)), "(no message)");
    }
}
