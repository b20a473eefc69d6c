//! [`Cancel`]: how the engine tells blocking work it started that the
//! answer is no longer wanted (a deadline passed, or the engine shuts down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared cancellation flag, passed to [`Source::snapshot`](crate::Source::snapshot).
///
/// Dropping a future does not stop a thread it started with
/// `spawn_blocking`; a long walk over a Git tree checks this flag instead
/// (every few thousand entries) and returns early. Clones share the flag.
///
/// ```
/// use gitops_core::Cancel;
///
/// let cancel = Cancel::new();
/// let seen_by_worker = cancel.clone();
/// assert!(!seen_by_worker.is_cancelled());
/// cancel.cancel();
/// assert!(seen_by_worker.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
}

impl Cancel {
    /// A flag that is not set (yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag: work that checks it stops at its next check.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called on this flag or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// A guard that sets the flag when dropped: an async caller holds it
    /// across its `.await`, so a caller that stops waiting (a timeout, an
    /// aborted task) also stops the blocking work.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// Sets its [`Cancel`] when dropped (see [`Cancel::on_drop`]); [`disarm`](Self::disarm)
/// once the work finished.
#[derive(Debug)]
#[must_use = "the flag is set when the guard is dropped"]
pub struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    /// Drops the guard without setting the flag.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = &self.0 {
            cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_cancels_unless_disarmed() {
        let cancel = Cancel::new();
        cancel.on_drop().disarm();
        assert!(!cancel.is_cancelled());
        drop(cancel.on_drop());
        assert!(cancel.is_cancelled());
    }
}
