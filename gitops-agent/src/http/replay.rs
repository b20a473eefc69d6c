//! A bounded memory of message ids already acted on (webhook replays).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use gitops_core::sync::LockExt as _;

/// How many ids each cache remembers; the oldest is forgotten first.
pub(crate) const REPLAY_CAPACITY: usize = 1024;

/// The last `capacity` ids seen, oldest evicted first.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl ReplayCache {
    /// A cache of at most `capacity` (at least 1) ids.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Remembers `id`; false when it was already remembered (a replay).
    pub(crate) fn first_time(&self, id: &str) -> bool {
        let mut seen = self.seen.locked();
        if seen.ids.contains(id) {
            return false;
        }
        if seen.order.len() >= self.capacity
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.ids.remove(&oldest);
        }
        seen.order.push_back(id.to_owned());
        seen.ids.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_caught_and_the_oldest_is_forgotten() {
        let cache = ReplayCache::new(2);
        assert!(cache.first_time("a"));
        assert!(!cache.first_time("a"));
        assert!(cache.first_time("b"));
        assert!(cache.first_time("c")); // evicts "a"
        assert!(!cache.first_time("b"));
        assert!(!cache.first_time("c"));
        assert!(cache.first_time("a"));
        assert_eq!(cache.seen.locked().ids.len(), 2);
    }
}
