//! Poison-tolerant locking, the one way this workspace takes a
//! [`std::sync::Mutex`].
//!
//! A panic while a lock is held poisons it; the data behind every lock in
//! this workspace stays consistent across a panic (each critical section is
//! a single assignment or lookup), so the engine keeps going rather than
//! turning one panic into a second one in every later caller.
//!
//! ```
//! use std::sync::Mutex;
//! use gitops_core::sync::LockExt as _;
//!
//! let cell = Mutex::new(1);
//! *cell.locked() += 1;
//! assert_eq!(*cell.locked(), 2);
//! ```

use std::sync::{Mutex, MutexGuard};

/// [`Mutex::lock`] that recovers the guard from a poisoned lock.
pub trait LockExt<T: ?Sized> {
    /// Locks, ignoring poisoning (see the module docs for why that is sound here).
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
