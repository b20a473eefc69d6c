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

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;
    use std::sync::atomic::Ordering;

    use gitops_core::files::file_spec;
    use gitops_core::{Resource, ResourceId, Target as _};

    use crate::{Durability, FsOptions, FsTarget};

    fn unsynced(target: &FsTarget) -> u64 {
        let written = target.inner.writes.load(Ordering::SeqCst);
        let state = target
            .inner
            .sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        written.saturating_sub(state.durable_through)
    }

    /// With the default `PerWave`, a delete (what prune calls before the
    /// engine saves the inventory without the resource) returns only once
    /// the unlink is on disk; applies still wait for the wave's health check.
    #[tokio::test]
    async fn a_delete_is_durable_when_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = FsTarget::open(dir.path()).expect("opens");
        assert_eq!(target.inner.options.durability, Durability::PerWave);
        let id = ResourceId::new("File", "a/b.conf").expect("id");
        let file = Resource::new(id.clone(), file_spec("a/b.conf", b"x", false));
        target.apply(&file).await.expect("applies");
        assert!(unsynced(&target) > 0, "applies are synced per wave");
        target.delete(&id).await.expect("deletes");
        assert_eq!(unsynced(&target), 0, "the unlink is durable");
        // Durability::None keeps its promise of no sync.
        let none = FsTarget::open_with(
            dir.path(),
            FsOptions::default().durability(Durability::None),
        )
        .expect("opens");
        none.apply(&file).await.expect("applies");
        none.delete(&id).await.expect("deletes");
        assert!(unsynced(&none) > 0);
    }
}
