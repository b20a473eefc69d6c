//! Retry state: exponential backoff with jitter per revision (`backon`),
//! reset when the revision changes or converges.

use backon::BackoffBuilder as _;
use tokio::time::Instant;

use super::RetryPolicy;

/// The retries of one revision.
pub(super) struct Retry {
    /// The revision retried; `None` when no revision could be read.
    pub revision: Option<String>,
    backoff: backon::ExponentialBackoff,
    /// Retries scheduled so far.
    pub attempt: usize,
    /// When the next one runs.
    pub due: Instant,
}

impl Retry {
    /// No retry scheduled yet for `revision`.
    pub fn new(revision: Option<String>, policy: &RetryPolicy) -> Self {
        let mut builder = backon::ExponentialBuilder::new()
            .with_min_delay(policy.initial)
            .with_factor(policy.factor)
            .with_max_delay(policy.max_delay)
            // The budget is `settle`'s to count (it then fails the revision
            // and may roll back); the backoff only spaces the attempts.
            .without_max_times();
        if policy.jitter {
            builder = builder.with_jitter();
        }
        Self {
            revision,
            backoff: builder.build(),
            attempt: 0,
            due: Instant::now(),
        }
    }

    /// Schedules the next attempt and returns its delay.
    pub fn schedule(&mut self, now: Instant, policy: &RetryPolicy) -> std::time::Duration {
        // Without a maximum the backoff never ends; `max_delay` if it did.
        let delay = self.backoff.next().unwrap_or(policy.max_delay);
        self.attempt += 1;
        self.due = super::after(now, delay);
        delay
    }
}
