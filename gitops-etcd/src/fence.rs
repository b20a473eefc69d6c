//! [`Fence`]: the proof of ownership every write carries.
//!
//! A replica owns an application while its lock key exists with the
//! create-revision the replica saw when it claimed it. Writes made under a
//! fence are etcd transactions that compare that create-revision first: once
//! the lock is gone (lease expired or revoked, application handed over) or
//! re-created by another replica, the comparison fails and nothing is
//! written. The revision is a fencing token in the sense of Kleppmann's
//! "How to do distributed locking": it only grows, and a stale holder can
//! not present a current one.

use etcd_client::{Compare, CompareOp};

/// Ownership of one application: its lock key and the create-revision the
/// owner saw. Obtained from [`crate::AppContext::fence`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    app: String,
    lock_key: String,
    revision: i64,
}

impl Fence {
    /// A fence for `app` held through `lock_key` created at `revision`.
    /// The cluster makes these; build one by hand only in tests or for a
    /// lock managed elsewhere.
    pub fn new(app: impl Into<String>, lock_key: impl Into<String>, revision: i64) -> Self {
        Self {
            app: app.into(),
            lock_key: lock_key.into(),
            revision,
        }
    }

    /// The application owned.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The lock key.
    pub fn lock_key(&self) -> &str {
        &self.lock_key
    }

    /// The lock's create-revision: the fencing token.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The comparison every fenced transaction starts with.
    pub(crate) fn compare(&self) -> Compare {
        Compare::create_revision(self.lock_key.as_str(), CompareOp::Equal, self.revision)
    }
}

/// Escapes an application name for use as one key segment (`/` and `%`).
pub(crate) fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// Reverses [`escape`].
pub(crate) fn unescape(segment: &str) -> String {
    segment.replace("%2F", "/").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for name in ["web", "team/web", "100%", "a%2Fb", "/", ""] {
            let e = escape(name);
            assert!(!e.contains('/'), "{e}");
            assert_eq!(unescape(&e), name);
        }
    }
}
