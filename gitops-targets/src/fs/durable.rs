//! Durability by group commit: one `syncfs` covers every write finished
//! before it, and concurrent callers share it.

use std::io;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::Inner;

/// How far the writes are durable, and whether a `syncfs` runs now.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Every write numbered up to this one is on disk.
    durable_through: u64,
    running: bool,
}

impl Inner {
    /// Makes every write that finished before this call durable. Concurrent
    /// callers share one `syncfs` (group commit).
    pub(super) fn sync_blocking(&self) -> io::Result<()> {
        let needed = self.writes.load(Ordering::SeqCst);
        let mut state = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.durable_through >= needed {
                return Ok(());
            }
            if state.running {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            let covers = self.writes.load(Ordering::SeqCst);
            drop(state);
            let result = rustix::fs::syncfs(&self.root_file);
            state = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
            state.running = false;
            if result.is_ok() {
                state.durable_through = state.durable_through.max(covers);
            }
            self.synced.notify_all();
            result?;
        }
    }
}
