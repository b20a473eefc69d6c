//! Changing the shared list while the replica runs, handing an owned
//! application over to this replica again, and reading who owns what.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gitops_core::sync::LockExt as _;

use crate::client::{EtcdError, list_prefix};
use crate::fence::unescape;

use super::{ReplicaHandle, Shared};

/// `apps` sorted and without duplicates (what every replica hashes over).
fn normalized(mut apps: Vec<String>) -> Vec<String> {
    apps.sort();
    apps.dedup();
    apps
}

/// The applications of `owned` that the (sorted) list `apps` no longer has.
pub(super) fn unlisted<'a>(
    apps: &[String],
    owned: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    owned
        .filter(|app| apps.binary_search(app).is_err())
        .cloned()
        .collect()
}

/// The owner of each application from the lock keys under `locks`
/// (`<prefix>/locks/`): key and value (the replica id).
fn owners_of(locks: &str, keys: Vec<(String, String, i64)>) -> BTreeMap<String, String> {
    keys.into_iter()
        .filter_map(|(key, owner, _)| key.strip_prefix(locks).map(|app| (unescape(app), owner)))
        .collect()
}

impl ReplicaHandle {
    /// Replaces the list of applications shared with the other replicas
    /// (give every replica the same list) and rebalances at once: an owned
    /// application no longer listed is handed over (its lock deleted, its
    /// resources left as they are), a new one is claimed by the replica it
    /// is assigned to. Ownership and fencing work as for the first list.
    pub fn set_apps(&self, apps: Vec<String>) {
        *self.shared.apps.locked() = Arc::new(normalized(apps));
        self.shared.wake.notify_one();
    }

    /// The list shared now.
    pub fn apps(&self) -> Vec<String> {
        self.shared.apps().as_ref().clone()
    }

    /// Hands the owned applications among `apps` over to this replica
    /// again, at once: each engine finishes what is in flight, its lock is
    /// deleted, and the next rebalance (started by the deletion) claims it
    /// anew under a new fence and builds its engine with the factory (so a
    /// changed setting takes effect). Applications this replica does not
    /// own are ignored: their owner restarts them, or the factory builds
    /// them with the new settings when they are claimed.
    pub fn restart<S: Into<String>>(&self, apps: impl IntoIterator<Item = S>) {
        self.shared
            .restarts
            .locked()
            .extend(apps.into_iter().map(Into::into));
        self.shared.wake.notify_one();
    }

    /// Which replica holds each application's lock now, by application
    /// (applications nobody holds are missing): one range read of the lock
    /// keys.
    pub async fn owners(&self) -> Result<BTreeMap<String, String>, EtcdError> {
        let locks = format!("{}/locks/", self.shared.config.prefix);
        let keys = list_prefix(&self.shared.client, &locks).await?;
        Ok(owners_of(&locks, keys))
    }
}

impl Shared {
    /// The list shared now.
    pub(super) fn apps(&self) -> Arc<Vec<String>> {
        self.apps.locked().clone()
    }

    /// The restarts asked for among the applications `owned` now; the
    /// others are forgotten.
    pub(super) fn take_restarts(&self, owned: impl Fn(&str) -> bool) -> Vec<String> {
        let asked: BTreeSet<String> = std::mem::take(&mut *self.restarts.locked());
        asked.into_iter().filter(|app| owned(app)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        let apps = ["web", "db", "web"].map(String::from).to_vec();
        assert_eq!(normalized(apps), ["db", "web"]);
    }

    #[test]
    fn owned_applications_no_longer_listed_are_found() {
        let apps = normalized(["b", "a"].map(String::from).to_vec());
        let owned = ["a", "c", "b", "d"].map(String::from);
        assert_eq!(unlisted(&apps, owned.iter()), ["c", "d"]);
    }

    #[test]
    fn owners_come_from_the_lock_keys() {
        let keys = vec![
            ("/g/locks/web".to_owned(), "r1".to_owned(), 7),
            ("/g/locks/team%2Fdb".to_owned(), "r2".to_owned(), 8),
            ("/g/other/x".to_owned(), "r3".to_owned(), 9),
        ];
        let owners = owners_of("/g/locks/", keys);
        assert_eq!(
            owners,
            BTreeMap::from([
                ("team/db".to_owned(), "r2".to_owned()),
                ("web".to_owned(), "r1".to_owned()),
            ])
        );
    }
}
